//! The Prometheus exporter: a recorder for the `metrics` macros and `GET /metrics` (text format)
//! on a listener of its own, which the binary binds itself, so `127.0.0.1:0` works and the port
//! the kernel picked is logged and, when asked, written to an address file
//! ([`crate::listen::write_addr_file`]) as for the main listener. Without [`serve`] the `metrics`
//! macros are no-ops, so a binary that is not asked for metrics pays nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::ConfigError;

/// How often histograms are drained into their buckets between scrapes (the interval the
/// exporter's own listener used).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Where and how one binary exports its metrics.
#[derive(Debug, Clone, Copy)]
pub struct Exporter<'a> {
    /// The listen setting, named in errors (`BROKER_METRICS_LISTEN`, `ADAPTER_METRICS_LISTEN`).
    pub listen_variable: &'static str,
    /// The address to bind; port 0 takes one the kernel picks.
    pub listen: SocketAddr,
    /// Histogram buckets (seconds).
    pub buckets: &'a [f64],
    /// The address-file setting (`BROKER_METRICS_ADDR_FILE`, `ADAPTER_METRICS_ADDR_FILE`) and its
    /// path, when set: the bound address is written there once listening.
    pub addr_file: Option<(&'static str, &'a Path)>,
}

/// Binds the listener, installs the global recorder and serves `GET /metrics` (other paths:
/// 404) on the current tokio runtime until the process exits. Returns the bound address.
pub async fn serve(exporter: Exporter<'_>) -> Result<SocketAddr, ConfigError> {
    let Exporter {
        listen_variable,
        listen,
        buckets,
        addr_file,
    } = exporter;
    let builder = PrometheusBuilder::new().set_buckets(buckets).map_err(|e| {
        ConfigError::new(listen_variable, format!("unusable histogram buckets: {e}"))
    })?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        ConfigError::new(
            listen_variable,
            format!("cannot start the metrics listener on {listen}: {e}"),
        )
    })?;
    let local = listener.local_addr().map_err(|e| {
        ConfigError::new(
            listen_variable,
            format!("the metrics listener on {listen} has no address: {e}"),
        )
    })?;
    let handle = builder.install_recorder().map_err(|e| {
        ConfigError::new(
            listen_variable,
            format!("cannot install the metrics recorder: {e}"),
        )
    })?;
    if let Some((variable, path)) = addr_file {
        crate::listen::write_addr_file(path, local).map_err(|e| {
            ConfigError::new(variable, format!("cannot write {}: {e}", path.display()))
        })?;
    }
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            ticks.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .with_state(handle);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics listener stopped");
        }
    });
    tracing::info!(listen = %local, "metrics at /metrics");
    Ok(local)
}

/// `GET /metrics`: the current values in the text format (rendered off the async workers, as
/// the exporter's own listener did: a large registry takes a while to format).
async fn render(
    axum::extract::State(handle): axum::extract::State<PrometheusHandle>,
) -> axum::response::Response {
    match tokio::task::spawn_blocking(move || handle.render()).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the recorder is global, so a second install in this process would fail.
    #[tokio::test]
    async fn port_0_is_served_reported_and_refused_when_taken() {
        let dir = std::env::temp_dir().join(format!("kit-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("metrics.addr");
        let local = serve(Exporter {
            listen_variable: "X_METRICS_LISTEN",
            listen: "127.0.0.1:0".parse().unwrap(),
            buckets: &[0.1, 1.0],
            addr_file: Some(("X_METRICS_ADDR_FILE", &file)),
        })
        .await
        .unwrap();
        assert_ne!(local.port(), 0);
        assert_eq!(crate::listen::read_addr_file(&file), Some(local));
        metrics::counter!("kit_test_total").increment(2);

        let (status, body) = get(local, "/metrics").await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert!(body.contains("kit_test_total 2"), "{body}");
        let (status, _) = get(local, "/").await;
        assert!(status.starts_with("HTTP/1.1 404"), "{status}");

        // The same address again: the error names the setting and the address.
        let error = serve(Exporter {
            listen_variable: "X_METRICS_LISTEN",
            listen: local,
            buckets: &[0.1, 1.0],
            addr_file: None,
        })
        .await
        .unwrap_err();
        assert_eq!(error.variable, "X_METRICS_LISTEN");
        assert!(error.message.contains(&local.to_string()), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One HTTP/1.1 GET: the status line and the body.
    async fn get(addr: SocketAddr, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        )
    }
}
