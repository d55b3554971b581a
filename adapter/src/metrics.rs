//! Prometheus metrics on `ADAPTER_METRICS_LISTEN` (text format at `/metrics`, own listener;
//! port 0 works, the bound address goes to `ADAPTER_METRICS_ADDR_FILE`).
//!
//! Names, so dashboards and alerts can rely on them:
//! - `mcp_adapter_tool_calls_total{tool,outcome}`: outcome `ok`, `tool_error` (an argument or
//!   other caller-fixable problem), `s3_error`, `broker_error` (the broker could not serve the
//!   call), `unauthorized` (no credentials reached the tool) or `protocol_error`
//! - `mcp_adapter_auth_refusals_total{status}`: `401`, `403`, `404` answered by the token gate
//! - `mcp_adapter_broker_call_seconds{method}`: one observation per broker RPC, retries included
//! - `mcp_adapter_broker_errors_total{code}`: failed broker RPCs by gRPC code
//!
//! Labels never carry a subject, token or session id; `tool` is one of the registered tool names
//! (anything else counts as `unknown`).

use std::net::SocketAddr;
use std::path::Path;

/// Binds the metrics listener on `listen` (port 0: the kernel picks), writes the bound address to
/// `addr_file` (ADAPTER_METRICS_ADDR_FILE) when set, and serves `/metrics`. Without it the
/// `metrics` macros are no-ops.
pub async fn install(
    listen: SocketAddr,
    addr_file: Option<&Path>,
) -> Result<SocketAddr, credbroker_kit::config::ConfigError> {
    credbroker_kit::metrics::serve(credbroker_kit::metrics::Exporter {
        listen_variable: "ADAPTER_METRICS_LISTEN",
        listen,
        buckets: &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
        addr_file: addr_file.map(|path| ("ADAPTER_METRICS_ADDR_FILE", path)),
    })
    .await
}

/// One finished `tools/call`.
pub(crate) fn tool_call(tool: &str, outcome: &'static str) {
    metrics::counter!(
        "mcp_adapter_tool_calls_total",
        "tool" => tool.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

/// One request the token gate refused with `status` (401, 403, 404).
pub(crate) fn auth_refusal(status: http::StatusCode) {
    metrics::counter!("mcp_adapter_auth_refusals_total", "status" => status.as_str().to_owned())
        .increment(1);
}

/// One broker RPC, retries included; `code` is the gRPC code of a failure.
pub(crate) fn broker_call(method: &'static str, seconds: f64, code: Option<tonic::Code>) {
    metrics::histogram!("mcp_adapter_broker_call_seconds", "method" => method).record(seconds);
    if let Some(code) = code {
        metrics::counter!("mcp_adapter_broker_errors_total", "code" => credbroker_proto::code_name(code))
            .increment(1);
    }
}
