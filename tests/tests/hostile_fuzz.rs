//! Fuzzing in the default suite: the properties of `fuzz/props.rs` (the same code the cargo-fuzz
//! targets in `fuzz/` run under libFuzzer) fed with seeded random and mutated inputs for a short,
//! bounded time on the stable toolchain.
//!
//! - `E2E_FUZZ_SECS` (default 5, or 120 with `E2E_LONG=1`): seconds per property;
//! - `E2E_FUZZ_SEED`: replay a run (the seed is printed, and named in any failure).
//!
//! Longer, coverage-guided runs: `cargo +nightly fuzz run <target>` in `fuzz/` (RELIABILITY.md).

#[path = "../../fuzz/props.rs"]
mod props;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

fn budget() -> Duration {
    let secs = std::env::var("E2E_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(if std::env::var_os("E2E_LONG").is_some() {
            120
        } else {
            5
        });
    Duration::from_secs(secs)
}

fn seed() -> u64 {
    std::env::var("E2E_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

fn escape(input: &[u8]) -> String {
    input.iter().map(|b| format!("\\x{b:02x}")).collect()
}

/// One mutation of `input`: flip, insert, delete or splice bytes.
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>) {
    match rng.random_range(0..4) {
        0 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            input[i] ^= 1 << rng.random_range(0..8);
        }
        1 => {
            let i = rng.random_range(0..=input.len());
            input.insert(i, rng.random());
        }
        2 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            input.remove(i);
        }
        _ => {
            let n = rng.random_range(1..16);
            let i = rng.random_range(0..=input.len());
            let mut extra = vec![0u8; n];
            rng.fill_bytes(&mut extra);
            input.splice(i..i, extra);
        }
    }
}

fn run(name: &str, property: fn(&[u8])) {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let check = |input: &[u8]| {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| property(input))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "fuzz property {name} broken (E2E_FUZZ_SEED={seed}): {message}\ninput: b\"{}\"",
                escape(input)
            );
        }
    };
    let mut pool: Vec<Vec<u8>> = props::seeds();
    for input in &pool {
        check(input);
    }
    let started = Instant::now();
    let deadline = started + budget();
    let mut runs = pool.len();
    while Instant::now() < deadline {
        for _ in 0..64 {
            let input = if rng.random_bool(0.5) {
                let mut input = pool[rng.random_range(0..pool.len())].clone();
                for _ in 0..rng.random_range(1..8) {
                    mutate(&mut rng, &mut input);
                }
                input
            } else {
                let mut input = vec![0u8; rng.random_range(0..600)];
                rng.fill_bytes(&mut input);
                input
            };
            check(&input);
            runs += 1;
            if pool.len() < 256 && rng.random_bool(0.01) {
                pool.push(input);
            }
        }
    }
    println!(
        "fuzz {name}: {runs} inputs in {:.1?}, 0 property violations (E2E_FUZZ_SEED={seed}); \
         paths reached so far in this process: {}",
        started.elapsed(),
        props::stats()
    );
}

#[test]
fn fuzz_token_parsing_and_claim_mapping() {
    run("token_claims", props::token_claims);
}

#[test]
fn fuzz_session_policy_generation() {
    run("session_policy", props::session_policy);
}

#[test]
fn fuzz_adapter_argument_parsing() {
    run("adapter_args", props::adapter_args);
}
