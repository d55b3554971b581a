//! The floor: a bare tonic unary service on the broker's own contract that answers every
//! `GetCredentials` with one fixed message.
//!
//! It is what a `GetCredentials` costs when the broker does no work at all — the same proto, the
//! same tonic and hyper, the same TCP settings (`TCP_NODELAY`, as the broker sets), the same
//! response bytes (the benchmark captures a real broker answer and hands it to the floor), and a
//! separate process with tokio's default multi-thread runtime like the broker. Measured in the same
//! run, with the same client and concurrency, broker ÷ floor is the broker's own efficiency,
//! whatever the machine and its load.

use std::net::SocketAddr;
use std::path::Path;

use credbroker_proto::v1::credential_broker_server::{CredentialBroker, CredentialBrokerServer};
use credbroker_proto::v1::{
    AwsCredentials, BindSessionRequest, ExchangeTokenRequest, ExchangeTokenResponse,
    GetCredentialsRequest, GetCredentialsResponse, SessionInfo,
};
use prost::Message;
use tonic::{Request, Response, Status};

/// The service: one constant answer.
#[derive(Debug, Clone)]
pub struct Floor {
    response: GetCredentialsResponse,
}

impl Floor {
    pub fn new(response: GetCredentialsResponse) -> Floor {
        Floor { response }
    }
}

#[tonic::async_trait]
impl CredentialBroker for Floor {
    async fn get_credentials(
        &self,
        _request: Request<GetCredentialsRequest>,
    ) -> Result<Response<GetCredentialsResponse>, Status> {
        Ok(Response::new(self.response.clone()))
    }

    async fn bind_session(
        &self,
        _request: Request<BindSessionRequest>,
    ) -> Result<Response<SessionInfo>, Status> {
        Err(Status::unimplemented(
            "the floor only answers GetCredentials",
        ))
    }

    async fn exchange_token(
        &self,
        _request: Request<ExchangeTokenRequest>,
    ) -> Result<Response<ExchangeTokenResponse>, Status> {
        Err(Status::unimplemented(
            "the floor only answers GetCredentials",
        ))
    }

    async fn mcp_session_without_token(
        &self,
        _request: Request<credbroker_proto::v1::McpSessionWithoutTokenRequest>,
    ) -> Result<Response<credbroker_proto::v1::McpSession>, Status> {
        Err(Status::unimplemented(
            "the floor only answers GetCredentials",
        ))
    }
}

/// A response shaped like the broker's (STS-sized secret and session token, a full
/// `SessionInfo`), for when no real broker answer is at hand (the smoke test).
pub fn synthetic_response() -> GetCredentialsResponse {
    let ts = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
    GetCredentialsResponse {
        credentials: Some(AwsCredentials {
            access_key_id: "ASIAEXAMPLEFLOOR0001".into(),
            secret_access_key: "x".repeat(40),
            session_token: "t".repeat(356),
            expiration: Some(ts(1_900_000_000)),
        }),
        session: Some(SessionInfo {
            session_handle: "0123456789abcdef0123456789abcdef".into(),
            subject: "user-0001@example.com".into(),
            issuer: "https://auth.example.com/".into(),
            role_arn: "arn:aws:iam::123456789012:role/demo-read-write".into(),
            assumed_role_arn:
                "arn:aws:sts::123456789012:assumed-role/demo-read-write/user-0001-abcdef".into(),
            source_identity: "user-0001@example.com".into(),
            token_expires_at: Some(ts(1_900_000_000)),
            credentials_expire_at: Some(ts(1_900_000_000)),
            created_at: Some(ts(1_800_000_000)),
            updated_at: Some(ts(1_800_000_000)),
            buckets: Vec::new(),
            tags: Default::default(),
            role_session_name: "user-0001-abcdef".into(),
            rebind_count: 0,
        }),
        rebound: false,
        mcp_session: None,
    }
}

/// The response stored in `path` (prost-encoded), or the synthetic one.
pub fn load_response(path: Option<&Path>) -> anyhow::Result<GetCredentialsResponse> {
    match path {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("read floor response {}: {e}", path.display()))?;
            Ok(GetCredentialsResponse::decode(bytes.as_slice())?)
        }
        None => Ok(synthetic_response()),
    }
}

/// Serves the floor on `listener` until the future is dropped or the process ends, with the
/// broker's TCP settings.
pub async fn serve(
    listener: tokio::net::TcpListener,
    response: GetCredentialsResponse,
) -> anyhow::Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(CredentialBrokerServer::new(Floor::new(response)))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// The `floor-server` subcommand: binds `listen`, says so on stdout, serves forever.
pub fn main(listen: SocketAddr, response_file: Option<&Path>) -> anyhow::Result<()> {
    let response = load_response(response_file)?;
    // Tokio's default multi-thread runtime, as the broker builds it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("floor listening on {}", listener.local_addr()?);
        serve(listener, response).await
    })
}
