//! `mcp-adapter`: an MCP server (Streamable HTTP, rmcp on axum) whose S3 tools run only on
//! credentials the credential broker issued for the caller's token.
//!
//! It exists to make the incident in `shared/seed` impossible: a tool call without a valid token
//! is refused with a 401 that tells the client what to send, and no code path can fall back to
//! the task's own IAM role, because the adapter never loads AWS credentials of its own (the crate
//! does not depend on `aws-config`).
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | settings: flags and environment, validated at start |
//! | `server` | the HTTP surface: `/mcp` gate + rmcp, RFC 9728 metadata, `/healthz`, CORS |
//! | `auth` | per-request token → broker → credentials in the request extensions; 401/403/404/503 |
//! | `broker` | the gRPC client (lazy connection, one deadline per call, one retry on UNAVAILABLE) |
//! | `s3` | S3 clients from given credentials, cached while valid; `s3://` parsing |
//! | `sessions` | rmcp's session manager, minting 256-bit session ids instead of UUID v4 |
//! | `events` | per-session event ids, priming by revision, the bounded buffer streams resume from |
//! | `direct` | `tools/list` and the quiet tools answered without rmcp's session worker |
//! | `tools` | the S3 tools, one file per family |
//! | `origin`, `protocol`, `jsonrpc` | Origin allowlist, MCP-Protocol-Version, JSON-RPC envelope/errors |
//! | [`metrics`] | Prometheus counters and histograms on `ADAPTER_METRICS_LISTEN` |
//! | [`healthcheck`] | the `healthcheck` subcommand (GET /healthz) |
//! | [`logging`] | text/JSON logs that never show a session id |
//! | [`telemetry`] | OpenTelemetry spans and OTLP export, only when `OTEL_EXPORTER_OTLP_*ENDPOINT` is set |

mod auth;
mod broker;
pub mod config;
mod direct;
mod events;
pub mod healthcheck;
mod jsonrpc;
pub mod logging;
pub mod metrics;
mod origin;
mod protocol;
mod s3;
pub mod server;
mod sessions;
pub mod telemetry;
mod tools;
