//! The gRPC client of the credential broker: the only source of AWS credentials in the adapter.
//!
//! The channel connects lazily, so the adapter starts (and answers `/healthz`, `initialize`) while
//! the broker is still coming up; a tool call during that time gets an error naming the broker.
//! Every call has one deadline that covers its retry: a client waiting on a tool call never waits
//! longer than `ADAPTER_BROKER_TIMEOUT` for the broker. Only UNAVAILABLE is retried (once): it is
//! the one code that says the request did not reach a broker that could answer it; everything
//! else is the broker's answer and is passed on as it is.

use std::{
    fmt,
    time::{Duration, Instant, SystemTime},
};

use aws_credential_types::Credentials;
use credbroker_proto::v1::{
    AwsCredentials, ExchangeTokenRequest, GetCredentialsRequest, McpSession, McpSessionUse,
    McpSessionWithoutTokenRequest, credential_broker_client::CredentialBrokerClient,
    mcp_session_use::Action,
};
use tonic::{
    Code, Status,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tracing::Instrument;
use url::Url;

use crate::sessions::Owner;

/// Pause before the single retry of an UNAVAILABLE call.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The generated client, behind the interceptor that sends the trace context (`telemetry`).
type Client = CredentialBrokerClient<InterceptedService<Channel, Interceptor>>;
type Interceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, Status>;

/// Client of the `credbroker.v1.CredentialBroker` service.
#[derive(Clone)]
pub(crate) struct BrokerClient {
    client: Client,
    deadline: Duration,
    /// For error messages: where the broker was expected (no secrets in a gRPC URL).
    address: String,
}

/// What the broker handed out for one request.
#[derive(Clone)]
pub(crate) struct Issued {
    /// Redacts its secret and session token in `Debug`.
    pub(crate) credentials: Credentials,
    pub(crate) expires_at: SystemTime,
    pub(crate) role_arn: String,
    pub(crate) assumed_role_arn: String,
    /// Keyed hash of the session id at the broker (safe to log); empty without a session.
    pub(crate) session_handle: String,
    /// True when this call bound the session to the token or re-bound it to a new token.
    pub(crate) rebound: bool,
    /// Issuer and subject of the token, as the broker validated them: a session's owner.
    pub(crate) owner: Owner,
    /// The token's `buckets` claim: buckets the credentials are limited to (empty: the role's
    /// own rights). `resources/list` lists these.
    pub(crate) buckets: Vec<String>,
    /// The session's shared record, when the call named a shared MCP session.
    pub(crate) shared: Option<Shared>,
}

/// What the broker keeps of an MCP session for every adapter replica (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shared {
    /// The client's `initialize` params, as JSON: what a replica replays to restore the session.
    pub(crate) initialize_params_json: String,
    /// A token bound the session: token-less requests on it are refused.
    pub(crate) owned: bool,
}

impl From<McpSession> for Shared {
    fn from(s: McpSession) -> Self {
        Self {
            initialize_params_json: s.initialize_params_json,
            owned: s.owned,
        }
    }
}

/// What a request does with its shared MCP session (see `credbroker.v1.McpSessionUse`).
#[derive(Debug, Clone)]
pub(crate) enum SharedUse {
    /// `initialize` just created it, with these params (JSON).
    Open(String),
    /// Any other request inside it; with the `initialize` params (JSON) when this replica holds
    /// the session, so that the broker can write again a record its store lost.
    Continue(Option<String>),
    /// DELETE: ends it for every replica.
    End,
}

impl SharedUse {
    fn message(&self, idle: Duration) -> McpSessionUse {
        let (action, params) = match self {
            SharedUse::Open(params) => (Action::Open, params.clone()),
            SharedUse::Continue(params) => (Action::Continue, params.clone().unwrap_or_default()),
            SharedUse::End => (Action::End, String::new()),
        };
        McpSessionUse {
            action: action as i32,
            initialize_params_json: params,
            idle_ms: idle.as_millis() as u64,
        }
    }
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("access_key_id", &self.credentials.access_key_id())
            .field("expires_at", &self.expires_at)
            .field("role_arn", &self.role_arn)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .field("session_handle", &self.session_handle)
            .field("rebound", &self.rebound)
            .field("subject", &self.owner.subject)
            .finish()
    }
}

/// The broker's refusal or failure, by gRPC code. Messages come from the broker, which puts no
/// secret in them, or from the adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BrokerClientError {
    #[error("token refused by the credential broker: {0}")]
    Unauthenticated(String),
    #[error("not permitted by the credential broker: {0}")]
    PermissionDenied(String),
    #[error("session unknown or revoked at the credential broker: {0}")]
    NotFound(String),
    #[error("credential broker rejected an argument: {0}")]
    InvalidArgument(String),
    #[error("credential broker at {address} unavailable: {reason}")]
    Unavailable { address: String, reason: String },
    #[error("credential broker at {address} failed: {reason}")]
    Failed { address: String, reason: String },
    /// RESOURCE_EXHAUSTED with `grpc-retry-pushback-ms`: the caller is over its rate limit.
    #[error("refused by the credential broker's rate limit: {reason}")]
    RateLimited {
        reason: String,
        retry_after: Duration,
    },
}

/// The metadata key of the broker's retry delay (milliseconds) on RESOURCE_EXHAUSTED.
const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

impl BrokerClient {
    /// Builds the client; no connection is made until the first call.
    pub(crate) fn connect_lazy(
        url: &Url,
        deadline: Duration,
        tls_settings: crate::config::BrokerTls,
    ) -> anyhow::Result<Self> {
        let address = url.as_str().trim_end_matches('/').to_string();
        let mut endpoint = Endpoint::from_shared(address.clone())?
            .connect_timeout(deadline.min(Duration::from_secs(3)))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if url.scheme() == "https" {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(domain) = tls_settings.domain {
                tls = tls.domain_name(domain);
            } else if let Some(host) = url.host_str() {
                tls = tls.domain_name(host.trim_matches(['[', ']']));
            }
            if let Some(pem) = tls_settings.ca {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = tls_settings.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(Self {
            client: CredentialBrokerClient::with_interceptor(
                endpoint.connect_lazy(),
                crate::telemetry::inject as Interceptor,
            ),
            deadline,
            address,
        })
    }

    /// Credentials for an MCP session: binds an unbound session, re-binds on a new token of the
    /// same user, refuses another user's token (PERMISSION_DENIED) and a revoked session
    /// (NOT_FOUND).
    ///
    /// `shared`: the session is shared by the adapter replicas through the broker's store; the
    /// same call checks it is open (NOT_FOUND otherwise), refreshes its idle deadline to `idle`,
    /// opens or ends it, and answers its record.
    pub(crate) async fn session_credentials(
        &self,
        session_id: &str,
        token: &str,
        shared: Option<(&SharedUse, Duration)>,
    ) -> Result<Issued, BrokerClientError> {
        let mcp = shared.map(|(use_, idle)| use_.message(idle));
        let response = self
            .call("GetCredentials", |mut client, timeout| {
                let mut request = tonic::Request::new(GetCredentialsRequest {
                    session_id: session_id.to_owned(),
                    token: token.to_owned(),
                    role_arn: String::new(),
                    mcp: mcp.clone(),
                });
                request.set_timeout(timeout);
                async move { client.get_credentials(request).await }
            })
            .await?;
        let session = response.session.unwrap_or_default();
        let owner = Owner {
            issuer: session.issuer,
            subject: session.subject,
        };
        let buckets = session.buckets;
        let shared = response.mcp_session.map(Shared::from);
        self.issued(
            response.credentials,
            session.role_arn,
            session.assumed_role_arn,
            session.session_handle,
            response.rebound,
        )
        .and_then(|issued| self.with_owner(issued, owner))
        .map(|issued| Issued {
            buckets,
            shared,
            ..issued
        })
    }

    /// For a request without a token on a shared MCP session (`ADAPTER_REQUIRE_AUTH=tools`):
    /// opens the session's record (`Open`) or checks it and refreshes its idle deadline
    /// (`Continue`). No credential comes back.
    pub(crate) async fn shared_without_token(
        &self,
        session_id: &str,
        use_: &SharedUse,
        idle: Duration,
    ) -> Result<Shared, BrokerClientError> {
        let message = use_.message(idle);
        let response = self
            .call("McpSessionWithoutToken", |mut client, timeout| {
                let mut request = tonic::Request::new(McpSessionWithoutTokenRequest {
                    session_id: session_id.to_owned(),
                    r#use: Some(message.clone()),
                });
                request.set_timeout(timeout);
                async move { client.mcp_session_without_token(request).await }
            })
            .await?;
        Ok(response.into())
    }

    /// Credentials for a request without a session (the 2026-07-28 revision).
    pub(crate) async fn exchange_token(&self, token: &str) -> Result<Issued, BrokerClientError> {
        let response = self
            .call("ExchangeToken", |mut client, timeout| {
                let mut request = tonic::Request::new(ExchangeTokenRequest {
                    token: token.to_owned(),
                    role_arn: String::new(),
                });
                request.set_timeout(timeout);
                async move { client.exchange_token(request).await }
            })
            .await?;
        let principal = response.principal.unwrap_or_default();
        let owner = Owner {
            issuer: principal.issuer,
            subject: principal.subject,
        };
        let buckets = principal.buckets;
        self.issued(
            response.credentials,
            principal.role_arn,
            principal.assumed_role_arn,
            String::new(),
            false,
        )
        .and_then(|issued| self.with_owner(issued, owner))
        .map(|issued| Issued { buckets, ..issued })
    }

    /// Adds who the token belongs to; an answer that does not say is a broker failure (a session
    /// could not be given an owner).
    fn with_owner(&self, mut issued: Issued, owner: Owner) -> Result<Issued, BrokerClientError> {
        if owner.subject.is_empty() {
            return Err(BrokerClientError::Failed {
                address: self.address.clone(),
                reason: "answer without the token's subject".into(),
            });
        }
        issued.owner = owner;
        Ok(issued)
    }

    /// Runs one RPC under the deadline, retrying once on UNAVAILABLE while time remains.
    /// Records the call's latency and failure code (`method` is the RPC name).
    async fn call<T, F, Fut>(&self, method: &'static str, rpc: F) -> Result<T, BrokerClientError>
    where
        F: Fn(Client, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let span = crate::telemetry::broker_call_span(method);
        let outcome = self
            .call_with_retry(started, rpc)
            .instrument(span.clone())
            .await;
        crate::telemetry::record_broker_status(
            &span,
            outcome.as_ref().err().map_or(Code::Ok, Status::code),
        );
        crate::metrics::broker_call(
            method,
            started.elapsed().as_secs_f64(),
            outcome.as_ref().err().map(Status::code),
        );
        outcome.map_err(|status| self.classify(&status))
    }

    async fn call_with_retry<T, F, Fut>(&self, started: Instant, rpc: F) -> Result<T, Status>
    where
        F: Fn(Client, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut retried = false;
        loop {
            let remaining = self.deadline.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(Status::deadline_exceeded(format!(
                    "no answer within {}",
                    humantime::format_duration(self.deadline)
                )));
            }
            let outcome =
                tokio::time::timeout(remaining, rpc(self.client.clone(), remaining)).await;
            let status = match outcome {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded("deadline exceeded"),
            };
            if status.code() == Code::Unavailable
                && !retried
                && started.elapsed() + RETRY_PAUSE < self.deadline
            {
                retried = true;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            return Err(status);
        }
    }

    /// The one place gRPC codes become adapter errors.
    fn classify(&self, status: &Status) -> BrokerClientError {
        let message = status.message().to_string();
        match status.code() {
            Code::Unauthenticated => BrokerClientError::Unauthenticated(message),
            Code::PermissionDenied => BrokerClientError::PermissionDenied(message),
            Code::NotFound => BrokerClientError::NotFound(message),
            Code::InvalidArgument => BrokerClientError::InvalidArgument(message),
            // The broker's rate limit says when to come back. A RESOURCE_EXHAUSTED without that
            // (tonic's own, for an oversized message) is a failure like any other.
            Code::ResourceExhausted if pushback(status).is_some() => {
                BrokerClientError::RateLimited {
                    reason: message,
                    retry_after: pushback(status).unwrap_or_default(),
                }
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                let reason = if status.code() == Code::DeadlineExceeded {
                    format!(
                        "no answer within {}",
                        humantime::format_duration(self.deadline)
                    )
                } else {
                    message
                };
                self.unavailable(reason)
            }
            code => BrokerClientError::Failed {
                address: self.address.clone(),
                reason: format!("{code:?}: {message}"),
            },
        }
    }

    fn unavailable(&self, reason: String) -> BrokerClientError {
        BrokerClientError::Unavailable {
            address: self.address.clone(),
            reason,
        }
    }

    /// Checks the answer: no credentials, no expiry or an expiry in the past is a broker failure,
    /// never something to work around.
    fn issued(
        &self,
        credentials: Option<AwsCredentials>,
        role_arn: String,
        assumed_role_arn: String,
        session_handle: String,
        rebound: bool,
    ) -> Result<Issued, BrokerClientError> {
        let failed = |reason: &str| BrokerClientError::Failed {
            address: self.address.clone(),
            reason: reason.to_string(),
        };
        let credentials = credentials.ok_or_else(|| failed("answer without credentials"))?;
        if credentials.access_key_id.is_empty()
            || credentials.secret_access_key.is_empty()
            || credentials.session_token.is_empty()
        {
            return Err(failed("answer with incomplete credentials"));
        }
        let expires_at = credentials
            .expiration
            .and_then(|timestamp| SystemTime::try_from(timestamp).ok())
            .ok_or_else(|| failed("answer without a credential expiration"))?;
        if expires_at <= SystemTime::now() {
            return Err(failed("answer with expired credentials"));
        }
        Ok(Issued {
            credentials: Credentials::new(
                credentials.access_key_id,
                credentials.secret_access_key,
                Some(credentials.session_token),
                Some(expires_at),
                "credential-broker",
            ),
            expires_at,
            role_arn,
            assumed_role_arn,
            session_handle,
            rebound,
            owner: Owner::default(),
            buckets: Vec::new(),
            shared: None,
        })
    }
}

/// The retry delay a status carries in `grpc-retry-pushback-ms` (a non-negative integer of
/// milliseconds, as gRPC's retry design defines it); `None` when absent or malformed.
fn pushback(status: &Status) -> Option<Duration> {
    let value = status.metadata().get(RETRY_PUSHBACK)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> BrokerClient {
        BrokerClient::connect_lazy(
            &Url::parse("http://127.0.0.1:1").unwrap(),
            Duration::from_millis(300),
            Default::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn codes_map_to_the_documented_errors() {
        let broker = broker();
        assert!(matches!(
            broker.classify(&Status::unauthenticated("expired")),
            BrokerClientError::Unauthenticated(_)
        ));
        assert!(matches!(
            broker.classify(&Status::permission_denied("other subject")),
            BrokerClientError::PermissionDenied(_)
        ));
        assert!(matches!(
            broker.classify(&Status::not_found("revoked")),
            BrokerClientError::NotFound(_)
        ));
        assert!(matches!(
            broker.classify(&Status::invalid_argument("role")),
            BrokerClientError::InvalidArgument(_)
        ));
        assert!(matches!(
            broker.classify(&Status::deadline_exceeded("")),
            BrokerClientError::Unavailable { .. }
        ));
        assert!(matches!(
            broker.classify(&Status::internal("x")),
            BrokerClientError::Failed { .. }
        ));
        let mut limited = Status::resource_exhausted("rate limit reached; retry in 1.201 s");
        limited
            .metadata_mut()
            .insert(RETRY_PUSHBACK, "1201".parse().unwrap());
        assert_eq!(
            broker.classify(&limited),
            BrokerClientError::RateLimited {
                reason: "rate limit reached; retry in 1.201 s".into(),
                retry_after: Duration::from_millis(1201),
            }
        );
        // Without a pushback it is not the broker's limit (tonic says RESOURCE_EXHAUSTED for an
        // oversized message): a failure, not a 429.
        assert!(matches!(
            broker.classify(&Status::resource_exhausted("message too large")),
            BrokerClientError::Failed { .. }
        ));
        let mut garbled = Status::resource_exhausted("x");
        garbled
            .metadata_mut()
            .insert(RETRY_PUSHBACK, "-5".parse().unwrap());
        assert!(matches!(
            broker.classify(&garbled),
            BrokerClientError::Failed { .. }
        ));
    }

    #[tokio::test]
    async fn answers_without_usable_credentials_are_failures() {
        let broker = broker();
        assert!(
            broker
                .issued(None, String::new(), String::new(), String::new(), false)
                .is_err()
        );
        let expired = AwsCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: "token".into(),
            expiration: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
        };
        assert!(
            broker
                .issued(
                    Some(expired),
                    String::new(),
                    String::new(),
                    String::new(),
                    false
                )
                .is_err()
        );
    }

    #[tokio::test]
    async fn debug_never_shows_the_secret() {
        let broker = broker();
        let issued = broker
            .issued(
                Some(AwsCredentials {
                    access_key_id: "ASIAEXAMPLE".into(),
                    secret_access_key: "very-secret-key".into(),
                    session_token: "very-secret-token".into(),
                    expiration: Some(prost_types::Timestamp::from(
                        SystemTime::now() + Duration::from_secs(600),
                    )),
                }),
                "arn:aws:iam::1:role/r".into(),
                String::new(),
                String::new(),
                true,
            )
            .unwrap();
        let debug = format!("{issued:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert!(debug.contains("ASIAEXAMPLE"));
    }

    /// A broker whose ExchangeToken answers with the scripted statuses, then succeeds.
    mod fake {
        use std::sync::{
            Arc, Mutex,
            atomic::{AtomicUsize, Ordering},
        };

        use credbroker_proto::v1::{credential_broker_server::*, *};
        use tonic::{Request, Response, Status};

        #[derive(Clone, Default)]
        pub(super) struct Scripted {
            pub(super) failures: Arc<Mutex<Vec<Status>>>,
            pub(super) calls: Arc<AtomicUsize>,
        }

        #[tonic::async_trait]
        impl CredentialBroker for Scripted {
            async fn exchange_token(
                &self,
                _: Request<ExchangeTokenRequest>,
            ) -> Result<Response<ExchangeTokenResponse>, Status> {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let next = self.failures.lock().unwrap().pop();
                if let Some(status) = next {
                    return Err(status);
                }
                Ok(Response::new(ExchangeTokenResponse {
                    credentials: Some(AwsCredentials {
                        access_key_id: "ASIAFAKE".into(),
                        secret_access_key: "s".into(),
                        session_token: "t".into(),
                        expiration: Some(prost_types::Timestamp::from(
                            std::time::SystemTime::now() + std::time::Duration::from_secs(900),
                        )),
                    }),
                    principal: Some(Principal {
                        subject: "alice".into(),
                        issuer: "https://idp.example".into(),
                        ..Principal::default()
                    }),
                }))
            }
            async fn bind_session(
                &self,
                _: Request<BindSessionRequest>,
            ) -> Result<Response<SessionInfo>, Status> {
                Err(Status::unimplemented(""))
            }
            async fn get_credentials(
                &self,
                _: Request<GetCredentialsRequest>,
            ) -> Result<Response<GetCredentialsResponse>, Status> {
                Err(Status::unimplemented(""))
            }
            async fn mcp_session_without_token(
                &self,
                _: Request<McpSessionWithoutTokenRequest>,
            ) -> Result<Response<McpSession>, Status> {
                Err(Status::unimplemented(""))
            }
        }

        /// Serves `broker` on a loopback port; returns its URL.
        pub(super) async fn serve(broker: Scripted) -> url::Url {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(CredentialBrokerServer::new(broker))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
            );
            url::Url::parse(&format!("http://{address}")).unwrap()
        }
    }

    async fn fake_broker(failures: Vec<Status>) -> (BrokerClient, fake::Scripted) {
        let scripted = fake::Scripted::default();
        *scripted.failures.lock().unwrap() = failures;
        let url = fake::serve(scripted.clone()).await;
        let broker =
            BrokerClient::connect_lazy(&url, Duration::from_secs(2), Default::default()).unwrap();
        (broker, scripted)
    }

    fn calls(scripted: &fake::Scripted) -> usize {
        scripted.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn unavailable_is_retried_once() {
        let (broker, scripted) = fake_broker(vec![Status::unavailable("restarting")]).await;
        let issued = broker
            .exchange_token("t")
            .await
            .expect("second attempt succeeds");
        assert_eq!(issued.credentials.access_key_id(), "ASIAFAKE");
        assert_eq!(calls(&scripted), 2);

        let (broker, scripted) = fake_broker(vec![
            Status::unavailable("down"),
            Status::unavailable("still down"),
        ])
        .await;
        assert!(matches!(
            broker.exchange_token("t").await,
            Err(BrokerClientError::Unavailable { .. })
        ));
        assert_eq!(calls(&scripted), 2, "exactly one retry");
    }

    #[tokio::test]
    async fn other_codes_are_never_retried() {
        for status in [
            Status::unauthenticated("expired"),
            Status::permission_denied("role"),
            Status::internal("bug"),
        ] {
            let (broker, scripted) = fake_broker(vec![status]).await;
            assert!(broker.exchange_token("t").await.is_err());
            assert_eq!(calls(&scripted), 1);
        }
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_unavailable_within_the_deadline() {
        let broker = broker();
        let started = Instant::now();
        let error = broker.exchange_token("t").await.unwrap_err();
        assert!(
            matches!(error, BrokerClientError::Unavailable { .. }),
            "{error:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(error.to_string().contains("127.0.0.1:1"));
    }
}
