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
//! Every rmcp operation is the local manager's own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::WorkerTransport;
use rmcp::transport::common::server_side_http::{ServerSseMessage, SessionId};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, LocalSessionWorker, SessionConfig,
    create_local_session,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, SessionManager,
};

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
    /// rmcp's idle timeout for every session (`ADAPTER_SESSION_IDLE`).
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
}

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

/// rmcp's in-process session manager, minting 256-bit session ids and keeping owners.
#[derive(Debug)]
pub(crate) struct Sessions {
    inner: LocalSessionManager,
    limits: SessionLimits,
    entries: Mutex<HashMap<SessionId, Entry>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(SessionLimits::default())
    }
}

impl Sessions {
    /// Sessions closed after `limits.idle` without a request (rmcp's idle timeout), and after
    /// `limits.anonymous_idle` while they have no owner (see [`Sessions::spawn_reaper`]).
    pub(crate) fn new(limits: SessionLimits) -> Self {
        let mut inner = LocalSessionManager::default();
        inner.session_config.keep_alive = Some(limits.idle);
        Self {
            inner,
            limits,
            entries: Mutex::new(HashMap::new()),
        }
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

    /// Sessions without an owner idle longer than `ADAPTER_ANONYMOUS_SESSION_IDLE`.
    fn idle_anonymous(&self, now: Instant) -> Vec<SessionId> {
        self.entries()
            .iter()
            .filter(|(_, e)| {
                e.owner.is_none() && now.duration_since(e.last_used) >= self.limits.anonymous_idle
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Starts the task that closes ownerless sessions once idle for
    /// `ADAPTER_ANONYMOUS_SESSION_IDLE` (rmcp's own timeout is fixed per session at creation, when
    /// nobody knows yet whether a token will follow). The task ends with the last `Arc`.
    pub(crate) fn spawn_reaper(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let period = (self.limits.anonymous_idle / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(sessions) = weak.upgrade() else {
                    return;
                };
                let idle = sessions.idle_anonymous(Instant::now());
                if !idle.is_empty() {
                    tracing::debug!(count = idle.len(), "closing idle sessions without an owner");
                }
                for id in idle {
                    let _ = sessions.close_session(&id).await;
                }
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
            },
        );
        Ok((id, WorkerTransport::spawn(worker)))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.entries().remove(id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }

    /// Never restores: ids are only ever minted here, so an id this process does not hold is
    /// unknown (404), never re-created from what the client sent.
    async fn restore_session(
        &self,
        _id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(RestoreOutcome::NotSupported)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        None
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
