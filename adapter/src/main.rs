//! `mcp-adapter`: wiring only. Parse the settings, set up logs, serve until SIGTERM or Ctrl-C;
//! or, with `healthcheck`, probe a running adapter's `/healthz` and exit 0 or 1.

use axum::serve::Listener;
use axum::serve::ListenerExt;
use std::{process::ExitCode, time::Duration};

use mcp_adapter::{
    config::{Command, Config},
    healthcheck, logging, metrics, server, telemetry,
};
use tokio_util::sync::CancellationToken;

/// How long open connections (SSE streams, tool calls in flight) get to finish after a signal.
/// Time requests in flight get after SIGTERM before sessions are closed.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(3);
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
    if let Some(Command::Healthcheck(args)) = &config.command {
        return match healthcheck::check(args.addr, args.timeout).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("mcp-adapter healthcheck: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(error) = telemetry::install() {
        eprintln!("mcp-adapter: configuration error: {error}");
        return ExitCode::from(2);
    }
    logging::init(config.log_format);
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("mcp-adapter stopped: {error:#}");
            ExitCode::FAILURE
        }
    };
    telemetry::shutdown().await;
    code
}

async fn run(mut config: Config) -> anyhow::Result<()> {
    let broker_tls = config.broker_tls().map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(listen) = config.metrics_listen {
        metrics::install(listen, config.metrics_addr_file.as_deref()).await?;
    }
    if config.authorization_servers.is_empty() {
        tracing::warn!(
            "ADAPTER_AUTHORIZATION_SERVERS is empty: clients cannot discover where to get a token"
        );
    }
    // Registered now, before serving: a signal during start-up is not lost.
    let signal = credbroker_kit::signals::shutdown_signal()?;
    let shutdown = CancellationToken::new();
    // TCP_NODELAY on every accepted socket: a tool answer is an event stream written in pieces,
    // and with Nagle's algorithm on, the last small write waits for the client's delayed ACK —
    // about 25 ms per call on a keep-alive connection (BENCHMARKS.md, "Adapter end to end").
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("ADAPTER_LISTEN: cannot listen on {}: {e}", config.listen))?
        .tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::warn!(%error, "cannot set TCP_NODELAY on an accepted connection");
            }
        });
    let local = listener.local_addr()?;
    // Port 0: the default resource URL (`http://<listen>/mcp`) names the port actually bound.
    config.listen = local;
    let app = server::app(&config, broker_tls, shutdown.clone())?;
    if let Some(path) = &config.listen_addr_file {
        credbroker_kit::listen::write_addr_file(path, local).map_err(|e| {
            anyhow::anyhow!(
                "ADAPTER_LISTEN_ADDR_FILE: cannot write {}: {e}",
                path.display()
            )
        })?;
    }
    tracing::info!(
        listen = %local,
        broker = %config.broker_url,
        broker_mtls = config.broker_client_cert.is_some(),
        resource = %config.resource(),
        require_auth = ?config.require_auth,
        s3_endpoint = config.s3_endpoint.as_ref().map(|u| u.as_str()).unwrap_or("AWS"),
        region = %config.region,
        "mcp-adapter listening"
    );

    // Order matters: stop accepting connections first and let requests in flight finish; only
    // then close rmcp's sessions (which also ends open event streams, so the server can finish).
    // Cancelling the sessions at once would answer every in-flight tool call "session not found".
    let signalled = shutdown.clone();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        signal.await;
        tracing::info!("shutting down: no new connections; draining requests in flight");
        let _ = stopping_tx.send(());
    });
    let sessions_closer = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(IN_FLIGHT_GRACE).await;
            tracing::info!("closing MCP sessions and event streams");
            signalled.cancel();
        }
    };
    tokio::spawn(sessions_closer);
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
