//! OpenTelemetry traces: the adapter's spans, exported with OTLP when the standard `OTEL_*`
//! variables ask for it, and nothing at all when they do not.
//!
//! * **Off unless an endpoint is set.** Without `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` there is no exporter, no OpenTelemetry layer, no middleware
//!   work and no span made here (one atomic read, [`enabled`]): tracing off costs nothing
//!   (BENCHMARKS.md, "Tracing off").
//! * **Standard variables**, read and checked by `credbroker_kit::telemetry`, as in the broker
//!   (`OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` = `grpc` | `http/protobuf`, `OTEL_SERVICE_NAME`,
//!   `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`); a bad value
//!   stops the adapter at start.
//! * **One trace per tool call, from the client to S3.** [`mcp_request`] continues the client's
//!   W3C `traceparent` / `tracestate` (or starts a trace) with an `mcp.request` span; the gate
//!   records the JSON-RPC method and, once the broker answered, the session's keyed handle (never
//!   the `Mcp-Session-Id`). Each broker RPC is a client span whose context travels in the gRPC
//!   metadata ([`inject`]); each tool call is an `mcp.tool` span (tool name, bucket), parent of
//!   the aws-sdk's `S3.<Operation>` spans.
//! * **Nothing secret in a span**: no token, no credential, no raw session id, no object key or
//!   argument beyond the bucket; log lines are not exported (`tests/tests/tracing.rs` checks the
//!   exported bytes).
//! * **Flushed at shutdown** ([`shutdown`]), after the server drained.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use credbroker_kit::telemetry::{TelemetryError, enabled, shutdown};

/// The service name when `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`)
/// does not give one; also the tracer's name.
const SERVICE_NAME: &str = "mcp-adapter";

/// The span targets exported: the adapter's own, and aws-sdk-s3's per-operation spans
/// (`S3.GetObject`, with `rpc.*` attributes only) as children of the tool span; the SDK's inner
/// spans are not, nor rmcp's (they carry the session id).
const EXPORTED_TARGETS: &[&str] = &["mcp_adapter", "aws_sdk_s3::operation"];

/// Reads the `OTEL_*` variables and, when they ask for traces, builds the exporter and the
/// provider. Call once, inside the tokio runtime, before the log setup (which adds [`layer`]).
pub fn install() -> Result<bool, TelemetryError> {
    credbroker_kit::telemetry::install(SERVICE_NAME)
}

/// The OpenTelemetry layer for the log setup (`None` when tracing is off): the adapter's own
/// spans and aws-sdk-s3's operation spans, never events (log lines) or other crates' spans.
pub fn layer() -> Option<credbroker_kit::logging::BoxedLayer> {
    credbroker_kit::telemetry::layer(SERVICE_NAME, EXPORTED_TARGETS)
}

/// The client's trace context for one request, kept in the request's extensions: rmcp hands
/// the request's parts to the tool handler, which runs in the session's task, outside the
/// request span.
#[derive(Clone)]
pub(crate) struct RequestTrace(opentelemetry::Context);

/// Middleware around `/mcp`: the `mcp.request` server span, child of the client's
/// `traceparent` when it sent one. Does nothing when tracing is off.
pub(crate) async fn mcp_request(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    if !enabled() {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let span = tracing::info_span!(
        "mcp.request",
        otel.name = format!("{method} /mcp"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        url.path = "/mcp",
        mcp.method.name = tracing::field::Empty,
        mcp.session.handle = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new()
        .extract(&opentelemetry_http::HeaderExtractor(request.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    request
        .extensions_mut()
        .insert(RequestTrace(span.context()));
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// Records the request's JSON-RPC method(s) on the current `mcp.request` span. Method names
/// come from the client: only names shaped like MCP methods are recorded, others as `other`.
pub(crate) fn record_methods(methods: impl Iterator<Item = impl AsRef<str>>) {
    if !enabled() {
        return;
    }
    let label = methods_label(methods);
    if !label.is_empty() {
        tracing::Span::current().record("mcp.method.name", label);
    }
}

/// The `mcp.method.name` value: up to four methods, comma-separated; a name not shaped like an
/// MCP method (letters, digits, `/`, `_`, at most 64) is `other`, so a client cannot put
/// arbitrary text (a token, say) into the attribute.
fn methods_label(methods: impl Iterator<Item = impl AsRef<str>>) -> String {
    let mut names: Vec<String> = Vec::new();
    for method in methods.take(4) {
        let m = method.as_ref();
        let shaped = !m.is_empty()
            && m.len() <= 64
            && m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'_');
        names.push(if shaped {
            m.to_string()
        } else {
            "other".to_string()
        });
    }
    names.join(",")
}

/// Records the session's keyed handle (the broker's `session_handle`, never the session id)
/// on the current `mcp.request` span.
pub(crate) fn record_session_handle(handle: &str) {
    if enabled() && !handle.is_empty() {
        tracing::Span::current().record("mcp.session.handle", handle);
    }
}

/// The `mcp.tool` span of one tool call, child of its request's span (found in the request
/// parts rmcp hands the handler). `tool` is a route name or `unknown`; `bucket` is recorded
/// only when it is a valid bucket name.
pub(crate) fn tool_span(
    parts: Option<&http::request::Parts>,
    tool: &str,
    bucket: Option<&str>,
) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let bucket = bucket.filter(|b| crate::s3::validate_bucket(b).is_ok());
    let span = tracing::info_span!(
        "mcp.tool",
        otel.name = format!("tools/call {tool}"),
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        mcp.method.name = "tools/call",
        gen_ai.tool.name = tool,
        aws.s3.bucket = bucket,
    );
    if let Some(RequestTrace(parent)) = parts.and_then(|p| p.extensions.get::<RequestTrace>()) {
        let _ = span.set_parent(parent.clone());
    }
    span
}

/// Marks a tool span failed and says how (the outcome label of the tool metric: an error code
/// such as `AccessDenied`, never the message).
pub(crate) fn record_tool_failure(span: &tracing::Span, outcome: &str) {
    if enabled() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", outcome);
    }
}

/// The client span of one broker RPC; its context is what [`inject`] sends.
pub(crate) fn broker_call_span(method: &'static str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "broker.call",
        otel.name = format!("credbroker.v1.CredentialBroker/{method}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = "credbroker.v1.CredentialBroker",
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    )
}

/// Records a broker RPC's outcome on its span.
pub(crate) fn record_broker_status(span: &tracing::Span, code: tonic::Code) {
    if !enabled() {
        return;
    }
    span.record("rpc.grpc.status_code", code as i32);
    if matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Internal
            | tonic::Code::Unknown
            | tonic::Code::FailedPrecondition
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

/// Tonic interceptor of the broker client: puts the current span's context in the request's
/// metadata as W3C `traceparent` / `tracestate` (nothing when tracing is off).
pub(crate) fn inject(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if enabled() {
        let context = tracing::Span::current().context();
        TraceContextPropagator::new()
            .inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
    }
    Ok(request)
}

/// Writes propagation fields into gRPC metadata (ASCII keys and values only).
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_method_shaped_names_are_recorded() {
        assert_eq!(methods_label(["tools/call"].iter()), "tools/call");
        assert_eq!(
            methods_label(["notifications/initialized", "ping"].iter()),
            "notifications/initialized,ping"
        );
        assert_eq!(
            methods_label(["eyJhbGciOiJIUzI1NiJ9.e30.sig"].iter()),
            "other"
        );
        assert_eq!(methods_label(["a b", ""].iter()), "other,other");
        assert_eq!(
            methods_label(std::iter::repeat_n("ping", 9))
                .split(',')
                .count(),
            4
        );
        assert_eq!(methods_label(std::iter::empty::<&str>()), "");
    }

    #[test]
    fn context_goes_into_grpc_metadata_as_traceparent() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let context = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        let mut metadata = tonic::metadata::MetadataMap::new();
        TraceContextPropagator::new()
            .inject_context(&context, &mut MetadataInjector(&mut metadata));
        assert_eq!(
            metadata.get("traceparent").unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }
}
