//! `round-robin-proxy --listen 127.0.0.1:8000 --backend 127.0.0.1:8001 --backend …`: the test
//! harness's load balancer without stickiness (each request to the next replica), as a process
//! for `deploy/local/up` with `LOCAL_ADAPTERS` > 1. Not a production balancer: plain HTTP, no
//! health checks beyond taking a replica that refuses connections out of rotation for a while.

use std::net::SocketAddr;
use std::process::ExitCode;

use e2e::round_robin::Balancer;

fn usage() -> ExitCode {
    eprintln!("usage: round-robin-proxy --listen ADDR --backend ADDR [--backend ADDR ...]");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut listen: Option<SocketAddr> = None;
    let mut backends: Vec<SocketAddr> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse::<SocketAddr>().ok());
        match (arg.as_str(), value) {
            ("--listen", Some(addr)) => listen = Some(addr),
            ("--backend", Some(addr)) => backends.push(addr),
            _ => return usage(),
        }
    }
    let (Some(listen), false) = (listen, backends.is_empty()) else {
        return usage();
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("round-robin-proxy: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("round-robin-proxy: {listen} -> {backends:?} (no stickiness)");
    let router = Balancer::new(backends).router();
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    tokio::select! {
        result = axum::serve(listener, router) => {
            if let Err(error) = result {
                eprintln!("round-robin-proxy: {error}");
                return ExitCode::FAILURE;
            }
        }
        () = shutdown => {}
    }
    ExitCode::SUCCESS
}
