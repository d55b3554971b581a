//! Installing the Prometheus exporter (text format at `/metrics` on its own listener). Without it
//! the `metrics` macros are no-ops, so a binary that is not asked for metrics pays nothing.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

use crate::config::ConfigError;

/// Starts the exporter's HTTP listener on `listen` with the histogram `buckets` (seconds);
/// `variable` names the setting in the error (`BROKER_METRICS_LISTEN`, `ADAPTER_METRICS_LISTEN`).
pub fn install(variable: &str, listen: SocketAddr, buckets: &[f64]) -> Result<(), ConfigError> {
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets(buckets)
        .map_err(|e| ConfigError::new(variable, format!("unusable histogram buckets: {e}")))?
        .install()
        .map_err(|e| {
            ConfigError::new(
                variable,
                format!("cannot start the metrics listener on {listen}: {e}"),
            )
        })?;
    tracing::info!(%listen, "metrics at /metrics");
    Ok(())
}
