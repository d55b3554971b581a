//! OpenTelemetry traces: the adapter's spans, exported with OTLP when the standard `OTEL_*`
//! variables ask for it, and nothing at all when they do not.
//!
//! * **Off unless an endpoint is set.** Without `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` there is no exporter, no OpenTelemetry layer, no middleware
//!   work and [`span!`] makes no span (one atomic read): tracing off costs nothing
//!   (BENCHMARKS.md, "Tracing off").
//! * **Standard variables**, read and checked as in the broker (`OTEL_EXPORTER_OTLP_[TRACES_]
//!   PROTOCOL` = `grpc` | `http/protobuf`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER[_ARG]`,
//!   `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`); a bad value stops the adapter at start.
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

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// The service name when `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`)
/// does not give one.
const SERVICE_NAME: &str = "mcp-adapter";

/// Target prefix of the spans exported: the adapter's own.
const OWN_TARGET: &str = "mcp_adapter";

/// Target prefix of aws-sdk-s3's per-operation spans (`S3.GetObject`, with `rpc.*` attributes
/// only), exported as children of the tool span; the SDK's inner spans are not.
const S3_OPERATION_TARGET: &str = "aws_sdk_s3::operation";

/// How long shutdown waits for the last spans to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The provider, once [`install`] built one.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

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

/// How spans leave the process (`OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (a collector's port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318, `/v1/traces`); the OTLP default.
    HttpProtobuf,
}

/// What the `OTEL_*` variables ask for, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub protocol: Protocol,
    pub sampler: Sampler,
    /// From the environment, else [`SERVICE_NAME`]; `None`: the SDK reads `service.name` from
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub service_name: Option<String>,
}

/// A tracing setting that cannot be used; the adapter does not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    #[error(
        "{variable}={value:?} is not supported: use `grpc` or `http/protobuf` (or leave it unset: http/protobuf)"
    )]
    Protocol {
        variable: &'static str,
        value: String,
    },
    #[error(
        "OTEL_TRACES_SAMPLER={0:?} is not supported: use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )]
    Sampler(String),
    #[error(
        "OTEL_TRACES_SAMPLER_ARG={value:?} is not a ratio from 0 to 1, as OTEL_TRACES_SAMPLER={sampler} needs"
    )]
    SamplerArg { sampler: String, value: String },
    #[error("OTEL_TRACES_EXPORTER={0:?} is not supported: use `otlp` or `none`")]
    Exporter(String),
    #[error("OTEL_EXPORTER_OTLP_*: cannot build the OTLP trace exporter: {0}")]
    Build(String),
}

/// Reads the settings from `env` (the process environment in [`install`]). `Ok(None)`: tracing
/// is off (no endpoint, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
pub fn settings(env: impl Fn(&str) -> Option<String>) -> Result<Option<Settings>, TelemetryError> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => return Err(TelemetryError::Exporter(other.to_string())),
    }
    if var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    let (variable, value) = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(v) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(v)),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            var("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ),
    };
    let protocol = match value.as_deref() {
        None | Some("http/protobuf") => Protocol::HttpProtobuf,
        Some("grpc") => Protocol::Grpc,
        Some(other) => {
            return Err(TelemetryError::Protocol {
                variable,
                value: other.to_string(),
            });
        }
    };
    let sampler = sampler(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG"))?;
    let named_in_attributes =
        var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    let service_name = match var("OTEL_SERVICE_NAME") {
        Some(name) => Some(name),
        None if named_in_attributes => None,
        None => Some(SERVICE_NAME.to_string()),
    };
    Ok(Some(Settings {
        protocol,
        sampler,
        service_name,
    }))
}

/// `OTEL_TRACES_SAMPLER` and its argument; default `parentbased_always_on` (a sampled client
/// trace stays sampled, a trace that starts here is sampled).
fn sampler(name: Option<String>, arg: Option<String>) -> Result<Sampler, TelemetryError> {
    let name = name.unwrap_or_else(|| "parentbased_always_on".into());
    let ratio = || -> Result<f64, TelemetryError> {
        let value = arg.clone().unwrap_or_else(|| "1.0".into());
        value
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| TelemetryError::SamplerArg {
                sampler: name.clone(),
                value,
            })
    };
    Ok(match name.as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?)))
        }
        _ => return Err(TelemetryError::Sampler(name)),
    })
}

/// Reads the `OTEL_*` variables and, when they ask for traces, builds the exporter and the
/// provider. Call once, inside the tokio runtime, before the log setup (which adds [`layer`]).
pub fn install() -> Result<bool, TelemetryError> {
    let Some(settings) = settings(|name| std::env::var(name).ok())? else {
        return Ok(false);
    };
    let provider = provider(&settings)?;
    let _ = PROVIDER.set(provider);
    Ok(true)
}

/// The provider for `settings`: the OTLP exporter (endpoint, headers and timeout from the
/// `OTEL_EXPORTER_OTLP_*` variables, read by the exporter) behind a batch processor on tokio.
pub fn provider(settings: &Settings) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    let exporter = match settings.protocol {
        Protocol::Grpc => SpanExporter::builder().with_tonic().build(),
        Protocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build(),
    }
    .map_err(|e| TelemetryError::Build(e.to_string()))?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let mut resource = opentelemetry_sdk::Resource::builder();
    if let Some(name) = &settings.service_name {
        resource = resource.with_service_name(name.clone());
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(settings.sampler.clone())
        .with_resource(resource.build())
        .build())
}

/// Whether spans are exported (a provider is installed).
#[inline]
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// The OpenTelemetry layer for the log setup: `None` (no layer at all) when tracing is off.
/// It takes only the adapter's own spans and aws-sdk-s3's operation spans, never events (log
/// lines) or other crates' spans (rmcp's carry the session id).
pub fn layer<S>() -> Option<impl Layer<S> + Send + Sync + 'static>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let tracer = PROVIDER.get()?.tracer(SERVICE_NAME);
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_filter(filter_fn(|metadata| {
                metadata.is_span()
                    && (metadata.target().starts_with(OWN_TARGET)
                        || metadata.target().starts_with(S3_OPERATION_TARGET))
            })),
    )
}

/// Exports the spans still queued and stops the exporter (after the server drained), waiting
/// at most [`FLUSH_TIMEOUT`] for the collector.
pub async fn shutdown() {
    let Some(provider) = PROVIDER.get().cloned() else {
        return;
    };
    let flushed = tokio::time::timeout(
        FLUSH_TIMEOUT,
        tokio::task::spawn_blocking(move || provider.shutdown()),
    )
    .await;
    match flushed {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not export the last spans"),
        _ => tracing::warn!(
            timeout = ?FLUSH_TIMEOUT,
            "the OTLP collector did not take the last spans in time"
        ),
    }
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
    span!(
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
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<Option<Settings>, TelemetryError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings(move |name| vars.get(name).cloned())
    }

    #[test]
    fn no_endpoint_means_no_tracing() {
        assert!(read(&[]).unwrap().is_none());
        assert!(
            read(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
                .unwrap()
                .is_none()
        );
        assert!(
            read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])
                .unwrap()
                .is_none()
        );
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
        assert!(read(&on).unwrap().is_some());
        let off = [on[0], ("OTEL_SDK_DISABLED", "true")];
        assert!(read(&off).unwrap().is_none());
        let off = [on[0], ("OTEL_TRACES_EXPORTER", "none")];
        assert!(read(&off).unwrap().is_none());
        let bad = [on[0], ("OTEL_TRACES_EXPORTER", "jaeger")];
        assert!(read(&bad).unwrap_err().to_string().contains("otlp"));
    }

    #[test]
    fn both_protocols_and_nothing_else() {
        let endpoint = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4317",
        );
        let protocol = |vars: &[(&str, &str)]| read(vars).unwrap().unwrap().protocol;
        assert_eq!(protocol(&[endpoint]), Protocol::HttpProtobuf);
        assert_eq!(
            protocol(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            Protocol::Grpc
        );
        assert_eq!(
            protocol(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
            ]),
            Protocol::HttpProtobuf
        );
        let error = read(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\"")
                && message.contains("`grpc`")
                && message.contains("`http/protobuf`"),
            "{message}"
        );
        let error = read(&[endpoint, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp")]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        );
    }

    #[test]
    fn samplers_are_checked() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let sampler = |vars: &[(&str, &str)]| read(vars).map(|s| s.unwrap().sampler);
        let shown = |s: Sampler| format!("{s:?}");
        assert_eq!(
            shown(sampler(&[endpoint]).unwrap()),
            shown(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        );
        assert_eq!(
            shown(
                sampler(&[
                    endpoint,
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "0.25")
                ])
                .unwrap()
            ),
            shown(Sampler::TraceIdRatioBased(0.25))
        );
        assert!(matches!(
            sampler(&[endpoint, ("OTEL_TRACES_SAMPLER", "always_sometimes")]),
            Err(TelemetryError::Sampler(_))
        ));
        let error = sampler(&[
            endpoint,
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ])
        .unwrap_err();
        assert!(error.to_string().contains("OTEL_TRACES_SAMPLER_ARG=\"2\""));
    }

    #[test]
    fn the_service_name_defaults_to_the_binary() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let name = |vars: &[(&str, &str)]| read(vars).unwrap().unwrap().service_name;
        assert_eq!(name(&[endpoint]).as_deref(), Some(SERVICE_NAME));
        assert_eq!(
            name(&[endpoint, ("OTEL_SERVICE_NAME", "broker-eu")]).as_deref(),
            Some("broker-eu")
        );
        assert_eq!(
            name(&[endpoint, ("OTEL_RESOURCE_ATTRIBUTES", "service.name=b,x=y")]),
            None
        );
    }

    // Multi-threaded: the batch processor runs on the runtime, and shutting the provider down
    // (also on drop) blocks until it stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exporters_are_built_for_both_protocols() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let provider = provider(&Settings {
                protocol,
                sampler: Sampler::AlwaysOn,
                service_name: Some("t".into()),
            })
            .unwrap();
            tokio::task::spawn_blocking(move || provider.shutdown())
                .await
                .unwrap()
                .unwrap();
        }
    }

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
