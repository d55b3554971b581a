//! What several benchmarks start: brokers configured as in production (logs at `info`, the
//! default), gRPC channels, the floor process, cache keys.

use std::path::Path;
use std::time::{Duration, Instant};

use credbroker_proto::v1::GetCredentialsRequest;
use credbroker_proto::v1::credential_broker_client::CredentialBrokerClient;
use e2e::broker::BrokerBuilder;
use e2e::moto::MotoSeed;
use e2e::process::{ChildProcess, Scratch};
use tonic::transport::{Channel, Endpoint};

/// The harness's standard broker (HS256, issuer/audience checks, `demo-*` allowlist, STS at
/// `sts_endpoint`) with production logging: the harness turns on debug logs for the broker, which
/// would log every warm request; the broker's own default is `info`.
pub fn broker(seed: &MotoSeed, sts_endpoint: &str, secret: &str) -> BrokerBuilder {
    e2e::stack::standard_broker(seed, sts_endpoint, secret).env("RUST_LOG", "info")
}

/// A base64 32-byte `BROKER_CACHE_KEY`.
pub fn cache_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `n` connected HTTP/2 channels to `endpoint`.
pub async fn channels(endpoint: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            Endpoint::from_shared(endpoint.to_string())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(30))
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(out)
}

/// The floor server as its own process (`credbroker-bench floor-server`), answering with the
/// prost-encoded response in `response_file`; returns once it answers a `GetCredentials`.
pub async fn start_floor(
    scratch: &Scratch,
    response_file: &Path,
) -> anyhow::Result<(ChildProcess, String)> {
    let port = e2e::ports::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("floor-server")
        .args(["--listen", &listen])
        .arg("--response-file")
        .arg(response_file);
    let process = ChildProcess::spawn("floor", &mut cmd, &scratch.join("floor.log"));
    let endpoint = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut ch) = channels(&endpoint, 1).await {
            let mut client = CredentialBrokerClient::new(ch.remove(0));
            if client
                .get_credentials(GetCredentialsRequest::default())
                .await
                .is_ok()
            {
                return Ok((process, endpoint));
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("floor server did not answer: {}", process.log_tail(20));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh MCP-style session id.
pub fn session_id() -> String {
    e2e::stack::new_session_id()
}
