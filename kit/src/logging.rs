//! Log setup: text or JSON lines, filtered by `RUST_LOG` (default `info`), composed in ONE
//! function, [`init`], so another layer (an OpenTelemetry exporter, say) is one more element of
//! [`LogSetup::layers`] rather than a second subscriber.
//!
//! What differs between the binaries is data, not code: where lines go (the adapter hands a
//! writer that redacts session ids), whether text has colours, whether JSON lines carry span
//! fields, and which noisy targets (rmcp) are held to warnings without their spans.

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, filter::filter_fn};

/// Log line format (`BROKER_LOG_FORMAT`, `ADAPTER_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A layer over the plain registry, as [`LogSetup::layers`] takes them.
pub type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync + 'static>;

/// How one binary logs.
pub struct LogSetup<W> {
    pub format: LogFormat,
    /// Where formatted lines go.
    pub writer: W,
    /// Colours in text lines (only ever when the output is a terminal).
    pub ansi: bool,
    /// JSON lines carry the current span and the span list.
    pub json_spans: bool,
    /// Targets (prefixes) of which only WARN and ERROR events are logged, never spans: a library
    /// whose INFO lines or span fields could carry a secret.
    pub warn_only_targets: &'static [&'static str],
    /// More layers beside the formatter (e.g. an OpenTelemetry layer); each sees every span and
    /// event, not filtered by `RUST_LOG`.
    pub layers: Vec<BoxedLayer>,
}

/// Installs the global subscriber: the extra layers, then the formatter filtered by
/// `warn_only_targets` and `RUST_LOG`. Returns an error only if a subscriber is already set.
pub fn init<W>(setup: LogSetup<W>) -> Result<(), tracing_subscriber::util::TryInitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let quiet = setup.warn_only_targets;
    let guard = filter_fn(move |metadata| {
        if quiet.iter().any(|t| metadata.target().starts_with(t)) {
            metadata.is_event() && *metadata.level() <= Level::WARN
        } else {
            true
        }
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(setup.writer);
    let fmt: BoxedLayer = match setup.format {
        LogFormat::Text => fmt.with_ansi(setup.ansi).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(setup.json_spans)
            .with_span_list(setup.json_spans)
            .boxed(),
    };
    let mut layers = setup.layers;
    layers.push(fmt.with_filter(guard).with_filter(env_filter).boxed());
    tracing_subscriber::registry().with(layers).try_init()
}
