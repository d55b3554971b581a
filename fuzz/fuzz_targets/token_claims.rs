//! `cargo +nightly fuzz run token_claims`: see `fuzz/props.rs` for the rules checked.
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::token_claims(data));
