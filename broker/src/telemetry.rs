//! OpenTelemetry traces: the broker's spans, exported with OTLP when the standard `OTEL_*`
//! variables ask for it, and nothing at all when they do not.
//!
//! * **Off unless an endpoint is set.** Without `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` there is no exporter, no OpenTelemetry layer, and [`span!`]
//!   makes no span (one atomic read), so tracing costs nothing (BENCHMARKS.md, "Tracing off").
//! * **Standard variables.** `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`grpc` or `http/protobuf`;
//!   anything else stops the broker at start naming the variable), `OTEL_SERVICE_NAME`,
//!   `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (checked here too: the SDK would fall back
//!   silently on a typo), `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` (`otlp` or `none`); headers,
//!   timeouts and batching (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`) are read by the SDK.
//! * **Context in from gRPC metadata.** [`grpc_span`] (tonic's `trace_fn`) reads W3C
//!   `traceparent` / `tracestate` on every RPC, so the broker's spans join the adapter's trace.
//! * **Only the broker's own spans are exported**, never log events: third-party spans and log
//!   lines stay out of the payload. No span carries a token, a secret, a session token or a raw
//!   session id (sessions appear as their keyed handle); `tests/tests/tracing.rs` checks the
//!   exported bytes.
//! * **Flushed at shutdown.** [`shutdown`] exports the spans still queued after SIGTERM drained
//!   the server.

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
const SERVICE_NAME: &str = "credential-broker";

/// Target prefix of the spans exported (the broker's own).
const OWN_TARGET: &str = "credential_broker";

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
pub(crate) use span;

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

/// A tracing setting that cannot be used; the broker does not start.
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
/// It takes only the broker's own spans, never events (log lines) or other crates' spans.
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
                metadata.is_span() && metadata.target().starts_with(OWN_TARGET)
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
