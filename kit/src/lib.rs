//! What both binaries (`credential-broker`, `mcp-adapter`) share, so each rule exists once:
//!
//! - [`listen`]: reporting the address a listener really bound (port 0 in tests and local stacks).

pub mod listen;
