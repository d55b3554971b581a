//! `mcp-adapter`: wiring only. Parse the settings, set up logs, serve until SIGTERM or Ctrl-C.

use std::{process::ExitCode, time::Duration};

use mcp_adapter::{config::Config, logging, server};
use tokio_util::sync::CancellationToken;

/// How long open connections (SSE streams, tool calls in flight) get to finish after a signal.
const DRAIN: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load_from(std::env::args_os()) {
        Ok(config) => config,
        Err(Ok(help)) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
        Err(Err(error)) => {
            eprintln!("mcp-adapter: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("mcp-adapter stopped: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let broker_ca = match &config.broker_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "ADAPTER_BROKER_CA_FILE: cannot read {}: {e}",
                path.display()
            )
        })?),
        None => None,
    };
    if config.authorization_servers.is_empty() {
        tracing::warn!(
            "ADAPTER_AUTHORIZATION_SERVERS is empty: clients cannot discover where to get a token"
        );
    }
    let shutdown = CancellationToken::new();
    let app = server::app(&config, broker_ca, shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("ADAPTER_LISTEN: cannot listen on {}: {e}", config.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        broker = %config.broker_url,
        resource = %config.resource(),
        require_auth = ?config.require_auth,
        s3_endpoint = config.s3_endpoint.as_ref().map(|u| u.as_str()).unwrap_or("AWS"),
        region = %config.region,
        "mcp-adapter listening"
    );

    let signalled = shutdown.clone();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: closing MCP sessions and draining connections");
        signalled.cancel();
    });
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        result = serve => result?,
        () = drained => tracing::warn!("connections still open after {DRAIN:?}; exiting"),
    }
    tracing::info!("mcp-adapter stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::error!("cannot watch SIGTERM: {error}");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
