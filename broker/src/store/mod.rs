//! Where sessions and credentials live between requests: in this process (`memory`) or in Redis
//! shared by every replica (`redis`). Both honour one contract, [`Store`]:
//!
//! - every record has a TTL (a credential until it expires, a session until its token's `exp` plus
//!   a grace, a revoked session for the revocation retention), so nothing outlives its use;
//! - sessions change only by compare-and-swap on the version read, so two replicas binding one
//!   session at once cannot both win;
//! - a short set-if-absent lock per credential id lets replicas agree on who calls STS.
//!
//! Records are typed; the Redis store seals them (AES-256-GCM) before they leave the process.

pub mod bucket;
pub mod memory;
pub mod near;
pub mod records;
pub mod redis;
mod seal;

use crate::hashing::SessionHandle;
use std::future::Future;
use std::time::Duration;
use tracing::Instrument;

pub use memory::MemoryStore;
pub use near::NearCache;
pub use records::{CredentialRecord, SessionRecord};
pub use redis::RedisStore;

/// Why the store could not answer. Both fail the request closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or timed out; retry later (UNAVAILABLE).
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    /// A record exists but cannot be read: wrong or missing key, or a foreign value. Never treated
    /// as absent, since that would let another subject bind over it.
    #[error("a stored record cannot be read: {0}")]
    Unreadable(String),
}

/// Opaque version of a session record, from [`Store::get_session`], for [`Store::swap_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub(crate) Vec<u8>);

/// Proof of holding a credential lock, to release only one's own lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockToken(pub(crate) String);

impl LockToken {
    pub(crate) fn random() -> Self {
        let mut b = [0u8; 16];
        rand::fill(&mut b);
        Self(hex::encode(b))
    }
}

/// The storage contract shared by the in-memory and Redis stores.
pub trait Store: Send + Sync + 'static {
    /// The credential stored under `id`, if present and not expired.
    fn get_credential(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<CredentialRecord>, StoreError>> + Send;

    /// Stores a credential until its expiration.
    fn put_credential(
        &self,
        id: &str,
        record: &CredentialRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes the issuing lock for `id` if nobody holds it (set-if-absent with expiry).
    fn try_lock(
        &self,
        id: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<LockToken>, StoreError>> + Send;

    /// Releases the lock if `token` still holds it.
    fn unlock(
        &self,
        id: &str,
        token: &LockToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The session record and its version.
    fn get_session(
        &self,
        handle: &SessionHandle,
    ) -> impl Future<Output = Result<Option<(SessionRecord, Version)>, StoreError>> + Send;

    /// Writes `record` if the stored version is still `expected` (`None`: no record yet).
    /// Returns false when another writer got there first.
    fn swap_session(
        &self,
        handle: &SessionHandle,
        expected: Option<&Version>,
        record: &SessionRecord,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Sessions in handle order, after `after`, at most `limit`.
    fn list_sessions(
        &self,
        after: Option<&SessionHandle>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(SessionHandle, SessionRecord)>, StoreError>> + Send;

    /// Whether the backend answers; drives the health status.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The store chosen by `BROKER_CACHE_URL`. An enum rather than a trait object: two backends,
/// static dispatch, no boxing on the hot path.
pub enum AnyStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Memory($s) => $e,
            AnyStore::Redis($s) => $e,
        }
    };
}

impl AnyStore {
    /// Short name for logs and health.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyStore::Memory(_) => "memory",
            AnyStore::Redis(_) => "redis",
        }
    }

    /// Drops what expired and the backend does not drop by itself: every expired record in
    /// memory; in Redis (which expires records itself) the session index's stale members.
    pub async fn sweep(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(m) => {
                m.sweep();
                Ok(())
            }
            AnyStore::Redis(r) => {
                if let Some(removed) = r.sweep().await?
                    && removed > 0
                {
                    tracing::debug!(removed, "removed expired sessions from the session index");
                }
                Ok(())
            }
        }
    }

    /// Whether records live outside this process, so that reading one costs a round trip (and
    /// an in-process [`NearCache`] of credentials pays).
    pub fn is_remote(&self) -> bool {
        matches!(self, AnyStore::Redis(_))
    }

    /// Whether the store keeps every key until its TTL (see
    /// [`RedisStore::check_eviction_policy`]); the memory store never evicts.
    pub async fn check_eviction_policy(&self, allow_eviction: bool) -> Result<(), String> {
        match self {
            AnyStore::Memory(_) => Ok(()),
            AnyStore::Redis(r) => r.check_eviction_policy(allow_eviction).await,
        }
    }

    /// The span of one store operation (`store.<operation>`), when traces are exported: the
    /// backend and the operation, never a key (keys are keyed hashes, but still not needed).
    pub(crate) fn span(&self, operation: &'static str) -> tracing::Span {
        crate::telemetry::span!(
            "store",
            otel.name = format!("store.{operation}"),
            db.system.name = self.kind(),
            db.operation.name = operation,
        )
    }

    /// How often [`AnyStore::sweep`] should run.
    pub fn sweep_interval(&self) -> Duration {
        match self {
            AnyStore::Memory(_) => Duration::from_secs(30),
            AnyStore::Redis(_) => Duration::from_secs(60),
        }
    }
}

impl Store for AnyStore {
    async fn get_credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        dispatch!(self, s => s.get_credential(id).instrument(self.span("get_credential")).await)
    }
    async fn put_credential(&self, id: &str, record: &CredentialRecord) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_credential(id, record).instrument(self.span("put_credential")).await)
    }
    async fn try_lock(&self, id: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        dispatch!(self, s => s.try_lock(id, ttl).instrument(self.span("try_lock")).await)
    }
    async fn unlock(&self, id: &str, token: &LockToken) -> Result<(), StoreError> {
        dispatch!(self, s => s.unlock(id, token).instrument(self.span("unlock")).await)
    }
    async fn get_session(
        &self,
        handle: &SessionHandle,
    ) -> Result<Option<(SessionRecord, Version)>, StoreError> {
        dispatch!(self, s => s.get_session(handle).instrument(self.span("get_session")).await)
    }
    async fn swap_session(
        &self,
        handle: &SessionHandle,
        expected: Option<&Version>,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.swap_session(handle, expected, record, ttl).instrument(self.span("swap_session")).await)
    }
    async fn list_sessions(
        &self,
        after: Option<&SessionHandle>,
        limit: usize,
    ) -> Result<Vec<(SessionHandle, SessionRecord)>, StoreError> {
        dispatch!(self, s => s.list_sessions(after, limit).instrument(self.span("list_sessions")).await)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }
}
