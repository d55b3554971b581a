//! The shutdown signal both servers drain on.
//!
//! The handlers are registered when [`shutdown_signal`] is called, before the server starts
//! serving, so a SIGTERM that arrives during start-up (an ECS deployment cancelled early) is
//! caught rather than left to the default action, which kills the process without a drain.

use std::future::Future;

/// Registers SIGTERM (ECS stop) and SIGINT (Ctrl-C) now; the future completes on the first one
/// and logs which it was.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT (Ctrl-C) received; shutting down"),
        }
    })
}

/// Ctrl-C only where there are no Unix signals.
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received; shutting down");
    })
}
