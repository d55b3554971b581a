//! OpenTelemetry traces: the broker's spans, exported with OTLP when the standard `OTEL_*`
//! variables ask for it, and nothing at all when they do not.
//!
//! * **Off unless an endpoint is set.** Without `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` there is no exporter, no OpenTelemetry layer, and [`span!`]
//!   makes no span (one atomic read), so tracing costs nothing (BENCHMARKS.md, "Tracing off").
//! * **Standard variables**, read and checked by `credbroker_kit::telemetry`, as in the adapter:
//!   `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`grpc` or `http/protobuf`; anything else stops the
//!   broker at start naming the variable), `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` /
//!   `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` (`otlp` or `none`);
//!   headers, timeouts and batching (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`) are read by the
//!   SDK.
//! * **Context in from gRPC metadata.** [`grpc_span`] (tonic's `trace_fn`) reads W3C
//!   `traceparent` / `tracestate` on every RPC, so the broker's spans join the adapter's trace.
//! * **Only the broker's own spans are exported**, never log events: third-party spans and log
//!   lines stay out of the payload. No span carries a token, a secret, a session token or a raw
//!   session id (sessions appear as their keyed handle); `tests/tests/tracing.rs` checks the
//!   exported bytes.
//! * **Flushed at shutdown.** [`shutdown`] exports the spans still queued after SIGTERM drained
//!   the server.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use credbroker_kit::telemetry::{TelemetryError, enabled, shutdown};

/// The service name when `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`)
/// does not give one; also the tracer's name.
const SERVICE_NAME: &str = "credential-broker";

/// The span targets exported: the broker's own.
const EXPORTED_TARGETS: &[&str] = &["credential_broker"];

/// A span that exists only while traces are exported: `tracing::info_span!` arguments, or
/// `Span::none()` (no allocation, no subscriber call) when tracing is off.
macro_rules! span {
    ($($arg:tt)+) => {
        if $crate::telemetry::enabled() {
            ::tracing::info_span!($($arg)+)
        } else {
            ::tracing::Span::none()
        }
    };
}
pub(crate) use span;

/// Reads the `OTEL_*` variables and, when they ask for traces, builds the exporter and the
/// provider. Call once, inside the tokio runtime, before the log setup (which adds [`layer`]).
pub fn install() -> Result<bool, TelemetryError> {
    credbroker_kit::telemetry::install(SERVICE_NAME)
}

/// The OpenTelemetry layer for the log setup (`None` when tracing is off): the broker's own
/// spans, never events (log lines) or other crates' spans.
pub fn layer() -> Option<credbroker_kit::logging::BoxedLayer> {
    credbroker_kit::telemetry::layer(SERVICE_NAME, EXPORTED_TARGETS)
}

/// The span of one RPC (tonic's `trace_fn`), child of the caller's span when the request carries
/// W3C `traceparent` metadata. Names only the RPC path, and only when it is one of ours.
pub fn grpc_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let name = rpc_name(path);
    let (service, method) = name.split_once('/').unwrap_or(("unknown", "unknown"));
    let span = span!(
        "grpc.server",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new()
        .extract(&opentelemetry_http::HeaderExtractor(request.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// `service/method` of a gRPC path, or `unknown` for a path that is not one (the path comes
/// from the caller: it is not copied into a span unchecked).
fn rpc_name(path: &str) -> &str {
    let name = path.strip_prefix('/').unwrap_or(path);
    let known = name.len() <= 128
        && name.split_once('/').is_some_and(|(s, m)| {
            !s.is_empty()
                && !m.is_empty()
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
                && m.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if known { name } else { "unknown/unknown" }
}

/// Records an RPC's gRPC status on the current RPC span (a no-op without one).
pub(crate) fn record_status(code: tonic::Code) {
    if !enabled() {
        return;
    }
    let span = tracing::Span::current();
    span.record("rpc.grpc.status_code", code as i32);
    if !matches!(
        code,
        tonic::Code::Ok
            | tonic::Code::NotFound
            | tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::InvalidArgument
            | tonic::Code::AlreadyExists
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

/// The current trace's id (32 hex digits), for the audit trail; `None` when tracing is off or
/// no trace is current.
pub(crate) fn trace_id() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_grpc_paths_name_spans() {
        assert_eq!(
            rpc_name("/credbroker.v1.CredentialBroker/GetCredentials"),
            "credbroker.v1.CredentialBroker/GetCredentials"
        );
        assert_eq!(rpc_name("/x/eyJhbGciOi.x"), "unknown/unknown");
        assert_eq!(rpc_name("/"), "unknown/unknown");
        assert_eq!(
            rpc_name(&format!("/a/{}", "b".repeat(200))),
            "unknown/unknown"
        );
    }
}
