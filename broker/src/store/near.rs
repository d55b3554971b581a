//! An in-process copy of credential records read from a shared store, kept until their refresh
//! time.
//!
//! With Redis every warm request used to read two records: the session (it names the credential)
//! and the credential. The session must be read every time — a revocation on one replica is seen
//! by every replica at its next call — but a credential record is immutable under its id until
//! its `refresh_at`: ids are keyed hashes of the whole scope, a credential is never revoked per
//! session, and a refresh writes a new record whose `refresh_at` is later. So until `refresh_at`
//! (the same instant on every replica) the copy is exactly what the store would answer, and one
//! Redis round trip, one unseal and one JSON decode per warm request go away (BENCHMARKS.md).
//!
//! Bounded: at [`NearCache::capacity`] entries, stale entries are dropped first, then everything
//! (a later read fills it again from the store). A hand-rolled map rather than a cache crate: the
//! only policy needed is "valid until a time the record carries".

use super::records::CredentialRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Credential records by id, each served only while `now < refresh_at_ms` and while it is
/// servable ([`CredentialRecord::servable`]: more than `MIN_REMAINING` left) — the same rule as
/// the store, whatever `BROKER_REFRESH_MARGIN` puts `refresh_at` at.
#[derive(Debug)]
pub struct NearCache {
    entries: Mutex<HashMap<String, Arc<CredentialRecord>>>,
    capacity: usize,
}

impl NearCache {
    /// Default bound: one entry per active scope, about 1 KiB each.
    pub const DEFAULT_CAPACITY: usize = 50_000;

    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Most entries held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The record for `id`, if held and not yet due for refresh at `now_ms`. A stale entry is
    /// removed, so the caller reads the store (and starts the refresh) as without a cache.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Arc<CredentialRecord>> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match entries.get(id) {
            Some(record) if usable(record, now_ms) => Some(Arc::clone(record)),
            Some(_) => {
                entries.remove(id);
                None
            }
            None => None,
        }
    }

    /// Keeps `record` under `id` if it is not yet due for refresh at `now_ms`.
    pub fn put(&self, id: &str, record: &Arc<CredentialRecord>, now_ms: i64) {
        if !usable(record, now_ms) {
            return;
        }
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(id) {
            entries.retain(|_, r| usable(r, now_ms));
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(id.to_string(), Arc::clone(record));
    }

    /// Entries held (fresh or not yet swept).
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Not yet due for refresh, and servable.
fn usable(record: &CredentialRecord, now_ms: i64) -> bool {
    now_ms < record.refresh_at_ms && record.servable(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn record(key: &str, refresh_at_ms: i64) -> Arc<CredentialRecord> {
        Arc::new(CredentialRecord {
            access_key_id: key.into(),
            secret_access_key: Secret::new("s"),
            session_token: Secret::new("t"),
            expires_at_ms: refresh_at_ms + 300_000,
            issued_at_ms: 0,
            refresh_at_ms,
            assumed_role_arn: "arn".into(),
            role_session_name: "n".into(),
        })
    }

    #[test]
    fn serves_a_record_until_its_refresh_time_and_not_after() {
        let cache = NearCache::new(10);
        cache.put("a", &record("AK1", 1_000), 0);
        assert_eq!(cache.get("a", 999).unwrap().access_key_id, "AK1");
        assert!(
            cache.get("a", 1_000).is_none(),
            "due for refresh: not served"
        );
        assert!(cache.is_empty(), "the stale entry is dropped");
    }

    #[test]
    fn a_record_already_due_is_not_kept() {
        let cache = NearCache::new(10);
        cache.put("a", &record("AK1", 1_000), 1_000);
        assert!(cache.get("a", 0).is_none());
    }

    #[test]
    fn never_serves_less_than_the_promised_time_left_whatever_the_margin() {
        // BROKER_REFRESH_MARGIN near zero: refresh_at lies within the last minute of the
        // credential. The store refuses to serve it there; so must the near cache.
        let cache = NearCache::new(10);
        let mut rec = (*record("AK1", 1_000_000)).clone();
        rec.expires_at_ms = 1_010_000;
        let rec = Arc::new(rec);
        cache.put("a", &rec, 0);
        assert!(cache.get("a", 900_000).is_some(), "110 s left");
        assert!(
            cache.get("a", 960_000).is_none(),
            "50 s left: less than MIN_REMAINING, though before refresh_at"
        );
        let late = NearCache::new(10);
        late.put("a", &rec, 960_000);
        assert!(late.is_empty(), "not kept either");
    }

    #[test]
    fn a_newer_record_replaces_the_old_one() {
        let cache = NearCache::new(10);
        cache.put("a", &record("AK1", 1_000), 0);
        cache.put("a", &record("AK2", 2_000), 10);
        assert_eq!(cache.get("a", 1_500).unwrap().access_key_id, "AK2");
    }

    #[test]
    fn stays_within_its_capacity_dropping_stale_entries_first() {
        let cache = NearCache::new(3);
        cache.put("old", &record("AK0", 100), 0);
        cache.put("a", &record("AK1", 10_000), 0);
        cache.put("b", &record("AK2", 10_000), 0);
        // Full; at t=200 "old" is stale and goes first.
        cache.put("c", &record("AK3", 10_000), 200);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("a", 300).is_some() && cache.get("c", 300).is_some());
        // Full of fresh entries: cleared, then the new one kept.
        cache.put("d", &record("AK4", 10_000), 300);
        assert!(cache.len() <= 3);
        assert!(cache.get("d", 300).is_some());
    }
}
