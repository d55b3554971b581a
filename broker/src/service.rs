//! The tonic service: request → [`Broker`] → response. The one place where errors become gRPC
//! `Status`es, and where messages are checked at the boundary.

use crate::audit::{AuditError, Event};
use crate::broker::{Authorized, Broker, BrokerError, Selector, SessionAnswer};
use crate::clock::timestamp;
use crate::credentials::{CredentialRecord, EngineError};
use crate::hashing::SessionHandle;
use crate::issuer::IssueError;
use crate::mcp_sessions::{McpRecord, McpSessionError, McpSessions, check_use};
use crate::role::RoleError;
use crate::secret::Secret;
use crate::store::{SessionRecord, Store, StoreError};
use credbroker_proto::v1::{self as pb, credential_broker_server::CredentialBroker};
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

/// Largest role ARN accepted in a request; real ones are far shorter.
const MAX_ROLE_ARN: usize = 2048;

/// gRPC face of the broker.
pub struct BrokerService {
    broker: Arc<Broker>,
    /// MCP adapter sessions shared by adapter replicas, in the same store as the bindings.
    mcp: McpSessions,
    /// `McpSessionWithoutToken` is served (BROKER_MCP_TOKENLESS_SESSIONS); refused otherwise,
    /// because it needs no token and would let anyone who reaches the broker write records.
    tokenless_sessions: bool,
}

impl BrokerService {
    pub fn new(broker: Arc<Broker>) -> Self {
        let mcp = McpSessions::new(Arc::clone(broker.store()));
        Self {
            broker,
            mcp,
            tokenless_sessions: false,
        }
    }

    /// Serves `McpSessionWithoutToken` too (BROKER_MCP_TOKENLESS_SESSIONS=true).
    pub fn with_tokenless_sessions(mut self, on: bool) -> Self {
        self.tokenless_sessions = on;
        self
    }
}

/// Maps a shared-session refusal to its status (store failures as for credentials).
fn mcp_status(method: &'static str, e: McpSessionError) -> Status {
    let s = match &e {
        McpSessionError::Gone => Status::not_found(e.to_string()),
        McpSessionError::AlreadyOpen => Status::already_exists(e.to_string()),
        McpSessionError::InvalidArgument(_) => Status::invalid_argument(e.to_string()),
        McpSessionError::Store(err) => {
            return fail(method, BrokerError::Engine(EngineError::Store(err.clone())));
        }
        McpSessionError::Audit(reason) => {
            tracing::warn!(method, error = %reason, "MCP session request failed: audit log");
            return Status::unavailable(reason.clone());
        }
    };
    tracing::info!(method, code = ?s.code(), error = %e, "MCP session request refused");
    s
}

/// The adapter's view of a shared record.
fn mcp_answer(r: &McpRecord) -> pb::McpSession {
    pb::McpSession {
        initialize_params_json: r.initialize_params_json.clone(),
        owned: r.owned,
        idle_expires_at: Some(timestamp(
            crate::clock::now_ms().saturating_add(r.idle_ms as i64),
        )),
    }
}

/// A checked `McpSessionUse`.
struct McpUse {
    action: pb::mcp_session_use::Action,
    initialize_params_json: String,
    idle_ms: u64,
}

fn mcp_use(u: pb::McpSessionUse) -> Result<McpUse, McpSessionError> {
    use pb::mcp_session_use::Action;
    let action = match Action::try_from(u.action) {
        Ok(a @ (Action::Continue | Action::Open | Action::End)) => a,
        _ => {
            return Err(McpSessionError::InvalidArgument(
                "action must be CONTINUE, OPEN or END".into(),
            ));
        }
    };
    check_use(u.idle_ms, &u.initialize_params_json)?;
    Ok(McpUse {
        action,
        initialize_params_json: u.initialize_params_json,
        idle_ms: u.idle_ms,
    })
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
        BrokerError::RateLimited(_) => Code::ResourceExhausted,
        BrokerError::Engine(e) => match e {
            EngineError::Issue(IssueError::Retryable(_))
            | EngineError::WaitTimedOut
            | EngineError::StsBudget(_) => Code::Unavailable,
            EngineError::Issue(IssueError::Denied(_)) => Code::PermissionDenied,
            EngineError::Issue(IssueError::Rejected(_) | IssueError::Configuration(_)) => {
                Code::FailedPrecondition
            }
            EngineError::Store(StoreError::Unavailable(_)) => Code::Unavailable,
            EngineError::Store(StoreError::Unreadable(_)) => Code::Internal,
        },
    };
    let mut status = Status::new(code, e.to_string());
    // The wait, for clients and gRPC retry policies that honour server pushback.
    if let BrokerError::RateLimited(limited) = e
        && let Ok(ms) = limited.retry_after_ms().to_string().parse()
    {
        status.metadata_mut().insert(RETRY_PUSHBACK, ms);
    }
    status
}

/// The gRPC metadata key that carries how long to wait before retrying, in milliseconds.
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

pub(crate) fn fail(method: &'static str, e: BrokerError) -> Status {
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

/// Operator view of a session: no token, no session id, no secret. Takes the record by value:
/// its strings move into the answer (this runs on every warm `GetCredentials`).
pub(crate) fn session_info(
    handle: SessionHandle,
    r: SessionRecord,
    creds: Option<&CredentialRecord>,
) -> pb::SessionInfo {
    pb::SessionInfo {
        session_handle: handle.into_string(),
        subject: r.subject,
        issuer: r.issuer,
        role_arn: r.scope.role,
        assumed_role_arn: creds
            .map(|c| c.assumed_role_arn.clone())
            .unwrap_or_default(),
        source_identity: r.scope.source_identity,
        token_expires_at: Some(timestamp(r.token_expires_at * 1000)),
        credentials_expire_at: creds.map(|c| timestamp(c.expires_at_ms)),
        created_at: Some(timestamp(r.created_at_ms)),
        updated_at: Some(timestamp(r.updated_at_ms)),
        buckets: r.scope.buckets,
        tags: r.scope.tags.into_iter().collect(),
        role_session_name: creds
            .map(|c| c.role_session_name.clone())
            .unwrap_or_default(),
        rebind_count: r.rebind_count,
    }
}

fn answer(a: SessionAnswer) -> pb::GetCredentialsResponse {
    pb::GetCredentialsResponse {
        credentials: Some(credentials(&a.credentials)),
        session: Some(session_info(a.handle, a.record, Some(&a.credentials))),
        rebound: a.rebound,
        mcp_session: None,
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

pub(crate) fn selector(id: Option<String>, handle: Option<String>) -> Result<Selector, Status> {
    match (id, handle) {
        (Some(id), None) if !id.is_empty() => Ok(Selector::Id(Secret::new(id))),
        (None, Some(h)) if !h.is_empty() => Ok(Selector::Handle(h)),
        _ => Err(Status::invalid_argument(
            "give exactly one of session_id or session_handle",
        )),
    }
}

/// The caller's peer identity for the audit trail; not computed when there is no audit log (it
/// allocates, and the warm path has no other use for it).
fn audit_peer<T>(req: &Request<T>) -> String {
    if crate::audit::global().is_some() {
        crate::operator::peer_identity(req)
    } else {
        String::new()
    }
}

/// The answer while the audit log cannot be written: UNAVAILABLE naming it.
pub(crate) fn audit_status(e: AuditError) -> Status {
    Status::unavailable(e.to_string())
}

/// Records a served session answer in the audit trail: bound / rebound every time, served from
/// the store sampled (the first serve of each session and access key per minute; see
/// `AuditLog::sample_served`). `Err`: not recorded, so not served.
fn audit_session(method: &'static str, a: &SessionAnswer, peer: &str) -> Result<(), Status> {
    let Some(log) = crate::audit::global() else {
        return Ok(());
    };
    let handle = a.handle.to_string();
    let key = &a.credentials.access_key_id;
    let event = match (a.rebound, a.record.rebind_count) {
        (true, 0) => "session_bound",
        (true, _) => "session_rebound",
        (false, _) if log.sample_served(&handle, key) => "credential_served",
        (false, _) => return Ok(()),
    };
    let mut e = Event::new(event, "ok");
    e.method = Some(method);
    e.subject = Some(a.record.subject.clone());
    e.issuer = Some(a.record.issuer.clone());
    e.role_arn = Some(a.record.scope.role.clone());
    e.session = Some(handle.clone());
    e.access_key_id = Some(key.clone());
    e.peer = Some(peer.to_string());
    e.source_identity = Some(a.record.scope.source_identity.clone());
    log.record(&e).map_err(|err| {
        if event == "credential_served" {
            log.unsample_served(&handle, key);
        }
        audit_status(err)
    })
}

/// Records a refused or failed credential request. A write failure here only marks the log
/// unhealthy: the answer is a refusal either way.
async fn audit_refusal(
    broker: &Broker,
    method: &'static str,
    e: &BrokerError,
    token: &Secret,
    session: Option<String>,
    peer: &str,
) {
    if crate::audit::global().is_none() {
        return;
    }
    let (event, outcome) = match e {
        BrokerError::Token(_) | BrokerError::TokenExpired | BrokerError::Unbound => {
            ("token_refused", "refused")
        }
        BrokerError::OtherSubject | BrokerError::SessionGone => ("session_refused", "refused"),
        BrokerError::Role(_) | BrokerError::Scope(_) => ("credential_refused", "refused"),
        BrokerError::Engine(_) | BrokerError::Contention => ("credential_failed", "error"),
        BrokerError::RateLimited(_) => ("rate_limited", "refused"),
        _ => ("request_refused", "refused"),
    };
    let mut ev = Event::new(event, outcome);
    ev.method = Some(method);
    ev.reason = Some(e.to_string());
    ev.session = session;
    ev.peer = Some(peer.to_string());
    if let BrokerError::RateLimited(limited) = e {
        ev.subject = Some(limited.subject.clone());
        ev.issuer = Some(limited.issuer.clone());
    }
    // Which subject tried: only from a token that is genuine (never unverified claims).
    if matches!(
        e,
        BrokerError::OtherSubject | BrokerError::Role(_) | BrokerError::Scope(_)
    ) && let Ok(claims) = broker.validator().validate(token).await
    {
        ev.subject = Some(claims.subject);
        ev.issuer = Some(claims.issuer);
    }
    let _ = crate::audit::record(&ev);
}

/// Records the request's method, code and latency.
pub(crate) fn observe<T>(
    method: &'static str,
    started: std::time::Instant,
    r: Result<T, Status>,
) -> Result<T, Status> {
    let code = r.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
    crate::metrics::request(method, code, started.elapsed().as_secs_f64());
    crate::telemetry::record_status(code);
    r
}

/// The handlers; the trait impl below wraps each with metrics.
impl BrokerService {
    /// The keyed handle of a well-formed session id, for the audit trail (never the id).
    fn session_handle(&self, id: &Secret) -> Option<String> {
        self.broker
            .handle_of(&Selector::Id(id.clone()))
            .ok()
            .map(|h| h.to_string())
    }

    async fn bind_session_inner(
        &self,
        req: Request<pb::BindSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        let peer = audit_peer(&req);
        crate::audit::ready().map_err(audit_status)?;
        let r = req.into_inner();
        let (id, token) = (Secret::new(r.session_id), Secret::new(r.token));
        let a = match self
            .broker
            .session_credentials(&id, &token, role_arg(&r.role_arn)?)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                let handle = self.session_handle(&id);
                audit_refusal(&self.broker, "BindSession", &e, &token, handle, &peer).await;
                return Err(fail("BindSession", e));
            }
        };
        audit_session("BindSession", &a, &peer)?;
        Ok(Response::new(session_info(
            a.handle,
            a.record,
            Some(&a.credentials),
        )))
    }

    async fn get_credentials_inner(
        &self,
        req: Request<pb::GetCredentialsRequest>,
    ) -> Result<Response<pb::GetCredentialsResponse>, Status> {
        let peer = audit_peer(&req);
        crate::audit::ready().map_err(audit_status)?;
        let r = req.into_inner();
        let (id, token) = (Secret::new(r.session_id), Secret::new(r.token));
        let role = role_arg(&r.role_arn)?;
        // A shared MCP session must be open (or, for OPEN, not yet) before anything is bound.
        let mcp = match r.mcp {
            None => None,
            Some(u) => {
                let u = mcp_use(u).map_err(|e| mcp_status("GetCredentials", e))?;
                let handle = self
                    .broker
                    .handle_of(&Selector::Id(id.clone()))
                    .map_err(|e| fail("GetCredentials", e))?;
                // Boxed, like the other awaits besides the session's own: this future is the
                // one every request allocates and moves, and each await inlined adds its size.
                let prior = Box::pin(self.mcp.get(&handle))
                    .await
                    .map_err(|e| mcp_status("GetCredentials", e.into()))?;
                use pb::mcp_session_use::Action;
                let prior = match (u.action, prior) {
                    (_, Some(p)) if p.ended => {
                        return Err(mcp_status("GetCredentials", McpSessionError::Gone));
                    }
                    (Action::Open, None) => None,
                    (Action::Open, Some(_)) => {
                        return Err(mcp_status("GetCredentials", McpSessionError::AlreadyOpen));
                    }
                    // A replica that holds the session re-opens a record the store lost.
                    (Action::Continue, None) if !u.initialize_params_json.is_empty() => None,
                    (_, None) => return Err(mcp_status("GetCredentials", McpSessionError::Gone)),
                    (_, Some(p)) => Some(p),
                };
                Some((u, handle, prior))
            }
        };
        let a = match self.broker.session_credentials(&id, &token, role).await {
            Ok(a) => a,
            Err(e) => {
                let handle = self.session_handle(&id);
                Box::pin(audit_refusal(
                    &self.broker,
                    "GetCredentials",
                    &e,
                    &token,
                    handle,
                    &peer,
                ))
                .await;
                return Err(fail("GetCredentials", e));
            }
        };
        audit_session("GetCredentials", &a, &peer)?;
        let mcp_session = match mcp {
            None => None,
            Some((u, handle, prior)) => {
                let record = Box::pin(self.mcp_after_token(u, &handle, prior, &a, &peer))
                    .await
                    .map_err(|e| mcp_status("GetCredentials", e))?;
                Some(mcp_answer(&record))
            }
        };
        Ok(Response::new(pb::GetCredentialsResponse {
            mcp_session,
            ..answer(a)
        }))
    }

    /// The shared record's change once the token was accepted: written (OPEN), refreshed and
    /// marked owned (CONTINUE), or deleted (END, audited).
    async fn mcp_after_token(
        &self,
        u: McpUse,
        handle: &SessionHandle,
        prior: Option<McpRecord>,
        a: &SessionAnswer,
        peer: &str,
    ) -> Result<McpRecord, McpSessionError> {
        use pb::mcp_session_use::Action;
        match u.action {
            Action::Open => {
                let record = McpRecord {
                    initialize_params_json: u.initialize_params_json,
                    owned: true,
                    idle_ms: u.idle_ms,
                    created_at_ms: crate::clock::now_ms(),
                    ended: false,
                };
                if !self.mcp.put(handle, &record, false).await? {
                    return Err(McpSessionError::AlreadyOpen);
                }
                Ok(record)
            }
            Action::Continue if prior.is_none() => {
                let record = McpRecord {
                    initialize_params_json: u.initialize_params_json,
                    owned: true,
                    idle_ms: u.idle_ms,
                    created_at_ms: crate::clock::now_ms(),
                    ended: false,
                };
                // Set-if-absent: a record written meanwhile wins; a tombstone ends the session, a
                // live one (a concurrent request of this session wrote it) is refreshed as owned.
                let Some(written) = self.mcp.reopen(handle, &record).await? else {
                    return Err(McpSessionError::Gone);
                };
                if written == record {
                    tracing::info!(session = %handle, "MCP session record written again by a replica that holds the session");
                    return Ok(record);
                }
                let record = McpRecord {
                    owned: true,
                    idle_ms: u.idle_ms,
                    ..written
                };
                if !self.mcp.put(handle, &record, true).await? {
                    return Err(McpSessionError::Gone);
                }
                Ok(record)
            }
            Action::End => {
                let record = prior.unwrap_or_default();
                self.mcp.end(handle, &record).await?;
                if let Some(log) = crate::audit::global() {
                    let mut e = Event::new("mcp_session_ended", "ok");
                    e.method = Some("GetCredentials");
                    e.subject = Some(a.record.subject.clone());
                    e.issuer = Some(a.record.issuer.clone());
                    e.session = Some(handle.to_string());
                    e.peer = Some(peer.to_string());
                    log.record(&e)
                        .map_err(|err| McpSessionError::Audit(err.to_string()))?;
                }
                Ok(record)
            }
            _ => {
                let record = McpRecord {
                    owned: true,
                    idle_ms: u.idle_ms,
                    ..prior.unwrap_or_default()
                };
                if !self.mcp.put(handle, &record, true).await? {
                    return Err(McpSessionError::Gone);
                }
                Ok(record)
            }
        }
    }

    async fn mcp_session_without_token_inner(
        &self,
        req: Request<pb::McpSessionWithoutTokenRequest>,
    ) -> Result<Response<pb::McpSession>, Status> {
        const METHOD: &str = "McpSessionWithoutToken";
        use pb::mcp_session_use::Action;
        if !self.tokenless_sessions {
            return Err(Status::failed_precondition(
                "McpSessionWithoutToken is off: this broker records MCP sessions opened without a token only with BROKER_MCP_TOKENLESS_SESSIONS=true (for adapters run with ADAPTER_REQUIRE_AUTH=tools); otherwise send the token with initialize",
            ));
        }
        let r = req.into_inner();
        let id = Secret::new(r.session_id);
        let u = mcp_use(r.r#use.unwrap_or_default()).map_err(|e| mcp_status(METHOD, e))?;
        let handle = self
            .broker
            .handle_of(&Selector::Id(id))
            .map_err(|e| fail(METHOD, e))?;
        let store = |e: StoreError| mcp_status(METHOD, e.into());
        match u.action {
            Action::Open => {
                let record = McpRecord {
                    initialize_params_json: u.initialize_params_json,
                    owned: false,
                    idle_ms: u.idle_ms,
                    created_at_ms: crate::clock::now_ms(),
                    ended: false,
                };
                if !self.mcp.put(&handle, &record, false).await.map_err(store)? {
                    return Err(mcp_status(METHOD, McpSessionError::AlreadyOpen));
                }
                Ok(Response::new(mcp_answer(&record)))
            }
            Action::Continue => {
                // An operator may revoke a session before any token bound it.
                let revoked = self
                    .broker
                    .store()
                    .get_session(&handle)
                    .await
                    .map_err(store)?
                    .is_some_and(|(s, _)| s.revoked);
                if revoked {
                    return Err(mcp_status(METHOD, McpSessionError::Gone));
                }
                let record = match self.mcp.get(&handle).await.map_err(store)? {
                    Some(record) if !record.ended => record,
                    Some(_) => return Err(mcp_status(METHOD, McpSessionError::Gone)),
                    // A replica that holds the session re-opens a record the store lost.
                    None if !u.initialize_params_json.is_empty() => {
                        let record = McpRecord {
                            initialize_params_json: u.initialize_params_json.clone(),
                            owned: false,
                            idle_ms: u.idle_ms,
                            created_at_ms: crate::clock::now_ms(),
                            ended: false,
                        };
                        // A concurrent request of this session may have written it first.
                        match self.mcp.reopen(&handle, &record).await.map_err(store)? {
                            Some(record) => record,
                            None => return Err(mcp_status(METHOD, McpSessionError::Gone)),
                        }
                    }
                    None => return Err(mcp_status(METHOD, McpSessionError::Gone)),
                };
                if record.owned {
                    // Refused by the adapter (a token is needed): no refresh on its behalf, and
                    // nothing of the owner's session (its initialize params) for a caller who
                    // proved nothing but the session id.
                    return Ok(Response::new(pb::McpSession {
                        initialize_params_json: String::new(),
                        ..mcp_answer(&record)
                    }));
                }
                let record = McpRecord {
                    idle_ms: u.idle_ms,
                    ..record
                };
                if !self.mcp.put(&handle, &record, true).await.map_err(store)? {
                    return Err(mcp_status(METHOD, McpSessionError::Gone));
                }
                Ok(Response::new(mcp_answer(&record)))
            }
            _ => Err(mcp_status(
                METHOD,
                McpSessionError::InvalidArgument(
                    "use.action must be OPEN or CONTINUE without a token (END needs the owner's token, in GetCredentials)".into(),
                ),
            )),
        }
    }

    async fn exchange_token_inner(
        &self,
        req: Request<pb::ExchangeTokenRequest>,
    ) -> Result<Response<pb::ExchangeTokenResponse>, Status> {
        let peer = audit_peer(&req);
        crate::audit::ready().map_err(audit_status)?;
        let r = req.into_inner();
        let token = Secret::new(r.token);
        let (auth, creds) = match self.broker.exchange(&token, role_arg(&r.role_arn)?).await {
            Ok(v) => v,
            Err(e) => {
                audit_refusal(&self.broker, "ExchangeToken", &e, &token, None, &peer).await;
                return Err(fail("ExchangeToken", e));
            }
        };
        if crate::audit::global().is_some() {
            let mut e = Event::new("token_exchanged", "ok");
            e.method = Some("ExchangeToken");
            e.subject = Some(auth.claims.subject.clone());
            e.issuer = Some(auth.claims.issuer.clone());
            e.role_arn = Some(auth.scope.role.clone());
            e.access_key_id = Some(creds.access_key_id.clone());
            e.peer = Some(peer);
            e.source_identity = Some(auth.scope.source_identity.clone());
            crate::audit::record(&e).map_err(audit_status)?;
        }
        Ok(Response::new(pb::ExchangeTokenResponse {
            credentials: Some(credentials(&creds)),
            principal: Some(principal(&auth, &creds)),
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
        let deadline = crate::sts_budget::grpc_deadline(req.metadata());
        let answer = crate::sts_budget::with_deadline(deadline, self.bind_session_inner(req)).await;
        observe("BindSession", started, answer)
    }

    async fn get_credentials(
        &self,
        req: Request<pb::GetCredentialsRequest>,
    ) -> Result<Response<pb::GetCredentialsResponse>, Status> {
        let started = std::time::Instant::now();
        let deadline = crate::sts_budget::grpc_deadline(req.metadata());
        let answer =
            crate::sts_budget::with_deadline(deadline, self.get_credentials_inner(req)).await;
        observe("GetCredentials", started, answer)
    }

    async fn exchange_token(
        &self,
        req: Request<pb::ExchangeTokenRequest>,
    ) -> Result<Response<pb::ExchangeTokenResponse>, Status> {
        let started = std::time::Instant::now();
        let deadline = crate::sts_budget::grpc_deadline(req.metadata());
        let answer =
            crate::sts_budget::with_deadline(deadline, self.exchange_token_inner(req)).await;
        observe("ExchangeToken", started, answer)
    }

    async fn mcp_session_without_token(
        &self,
        req: Request<pb::McpSessionWithoutTokenRequest>,
    ) -> Result<Response<pb::McpSession>, Status> {
        let started = std::time::Instant::now();
        observe(
            "McpSessionWithoutToken",
            started,
            self.mcp_session_without_token_inner(req).await,
        )
    }
}
