//! Authentication of every `/mcp` request, in front of rmcp.
//!
//! The incident happened because a server let a tool call without a token run on the task's own
//! IAM role. Here a request's token is read on every HTTP request (the MCP authorization spec: a
//! session is never proof of identity) and:
//!
//! * a request that needs a token and has none is answered **401** with
//!   `WWW-Authenticate: Bearer resource_metadata="…"` and a JSON-RPC error that tells the client to
//!   send `Authorization: Bearer <JWT>` on every request;
//! * a request that has a token gets the broker's verdict on it, whatever its method:
//!   `GetCredentials(session id, token)` inside a session (the first token binds the session, a new
//!   token of the same user re-binds it), `ExchangeToken(token)` without one (the 2026-07-28
//!   revision has no sessions);
//! * the broker's credentials travel to the tool handler in the request's extensions
//!   ([`Caller`]); rmcp copies the request's `http::request::Parts` into the tool's context;
//! * a session has an **owner**, the subject of its first accepted token ([`Sessions::claim`]);
//!   every request naming an owned session — POST of any message kind, GET event stream (with or
//!   without `Last-Event-ID`), DELETE — needs a token: none → 401, another subject's → 403 (the
//!   broker refuses it on the bound session, and the adapter's own owner record refuses it too).
//!   Which requests may come without a token at all is [`anonymous_allowed`]: none by default
//!   (`ADAPTER_REQUIRE_AUTH=all`), only connecting on a session without an owner in `tools` mode.
//!
//! Why no event stream can outlive the moment a session gets its owner: a GET always needs a
//! token, in every mode, and a GET with a token on a session without an owner binds the session
//! to that token's subject before rmcp opens the stream. So every stream was opened by the owner;
//! there is nothing to close when the owner binds.
//!
//! Broker answers become HTTP answers here, in one place:
//!
//! | broker | adapter |
//! |---|---|
//! | UNAUTHENTICATED | 401, `error="invalid_token"` |
//! | PERMISSION_DENIED | 403, `error="insufficient_scope"` (role not granted, or another user's session) |
//! | NOT_FOUND | **404**: the session is revoked or unknown; the local MCP session is closed too |
//! | UNAVAILABLE, DEADLINE, other failures | a `tools/call` gets a **tool error** naming the broker; any other request that needs the token gets **503** with a JSON-RPC error |
//! | INVALID_ARGUMENT | a `tools/call` gets a tool error with the broker's reason; others 400 |
//! | RESOURCE_EXHAUSTED with `grpc-retry-pushback-ms` (the caller's rate limit) | **429** with `Retry-After` (seconds, rounded up), `tools/call` included |
//!
//! Why 404 for a revoked session rather than 401: the MCP transport spec says a client that gets
//! 404 for a request carrying `Mcp-Session-Id` MUST start a new session with a fresh
//! `initialize`, which is exactly what has to happen. A 401 would tell it to fetch a new token and
//! retry the same dead session, which can never succeed.
//!
//! Why a tool error rather than 503 for a broker outage on `tools/call`: a tool error keeps the
//! session and reaches the model/user as a readable result ("credential broker unavailable"),
//! while most clients turn a 503 on a POST into an opaque transport failure. The answer is still
//! a refusal: the tool runs no S3 request and there is no other credential to fall back to.
//! A request that carries a token it does not need (for example `initialize` under
//! `ADAPTER_REQUIRE_AUTH=tools`) is served even while the broker is down, as it would be without
//! the token; nothing is granted on the unverified token.
//!
//! Why 429 for the rate limit, `tools/call` included, while a broker outage is a tool error: the
//! limit is the caller's own doing and the client should slow down, which `429` + `Retry-After`
//! tells every HTTP client (and its retry logic) directly; a tool result would reach only the
//! model. The status can always be chosen: the gate asks the broker before rmcp starts an answer,
//! so the HTTP status of a tool call (and of its event stream) has never been sent yet. Requests
//! that carry a token they do not need are refused too: the caller is over its limit whatever it
//! asks. The STS budget (`BROKER_STS_RATE`) is not the caller's limit: its refusal is an
//! UNAVAILABLE naming the budget, answered as any broker outage above.
//!
//! Logs never carry a token, a secret or a raw session id: sessions appear as a short SHA-256
//! tag of their id, and as the broker's `session_handle` once the broker has answered.

use std::{fmt, sync::Arc};

use aws_lc_rs::digest;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rmcp::transport::streamable_http_server::session::SessionManager;
use serde_json::{Value, json};

use crate::{
    broker::{BrokerClient, BrokerClientError, Issued, SharedUse},
    config::RequireAuth,
    jsonrpc::{Envelope, Message, code, error_response},
    sessions::{Claim, Sessions},
};

/// Request methods served without a token under `ADAPTER_REQUIRE_AUTH=tools`, on a session
/// without an owner. Everything else, including methods the server does not have, needs one: a
/// new method is protected until someone decides otherwise here.
const ANONYMOUS_METHODS: &[&str] = &["initialize", "ping", "tools/list", "server/discover"];

/// Notifications served without a token under `ADAPTER_REQUIRE_AUTH=tools`, on a session without
/// an owner. Not `notifications/cancelled`: whoever may send it can cancel the owner's calls.
const ANONYMOUS_NOTIFICATIONS: &[&str] = &["notifications/initialized"];

/// The header every refusal tells the client to send.
const SEND_TOKEN: &str = "send `Authorization: Bearer <JWT>` on every request to this MCP server";

/// Who is calling, as the gate found out; read by the tool handlers.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// No token, on a request that needs none.
    Anonymous,
    /// The broker's credentials for this request's token.
    Authorized(Arc<Issued>),
    /// A `tools/call` the broker could not serve; the tool answers with this error code
    /// (`CredentialBrokerUnavailable`, `CredentialBrokerRejected`) and reason.
    Unserved { code: &'static str, reason: String },
}

/// A bearer token; shows itself in no `Debug` or log output.
pub(crate) struct BearerToken(String);

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Why the `Authorization` header could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MalformedAuthorization {
    NotBearer,
    Repeated,
    BadToken,
}

/// The authentication step of the `/mcp` gate.
pub(crate) struct Authenticator {
    broker: BrokerClient,
    require: RequireAuth,
    /// `<base>/.well-known/oauth-protected-resource/<path>` (RFC 9728), for `WWW-Authenticate`.
    resource_metadata: String,
    /// rmcp's sessions and their owners: to bind only sessions that exist, to refuse token-less
    /// requests on owned ones, and to close revoked ones.
    sessions: Arc<Sessions>,
    /// Whether sessions are shared by the replicas through the broker (`ADAPTER_SESSION_SHARING`).
    shared: bool,
}

impl Authenticator {
    pub(crate) fn new(
        broker: BrokerClient,
        require: RequireAuth,
        resource_metadata: String,
        sessions: Arc<Sessions>,
    ) -> Self {
        Self {
            broker,
            require,
            resource_metadata,
            sessions,
            shared: true,
        }
    }

    /// Sessions only in this process (`ADAPTER_SESSION_SHARING=process`): no shared record, and
    /// an id this process does not hold is unknown.
    pub(crate) fn process_sessions_only(mut self) -> Self {
        self.shared = false;
        self
    }

    /// What a request does with its shared session, for the broker call (`None`: not shared).
    fn shared_use<'a>(&self, use_: &'a SharedUse) -> Option<(&'a SharedUse, std::time::Duration)> {
        self.shared.then(|| (use_, self.sessions.limits().idle))
    }

    /// Decides about one request: the [`Caller`] to hand on, or the refusal to send back.
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
        envelope: &Envelope,
    ) -> Result<Caller, Box<Response>> {
        let id = envelope.request_id();
        let token = bearer_token(headers)
            .map_err(|problem| Box::new(self.malformed(id.clone(), problem)))?;
        let session_id = headers
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.is_empty());
        let tag = session_id.map(session_tag).unwrap_or_else(|| "-".into());
        // `None`: no such session here (rmcp answers 404 after this gate); `Some(None)`: live and
        // without an owner; `Some(Some(owner))`: owned.
        // With shared sessions, an id of a shape never minted names no session anywhere: 404
        // (once the token question is settled) without a broker call.
        let malformed =
            self.shared && session_id.is_some_and(|s| !crate::sessions::well_formed_id(s));
        let unknown = || {
            tracing::info!(session = %tag, "unknown session id (not one this service mints)");
            Box::new(session_gone(id.clone(), "no such session"))
        };
        // Before `owner()` marks the session used (see `recent_params`).
        let recent_params = session_id.and_then(|id| self.sessions.recent_params(id));
        let known = session_id.and_then(|id| self.sessions.owner(id));
        let state = match (session_id, &known) {
            (None, _) => SessionState::None,
            (Some(_), Some(Some(_))) => SessionState::Owned,
            (Some(_), _) => SessionState::Unowned,
        };
        let anonymous_ok = anonymous_allowed(self.require, envelope, state);

        let Some(token) = token else {
            if !anonymous_ok {
                tracing::info!(session = %tag, methods = %methods(envelope), owned = state == SessionState::Owned, "no auth header, refusing request that needs a token");
                return Err(Box::new(self.unauthorized(id, None)));
            }
            if malformed {
                return Err(unknown());
            }
            if let Some(session_id) = session_id.filter(|_| self.shared) {
                self.shared_without_token(session_id, known.is_some(), recent_params, id, &tag)
                    .await?;
            }
            if envelope.methods().any(|m| m == "initialize") {
                tracing::info!("no auth header, allowing initialization");
            } else {
                tracing::debug!(session = %tag, methods = %methods(envelope), "no auth header, allowing request that needs none");
            }
            return Ok(Caller::Anonymous);
        };

        // Every session id goes to the broker with the token: the shared record says whether the
        // session is open (for any replica; NOT_FOUND before anything is bound otherwise, so the
        // broker gets no binding for ids nobody issued), and the same call ends it on DELETE.
        if malformed {
            return Err(unknown());
        }
        // Without sharing: bind only sessions that exist here (rmcp answers 404 for the others).
        let live_session = session_id.filter(|_| self.shared || known.is_some());
        let shared_use = match envelope {
            Envelope::EndSession => SharedUse::End,
            _ => SharedUse::Continue(recent_params),
        };
        let answer = match live_session {
            Some(session_id) => {
                let shared = self.shared_use(&shared_use);
                self.broker
                    .session_credentials(session_id, &token.0, shared)
                    .await
            }
            None => self.broker.exchange_token(&token.0).await,
        };

        match answer {
            Ok(issued) => {
                if let Some(session_id) = live_session {
                    if known.is_some() {
                        self.claim(session_id, &issued, &token, &tag)
                            .await
                            .map_err(|reason| Box::new(self.forbidden(id.clone(), reason)))?;
                    } else if self.shared && !matches!(shared_use, SharedUse::End) {
                        self.expect_restore(session_id, &issued, id.clone(), &tag)?;
                    }
                }
                crate::telemetry::record_session_handle(&issued.session_handle);
                // The access key id is not a secret (CloudTrail shows it); it ties a tool call
                // to the STS session that made its S3 requests.
                let access_key_id = issued.credentials.access_key_id();
                if let Some(session_id) = live_session {
                    if issued.rebound {
                        tracing::info!(session = %tag, session_handle = %issued.session_handle, role = %issued.role_arn, %access_key_id, "new token for session, re-authenticating");
                    } else if envelope.is_single_tool_call() {
                        // One line per call at debug; at info a summary per session, every
                        // `SUMMARY_EVERY` calls and when it closes (`sessions`).
                        tracing::debug!(session = %tag, session_handle = %issued.session_handle, %access_key_id, "using cached credentials for session");
                        let calls = self.sessions.count_tool_call(session_id).unwrap_or(0);
                        if calls == 1
                            || (calls > 0 && calls.is_multiple_of(crate::sessions::SUMMARY_EVERY))
                        {
                            tracing::info!(session = %tag, session_handle = %issued.session_handle, %access_key_id, tool_calls = calls, "tool calls on the session's cached credentials");
                        }
                    } else {
                        tracing::debug!(session = %tag, session_handle = %issued.session_handle, methods = %methods(envelope), "token verified for session");
                    }
                } else {
                    tracing::info!(role = %issued.role_arn, %access_key_id, "token exchanged for credentials without a session");
                }
                Ok(Caller::Authorized(Arc::new(issued)))
            }
            Err(error) => {
                // A session held by another replica can only be restored here from the broker's
                // answer: without it the request is refused (503), never served blind.
                let held_elsewhere = self.shared && session_id.is_some() && known.is_none();
                if !held_elsewhere
                    && !matches!(
                        error,
                        BrokerClientError::Unauthenticated(_)
                            | BrokerClientError::PermissionDenied(_)
                            | BrokerClientError::NotFound(_)
                            | BrokerClientError::RateLimited { .. }
                    )
                {
                    if envelope.is_single_tool_call() {
                        tracing::warn!(session = %tag, %error, "broker could not serve a tool call");
                        let (code, reason) = unserved(&error);
                        return Ok(Caller::Unserved { code, reason });
                    }
                    if anonymous_ok {
                        tracing::warn!(session = %tag, %error, "broker could not verify a token the request does not need; serving it as anonymous");
                        return Ok(Caller::Anonymous);
                    }
                }
                Err(self.refusal(id, error, live_session, &tag).await)
            }
        }
    }

    /// Leaves the broker's record of a session this process does not hold, so that rmcp restores
    /// it here for this request (see `sessions`). 503 when the answer has no usable record.
    fn expect_restore(
        &self,
        session_id: &str,
        issued: &Issued,
        id: Value,
        tag: &str,
    ) -> Result<(), Box<Response>> {
        let Some(shared) = &issued.shared else {
            // A broker without shared sessions: the id is unknown here (rmcp answers 404).
            return Ok(());
        };
        if let Err(error) = self.sessions.expect_restore(
            session_id,
            &shared.initialize_params_json,
            Some(issued.owner.clone()),
        ) {
            tracing::warn!(session = %tag, %error, "the broker's record of a session cannot be read; refusing");
            return Err(Box::new(broker_unavailable(
                id,
                "the credential broker's record of this MCP session cannot be read; retry, or start a new session",
            )));
        }
        tracing::info!(session = %tag, session_handle = %issued.session_handle, "serving a session opened on another replica");
        Ok(())
    }

    /// A request without a token naming a session (`ADAPTER_REQUIRE_AUTH=tools`): the broker says
    /// whether the session is open anywhere and already owned (then a token is needed: 401).
    async fn shared_without_token(
        &self,
        session_id: &str,
        held_here: bool,
        recent_params: Option<String>,
        id: Value,
        tag: &str,
    ) -> Result<(), Box<Response>> {
        let idle = self.sessions.limits().anonymous_idle;
        match self
            .broker
            .shared_without_token(session_id, &SharedUse::Continue(recent_params), idle)
            .await
        {
            Ok(shared) if shared.owned => {
                tracing::info!(session = %tag, "no auth header, refusing request on a session another replica bound to a token");
                Err(Box::new(self.unauthorized(id, None)))
            }
            Ok(shared) => {
                if !held_here
                    && self
                        .sessions
                        .expect_restore(session_id, &shared.initialize_params_json, None)
                        .is_err()
                {
                    return Err(Box::new(broker_unavailable(
                        id,
                        "the credential broker's record of this MCP session cannot be read; retry, or start a new session",
                    )));
                }
                Ok(())
            }
            Err(error) => Err(self.refusal(id, error, Some(session_id), tag).await),
        }
    }

    /// Opens the shared record of a session rmcp just created for an `initialize` without a
    /// token, before the client learns its id; on failure the session is closed and the answer
    /// is 503 (a session no other replica could serve would fail on the next request).
    pub(crate) async fn open_anonymous_session(
        &self,
        session_id: &str,
        id: Value,
    ) -> Result<(), Box<Response>> {
        if !self.shared {
            return Ok(());
        }
        let tag = session_tag(session_id);
        let idle = self.sessions.limits().anonymous_idle;
        let outcome = match self.sessions.take_opened(session_id) {
            None => Err(BrokerClientError::InvalidArgument(
                "no initialize params for the new session".into(),
            )),
            Some(params) => self
                .broker
                .shared_without_token(session_id, &SharedUse::Open(params.clone()), idle)
                .await
                .map(|_| self.sessions.remember_params(session_id, params)),
        };
        let Err(error) = outcome else {
            return Ok(());
        };
        tracing::warn!(session = %tag, %error, "could not share a new session without a token; closing it");
        let _ = self
            .sessions
            .close_session(&session_id.to_owned().into())
            .await;
        Err(Box::new(broker_unavailable(id, &unserved(&error).1)))
    }

    /// Binds a session rmcp just opened for an `initialize` that carried a token, so the session
    /// has its owner from its first moment (nobody else's token can bind it first), and opens its
    /// shared record. A refusal closes the session again and is the answer to the `initialize`.
    pub(crate) async fn bind_new_session(
        &self,
        session_id: &str,
        token: &BearerToken,
        id: Value,
    ) -> Result<(), Box<Response>> {
        let tag = session_tag(session_id);
        let params = self.sessions.take_opened(session_id).unwrap_or_default();
        let open = SharedUse::Open(params.clone());
        let answer = self
            .broker
            .session_credentials(session_id, &token.0, self.shared_use(&open))
            .await;
        let outcome = match answer {
            Ok(issued) => {
                let access_key_id = issued.credentials.access_key_id();
                tracing::info!(session = %tag, session_handle = %issued.session_handle, role = %issued.role_arn, %access_key_id, "session bound to the token of its initialize");
                if self.shared {
                    self.sessions.remember_params(session_id, params);
                }
                self.claim(session_id, &issued, token, &tag)
                    .await
                    .map_err(|reason| Box::new(self.forbidden(id, reason)))
            }
            Err(error) => Err(self.refusal(id, error, None, &tag).await),
        };
        if outcome.is_err() {
            tracing::warn!(session = %tag, "could not bind a new session to its token; closing it");
            let _ = self
                .sessions
                .close_session(&session_id.to_owned().into())
                .await;
        }
        outcome
    }

    /// Records the broker's subject as the session's owner, or checks it is the owner already;
    /// closes the sessions the subject's limit pushes out. `Err`: another user's session.
    async fn claim(
        &self,
        session_id: &str,
        issued: &Issued,
        token: &BearerToken,
        tag: &str,
    ) -> Result<(), &'static str> {
        match self.sessions.claim(session_id, &issued.owner) {
            Claim::Owned | Claim::Unknown => Ok(()),
            Claim::OtherOwner => {
                // The broker refuses another subject on a bound session too; this catches a
                // session whose broker record ended (token expired past its grace) while the
                // MCP session lived on.
                tracing::warn!(session = %tag, "token of another user presented on an owned session; refused");
                Err("the session belongs to another user")
            }
            Claim::Claimed { evicted } => {
                tracing::info!(session = %tag, session_handle = %issued.session_handle, "session owner set");
                for old in evicted {
                    tracing::info!(session = %session_tag(&old), "closing the user's least recently used session: ADAPTER_MAX_SESSIONS_PER_SUBJECT reached");
                    let _ = self.sessions.close_session(&old).await;
                    // Ended for every replica too, with the owner's token (another replica would
                    // otherwise restore it on its next request).
                    let Some(end) = self.shared_use(&SharedUse::End) else {
                        continue;
                    };
                    if let Err(error) = self
                        .broker
                        .session_credentials(&old, &token.0, Some(end))
                        .await
                    {
                        tracing::warn!(session = %session_tag(&old), %error, "could not end the evicted session at the broker; it ends when idle");
                    }
                }
                Ok(())
            }
        }
    }

    /// The HTTP answer for a broker refusal or failure on a request that needs the token.
    ///
    /// A rate-limited request always gets its 429 here: the gate asks the broker before rmcp answers
    /// anything, so no status (nor a tool call's event stream) has been sent yet.
    async fn refusal(
        &self,
        id: Value,
        error: BrokerClientError,
        live_session: Option<&str>,
        tag: &str,
    ) -> Box<Response> {
        Box::new(match error {
            BrokerClientError::Unauthenticated(reason) => {
                tracing::info!(session = %tag, %reason, "token refused by the broker");
                self.unauthorized(id, Some(&reason))
            }
            BrokerClientError::PermissionDenied(reason) => {
                tracing::warn!(session = %tag, %reason, "token not permitted by the broker");
                self.forbidden(id, &reason)
            }
            BrokerClientError::NotFound(reason) => {
                tracing::warn!(session = %tag, %reason, "session revoked or unknown at the broker; closing it");
                if let Some(session_id) = live_session {
                    let _ = self
                        .sessions
                        .close_session(&session_id.to_owned().into())
                        .await;
                }
                session_gone(id, &reason)
            }
            BrokerClientError::RateLimited {
                reason,
                retry_after,
            } => {
                tracing::info!(session = %tag, %reason, "request over the caller's rate limit at the broker");
                rate_limited(id, &reason, retry_after)
            }
            BrokerClientError::InvalidArgument(_) => {
                tracing::warn!(session = %tag, %error, "broker could not serve a request that needs a token");
                error_response(
                    StatusCode::BAD_REQUEST,
                    id,
                    code::INVALID_REQUEST,
                    error.to_string(),
                    None,
                )
            }
            _ => {
                tracing::warn!(session = %tag, %error, "broker could not serve a request that needs a token");
                broker_unavailable(id, &unserved(&error).1)
            }
        })
    }

    /// 401 for a missing (`reason` None) or refused token.
    fn unauthorized(&self, id: Value, reason: Option<&str>) -> Response {
        crate::metrics::auth_refusal(StatusCode::UNAUTHORIZED);
        let (challenge, message) = match reason {
            None => (
                www_authenticate(&self.resource_metadata, None),
                format!("Authorization required: {SEND_TOKEN}"),
            ),
            Some(reason) => (
                www_authenticate(
                    &self.resource_metadata,
                    Some(("invalid_token", "The access token is invalid or expired")),
                ),
                format!(
                    "Invalid bearer token ({reason}); {SEND_TOKEN}, with a valid, unexpired token"
                ),
            ),
        };
        let mut response = error_response(
            StatusCode::UNAUTHORIZED,
            id,
            code::UNAUTHORIZED,
            message,
            Some(json!({ "resource_metadata": self.resource_metadata })),
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
        response
    }

    fn forbidden(&self, id: Value, reason: &str) -> Response {
        crate::metrics::auth_refusal(StatusCode::FORBIDDEN);
        let mut response = error_response(
            StatusCode::FORBIDDEN,
            id,
            code::FORBIDDEN,
            format!(
                "Forbidden ({reason}); {SEND_TOKEN}, for a user and role allowed here and, within a session, for the user who opened it"
            ),
            Some(json!({ "resource_metadata": self.resource_metadata })),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            www_authenticate(
                &self.resource_metadata,
                Some((
                    "insufficient_scope",
                    "The token does not grant this request",
                )),
            ),
        );
        response
    }

    fn malformed(&self, id: Value, problem: MalformedAuthorization) -> Response {
        let what = match problem {
            MalformedAuthorization::NotBearer => "the Authorization header is not a Bearer token",
            MalformedAuthorization::Repeated => "more than one Authorization header",
            MalformedAuthorization::BadToken => "the bearer token is not a token68 string",
        };
        let mut response = error_response(
            StatusCode::BAD_REQUEST,
            id,
            code::INVALID_REQUEST,
            format!("Malformed authorization: {what}; {SEND_TOKEN}"),
            None,
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            www_authenticate(
                &self.resource_metadata,
                Some(("invalid_request", "Malformed Authorization header")),
            ),
        );
        response
    }
}

/// What the gate knows about the session a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionState {
    /// No `Mcp-Session-Id` header.
    None,
    /// A session without an owner yet (or an id this adapter does not hold: rmcp answers 404).
    Unowned,
    /// A session whose first accepted token gave it an owner.
    Owned,
}

/// Whether a request may come without a token.
///
/// `all` (the default): never. `tools` (the compatibility mode for clients that connect before
/// they have a token): only `initialize`, `ping`, `tools/list` (and `server/discover`, the
/// sessionless revision's `initialize`) and `notifications/initialized`, and only while the session
/// has no owner. Never a GET (the event stream is how results leave the server), a DELETE, a JSON-RPC
/// reply, another notification (`notifications/cancelled` would cancel the owner's call), a
/// request for anything else, a batch, or a body the gate cannot read. A method added to the server later
/// is protected until someone lists it here.
pub(crate) fn anonymous_allowed(
    require: RequireAuth,
    envelope: &Envelope,
    session: SessionState,
) -> bool {
    if require == RequireAuth::All || session == SessionState::Owned {
        return false;
    }
    match envelope {
        // A batch is never part of connecting (and rmcp refuses batches anyway).
        Envelope::Messages(messages) => match messages.as_slice() {
            [Message::Request { method, .. }] => ANONYMOUS_METHODS.contains(&method.as_str()),
            [Message::Notification { method }] => {
                ANONYMOUS_NOTIFICATIONS.contains(&method.as_str())
            }
            _ => false,
        },
        Envelope::Batch(_)
        | Envelope::Stream
        | Envelope::Empty
        | Envelope::EndSession
        | Envelope::Unreadable => false,
    }
}

/// The tool error code and reason for a broker that could not serve a call.
fn unserved(error: &BrokerClientError) -> (&'static str, String) {
    match error {
        BrokerClientError::InvalidArgument(_) => (
            "CredentialBrokerRejected",
            format!("{error}; no other credentials are used"),
        ),
        _ => (
            "CredentialBrokerUnavailable",
            format!("{error}; no other credentials are used, retry later"),
        ),
    }
}

/// The request's bearer token: `None` without an `Authorization` header.
pub(crate) fn bearer_token(
    headers: &HeaderMap,
) -> Result<Option<BearerToken>, MalformedAuthorization> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(MalformedAuthorization::Repeated);
    }
    let value = value
        .to_str()
        .map_err(|_| MalformedAuthorization::BadToken)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(MalformedAuthorization::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(MalformedAuthorization::NotBearer);
    }
    let token = token.trim();
    // RFC 6750 b64token (token68): 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body = token.trim_end_matches('=');
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
    {
        return Err(MalformedAuthorization::BadToken);
    }
    Ok(Some(BearerToken(token.to_string())))
}

/// `Bearer [error="…", error_description="…", ]resource_metadata="…"`.
pub(crate) fn www_authenticate(
    resource_metadata: &str,
    error: Option<(&str, &str)>,
) -> HeaderValue {
    let mut value = String::from("Bearer ");
    if let Some((error, description)) = error {
        value.push_str(&format!(
            "error=\"{}\", error_description=\"{}\", ",
            quoted_safe(error),
            quoted_safe(description)
        ));
    }
    value.push_str(&format!(
        "resource_metadata=\"{}\"",
        quoted_safe(resource_metadata)
    ));
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// Keeps only characters RFC 6750 allows inside its quoted attribute values.
fn quoted_safe(value: &str) -> String {
    value
        .chars()
        .filter(|c| matches!(c, '\x20'..='\x7e') && *c != '"' && *c != '\\')
        .collect()
}

/// 404 for a session the broker revoked or does not know.
pub(crate) fn session_gone(id: Value, reason: &str) -> Response {
    crate::metrics::auth_refusal(StatusCode::NOT_FOUND);
    error_response(
        StatusCode::NOT_FOUND,
        id,
        code::SESSION_GONE,
        format!(
            "MCP session revoked or unknown at the credential broker ({reason}); start a new session: send initialize without an Mcp-Session-Id header, and {SEND_TOKEN}"
        ),
        None,
    )
}

/// 429 for a request over the caller's rate limit at the broker, with `Retry-After` in whole
/// seconds, rounded up (at least 1: a client must not retry at once).
fn rate_limited(id: Value, reason: &str, retry_after: std::time::Duration) -> Response {
    crate::metrics::auth_refusal(StatusCode::TOO_MANY_REQUESTS);
    let seconds = retry_after.as_millis().div_ceil(1000).max(1);
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        id,
        code::RATE_LIMITED,
        format!("Too many requests ({reason}); retry after {seconds} s"),
        Some(json!({ "retry_after_ms": retry_after.as_millis() as u64 })),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// 503 for a request that needs the broker while it cannot answer.
fn broker_unavailable(id: Value, reason: &str) -> Response {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        id,
        code::BROKER_UNAVAILABLE,
        reason.to_string(),
        None,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A short, stable, non-reversible name for a session id, for logs.
pub(crate) fn session_tag(session_id: &str) -> String {
    let digest = digest::digest(&digest::SHA256, session_id.as_bytes());
    hex::encode(&digest.as_ref()[..6])
}

fn methods(envelope: &Envelope) -> String {
    match envelope {
        Envelope::Empty => "-".into(),
        Envelope::Stream => "GET".into(),
        Envelope::EndSession => "DELETE".into(),
        Envelope::Unreadable => "<unreadable>".into(),
        Envelope::Messages(_) | Envelope::Batch(_) => {
            envelope.methods().collect::<Vec<_>>().join(",")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn envelope(body: &str) -> Envelope {
        Envelope::parse(body.as_bytes())
    }

    fn request(method: &str) -> Envelope {
        envelope(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#
        ))
    }

    /// Whether a request without a token passes, under `tools`, on a session without an owner.
    fn open(envelope: &Envelope) -> bool {
        anonymous_allowed(RequireAuth::Tools, envelope, SessionState::Unowned)
    }

    #[test]
    fn in_tools_mode_only_connecting_passes_without_a_token() {
        for method in ["initialize", "ping", "tools/list", "server/discover"] {
            assert!(open(&request(method)), "{method}");
            assert!(
                anonymous_allowed(RequireAuth::Tools, &request(method), SessionState::None),
                "{method}"
            );
        }
        for method in [
            "tools/call",
            "resources/read",
            "prompts/get",
            "logging/setLevel",
            "made/up",
        ] {
            assert!(!open(&request(method)), "{method}");
        }
        assert!(open(&envelope(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
        )));
        for other in [
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#,
            r#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":"s-1","error":{"code":-1,"message":"no"}}"#,
        ] {
            assert!(!open(&envelope(other)), "{other}");
        }
        for kind in [
            Envelope::Stream,
            Envelope::Empty,
            Envelope::EndSession,
            Envelope::Unreadable,
        ] {
            assert!(!open(&kind), "{kind:?}");
        }
        let batch = envelope(
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call"}]"#,
        );
        assert!(!open(&batch));
        let batch = envelope(
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"result":{}}]"#,
        );
        assert!(!open(&batch), "a reply hidden in a batch");
        let batch = envelope(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
        assert!(!open(&batch), "a batch is never part of connecting");
    }

    #[test]
    fn an_owned_session_needs_a_token_for_everything() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ] {
            assert!(
                !anonymous_allowed(RequireAuth::Tools, &envelope(body), SessionState::Owned),
                "{body}"
            );
        }
    }

    #[test]
    fn all_means_all() {
        for state in [SessionState::None, SessionState::Unowned] {
            assert!(!anonymous_allowed(
                RequireAuth::All,
                &request("initialize"),
                state
            ));
            assert!(!anonymous_allowed(
                RequireAuth::All,
                &request("ping"),
                state
            ));
            assert!(!anonymous_allowed(
                RequireAuth::All,
                &Envelope::Stream,
                state
            ));
        }
    }

    fn with_auth(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert!(matches!(bearer_token(&with_auth(&[])), Ok(None)));
        let token = bearer_token(&with_auth(&["Bearer eyJ.abc-_.x~+/=="]))
            .unwrap()
            .unwrap();
        assert_eq!(token.0, "eyJ.abc-_.x~+/==");
        assert!(bearer_token(&with_auth(&["bearer abc"])).unwrap().is_some());
        assert_eq!(
            bearer_token(&with_auth(&["Basic dXNlcjpwdw=="])).unwrap_err(),
            MalformedAuthorization::NotBearer
        );
        assert_eq!(
            bearer_token(&with_auth(&["Bearer"])).unwrap_err(),
            MalformedAuthorization::NotBearer
        );
        assert_eq!(
            bearer_token(&with_auth(&["Bearer a b"])).unwrap_err(),
            MalformedAuthorization::BadToken
        );
        assert_eq!(
            bearer_token(&with_auth(&["Bearer a", "Bearer b"])).unwrap_err(),
            MalformedAuthorization::Repeated
        );
    }

    #[test]
    fn tokens_do_not_show_in_debug() {
        let token = BearerToken("eyJsecret".into());
        assert!(!format!("{token:?}").contains("eyJsecret"));
    }

    #[test]
    fn www_authenticate_has_the_resource_metadata_and_the_error() {
        let url = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
        assert_eq!(
            www_authenticate(url, None).to_str().unwrap(),
            format!(r#"Bearer resource_metadata="{url}""#)
        );
        let value = www_authenticate(url, Some(("invalid_token", "expired \"x\"")));
        let value = value.to_str().unwrap();
        assert!(
            value.starts_with(r#"Bearer error="invalid_token", error_description="expired x", "#),
            "{value}"
        );
        assert!(value.ends_with(&format!(r#"resource_metadata="{url}""#)));
    }

    #[test]
    fn session_tags_are_short_and_stable() {
        let id = "2f0c7a6e-58f7-4c84-a1c5-3c2f0f3e5d11";
        assert_eq!(session_tag(id), session_tag(id));
        assert_eq!(session_tag(id).len(), 12);
        assert!(!session_tag(id).contains("2f0c7a6e"));
    }

    fn authenticator(require: RequireAuth) -> Authenticator {
        let broker = BrokerClient::connect_lazy(
            &url::Url::parse("http://127.0.0.1:1").unwrap(),
            Duration::from_millis(200),
            Default::default(),
        )
        .unwrap();
        Authenticator::new(
            broker,
            require,
            "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp".into(),
            Arc::new(Sessions::default()),
        )
    }

    async fn body_json(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_tool_call_without_a_token_is_a_401_naming_the_header_to_send() {
        let auth = authenticator(RequireAuth::Tools);
        let call = envelope(
            r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"bucket_objects_list"}}"#,
        );
        let response = *auth
            .authenticate(&HeaderMap::new(), &call)
            .await
            .unwrap_err();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer resource_metadata="http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp""#
        );
        let body = body_json(response).await;
        assert_eq!(body["id"], 42);
        assert_eq!(body["error"]["code"], code::UNAUTHORIZED);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Authorization: Bearer <JWT>")
        );
    }

    #[tokio::test]
    async fn initialize_without_a_token_passes() {
        let auth = authenticator(RequireAuth::Tools);
        let caller = auth
            .authenticate(&HeaderMap::new(), &request("initialize"))
            .await
            .unwrap();
        assert!(matches!(caller, Caller::Anonymous));
        let refused = auth_all_refuses_initialize().await;
        assert_eq!(refused, StatusCode::UNAUTHORIZED);
    }

    async fn auth_all_refuses_initialize() -> StatusCode {
        authenticator(RequireAuth::All)
            .authenticate(&HeaderMap::new(), &request("initialize"))
            .await
            .unwrap_err()
            .status()
    }

    #[tokio::test]
    async fn broker_down_is_a_tool_error_for_tool_calls_and_503_for_other_needs() {
        let auth = authenticator(RequireAuth::Tools);
        let headers = with_auth(&["Bearer abc.def.ghi"]);
        let caller = auth
            .authenticate(&headers, &request("tools/call"))
            .await
            .unwrap();
        let Caller::Unserved { code, reason } = caller else {
            panic!("expected an unserved caller")
        };
        assert!(
            code == "CredentialBrokerUnavailable"
                && reason.contains("credential broker at http://127.0.0.1:1 unavailable"),
            "{reason}"
        );

        let response = *authenticator(RequireAuth::All)
            .authenticate(&headers, &request("tools/list"))
            .await
            .unwrap_err();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], code::BROKER_UNAVAILABLE);

        // A token the request does not need is not a reason to refuse it.
        let caller = auth
            .authenticate(&headers, &request("initialize"))
            .await
            .unwrap();
        assert!(matches!(caller, Caller::Anonymous));
    }

    #[tokio::test]
    async fn a_malformed_header_is_refused_even_on_initialize() {
        let auth = authenticator(RequireAuth::Tools);
        let response = *auth
            .authenticate(&with_auth(&["Basic abc"]), &request("initialize"))
            .await
            .unwrap_err();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains(r#"error="invalid_request""#)
        );
    }

    #[tokio::test]
    async fn refusals_carry_the_documented_statuses_and_challenges() {
        let auth = authenticator(RequireAuth::Tools);
        let response = auth.unauthorized(json!(1), Some("token expired"));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains(r#"error="invalid_token""#)
        );
        let response = auth.forbidden(json!(1), "role not granted");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains(r#"error="insufficient_scope""#)
        );
        assert_eq!(
            session_gone(json!(1), "revoked").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            broker_unavailable(json!(1), "down").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn the_brokers_rate_limit_is_a_429_with_retry_after_in_whole_seconds_rounded_up() {
        let auth = authenticator(RequireAuth::All);
        for (ms, header) in [(1201, "2"), (3000, "3"), (1, "1"), (0, "1")] {
            let error = BrokerClientError::RateLimited {
                reason: "rate limit reached".into(),
                retry_after: std::time::Duration::from_millis(ms),
            };
            let response = auth.refusal(json!(7), error, None, "-").await;
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()[header::RETRY_AFTER], header, "{ms} ms");
            let body = body_json(*response).await;
            assert_eq!(body["id"], 7);
            assert_eq!(body["error"]["code"], code::RATE_LIMITED);
            assert_eq!(body["error"]["data"]["retry_after_ms"], ms);
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("rate limit reached"), "{message}");
            assert!(
                message.contains(&format!("retry after {header} s")),
                "{message}"
            );
        }
    }
}
