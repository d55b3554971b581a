//! The embedded store: one process, no network, no sealing (nothing leaves the process).
//!
//! Expired records are dropped when read and by [`MemoryStore::sweep`], which the broker runs
//! periodically so that abandoned sessions do not accumulate.

use super::{LockToken, Store, StoreError, Version};
use crate::credentials::CredentialRecord;
use crate::hashing::SessionHandle;
use crate::sessions::SessionRecord;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

struct Entry<T> {
    value: T,
    version: u64,
    deadline: Instant,
}

/// In-process maps behind read-write locks; critical sections are map operations only.
#[derive(Default)]
pub struct MemoryStore {
    credentials: RwLock<HashMap<String, Entry<CredentialRecord>>>,
    sessions: RwLock<BTreeMap<SessionHandle, Entry<SessionRecord>>>,
    locks: RwLock<HashMap<String, (LockToken, Instant)>>,
    next_version: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops expired records and locks; returns how many sessions remain.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        self.credentials
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, e| e.deadline > now);
        self.locks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (_, d)| *d > now);
        let mut s = self
            .sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.retain(|_, e| e.deadline > now);
        s.len()
    }

    fn version(&self) -> u64 {
        self.next_version
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }
}

/// Time left until a unix-milliseconds instant, as an `Instant` deadline.
fn deadline_at(unix_ms: i64) -> Instant {
    let now_ms = crate::clock::now_ms();
    Instant::now() + Duration::from_millis(unix_ms.saturating_sub(now_ms).max(0) as u64)
}

impl Store for MemoryStore {
    async fn get_credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        let map = self
            .credentials
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(map
            .get(id)
            .filter(|e| e.deadline > Instant::now())
            .map(|e| e.value.clone()))
    }

    async fn put_credential(&self, id: &str, record: &CredentialRecord) -> Result<(), StoreError> {
        let entry = Entry {
            value: record.clone(),
            version: 0,
            deadline: deadline_at(record.expires_at_ms),
        };
        self.credentials
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_string(), entry);
        Ok(())
    }

    async fn try_lock(&self, id: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        let mut locks = self
            .locks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if locks.get(id).is_some_and(|(_, d)| *d > now) {
            return Ok(None);
        }
        let token = LockToken::random();
        locks.insert(id.to_string(), (token.clone(), now + ttl));
        Ok(Some(token))
    }

    async fn unlock(&self, id: &str, token: &LockToken) -> Result<(), StoreError> {
        let mut locks = self
            .locks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if locks.get(id).is_some_and(|(t, _)| t == token) {
            locks.remove(id);
        }
        Ok(())
    }

    async fn get_session(
        &self,
        handle: &SessionHandle,
    ) -> Result<Option<(SessionRecord, Version)>, StoreError> {
        let map = self
            .sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(map
            .get(handle)
            .filter(|e| e.deadline > Instant::now())
            .map(|e| (e.value.clone(), Version(e.version.to_be_bytes().to_vec()))))
    }

    async fn swap_session(
        &self,
        handle: &SessionHandle,
        expected: Option<&Version>,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let version = self.version();
        let mut map = self
            .sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let current = map
            .get(handle)
            .filter(|e| e.deadline > now)
            .map(|e| Version(e.version.to_be_bytes().to_vec()));
        if current.as_ref() != expected {
            return Ok(false);
        }
        map.insert(
            handle.clone(),
            Entry {
                value: record.clone(),
                version,
                deadline: now + ttl,
            },
        );
        Ok(true)
    }

    async fn list_sessions(
        &self,
        after: Option<&SessionHandle>,
        limit: usize,
    ) -> Result<Vec<(SessionHandle, SessionRecord)>, StoreError> {
        use std::ops::Bound;
        let map = self
            .sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let lower = match after {
            Some(h) => Bound::Excluded(h.clone()),
            None => Bound::Unbounded,
        };
        Ok(map
            .range((lower, Bound::Unbounded))
            .filter(|(_, e)| e.deadline > now)
            .take(limit)
            .map(|(h, e)| (h.clone(), e.value.clone()))
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
