//! `adapter-counted`: the MCP adapter (`mcp_adapter::server::app`, configured from the same
//! `ADAPTER_*` variables, production logging) in a process whose global allocator counts every
//! allocation, for the allocations-per-call figures of `scripts/bench adapter` (issue 16).
//!
//! Prints `listening on <addr>` (the MCP listener) and `counters on <addr>`: `GET /` there
//! answers the process's allocation counters as JSON. The driver reads them before and after a
//! run of calls; the difference over the calls is what one call allocates in the adapter (the
//! counters' own request is a handful of allocations, negligible over hundreds of calls).
//! The counts do not depend on the allocator behind the counter (the adapter's own binary may
//! use another one): they are the requests the code makes.

use axum::serve::ListenerExt;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;

/// The counting allocator: the system allocator behind `stats_alloc`'s atomic counters.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = mcp_adapter::config::Config::load_from(std::env::args_os())
        .map_err(|e| anyhow::anyhow!("adapter-counted: configuration: {e:?}"))?;
    mcp_adapter::logging::init(config.log_format);
    let broker_tls = config.broker_tls().map_err(|e| anyhow::anyhow!("{e}"))?;
    // As the adapter binary does: TCP_NODELAY on every accepted socket.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    let local = axum::serve::Listener::local_addr(&listener)?;
    config.listen = local;
    let app = mcp_adapter::server::app(
        &config,
        broker_tls,
        tokio_util::sync::CancellationToken::new(),
    )?;
    let counters = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let counters_addr = counters.local_addr()?;
    let counters_app = axum::Router::new().route(
        "/",
        axum::routing::get(|| {
            let s = GLOBAL.stats();
            async move {
                axum::Json(serde_json::json!({
                    "allocations": s.allocations,
                    "deallocations": s.deallocations,
                    "reallocations": s.reallocations,
                    "bytes_allocated": s.bytes_allocated,
                    "bytes_deallocated": s.bytes_deallocated,
                    "bytes_reallocated": s.bytes_reallocated,
                }))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(counters, counters_app).await });
    println!("listening on {local}");
    println!("counters on {counters_addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
