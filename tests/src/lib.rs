//! End-to-end test harness: real processes, started and stopped by the tests themselves.
//!
//! The tests in `tests/tests/` run the real `credential-broker` and `mcp-adapter` binaries against
//! real dependencies — moto with IAM enforcement for AWS, `redis-server`, grpcurl — because the
//! properties that matter (credentials really carry a role's rights, STS is called once, nothing
//! secret is logged or stored in plaintext) only show in real processes.
//!
//! One concept per module:
//! - [`ports`]: ports for the servers that cannot bind port 0 and report it (the others do);
//! - [`background`]: an in-process TCP server on its own thread (the proxies below use it);
//! - [`process`]: a child process with a log file, killed by pid on drop, readiness waits, the
//!   address a server reports after binding port 0;
//! - [`tools`]: where the binaries, the venv, moto, grpcurl and redis are;
//! - [`moto`]: a seeded moto server enforcing IAM;
//! - [`sts_proxy`]: a counting (and failure-injecting) proxy in front of moto's STS;
//! - [`sts_expiry`]: a proxy that shortens STS credential lifetimes (refresh and last-good in minutes);
//! - [`held_proxy`]: a relay that holds connections until released (a slow S3 the test controls);
//! - [`redis`]: standalone and cluster redis-server, and a dump of everything they hold;
//! - [`tokens`]: JWTs (HS256, RS256, ES256) and JWKS;
//! - [`broker`]: the broker process and its gRPC clients;
//! - [`stack`]: moto + proxy + broker in one call;
//! - [`fleet`]: Redis, two brokers, several adapters behind a round-robin balancer;
//! - [`rpc`]: one-line calls of the broker's RPCs and status checks;
//! - [`http_doc`]: a one-document HTTP server (a JWKS URL);
//! - [`adapter`]: the MCP adapter process;
//! - [`grpcurl`]: grpcurl against a server;
//! - [`aws`]: S3 and STS clients from exactly the credentials a test holds;
//! - [`leaks`]: assertions that no secret appears in a text;
//! - [`load`]: workers that keep calling tools or `GetCredentials` and record every answer;
//! - [`hostile`]: a corpus of hostile JWTs with the answers they must get;
//! - [`otlp`]: an OTLP trace receiver (HTTP/protobuf and gRPC) that keeps what the binaries export;
//! - [`mcp`]: a plain-HTTP MCP client for the adapter (sessions, forged headers, raw bodies);
//! - [`round_robin`]: a load balancer without stickiness in front of several adapters.
//!
//! Everything a test starts listens on 127.0.0.1 only and is stopped when its handle drops.
//! Run the suite with `scripts/test`, which installs the tools and builds the binaries first.

pub mod adapter;
pub mod auth_proxy;
pub mod aws;
pub mod background;
pub mod broker;
pub mod fleet;
pub mod grpcurl;
pub mod held_proxy;
pub mod hostile;
pub mod http_doc;
pub mod leaks;
pub mod load;
pub mod mcp;
pub mod mcp_plan;
pub mod moto;
pub mod node;
pub mod otlp;
pub mod ports;
pub mod process;
pub mod redis;
pub mod round_robin;
pub mod rpc;
pub mod stack;
pub mod sts_expiry;
pub mod sts_proxy;
pub mod tokens;
pub mod tools;
