//! MCP sessions: ids that carry 256 random bits, each session's owner, and the limits that bound
//! what sessions without an owner can cost.
//!
//! A session id is a bearer secret of its own: whoever holds it can speak in that session (with a
//! token of the same subject; see `auth`). rmcp's [`LocalSessionManager`] mints UUID v4 ids —
//! 122 random bits — and has no hook for another generator, so [`Sessions`] wraps it and replaces
//! `create_session`: the id is `mcps_` and 32 bytes from the operating system's CSPRNG
//! (aws-lc's `SystemRandom`) in base64url without padding — 48 visible ASCII characters, as the
//! MCP spec requires. The prefix lets the log writer find and redact ids exactly (`logging`).
//!
//! Beside rmcp's own state, [`Sessions`] keeps per session its **owner** (the issuer and subject
//! of the first token the broker accepted for it; from then on only that subject's tokens may name
//! it) and when it was last used, and enforces:
//!
//! * sessions without an owner (opened without a token under `ADAPTER_REQUIRE_AUTH=tools`) close
//!   after `ADAPTER_ANONYMOUS_SESSION_IDLE` without a request (a reaper task), and there are at
//!   most `ADAPTER_MAX_ANONYMOUS_SESSIONS` of them (the gate answers 503 past it);
//! * one subject owns at most `ADAPTER_MAX_SESSIONS_PER_SUBJECT` sessions: when a new one gets
//!   that owner, the subject's least recently used session is closed (its client gets 404 on its
//!   next request and starts a new session, as the MCP transport spec says). Closing rather than
//!   refusing keeps a user whose client forgets to DELETE its sessions working.
//!
//! Every rmcp operation is the local manager's own, except restoring.
//!
//! **Shared sessions.** Any adapter replica serves any request of a session: the session's shared
//! record (its `initialize` params, whether a token bound it, its idle deadline, ended or not)
//! lives in the credential broker's store, read and refreshed by the broker call the gate makes
//! on every request (`auth`). When a request names a session this process does not hold, the
//! gate leaves the record here ([`Sessions::expect_restore`]); rmcp then finds the session
//! missing, asks its session store (`SessionStore::load`, implemented here from what the gate
//! left, never from the client), calls [`SessionManager::restore_session`] (a fresh local worker
//! under the same id, with the owner the broker named) and replays the client's `initialize` to
//! it. After an `initialize`, rmcp hands the params to `SessionStore::store`; the gate takes them
//! ([`Sessions::take_opened`]) to open the shared record before the client learns the id.
//! Closing a session here (the idle reaper, shutdown) is local only: ending
//! it for every replica is a DELETE, which the gate tells the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use rmcp::model::InitializeRequestParams;
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ProtocolVersion, RequestId, ServerJsonRpcMessage,
};
use tokio_util::sync::CancellationToken;

use crate::direct::Direct;
use rmcp::transport::WorkerTransport;
use rmcp::transport::common::server_side_http::{ServerSseMessage, SessionId};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, LocalSessionWorker, SessionConfig, SessionError,
    create_local_session,
};
use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, SessionManager,
};

use crate::events::{Resumed, Streams};

/// Random bytes in a session id: 256 bits, well above the 128 a guessing attack must face.
const SESSION_ID_BYTES: usize = 32;

/// What every session id starts with, so that logs can redact ids without guessing.
pub(crate) const SESSION_ID_PREFIX: &str = "mcps_";

/// Characters after the prefix: base64url of [`SESSION_ID_BYTES`] without padding.
pub(crate) const SESSION_ID_RANDOM_CHARS: usize = 43;

/// Who owns a session: the issuer and subject of the token that bound it at the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Owner {
    pub(crate) issuer: String,
    pub(crate) subject: String,
}

/// The limits on sessions (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    /// How long an owned session lives without a request (`ADAPTER_SESSION_IDLE`; the reaper).
    pub(crate) idle: Duration,
    /// Idle timeout of a session without an owner (`ADAPTER_ANONYMOUS_SESSION_IDLE`).
    pub(crate) anonymous_idle: Duration,
    /// Sessions without an owner at once (`ADAPTER_MAX_ANONYMOUS_SESSIONS`).
    pub(crate) max_anonymous: usize,
    /// Sessions one subject may own (`ADAPTER_MAX_SESSIONS_PER_SUBJECT`).
    pub(crate) max_per_subject: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(300),
            anonymous_idle: Duration::from_secs(30),
            max_anonymous: 256,
            max_per_subject: 64,
        }
    }
}

/// What the adapter knows about one live session beyond rmcp.
#[derive(Debug)]
struct Entry {
    owner: Option<Owner>,
    last_used: Instant,
    /// The client's `initialize` params (JSON), once shared: sent with each request so that the
    /// broker can write again a record its store lost.
    params: Option<String>,
    /// Tool calls served on cached credentials in this session, for the per-session summary
    /// logged at `info` (the per-call line is `debug`: it cost ~2 % of a call's CPU).
    tool_calls: u64,
}

/// Every this many tool calls of one session, the gate logs a summary line at `info`; another
/// comes when the session closes.
pub(crate) const SUMMARY_EVERY: u64 = 1000;

/// The outcome of [`Sessions::claim`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The session had no owner and now has this one; `evicted` are the subject's sessions closed
    /// to stay within its limit.
    Claimed { evicted: Vec<SessionId> },
    /// The session already belongs to this owner.
    Owned,
    /// The session belongs to someone else: refuse the request (403).
    OtherOwner,
    /// The session is gone (closed meanwhile).
    Unknown,
}

/// How long a hand-over between the gate and rmcp (see the module doc) may wait to be taken:
/// both happen within one request, so anything older was abandoned.
const HANDOVER_TTL: Duration = Duration::from_secs(60);

/// A session to restore from its shared record, left by the gate for rmcp.
#[derive(Debug)]
struct Restorable {
    params: InitializeRequestParams,
    json: String,
    owner: Option<Owner>,
    at: Instant,
}

/// Hand-overs between the gate and rmcp within one request.
#[derive(Debug, Default)]
struct Handovers {
    /// `initialize` params of sessions rmcp just opened (JSON), for the gate to share.
    opened: HashMap<SessionId, (String, Instant)>,
    /// Shared records of sessions this process does not hold, for rmcp to restore.
    restorable: HashMap<SessionId, Restorable>,
}

/// The direct calls in flight (see [`Sessions::direct_stream`]).
type DirectCalls = Arc<Mutex<HashMap<(SessionId, RequestId), CancellationToken>>>;

/// Takes a direct call off [`DirectCalls`] when it ends, however it ends.
struct Registered {
    calls: DirectCalls,
    key: (SessionId, RequestId),
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// rmcp's in-process session manager, minting 256-bit session ids and keeping owners.
#[derive(Debug)]
pub(crate) struct Sessions {
    inner: LocalSessionManager,
    limits: SessionLimits,
    entries: Mutex<HashMap<SessionId, Entry>>,
    /// Event ids, priming and the resumption buffer of every session (`events`).
    pub(crate) streams: Streams,
    handovers: Mutex<Handovers>,
    /// Answers computed without the session worker (`direct`); `None`: every request goes to it.
    direct: Option<Direct>,
    /// The direct calls in flight, by session and request id, for `notifications/cancelled`.
    direct_calls: DirectCalls,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(SessionLimits::default())
    }
}

impl Sessions {
    /// Sessions closed after `limits.idle` without a request, and after `limits.anonymous_idle`
    /// while they have no owner (see [`Sessions::spawn_reaper`]). Not rmcp's own idle timeout:
    /// it counts only what reaches a session's worker, and direct answers never do.
    pub(crate) fn new(limits: SessionLimits) -> Self {
        let mut inner = LocalSessionManager::default();
        inner.session_config.keep_alive = None;
        // Priming events come from `events`, only for the revisions that have them.
        inner.session_config.sse_retry = None;
        Self {
            inner,
            limits,
            entries: Mutex::new(HashMap::new()),
            streams: Streams::new(crate::events::EventLimits::default()),
            handovers: Mutex::new(Handovers::default()),
            direct: None,
            direct_calls: DirectCalls::default(),
        }
    }

    /// Answers what it can without the session worker (`direct`).
    pub(crate) fn with_direct(mut self, direct: Direct) -> Self {
        self.direct = Some(direct);
        self
    }

    /// The limits these sessions were made with (the gate tells the broker the idle timeouts).
    pub(crate) fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn handovers(&self) -> std::sync::MutexGuard<'_, Handovers> {
        let mut handovers = self.handovers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        handovers
            .opened
            .retain(|_, (_, at)| now.duration_since(*at) < HANDOVER_TTL);
        handovers
            .restorable
            .retain(|_, r| now.duration_since(r.at) < HANDOVER_TTL);
        handovers
    }

    /// Whether this process holds the session (without marking it used).
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.entries().contains_key(id)
    }

    /// Keeps the `initialize` params (JSON) of a session this process holds, once shared.
    pub(crate) fn remember_params(&self, id: &str, params: String) {
        if let Some(entry) = self.entries().get_mut(id) {
            entry.params = Some(params);
        }
    }

    /// The `initialize` params (JSON) of a session this process holds, only while its shared
    /// record must still exist: used here less than its idle timeout ago (the record's TTL,
    /// refreshed at that use). Past that, the record may have expired on purpose, and sending
    /// the params would bring back a session every replica must now refuse. Call before
    /// [`Sessions::owner`], which marks the session used.
    pub(crate) fn recent_params(&self, id: &str) -> Option<String> {
        let entries = self.entries();
        let entry = entries.get(id)?;
        let ttl = if entry.owner.is_some() {
            self.limits.idle
        } else {
            self.limits.anonymous_idle.min(self.limits.idle)
        };
        (entry.last_used.elapsed() < ttl)
            .then(|| entry.params.clone())
            .flatten()
    }

    /// The `initialize` params (JSON) rmcp stored for a session it just opened.
    pub(crate) fn take_opened(&self, id: &str) -> Option<String> {
        self.handovers().opened.remove(id).map(|(params, _)| params)
    }

    /// Leaves a session's shared record for rmcp to restore it here during this request.
    /// `Err`: the record's `initialize` params cannot be read (a broker or store fault).
    pub(crate) fn expect_restore(
        &self,
        id: &str,
        initialize_params_json: &str,
        owner: Option<Owner>,
    ) -> Result<(), serde_json::Error> {
        let params: InitializeRequestParams = serde_json::from_str(initialize_params_json)?;
        self.handovers().restorable.insert(
            Arc::from(id),
            Restorable {
                params,
                json: initialize_params_json.to_string(),
                owner,
                at: Instant::now(),
            },
        );
        Ok(())
    }

    fn direct_calls(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(SessionId, RequestId), CancellationToken>> {
        self.direct_calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A direct answer as a future that gives `None` for a call the client cancelled. The call is
    /// registered for `notifications/cancelled` until it ends, as rmcp's worker does.
    fn direct_call(
        &self,
        id: &SessionId,
        request: RequestId,
        message: BoxFuture<'static, ServerJsonRpcMessage>,
    ) -> BoxFuture<'static, Option<ServerJsonRpcMessage>> {
        let cancel = CancellationToken::new();
        let key = (id.clone(), request);
        self.direct_calls().insert(key.clone(), cancel.clone());
        // Made here, not in the future: a future dropped before its first poll still unregisters.
        let registered = Registered {
            calls: self.direct_calls.clone(),
            key,
        };
        Box::pin(async move {
            let _registered = registered;
            tokio::select! {
                message = message => Some(message),
                () = cancel.cancelled() => None,
            }
        })
    }

    /// A direct answer's event stream (`ADAPTER_ANSWER_FORMAT=event-stream`, or a request the
    /// gate answers on a stream); a cancelled call ends its stream without an answer.
    fn direct_stream(
        &self,
        id: &SessionId,
        answer: crate::direct::Answer,
    ) -> impl Stream<Item = ServerSseMessage> + Send + Sync + 'static + use<> {
        let call = self.direct_call(id, answer.id, answer.message);
        self.streams.direct_stream(id, call)
    }

    /// A direct answer for the gate to send as one JSON body: the session counts as answering
    /// (not idle) until the future is done or dropped.
    fn direct_json(
        &self,
        id: &SessionId,
        answer: crate::direct::Answer,
    ) -> BoxFuture<'static, Option<crate::direct::JsonBody>> {
        if let Some(body) = answer.body {
            return Box::pin(std::future::ready(Some(Ok(body))));
        }
        let answering = self.streams.answering_now(id);
        let call = self.direct_call(id, answer.id, answer.message);
        Box::pin(async move {
            let _answering = answering;
            call.await.map(|message| {
                // A tool answer is a few KB: start there rather than grow from 128 bytes.
                let mut body = Vec::with_capacity(4096);
                serde_json::to_writer(&mut body, &message).map(|()| body)
            })
        })
    }

    fn config(&self) -> SessionConfig {
        self.inner.session_config.clone()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry>> {
        // A panic while holding the lock leaves plain data behind; keep serving with it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session's owner, and marks it used now. `None`: no such session (rmcp answers 404);
    /// `Some(None)`: a live session without an owner.
    pub(crate) fn owner(&self, id: &str) -> Option<Option<Owner>> {
        let mut entries = self.entries();
        let entry = entries.get_mut(id)?;
        entry.last_used = Instant::now();
        Some(entry.owner.clone())
    }

    /// Counts one tool call served on the session's cached credentials; the session's count so
    /// far (`None`: no such session here).
    pub(crate) fn count_tool_call(&self, id: &str) -> Option<u64> {
        let mut entries = self.entries();
        let entry = entries.get_mut(id)?;
        entry.tool_calls += 1;
        Some(entry.tool_calls)
    }

    /// Sessions without an owner right now.
    pub(crate) fn anonymous_count(&self) -> usize {
        self.entries()
            .values()
            .filter(|e| e.owner.is_none())
            .count()
    }

    /// Whether one more session without an owner would exceed `ADAPTER_MAX_ANONYMOUS_SESSIONS`.
    pub(crate) fn anonymous_full(&self) -> bool {
        self.anonymous_count() >= self.limits.max_anonymous
    }

    /// Gives an ownerless session its owner, or checks it has this one. The broker already bound
    /// the session to the same subject (or refused); this is the adapter's own record of it, so
    /// that requests without a token can be refused without asking the broker.
    pub(crate) fn claim(&self, id: &str, owner: &Owner) -> Claim {
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(id) else {
            return Claim::Unknown;
        };
        entry.last_used = Instant::now();
        match &entry.owner {
            Some(current) if current == owner => return Claim::Owned,
            Some(_) => return Claim::OtherOwner,
            None => entry.owner = Some(owner.clone()),
        }
        let mut owned: Vec<(&SessionId, Instant)> = entries
            .iter()
            .filter(|(key, e)| key.as_ref() != id && e.owner.as_ref() == Some(owner))
            .map(|(key, e)| (key, e.last_used))
            .collect();
        // This session plus `owned` must stay within the limit: close the least recently used.
        let excess = (owned.len() + 1).saturating_sub(self.limits.max_per_subject);
        owned.sort_by_key(|(_, used)| *used);
        let evicted: Vec<SessionId> = owned
            .into_iter()
            .take(excess)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &evicted {
            entries.remove(key);
        }
        Claim::Claimed { evicted }
    }

    /// Sessions idle past their limit: `ADAPTER_ANONYMOUS_SESSION_IDLE` without an owner,
    /// `ADAPTER_SESSION_IDLE` with one. A session still answering a request is not idle, and its
    /// idle time starts again from now (a tool call longer than the limit must not lose its
    /// session, nor leave it to be closed the moment it ends).
    fn idle(&self, now: Instant) -> Vec<SessionId> {
        let mut entries = self.entries();
        let mut idle = Vec::new();
        for (key, entry) in entries.iter_mut() {
            if self.streams.answering(key) {
                entry.last_used = now;
                continue;
            }
            let limit = if entry.owner.is_none() {
                self.limits.anonymous_idle
            } else {
                self.limits.idle
            };
            if now.duration_since(entry.last_used) >= limit {
                idle.push(key.clone());
            }
        }
        idle
    }

    /// Starts the task that closes sessions idle past their limit ([`Sessions::idle`]; rmcp's own
    /// timeout is off, see [`Sessions::new`]). It looks every quarter of the shorter limit
    /// (250 ms to 5 s), so a session ends at most that much after its limit. The task ends with
    /// the last `Arc`.
    pub(crate) fn spawn_reaper(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let period = (self.limits.anonymous_idle.min(self.limits.idle) / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(sessions) = weak.upgrade() else {
                    return;
                };
                let idle = sessions.idle(Instant::now());
                if !idle.is_empty() {
                    tracing::debug!(count = idle.len(), "closing idle sessions");
                }
                for id in idle {
                    let _ = sessions.close_session(&id).await;
                }
                // Event buffers (`events`): old events, and sessions rmcp closed itself. A
                // session gets its buffer after rmcp has it, so one missing from rmcp is gone.
                let kept = sessions.streams.ids();
                let gone: Vec<SessionId> = {
                    let live = sessions.inner.sessions.read().await;
                    kept.into_iter()
                        .filter(|id| !live.contains_key(id))
                        .collect()
                };
                sessions.streams.sweep(&gone);
            }
        });
    }
}

/// A fresh session id: the prefix, then [`SESSION_ID_BYTES`] from the system CSPRNG in base64url
/// (no padding).
///
/// Panics only if the operating system cannot supply randomness, in which case no id would be
/// safe to hand out (fail closed).
#[allow(
    clippy::expect_used,
    reason = "no randomness means no safe session id: fail closed"
)]
pub(crate) fn new_session_id() -> SessionId {
    let mut bytes = [0u8; SESSION_ID_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source failed");
    let mut id = String::with_capacity(SESSION_ID_PREFIX.len() + SESSION_ID_RANDOM_CHARS);
    id.push_str(SESSION_ID_PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut id);
    Arc::from(id)
}

/// Whether `id` has the shape of the ids minted here: anything else names no session of any
/// replica, and is answered 404 without asking the broker.
pub(crate) fn well_formed_id(id: &str) -> bool {
    id.strip_prefix(SESSION_ID_PREFIX).is_some_and(|random| {
        random.len() == SESSION_ID_RANDOM_CHARS
            && random
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

impl SessionManager for Sessions {
    type Error = LocalSessionManagerError;
    type Transport = WorkerTransport<LocalSessionWorker>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let id = new_session_id();
        let (handle, worker) = create_local_session(id.clone(), self.config());
        self.inner.sessions.write().await.insert(id.clone(), handle);
        self.entries().insert(
            id.clone(),
            Entry {
                owner: None,
                last_used: Instant::now(),
                params: None,
                tool_calls: 0,
            },
        );
        Ok((id, WorkerTransport::spawn(worker)))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        let answer = self.inner.initialize_session(id, message).await?;
        self.streams.initialized(id, &answer);
        Ok(answer)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let closed = self.entries().remove(id);
        if let Some(entry) = closed.filter(|e| e.tool_calls > 0) {
            tracing::info!(session = %crate::auth::session_tag(id), tool_calls = entry.tool_calls, "session closed");
        }
        self.streams.forget(id);
        {
            let mut handovers = self.handovers();
            handovers.opened.remove(id);
            handovers.restorable.remove(id);
        }
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let message = match (&self.direct, self.streams.revision(id)) {
            (Some(direct), Some(revision))
                if revision.as_str() < ProtocolVersion::V_2026_07_28.as_str() =>
            {
                if let Some(mut answer) = direct.answer(&message) {
                    if let Some(slot) = answer.json.take() {
                        slot.put(self.direct_json(id, answer));
                        return Ok(futures::stream::empty().left_stream().left_stream());
                    }
                    return Ok(self.direct_stream(id, answer).right_stream().left_stream());
                }
                message
            }
            _ => message,
        };
        let events = self.inner.create_stream(id, message).await?;
        Ok(self.streams.request_stream(id, events).right_stream())
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        if let ClientJsonRpcMessage::Notification(notification) = &message
            && let ClientNotification::CancelledNotification(cancelled) = &notification.notification
            && let Some(request) = &cancelled.params.request_id
            && let Some(call) = self.direct_calls().remove(&(id.clone(), request.clone()))
        {
            call.cancel();
        }
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let events = self.inner.create_standalone_stream(id).await?;
        Ok(self.streams.common_stream(id, events))
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        // The gate let this GET through only with the owner's token; `events` looks the id up
        // among this session's events only.
        let (resumed, kept) = self.streams.resume(id, &last_event_id).map_err(|error| {
            tracing::info!(%error, "cannot resume an event stream");
            LocalSessionManagerError::SessionError(SessionError::InvalidEventId)
        })?;
        Ok(match resumed {
            Resumed::Request => kept.left_stream(),
            Resumed::Common => {
                let live = self.inner.create_standalone_stream(id).await?;
                kept.chain(self.streams.common_stream(id, live))
                    .right_stream()
            }
        })
    }

    /// Restores only a session the gate found open at the broker during this request (see the
    /// module doc): a fresh local worker under the same id, owned by whom the broker named. An id
    /// the broker did not vouch for is unknown (404), never re-created from what the client sent.
    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        let Some(restorable) = self.handovers().restorable.remove(&id) else {
            return Ok(RestoreOutcome::NotSupported);
        };
        if self.inner.sessions.read().await.contains_key(&id) {
            return Ok(RestoreOutcome::AlreadyPresent);
        }
        let (handle, worker) = create_local_session(id.clone(), self.config());
        self.inner.sessions.write().await.insert(id.clone(), handle);
        self.entries().insert(
            id,
            Entry {
                owner: restorable.owner,
                last_used: Instant::now(),
                params: Some(restorable.json),
                tool_calls: 0,
            },
        );
        Ok(RestoreOutcome::Restored(WorkerTransport::spawn(worker)))
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        None
    }
}

/// rmcp's external session store, backed by the hand-overs above: the shared record itself is
/// in the broker, read by the gate in the call it makes anyway (no second round trip).
#[async_trait::async_trait]
impl SessionStore for Sessions {
    /// The record the gate left for this request; `None` (rmcp answers 404) for any other id.
    async fn load(&self, id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        Ok(self
            .handovers()
            .restorable
            .get(id)
            .map(|r| SessionState::new(r.params.clone())))
    }

    /// Called by rmcp after a successful `initialize`: the gate shares the params.
    async fn store(&self, id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let json = serde_json::to_string(&state.initialize_params)?;
        self.handovers()
            .opened
            .insert(Arc::from(id), (json, Instant::now()));
        Ok(())
    }

    /// Called by rmcp after a DELETE; the gate already ended the session at the broker (with the
    /// owner's token, which this call does not have).
    async fn delete(&self, _id: &str) -> Result<(), SessionStoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_the_prefix_and_43_url_safe_characters_decoding_to_32_bytes() {
        let id = new_session_id();
        let random = id.strip_prefix(SESSION_ID_PREFIX).expect("prefix");
        assert_eq!(random.len(), SESSION_ID_RANDOM_CHARS);
        assert!(
            random
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(random).unwrap().len(), 32);
    }

    #[test]
    fn only_minted_shapes_are_well_formed() {
        assert!(well_formed_id(&new_session_id()));
        for bad in [
            "",
            "mcps_",
            "2f0c7a6e-58f7-4c84-a1c5-3c2f0f3e5d11",
            &format!("mcps_{}", "a".repeat(42)),
            &format!("mcps_{}", "a".repeat(44)),
            &format!("mcps_{}!", "a".repeat(42)),
            &format!("xxxx_{}", "a".repeat(43)),
        ] {
            assert!(!well_formed_id(bad), "{bad}");
        }
    }

    #[test]
    fn ids_do_not_repeat() {
        let ids: HashSet<SessionId> = (0..10_000).map(|_| new_session_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    fn alice() -> Owner {
        Owner {
            issuer: "https://idp.example".into(),
            subject: "alice".into(),
        }
    }

    #[tokio::test]
    async fn tool_calls_are_counted_per_session_for_the_summary_line() {
        let sessions = Sessions::default();
        let (a, _ta) = sessions.create_session().await.unwrap();
        let (b, _tb) = sessions.create_session().await.unwrap();
        assert_eq!(sessions.count_tool_call(&a), Some(1));
        assert_eq!(sessions.count_tool_call(&a), Some(2));
        assert_eq!(
            sessions.count_tool_call(&b),
            Some(1),
            "each session its own count"
        );
        sessions.close_session(&a).await.unwrap();
        assert_eq!(
            sessions.count_tool_call(&a),
            None,
            "a closed session counts nothing"
        );
    }

    #[tokio::test]
    async fn the_first_owner_stays_and_another_is_refused() {
        let sessions = Sessions::default();
        let (id, _transport) = sessions.create_session().await.unwrap();
        assert_eq!(sessions.owner(&id), Some(None));
        assert_eq!(sessions.anonymous_count(), 1);
        assert_eq!(
            sessions.claim(&id, &alice()),
            Claim::Claimed { evicted: vec![] }
        );
        assert_eq!(sessions.owner(&id), Some(Some(alice())));
        assert_eq!(sessions.anonymous_count(), 0);
        assert_eq!(sessions.claim(&id, &alice()), Claim::Owned);
        let mallory = Owner {
            subject: "mallory".into(),
            ..alice()
        };
        assert_eq!(sessions.claim(&id, &mallory), Claim::OtherOwner);
        let other_issuer = Owner {
            issuer: "https://other.example".into(),
            ..alice()
        };
        assert_eq!(sessions.claim(&id, &other_issuer), Claim::OtherOwner);
        assert_eq!(sessions.owner(&id), Some(Some(alice())), "unchanged");
        sessions.close_session(&id).await.unwrap();
        assert_eq!(sessions.owner(&id), None);
        assert_eq!(sessions.claim(&id, &alice()), Claim::Unknown);
    }

    #[tokio::test]
    async fn a_subject_past_its_limit_loses_its_least_recently_used_session() {
        let sessions = Sessions::new(SessionLimits {
            max_per_subject: 2,
            ..SessionLimits::default()
        });
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(sessions.create_session().await.unwrap().0);
        }
        assert_eq!(
            sessions.claim(&ids[0], &alice()),
            Claim::Claimed { evicted: vec![] }
        );
        assert_eq!(
            sessions.claim(&ids[1], &alice()),
            Claim::Claimed { evicted: vec![] }
        );
        // Session 0 is used again: session 1 is now the least recently used.
        tokio::time::sleep(Duration::from_millis(5)).await;
        sessions.owner(&ids[0]);
        assert_eq!(
            sessions.claim(&ids[2], &alice()),
            Claim::Claimed {
                evicted: vec![ids[1].clone()]
            }
        );
        assert_eq!(sessions.owner(&ids[1]), None);
        assert!(sessions.owner(&ids[0]).is_some());
    }

    #[tokio::test]
    async fn ownerless_sessions_are_capped_and_reaped_when_idle() {
        let sessions = Arc::new(Sessions::new(SessionLimits {
            anonymous_idle: Duration::from_millis(300),
            max_anonymous: 2,
            ..SessionLimits::default()
        }));
        sessions.spawn_reaper();
        let (a, _ta) = sessions.create_session().await.unwrap();
        assert!(!sessions.anonymous_full());
        let (b, _tb) = sessions.create_session().await.unwrap();
        assert!(sessions.anonymous_full());
        sessions.claim(&b, &alice());
        assert!(
            !sessions.anonymous_full(),
            "an owned session does not count"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        // Polled without `owner()`, which would count as use.
        while sessions.entries().contains_key(&a) {
            assert!(
                Instant::now() < deadline,
                "the idle ownerless session was not closed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !sessions.has_session(&a).await.unwrap(),
            "rmcp's session closed too"
        );
        assert!(
            sessions.has_session(&b).await.unwrap(),
            "owned sessions stay"
        );
    }

    #[tokio::test]
    async fn owned_sessions_close_after_the_session_idle_limit() {
        // rmcp's own idle timeout is off (direct answers never reach its worker); the reaper
        // closes owned sessions after `idle` without a request.
        let sessions = Arc::new(Sessions::new(SessionLimits {
            idle: Duration::from_millis(300),
            anonymous_idle: Duration::from_secs(3600),
            ..SessionLimits::default()
        }));
        sessions.spawn_reaper();
        let (a, _ta) = sessions.create_session().await.unwrap();
        sessions.claim(&a, &alice());
        let deadline = Instant::now() + Duration::from_secs(10);
        while sessions.entries().contains_key(&a) {
            assert!(
                Instant::now() < deadline,
                "the idle owned session was not closed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !sessions.has_session(&a).await.unwrap(),
            "rmcp's session closed too"
        );
    }

    #[tokio::test]
    async fn a_session_answering_a_request_is_not_idle() {
        let sessions = Arc::new(Sessions::new(SessionLimits {
            idle: Duration::from_millis(300),
            anonymous_idle: Duration::from_millis(300),
            ..SessionLimits::default()
        }));
        let (busy, _tb) = sessions.create_session().await.unwrap();
        let (quiet, _tq) = sessions.create_session().await.unwrap();
        sessions.claim(&busy, &alice());
        sessions.claim(&quiet, &alice());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let answer = crate::direct::Answer {
            id: rmcp::model::NumberOrString::Number(1),
            json: None,
            body: None,
            message: Box::pin(async move {
                let _ = released.await;
                ServerJsonRpcMessage::response(
                    rmcp::model::ServerResult::empty(()),
                    rmcp::model::NumberOrString::Number(1),
                )
            }),
        };
        let stream = sessions.direct_stream(&busy, answer);
        let later = Instant::now() + Duration::from_millis(400);
        assert_eq!(
            sessions.idle(later),
            vec![quiet.clone()],
            "only the quiet one is idle"
        );
        // The answer ends (its stream is dropped); the session's idle time started again.
        drop(release);
        drop(stream);
        let deadline = Instant::now() + Duration::from_secs(10);
        while sessions.streams.answering(&busy) {
            assert!(Instant::now() < deadline, "the dropped call never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !sessions.idle(later).contains(&busy),
            "idle from the last look, not the request"
        );
    }

    /// `notifications/cancelled` for request `n`.
    fn cancelled(n: i64) -> ClientJsonRpcMessage {
        serde_json::from_value(serde_json::json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": { "requestId": n, "reason": "user" }
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_cancelled_direct_call_ends_its_stream_without_an_answer() {
        let sessions = Sessions::default();
        let (id, _transport) = sessions.create_session().await.unwrap();
        let request = rmcp::model::NumberOrString::Number(7);
        let answer = crate::direct::Answer {
            id: request.clone(),
            json: None,
            body: None,
            message: Box::pin(futures::future::pending()),
        };
        let mut stream = std::pin::pin!(sessions.direct_stream(&id, answer));
        let _ = sessions.accept_message(&id, cancelled(7)).await;
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream ends once cancelled");
        assert!(next.is_none(), "no answer to a cancelled request: {next:?}");
        assert!(
            sessions.direct_calls().is_empty(),
            "the call is no longer registered"
        );
    }

    #[tokio::test]
    async fn a_json_answer_keeps_its_session_answering_and_a_cancelled_one_gives_nothing() {
        let sessions = Sessions::default();
        let (id, _transport) = sessions.create_session().await.unwrap();
        let pending = |n: i64| crate::direct::Answer {
            id: rmcp::model::NumberOrString::Number(n),
            json: None,
            body: None,
            message: Box::pin(futures::future::pending()),
        };
        // Answering while the future lives, not after it is dropped (the client went away).
        let call = sessions.direct_json(&id, pending(1));
        assert!(sessions.streams.answering(&id));
        drop(call);
        assert!(!sessions.streams.answering(&id));
        // notifications/cancelled ends it with nothing to send.
        let call = sessions.direct_json(&id, pending(2));
        let _ = sessions.accept_message(&id, cancelled(2)).await;
        let answer = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the call ends once cancelled");
        assert!(
            answer.is_none(),
            "no answer to a cancelled request: {answer:?}"
        );
        assert!(!sessions.streams.answering(&id));
        assert!(sessions.direct_calls().is_empty());
    }

    const PARAMS: &str = r#"{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}"#;

    #[tokio::test]
    async fn only_a_session_the_gate_vouched_for_is_restored_with_the_brokers_owner() {
        let sessions = Sessions::default();
        let id: SessionId = new_session_id();
        // Nothing left by the gate: unknown (rmcp answers 404), never created from the id alone.
        assert!(sessions.load(&id).await.unwrap().is_none());
        assert!(matches!(
            sessions.restore_session(id.clone()).await.unwrap(),
            RestoreOutcome::NotSupported
        ));
        assert!(!sessions.holds(&id));

        sessions.expect_restore(&id, PARAMS, Some(alice())).unwrap();
        let state = sessions.load(&id).await.unwrap().expect("the record");
        assert_eq!(state.initialize_params.client_info.name, "t");
        assert!(matches!(
            sessions.restore_session(id.clone()).await.unwrap(),
            RestoreOutcome::Restored(_)
        ));
        assert!(sessions.holds(&id));
        assert!(sessions.has_session(&id).await.unwrap());
        assert_eq!(sessions.owner(&id), Some(Some(alice())));
        // The hand-over is used once.
        assert!(sessions.load(&id).await.unwrap().is_none());
        assert!(sessions.expect_restore(&id, "not json", None).is_err());
    }

    #[tokio::test]
    async fn initialize_params_rmcp_stores_are_handed_to_the_gate_once() {
        let sessions = Sessions::default();
        let (id, _transport) = sessions.create_session().await.unwrap();
        let params: InitializeRequestParams = serde_json::from_str(PARAMS).unwrap();
        sessions
            .store(&id, &SessionState::new(params))
            .await
            .unwrap();
        let json = sessions.take_opened(&id).expect("the params");
        assert!(json.contains("2025-11-25"), "{json}");
        assert_eq!(sessions.take_opened(&id), None);
        // Deleting from rmcp's store is the gate's business (it has the owner's token).
        sessions.delete(&id).await.unwrap();
        assert!(sessions.holds(&id));
    }

    #[tokio::test]
    async fn created_sessions_are_known_and_closed_ones_are_not() {
        let sessions = Sessions::default();
        let (id, _transport) = sessions.create_session().await.unwrap();
        assert!(id.starts_with(SESSION_ID_PREFIX));
        assert!(sessions.has_session(&id).await.unwrap());
        sessions.close_session(&id).await.unwrap();
        assert!(!sessions.has_session(&id).await.unwrap());
        assert!(
            matches!(
                sessions.restore_session(id).await.unwrap(),
                RestoreOutcome::NotSupported
            ),
            "a closed id is never restored"
        );
    }
}
