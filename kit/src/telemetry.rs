//! OpenTelemetry traces, as both binaries export them: OTLP when the standard `OTEL_*`
//! variables ask for it, and nothing at all when they do not. Each binary keeps only its own
//! spans (the broker's RPC spans, the adapter's request, tool and broker-call spans) and says
//! which targets are exported ([`layer`]) and its default service name ([`install`]).
//!
//! * **Off unless an endpoint is set.** Without `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` there is no provider, no exporter and no layer, and
//!   [`enabled`] (one atomic read) is false, so a binary's spans cost nothing
//!   (BENCHMARKS.md, "Tracing off").
//! * **Standard variables.** `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`grpc` or `http/protobuf`;
//!   anything else stops the binary at start naming the variable), `OTEL_SERVICE_NAME`,
//!   `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (checked here: the SDK would fall back
//!   silently on a typo), `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` (`otlp` or `none`); headers,
//!   timeouts and batching (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`) are read by the SDK.
//! * **Spans only, never log events**, and only the targets the binary names: third-party spans
//!   and log lines stay out of the payload (`tests/tests/tracing.rs` checks the exported bytes).
//! * **Flushed at shutdown** ([`shutdown`]), after the server drained.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;

use crate::logging::BoxedLayer;

/// How long shutdown waits for the last spans to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The provider, once [`install`] built one (one per process: each binary is one service).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

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
    /// From the environment, else the binary's default name; `None`: the SDK reads
    /// `service.name` from `OTEL_RESOURCE_ATTRIBUTES`.
    pub service_name: Option<String>,
}

/// A tracing setting that cannot be used; the binary does not start.
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

/// Reads the settings from `env` (the process environment in [`install`]); `default_service`
/// is the service name when neither `OTEL_SERVICE_NAME` nor `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` gives one. `Ok(None)`: tracing is off (no endpoint,
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
pub fn settings(
    default_service: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Settings>, TelemetryError> {
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
        None => Some(default_service.to_string()),
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
/// provider (`default_service`: the binary's name, see [`settings`]). Call once, inside the tokio
/// runtime, before the log setup (which adds [`layer`]). `Ok(false)`: tracing is off.
pub fn install(default_service: &str) -> Result<bool, TelemetryError> {
    let Some(settings) = settings(default_service, |name| std::env::var(name).ok())? else {
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
/// It takes only spans, never events (log lines), and only those whose target starts with one of
/// `targets` (the binary's own crate, say, never a library whose spans carry a session id);
/// `tracer` names the instrumentation scope.
pub fn layer(tracer: &'static str, targets: &'static [&'static str]) -> Option<BoxedLayer> {
    let tracer = PROVIDER.get()?.tracer(tracer);
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_filter(filter_fn(move |metadata| {
                metadata.is_span() && targets.iter().any(|t| metadata.target().starts_with(t))
            }))
            .boxed(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const DEFAULT: &str = "the-binary";

    fn read(vars: &[(&str, &str)]) -> Result<Option<Settings>, TelemetryError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings(DEFAULT, move |name| vars.get(name).cloned())
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
        assert_eq!(name(&[endpoint]).as_deref(), Some(DEFAULT));
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
    fn tracing_off_means_no_layer() {
        // No test here installs a provider: without one there is nothing to add to the logs.
        assert!(!enabled());
        assert!(layer("t", &["credbroker_kit"]).is_none());
    }
}
