//! Prometheus metrics on `BROKER_METRICS_LISTEN` (text format at `/metrics`).
//!
//! Names, so dashboards and alerts can rely on them:
//! - `credbroker_requests_total{method,code}` and `credbroker_request_seconds{method}`
//! - `credbroker_sts_calls_total{outcome}` and `credbroker_sts_call_seconds`
//! - `credbroker_cache_lookups_total{result="hit"|"miss"}`
//! - `credbroker_refreshes_total{outcome="ok"|"failed"}`
//! - `credbroker_store_errors_total{kind}`
//! - `credbroker_live_sessions` (gauge, refreshed by the store sweep)
//! - `credbroker_limit_refusals_total{limit="subject_rate"|"sts_budget"}`
//! - `credbroker_sts_budget_wait_seconds{class="refresh"|"first_issue"}` (histogram: every STS
//!   call under `BROKER_STS_RATE`, 0 when the token was there) and
//!   `credbroker_sts_budget_waits_total{class}` (calls that had to wait)
//! - `credbroker_rate_limit_buckets` (gauge: per-subject buckets not full again, as this replica
//!   saw them, full ones dropped within a second — every principal with the memory store, an
//!   approximate count with Redis)
//!
//! Labels never carry a subject, role or session: their cardinality would be unbounded and they
//! belong in logs.

use std::net::SocketAddr;
use std::path::Path;

/// Binds the metrics listener on `listen` (port 0: the kernel picks), writes the bound address to
/// `addr_file` (BROKER_METRICS_ADDR_FILE) when set, and serves `/metrics`. Without a listener
/// the `metrics` macros are no-ops.
pub async fn install(
    listen: SocketAddr,
    addr_file: Option<&Path>,
) -> Result<SocketAddr, credbroker_kit::config::ConfigError> {
    credbroker_kit::metrics::serve(credbroker_kit::metrics::Exporter {
        listen_variable: "BROKER_METRICS_LISTEN",
        listen,
        buckets: &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
        addr_file: addr_file.map(|path| ("BROKER_METRICS_ADDR_FILE", path)),
    })
    .await
}

/// One answered request.
pub fn request(method: &'static str, code: tonic::Code, seconds: f64) {
    metrics::counter!("credbroker_requests_total", "method" => method, "code" => credbroker_proto::code_name(code))
        .increment(1);
    metrics::histogram!("credbroker_request_seconds", "method" => method).record(seconds);
}

/// One STS call.
pub fn sts_call(ok: bool, seconds: f64) {
    metrics::counter!("credbroker_sts_calls_total", "outcome" => if ok { "ok" } else { "error" })
        .increment(1);
    metrics::histogram!("credbroker_sts_call_seconds").record(seconds);
}

/// One credential lookup.
pub fn lookup(hit: bool) {
    metrics::counter!("credbroker_cache_lookups_total", "result" => if hit { "hit" } else { "miss" }).increment(1);
}

/// One background refresh.
pub fn refresh(ok: bool) {
    metrics::counter!("credbroker_refreshes_total", "outcome" => if ok { "ok" } else { "failed" })
        .increment(1);
}

/// One store failure.
pub fn store_error(kind: &'static str) {
    metrics::counter!("credbroker_store_errors_total", "kind" => kind).increment(1);
}

/// Current number of live sessions.
pub fn live_sessions(n: usize) {
    metrics::gauge!("credbroker_live_sessions").set(n as f64);
}

/// A request refused by a limit (`subject_rate`, `sts_budget`).
pub fn limit_refusal(limit: &'static str) {
    metrics::counter!("credbroker_limit_refusals_total", "limit" => limit).increment(1);
}

/// One STS call let through the STS budget after `seconds`; `waited`: it had to wait (in line
/// or for a token), rather than finding one at once.
pub fn sts_budget_wait(class: &'static str, seconds: f64, waited: bool) {
    metrics::histogram!("credbroker_sts_budget_wait_seconds", "class" => class).record(seconds);
    if waited {
        metrics::counter!("credbroker_sts_budget_waits_total", "class" => class).increment(1);
    }
}

/// Per-subject rate buckets in use (not full again), as this replica saw them.
pub fn rate_buckets_in_use(n: usize) {
    metrics::gauge!("credbroker_rate_limit_buckets").set(n as f64);
}
