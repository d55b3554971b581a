//! The tonic service: request → [`Broker`] → response. The one place where errors become gRPC
//! `Status`es, and where messages are checked at the boundary.

use crate::broker::{Authorized, Broker, BrokerError, Selector, SessionAnswer};
use crate::clock::timestamp;
use crate::credentials::{CredentialRecord, EngineError};
use crate::hashing::SessionHandle;
use crate::issuer::IssueError;
use crate::role::RoleError;
use crate::secret::Secret;
use crate::sessions::SessionRecord;
use crate::store::StoreError;
use credbroker_proto::v1::{
    self as pb, credential_broker_server::CredentialBroker, describe_session_request,
    revoke_session_request,
};
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

/// Largest role ARN accepted in a request; real ones are far shorter.
const MAX_ROLE_ARN: usize = 2048;

/// gRPC face of the broker.
pub struct BrokerService {
    broker: Arc<Broker>,
}

impl BrokerService {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}

/// Maps an error to its status. Messages name the failed check or component and never hold a
/// secret (the error types cannot carry one).
pub fn status(e: &BrokerError) -> Status {
    let code = match e {
        BrokerError::Token(_) | BrokerError::TokenExpired | BrokerError::Unbound => {
            Code::Unauthenticated
        }
        BrokerError::Role(RoleError::InvalidRequested) | BrokerError::InvalidArgument(_) => {
            Code::InvalidArgument
        }
        BrokerError::Role(_) | BrokerError::Scope(_) | BrokerError::OtherSubject => {
            Code::PermissionDenied
        }
        BrokerError::SessionGone => Code::NotFound,
        BrokerError::Contention => Code::Aborted,
        BrokerError::Engine(e) => match e {
            EngineError::Issue(IssueError::Retryable(_)) | EngineError::WaitTimedOut => {
                Code::Unavailable
            }
            EngineError::Issue(IssueError::Denied(_)) => Code::PermissionDenied,
            EngineError::Issue(IssueError::Rejected(_) | IssueError::Configuration(_)) => {
                Code::FailedPrecondition
            }
            EngineError::Store(StoreError::Unavailable(_)) => Code::Unavailable,
            EngineError::Store(StoreError::Unreadable(_)) => Code::Internal,
        },
    };
    Status::new(code, e.to_string())
}

fn fail(method: &'static str, e: BrokerError) -> Status {
    let s = status(&e);
    if let BrokerError::Engine(EngineError::Store(err)) = &e {
        crate::metrics::store_error(match err {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Unreadable(_) => "unreadable",
        });
    }
    match s.code() {
        Code::Unavailable | Code::Internal | Code::FailedPrecondition => {
            tracing::warn!(method, code = ?s.code(), error = %e, "request failed")
        }
        _ => tracing::info!(method, code = ?s.code(), error = %e, "request refused"),
    }
    s
}

fn role_arg(role: &str) -> Result<Option<&str>, Status> {
    if role.len() > MAX_ROLE_ARN {
        return Err(Status::invalid_argument("role_arn is too long"));
    }
    Ok(Some(role.trim()).filter(|r| !r.is_empty()))
}

fn credentials(c: &CredentialRecord) -> pb::AwsCredentials {
    pb::AwsCredentials {
        access_key_id: c.access_key_id.clone(),
        secret_access_key: c.secret_access_key.expose().to_string(),
        session_token: c.session_token.expose().to_string(),
        expiration: Some(timestamp(c.expires_at_ms)),
    }
}

/// Operator view of a session: no token, no session id, no secret.
fn session_info(
    handle: &SessionHandle,
    r: &SessionRecord,
    creds: Option<&CredentialRecord>,
) -> pb::SessionInfo {
    pb::SessionInfo {
        session_handle: handle.to_string(),
        subject: r.subject.clone(),
        issuer: r.issuer.clone(),
        role_arn: r.scope.role.clone(),
        assumed_role_arn: creds
            .map(|c| c.assumed_role_arn.clone())
            .unwrap_or_default(),
        source_identity: r.scope.source_identity.clone(),
        token_expires_at: Some(timestamp(r.token_expires_at * 1000)),
        credentials_expire_at: creds.map(|c| timestamp(c.expires_at_ms)),
        created_at: Some(timestamp(r.created_at_ms)),
        updated_at: Some(timestamp(r.updated_at_ms)),
        buckets: r.scope.buckets.clone(),
        tags: r.scope.tags.clone().into_iter().collect(),
        role_session_name: creds
            .map(|c| c.role_session_name.clone())
            .unwrap_or_default(),
        rebind_count: r.rebind_count,
    }
}

fn answer(a: &SessionAnswer) -> pb::GetCredentialsResponse {
    pb::GetCredentialsResponse {
        credentials: Some(credentials(&a.credentials)),
        session: Some(session_info(&a.handle, &a.record, Some(&a.credentials))),
        rebound: a.rebound,
    }
}

fn principal(auth: &Authorized, c: &CredentialRecord) -> pb::Principal {
    pb::Principal {
        subject: auth.claims.subject.clone(),
        issuer: auth.claims.issuer.clone(),
        role_arn: auth.scope.role.clone(),
        assumed_role_arn: c.assumed_role_arn.clone(),
        source_identity: auth.scope.source_identity.clone(),
        token_expires_at: Some(timestamp(auth.claims.expires_at * 1000)),
        buckets: auth.scope.buckets.clone(),
        tags: auth.scope.tags.clone().into_iter().collect(),
    }
}

fn selector(id: Option<String>, handle: Option<String>) -> Result<Selector, Status> {
    match (id, handle) {
        (Some(id), None) if !id.is_empty() => Ok(Selector::Id(Secret::new(id))),
        (None, Some(h)) if !h.is_empty() => Ok(Selector::Handle(h)),
        _ => Err(Status::invalid_argument(
            "give exactly one of session_id or session_handle",
        )),
    }
}

/// Records the request's method, code and latency.
fn observe<T>(
    method: &'static str,
    started: std::time::Instant,
    r: Result<T, Status>,
) -> Result<T, Status> {
    let code = r.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
    crate::metrics::request(method, code, started.elapsed().as_secs_f64());
    r
}

/// The handlers; the trait impl below wraps each with metrics.
impl BrokerService {
    async fn bind_session_inner(
        &self,
        req: Request<pb::BindSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        let r = req.into_inner();
        let (id, token) = (Secret::new(r.session_id), Secret::new(r.token));
        let a = self
            .broker
            .session_credentials(&id, &token, role_arg(&r.role_arn)?)
            .await
            .map_err(|e| fail("BindSession", e))?;
        Ok(Response::new(session_info(
            &a.handle,
            &a.record,
            Some(&a.credentials),
        )))
    }

    async fn get_credentials_inner(
        &self,
        req: Request<pb::GetCredentialsRequest>,
    ) -> Result<Response<pb::GetCredentialsResponse>, Status> {
        let r = req.into_inner();
        let (id, token) = (Secret::new(r.session_id), Secret::new(r.token));
        let a = self
            .broker
            .session_credentials(&id, &token, role_arg(&r.role_arn)?)
            .await
            .map_err(|e| fail("GetCredentials", e))?;
        Ok(Response::new(answer(&a)))
    }

    async fn exchange_token_inner(
        &self,
        req: Request<pb::ExchangeTokenRequest>,
    ) -> Result<Response<pb::ExchangeTokenResponse>, Status> {
        let r = req.into_inner();
        let token = Secret::new(r.token);
        let (auth, creds) = self
            .broker
            .exchange(&token, role_arg(&r.role_arn)?)
            .await
            .map_err(|e| fail("ExchangeToken", e))?;
        Ok(Response::new(pb::ExchangeTokenResponse {
            credentials: Some(credentials(&creds)),
            principal: Some(principal(&auth, &creds)),
        }))
    }

    async fn describe_session_inner(
        &self,
        req: Request<pb::DescribeSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        let sel = match req.into_inner().selector {
            Some(describe_session_request::Selector::SessionId(id)) => selector(Some(id), None)?,
            Some(describe_session_request::Selector::SessionHandle(h)) => selector(None, Some(h))?,
            None => selector(None, None)?,
        };
        let (handle, record, creds) = self
            .broker
            .describe(&sel)
            .await
            .map_err(|e| fail("DescribeSession", e))?;
        Ok(Response::new(session_info(
            &handle,
            &record,
            creds.as_ref(),
        )))
    }

    async fn list_sessions_inner(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let r = req.into_inner();
        let (page, next) = self
            .broker
            .list(r.page_size, &r.page_token, r.subject.trim())
            .await
            .map_err(|e| fail("ListSessions", e))?;
        let mut sessions = Vec::with_capacity(page.len());
        for (handle, record) in &page {
            let creds = self
                .broker
                .engine()
                .peek(&record.credential_id)
                .await
                .ok()
                .flatten();
            sessions.push(session_info(handle, record, creds.as_ref()));
        }
        Ok(Response::new(pb::ListSessionsResponse {
            sessions,
            next_page_token: next.map(|h| h.to_string()).unwrap_or_default(),
        }))
    }

    async fn revoke_session_inner(
        &self,
        req: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let sel = match req.into_inner().selector {
            Some(revoke_session_request::Selector::SessionId(id)) => selector(Some(id), None)?,
            Some(revoke_session_request::Selector::SessionHandle(h)) => selector(None, Some(h))?,
            None => selector(None, None)?,
        };
        let (handle, revoked) = self
            .broker
            .revoke(&sel)
            .await
            .map_err(|e| fail("RevokeSession", e))?;
        Ok(Response::new(pb::RevokeSessionResponse {
            session_handle: handle.to_string(),
            revoked,
        }))
    }
}

#[tonic::async_trait]
impl CredentialBroker for BrokerService {
    async fn bind_session(
        &self,
        req: Request<pb::BindSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        let started = std::time::Instant::now();
        observe("BindSession", started, self.bind_session_inner(req).await)
    }

    async fn get_credentials(
        &self,
        req: Request<pb::GetCredentialsRequest>,
    ) -> Result<Response<pb::GetCredentialsResponse>, Status> {
        let started = std::time::Instant::now();
        observe(
            "GetCredentials",
            started,
            self.get_credentials_inner(req).await,
        )
    }

    async fn exchange_token(
        &self,
        req: Request<pb::ExchangeTokenRequest>,
    ) -> Result<Response<pb::ExchangeTokenResponse>, Status> {
        let started = std::time::Instant::now();
        observe(
            "ExchangeToken",
            started,
            self.exchange_token_inner(req).await,
        )
    }

    async fn describe_session(
        &self,
        req: Request<pb::DescribeSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        let started = std::time::Instant::now();
        observe(
            "DescribeSession",
            started,
            self.describe_session_inner(req).await,
        )
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let started = std::time::Instant::now();
        observe("ListSessions", started, self.list_sessions_inner(req).await)
    }

    async fn revoke_session(
        &self,
        req: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let started = std::time::Instant::now();
        observe(
            "RevokeSession",
            started,
            self.revoke_session_inner(req).await,
        )
    }
}
