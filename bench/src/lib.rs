//! Benchmarks of the credential broker and the MCP adapter (issue 7; results in BENCHMARKS.md).
//!
//! Everything runs on loopback against real processes started through the `e2e` harness: the
//! release `credential-broker` and `mcp-adapter`, moto with IAM enforcement, redis-server, the
//! counting STS proxy. `scripts/bench` builds in release and runs the whole set; each benchmark is
//! also a subcommand of `credbroker-bench`.
//!
//! - [`adapter_floor`]: the bare axum handler one adapter tool call is compared with;
//! - [`driver`]: closed-loop async load driver with HDR histograms;
//! - [`floor`]: the bare tonic service the broker's warm path is compared with;
//! - [`mcp`]: a Streamable HTTP MCP client on reqwest, the same for every MCP server measured;
//! - [`procfs`]: RSS, CPU time and load from /proc;
//! - [`report`]: the Markdown and JSON output;
//! - [`s3stub`]: the keep-alive S3 stand-in beside moto;
//! - [`scenarios`]: the benchmarks themselves.

pub mod adapter_floor;
pub mod driver;
pub mod floor;
pub mod mcp;
pub mod procfs;
pub mod report;
pub mod s3stub;
pub mod scenarios;
pub mod setup;
