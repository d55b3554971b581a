//! The embedded store: one process, no network, no sealing (nothing leaves the process).
//!
//! Expired records are dropped when read and by [`MemoryStore::sweep`], which the broker runs
//! periodically so that abandoned sessions do not accumulate. Deadlines are read on the
//! injected [`Clock`], so tests move time instead of waiting for it.

use super::records::CredentialRecord;
use super::records::SessionRecord;
use super::{LockToken, Store, StoreError, Version};
use crate::clock::Clock;
use crate::hashing::SessionHandle;
use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

struct Entry<T> {
    value: T,
    version: u64,
    /// Unix milliseconds after which the entry is gone.
    deadline: i64,
}

/// `now` plus `ttl`, in unix milliseconds.
fn after(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// In-process maps behind read-write locks; critical sections are map operations only (so a
/// poisoned lock holds consistent maps and is used as is).
#[derive(Default)]
pub struct MemoryStore {
    clock: Clock,
    credentials: RwLock<HashMap<String, Entry<CredentialRecord>>>,
    sessions: RwLock<BTreeMap<SessionHandle, Entry<SessionRecord>>>,
    locks: RwLock<HashMap<String, (LockToken, i64)>>,
    next_version: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    /// A store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose expiries follow `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }

    /// Drops expired records and locks; returns how many sessions remain.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        self.credentials
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, e| e.deadline > now);
        self.locks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (_, d)| *d > now);
        let mut s = self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        s.retain(|_, e| e.deadline > now);
        s.len()
    }

    fn version(&self) -> u64 {
        self.next_version
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }
}

impl Store for MemoryStore {
    async fn get_credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        let map = self
            .credentials
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(map
            .get(id)
            .filter(|e| e.deadline > self.clock.now_ms())
            .map(|e| e.value.clone()))
    }

    async fn put_credential(&self, id: &str, record: &CredentialRecord) -> Result<(), StoreError> {
        let entry = Entry {
            value: record.clone(),
            version: 0,
            deadline: record.expires_at_ms,
        };
        self.credentials
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string(), entry);
        Ok(())
    }

    async fn try_lock(&self, id: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        let mut locks = self.locks.write().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now_ms();
        if locks.get(id).is_some_and(|(_, d)| *d > now) {
            return Ok(None);
        }
        let token = LockToken::random();
        locks.insert(id.to_string(), (token.clone(), after(now, ttl)));
        Ok(Some(token))
    }

    async fn unlock(&self, id: &str, token: &LockToken) -> Result<(), StoreError> {
        let mut locks = self.locks.write().unwrap_or_else(PoisonError::into_inner);
        if locks.get(id).is_some_and(|(t, _)| t == token) {
            locks.remove(id);
        }
        Ok(())
    }

    async fn get_session(
        &self,
        handle: &SessionHandle,
    ) -> Result<Option<(SessionRecord, Version)>, StoreError> {
        let map = self.sessions.read().unwrap_or_else(PoisonError::into_inner);
        Ok(map
            .get(handle)
            .filter(|e| e.deadline > self.clock.now_ms())
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
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now_ms();
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
                deadline: after(now, ttl),
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
        let map = self.sessions.read().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now_ms();
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
