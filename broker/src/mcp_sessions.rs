//! MCP adapter sessions shared by every adapter replica: the record that lets any replica serve
//! any request of a session, kept in the broker's store next to the session's binding.
//!
//! An MCP session lives in the memory of the adapter that answered `initialize` (rmcp's worker).
//! Behind a load balancer without stickiness the next request lands on another replica, which
//! must know that the session exists, has not ended or idled out, whether a token already bound
//! it, and what the client sent in `initialize` (rmcp replays it to rebuild its worker there).
//! That is this record, keyed by the session's handle (a keyed hash; the id itself is never
//! stored) and holding no secret:
//!
//! - written once, set-if-absent, when the adapter opens the session (`OPEN`);
//! - read on every request that names the session, inside the `GetCredentials` call the adapter
//!   makes anyway (no extra hop) and refreshed to the session's idle timeout (a `SET … XX`, so a
//!   concurrent end is never undone) — idle expiry is the record's TTL, the same for every replica;
//! - ended by a DELETE on any replica (`END`), after the owner's token was accepted: the record
//!   stays as a tombstone until its idle timeout, so the session cannot be opened again;
//! - lost only with the store (the memory store's broker restarting): a replica that still holds
//!   the session sends its `initialize` params with `CONTINUE` and the record is written again
//!   (set-if-absent, so never over a tombstone or a live record); its binding was lost with it and
//!   is made again by the token, as before shared sessions.
//!
//! A revoked session is refused by every replica through its binding (`SessionRecord::revoked`),
//! which token-less lookups check too.
//!
//! With the memory store the records live in this process: right for one broker process serving
//! any number of adapters; several broker replicas need the Redis store (as for bindings).

use crate::hashing::SessionHandle;
use crate::store::{AnyStore, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Largest `initialize` params accepted (JSON): real ones are a few hundred bytes.
pub const MAX_INITIALIZE_PARAMS: usize = 16 * 1024;

/// Shortest and longest idle timeout an adapter may ask for.
pub const IDLE_RANGE_MS: std::ops::RangeInclusive<u64> = 1_000..=86_400_000;

/// The shared record of one MCP session. No secret: the client's `initialize` params, whether a
/// token bound it, and its idle timeout.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct McpRecord {
    /// The client's `initialize` params as JSON.
    pub initialize_params_json: String,
    /// True once a token bound the session.
    pub owned: bool,
    /// The idle timeout the adapter asked for; each use extends the record by this much.
    pub idle_ms: u64,
    pub created_at_ms: i64,
    /// Ended by a DELETE: kept (as a tombstone) until its idle timeout, so that a replica still
    /// holding the session cannot open it again.
    #[serde(default)]
    pub ended: bool,
}

/// Why a shared-session request was refused. Messages name the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum McpSessionError {
    #[error(
        "MCP session unknown, ended, idle past its timeout or revoked; start a new session with initialize"
    )]
    Gone,
    #[error("MCP session already open: OPEN is for a session id the adapter has just created")]
    AlreadyOpen,
    #[error("mcp.{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log cannot be written: nothing is ended without a record of it.
    #[error("{0}")]
    Audit(String),
}

/// Where the records live: in the broker's shared store (Redis) or, with the memory store, here.
pub struct McpSessions {
    store: Arc<AnyStore>,
    /// Used only with the memory store: handle → (record, deadline).
    local: Mutex<HashMap<String, (McpRecord, Instant)>>,
}

fn key(handle: &SessionHandle) -> String {
    format!("cb:v1:mcp:{{{}}}", handle.as_str())
}

impl McpSessions {
    pub fn new(store: Arc<AnyStore>) -> Self {
        Self {
            store,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, (McpRecord, Instant)>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live record, if any (a `store.get_mcp_session` span when traces are exported).
    pub async fn get(&self, handle: &SessionHandle) -> Result<Option<McpRecord>, StoreError> {
        let span = self.store.span("get_mcp_session");
        self.get_untraced(handle).instrument(span).await
    }

    async fn get_untraced(&self, handle: &SessionHandle) -> Result<Option<McpRecord>, StoreError> {
        match self.store.as_ref() {
            AnyStore::Redis(r) => r.get_sealed(&key(handle)).await,
            AnyStore::Memory(_) => {
                let mut map = self.local();
                let now = Instant::now();
                // Expired entries go when met, and a sweep of the whole map when it grows.
                if map.len() > 4096 {
                    map.retain(|_, (_, deadline)| *deadline > now);
                }
                Ok(map
                    .get(handle.as_str())
                    .filter(|(_, deadline)| *deadline > now)
                    .map(|(record, _)| record.clone()))
            }
        }
    }

    /// Writes the record for `record.idle_ms`: only if absent (`must_exist` false, opening) or
    /// only if present (refreshing). Returns whether it was written.
    pub async fn put(
        &self,
        handle: &SessionHandle,
        record: &McpRecord,
        must_exist: bool,
    ) -> Result<bool, StoreError> {
        let span = self.store.span("put_mcp_session");
        self.put_untraced(handle, record, must_exist)
            .instrument(span)
            .await
    }

    async fn put_untraced(
        &self,
        handle: &SessionHandle,
        record: &McpRecord,
        must_exist: bool,
    ) -> Result<bool, StoreError> {
        let ttl = Duration::from_millis(record.idle_ms);
        match self.store.as_ref() {
            AnyStore::Redis(r) => r.put_sealed(&key(handle), record, ttl, must_exist).await,
            AnyStore::Memory(_) => {
                let mut map = self.local();
                let now = Instant::now();
                let exists = map
                    .get(handle.as_str())
                    .is_some_and(|(_, deadline)| *deadline > now);
                if exists != must_exist {
                    return Ok(false);
                }
                map.insert(handle.as_str().to_string(), (record.clone(), now + ttl));
                Ok(true)
            }
        }
    }

    /// Writes again a record the store lost, for a replica that still holds the session: the
    /// written record, or the live one a concurrent request of the same session wrote first (two
    /// requests of one session after a Redis restart race here; the loser must not be told the
    /// session is gone). `None` when a tombstone is there: the session ended meanwhile.
    pub async fn reopen(
        &self,
        handle: &SessionHandle,
        record: &McpRecord,
    ) -> Result<Option<McpRecord>, StoreError> {
        if self.put(handle, record, false).await? {
            return Ok(Some(record.clone()));
        }
        Ok(self.get(handle).await?.filter(|r| !r.ended))
    }

    /// Ends the session for every replica: the record becomes a tombstone for its idle timeout.
    pub async fn end(&self, handle: &SessionHandle, record: &McpRecord) -> Result<(), StoreError> {
        let tombstone = McpRecord {
            ended: true,
            ..record.clone()
        };
        if !self.put(handle, &tombstone, true).await? {
            // Gone meanwhile (expired): nothing left to end.
            self.forget(handle).await?;
        }
        Ok(())
    }

    /// Drops the record (an END that raced with expiry).
    async fn forget(&self, handle: &SessionHandle) -> Result<(), StoreError> {
        match self.store.as_ref() {
            AnyStore::Redis(r) => r.delete_key(&key(handle)).await.map(|_| ()),
            AnyStore::Memory(_) => {
                self.local().remove(handle.as_str());
                Ok(())
            }
        }
    }
}

/// Checks an adapter's idle timeout and `initialize` params at the boundary.
pub fn check_use(idle_ms: u64, initialize_params_json: &str) -> Result<(), McpSessionError> {
    if !IDLE_RANGE_MS.contains(&idle_ms) {
        return Err(McpSessionError::InvalidArgument(format!(
            "idle_ms must be {} to {} (the adapter's ADAPTER_SESSION_IDLE / ADAPTER_ANONYMOUS_SESSION_IDLE)",
            IDLE_RANGE_MS.start(),
            IDLE_RANGE_MS.end()
        )));
    }
    if initialize_params_json.len() > MAX_INITIALIZE_PARAMS {
        return Err(McpSessionError::InvalidArgument(format!(
            "initialize_params_json is larger than {MAX_INITIALIZE_PARAMS} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn handle(n: u8) -> SessionHandle {
        SessionHandle::parse(&format!("{n:02x}").repeat(16)).unwrap()
    }

    fn record(idle_ms: u64) -> McpRecord {
        McpRecord {
            initialize_params_json: "{}".into(),
            owned: false,
            idle_ms,
            created_at_ms: 0,
            ended: false,
        }
    }

    #[tokio::test]
    async fn open_is_once_refresh_needs_a_record_and_end_is_final() {
        let s = McpSessions::new(Arc::new(AnyStore::Memory(MemoryStore::new())));
        let h = handle(1);
        assert_eq!(s.get(&h).await.unwrap(), None);
        assert!(
            !s.put(&h, &record(60_000), true).await.unwrap(),
            "refresh of nothing"
        );
        assert!(s.put(&h, &record(60_000), false).await.unwrap());
        assert!(
            !s.put(&h, &record(60_000), false).await.unwrap(),
            "open twice"
        );
        let owned = McpRecord {
            owned: true,
            ..record(60_000)
        };
        assert!(s.put(&h, &owned, true).await.unwrap());
        assert_eq!(s.get(&h).await.unwrap(), Some(owned.clone()));
        assert_eq!(s.get(&handle(2)).await.unwrap(), None, "other sessions");
        s.end(&h, &owned).await.unwrap();
        assert!(s.get(&h).await.unwrap().unwrap().ended, "a tombstone");
        assert!(
            !s.put(&h, &owned, false).await.unwrap(),
            "never opened again"
        );
    }

    #[tokio::test]
    async fn a_lost_record_reopened_twice_is_live_for_both_but_never_over_a_tombstone() {
        let s = McpSessions::new(Arc::new(AnyStore::Memory(MemoryStore::new())));
        let h = handle(4);
        let first = McpRecord {
            created_at_ms: 1,
            ..record(60_000)
        };
        let second = McpRecord {
            created_at_ms: 2,
            ..record(60_000)
        };
        assert_eq!(s.reopen(&h, &first).await.unwrap(), Some(first.clone()));
        // The second request of the same session finds the first one's record, not "gone".
        assert_eq!(s.reopen(&h, &second).await.unwrap(), Some(first.clone()));
        s.end(&h, &first).await.unwrap();
        assert_eq!(
            s.reopen(&h, &second).await.unwrap(),
            None,
            "ended stays ended"
        );
    }

    #[tokio::test]
    async fn a_record_idle_past_its_timeout_is_gone() {
        let s = McpSessions::new(Arc::new(AnyStore::Memory(MemoryStore::new())));
        let h = handle(3);
        // A zero timeout (never accepted from a request) expires at once, without waiting.
        assert!(s.put(&h, &record(0), false).await.unwrap());
        assert_eq!(s.get(&h).await.unwrap(), None);
        assert!(!s.put(&h, &record(0), true).await.unwrap());
    }

    #[test]
    fn uses_are_checked_at_the_boundary() {
        assert!(check_use(300_000, "{}").is_ok());
        for idle in [0, 999, 86_400_001] {
            let e = check_use(idle, "{}").unwrap_err().to_string();
            assert!(
                e.contains("idle_ms") && e.contains("ADAPTER_SESSION_IDLE"),
                "{e}"
            );
        }
        let big = "x".repeat(MAX_INITIALIZE_PARAMS + 1);
        assert!(
            check_use(300_000, &big)
                .unwrap_err()
                .to_string()
                .contains("initialize_params_json")
        );
    }
}
