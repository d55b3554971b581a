//! The broker's operations — where token, role, scope, credentials and sessions meet. The gRPC
//! layer (`service`) only translates messages; everything it answers is decided here.

use crate::credentials::{CredentialEngine, CredentialRecord, EngineError, Lookup};
use crate::hashing::{KeyedHasher, SessionHandle};
use crate::quota::{LimitError, RateLimited, SubjectLimit};
use crate::role::{RoleError, RolePolicy};
use crate::scope::{Scope, ScopeError};
use crate::secret::Secret;
use crate::sessions::{
    Binding, SessionRecord, classify_token, decide, session_ttl, valid_session_id,
};
use crate::store::{AnyStore, Store, StoreError};
use crate::token::{Claims, TokenError, TokenValidator};
use std::sync::Arc;
use std::time::Duration;

/// Every way a request can fail, each with one gRPC code (see `service::status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the session's token has expired (claim \"exp\"): send a fresh token")]
    TokenExpired,
    #[error("the session is not bound yet: send the caller's token to bind it")]
    Unbound,
    #[error("the session is bound to another subject; start a new session")]
    OtherSubject,
    #[error("the session is unknown or was revoked; start a new session")]
    SessionGone,
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("the session changed concurrently too often; retry")]
    Contention,
    /// Over `BROKER_RATE_PER_SUBJECT` (RESOURCE_EXHAUSTED with the wait).
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
}

impl From<StoreError> for BrokerError {
    fn from(e: StoreError) -> Self {
        BrokerError::Engine(EngineError::Store(e))
    }
}

/// Most session records one ListSessions call reads, whatever its filter: a filter that matches
/// little answers a short (even empty) page with a next_page_token instead of reading on.
pub const LIST_SCAN_BUDGET: usize = 1000;

/// How long revoking a session id that was never bound keeps that id refused. Such a tombstone
/// must exist (a leaked id must not become bindable), but it names nothing in the store, so it is
/// kept short and bounded: an MCP client binds a new session on its first tool call, moments after
/// the id is made, so an id unbound for an hour is not one a live client still holds.
pub const UNBOUND_TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// Broker-wide settings beyond the parts' own.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Kept after a token's `exp` so a slightly late refreshed token still finds its session.
    pub session_grace: Duration,
    /// How long a revoked session id stays refused.
    pub revoked_retention: Duration,
    pub duration_secs: i32,
    /// `BROKER_RATE_PER_SUBJECT`: every credential request of a principal takes a token (`None`:
    /// off).
    pub subject_limit: Option<Arc<SubjectLimit>>,
}

/// A validated token and what it is allowed.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub claims: Claims,
    pub scope: Scope,
}

/// The answer to GetCredentials / BindSession.
#[derive(Debug, Clone)]
pub struct SessionAnswer {
    pub handle: SessionHandle,
    pub record: SessionRecord,
    pub credentials: Arc<CredentialRecord>,
    pub rebound: bool,
}

/// How an operator names a session.
#[derive(Debug, Clone)]
pub enum Selector {
    Id(Secret),
    Handle(String),
}

/// The broker.
pub struct Broker {
    validator: TokenValidator,
    roles: RolePolicy,
    engine: Arc<CredentialEngine>,
    store: Arc<AnyStore>,
    hasher: KeyedHasher,
    settings: BrokerSettings,
}

impl Broker {
    pub fn new(
        validator: TokenValidator,
        roles: RolePolicy,
        engine: Arc<CredentialEngine>,
        store: Arc<AnyStore>,
        hasher: KeyedHasher,
        settings: BrokerSettings,
    ) -> Self {
        Self {
            validator,
            roles,
            engine,
            store,
            hasher,
            settings,
        }
    }

    /// Limits every principal's credential requests (`BROKER_RATE_PER_SUBJECT`; `None`: off).
    pub fn with_subject_limit(mut self, limit: Option<SubjectLimit>) -> Self {
        self.settings.subject_limit = limit.map(Arc::new);
        self
    }

    /// Takes one token of the principal's rate bucket: called once per credential request, after
    /// its token was verified (so nobody spends another's bucket) and before anything is served.
    async fn within_limit(&self, issuer: &str, subject: &str) -> Result<(), BrokerError> {
        let Some(limit) = &self.settings.subject_limit else {
            return Ok(());
        };
        // Boxed, like every cold-path await below: the warm request's future stays small.
        Box::pin(limit.check(issuer, subject))
            .await
            .map_err(|e| match e {
                LimitError::Exceeded(e) => BrokerError::RateLimited(e),
                LimitError::Store(e) => e.into(),
            })
    }

    pub fn engine(&self) -> &Arc<CredentialEngine> {
        &self.engine
    }

    pub fn store(&self) -> &Arc<AnyStore> {
        &self.store
    }

    /// The token rules, for callers that need a validated token without a role (operators).
    pub fn validator(&self) -> &TokenValidator {
        &self.validator
    }

    /// Validates a token and decides its role and scope.
    pub async fn authorize(
        &self,
        token: &Secret,
        role: Option<&str>,
    ) -> Result<Authorized, BrokerError> {
        let claims = self.validator.validate(token).await?;
        let role = self.roles.resolve(&claims, role)?;
        let mut scope = Scope::build(&claims, &role, self.settings.duration_secs)?;
        if self.engine.keys_by_token() {
            scope = scope.bind_to_token(self.hasher.token_fingerprint(token.expose()));
        }
        Ok(Authorized { claims, scope })
    }

    /// Stateless exchange: token in, credentials out.
    pub async fn exchange(
        &self,
        token: &Secret,
        role: Option<&str>,
    ) -> Result<(Authorized, Arc<CredentialRecord>), BrokerError> {
        let auth = self.authorize(token, role).await?;
        self.within_limit(&auth.claims.issuer, &auth.claims.subject)
            .await?;
        let (creds, lookup) = self.engine.credentials(&auth.scope, Some(token)).await?;
        tracing::info!(subject = %auth.claims.subject, role = %auth.scope.role, cache = ?lookup, "token exchanged");
        Ok((auth, creds))
    }

    /// GetCredentials and BindSession: serve the session's credentials, binding or rebinding it
    /// when a new token comes along.
    ///
    /// Every call needs the caller's token (design invariant 2): a session id only selects the
    /// session and is never proof of who asks, so a call without a token is UNAUTHENTICATED
    /// whatever state the session is in, and answers no credential. The fast path stays: a token
    /// whose fingerprint matches the bound one is not validated again (its `exp` still is).
    pub async fn session_credentials(
        &self,
        session_id: &Secret,
        token: &Secret,
        role: Option<&str>,
    ) -> Result<SessionAnswer, BrokerError> {
        if !valid_session_id(session_id.expose()) {
            return Err(BrokerError::InvalidArgument(
                "session_id must be 16 to 512 visible ASCII characters".into(),
            ));
        }
        if token.is_empty() {
            return Err(TokenError::Missing.into());
        }
        let handle = self.hasher.session_handle(session_id.expose());
        // One token of the principal's rate per request, whatever retries the loop makes.
        let mut counted = false;
        let fingerprint = self.hasher.token_fingerprint(token.expose());
        for _ in 0..4 {
            let existing = self.store.get_session(&handle).await?;
            let current = existing.as_ref().map(|(r, _)| r);
            match classify_token(current, &fingerprint, role) {
                Some(Binding::Revoked) => return Err(BrokerError::SessionGone),
                Some(Binding::SameToken) => {
                    let Some((record, _)) = existing else {
                        // classify_token answers SameToken only for a record.
                        return Err(BrokerError::SessionGone);
                    };
                    // The bound token itself (same fingerprint): its principal is the record's.
                    if !counted {
                        self.within_limit(&record.issuer, &record.subject).await?;
                    }
                    // Never past the token's `exp`. The record names its credential (the keyed
                    // hash of its scope, written when it was bound); the sealed record cannot be
                    // altered in the store. Awaited here rather than in a helper taking the
                    // record by value: an async fn's arguments are laid out apart from its
                    // locals, and this future is the one every warm request allocates and moves.
                    if record.token_expires_at * 1000 <= self.now_ms() {
                        return Err(BrokerError::TokenExpired);
                    }
                    let (creds, lookup) = self
                        .engine
                        .credentials_by_id(&record.credential_id, &record.scope, Some(token))
                        .await?;
                    return Ok(served(handle, record, creds, lookup));
                }
                _ => {}
            }
            // The cold path (a new or changed token): boxed so that the warm path's future,
            // which every request allocates and moves, does not carry its size.
            let auth = Box::pin(self.authorize(token, role)).await?;
            let binding = decide(current, &auth.claims.issuer, &auth.claims.subject);
            match binding {
                Binding::Revoked => return Err(BrokerError::SessionGone),
                Binding::OtherSubject => {
                    tracing::warn!(session = %handle, subject = %auth.claims.subject, "token of another subject presented on a bound session; refused");
                    return Err(BrokerError::OtherSubject);
                }
                Binding::Unbound | Binding::Rebind | Binding::SameToken => {}
            }
            if binding == Binding::Rebind {
                tracing::info!(session = %handle, subject = %auth.claims.subject, "new token detected, re-authenticating");
            }
            if !counted {
                self.within_limit(&auth.claims.issuer, &auth.claims.subject)
                    .await?;
                counted = true;
            }
            let (creds, lookup) =
                Box::pin(self.engine.credentials(&auth.scope, Some(token))).await?;
            let now = self.now_ms();
            let record = SessionRecord {
                subject: auth.claims.subject.clone(),
                issuer: auth.claims.issuer.clone(),
                credential_id: self.engine.credential_id(&auth.scope),
                scope: auth.scope.clone(),
                token_fingerprint: fingerprint.clone(),
                token_expires_at: auth.claims.expires_at,
                created_at_ms: current.map_or(now, |r| r.created_at_ms),
                updated_at_ms: now,
                revoked: false,
                rebind_count: current.map_or(0, |r| r.rebind_count + 1),
            };
            let ttl = session_ttl(record.token_expires_at, now, self.settings.session_grace);
            let version = existing.as_ref().map(|(_, v)| v);
            if Box::pin(self.store.swap_session(&handle, version, &record, ttl)).await? {
                if binding == Binding::Rebind {
                    tracing::info!(session = %handle, subject = %record.subject, role = %record.scope.role, cache = ?lookup, "session updated with new token");
                } else {
                    tracing::info!(session = %handle, subject = %record.subject, role = %record.scope.role, cache = ?lookup, "session bound");
                }
                return Ok(SessionAnswer {
                    handle,
                    record,
                    credentials: creds,
                    rebound: true,
                });
            }
        }
        Err(BrokerError::Contention)
    }

    /// Now, on the engine's clock (the one credential expiry and pauses are judged by).
    fn now_ms(&self) -> i64 {
        self.engine.clock().now_ms()
    }

    /// The handle an operator's selector names.
    pub fn handle_of(&self, selector: &Selector) -> Result<SessionHandle, BrokerError> {
        match selector {
            Selector::Id(id) if valid_session_id(id.expose()) => {
                Ok(self.hasher.session_handle(id.expose()))
            }
            Selector::Id(_) => Err(BrokerError::InvalidArgument(
                "session_id must be 16 to 512 visible ASCII characters".into(),
            )),
            Selector::Handle(h) => SessionHandle::parse(h).ok_or_else(|| {
                BrokerError::InvalidArgument(
                    "session_handle must be 32 lowercase hex digits".into(),
                )
            }),
        }
    }

    /// A live session and its current credential record (if any), for operators.
    pub async fn describe(
        &self,
        selector: &Selector,
    ) -> Result<(SessionHandle, SessionRecord, Option<CredentialRecord>), BrokerError> {
        let handle = self.handle_of(selector)?;
        let (record, _) = self
            .store
            .get_session(&handle)
            .await?
            .ok_or(BrokerError::SessionGone)?;
        if record.revoked {
            return Err(BrokerError::SessionGone);
        }
        let creds = self.engine.peek(&record.credential_id).await?;
        Ok((handle, record, creds))
    }

    /// A page of live sessions, optionally of one subject. The page token is the last handle.
    pub async fn list(
        &self,
        page_size: u32,
        page_token: &str,
        subject: &str,
    ) -> Result<(Vec<(SessionHandle, SessionRecord)>, Option<SessionHandle>), BrokerError> {
        let size = match page_size {
            0 => 100,
            1..=1000 => page_size as usize,
            _ => {
                return Err(BrokerError::InvalidArgument(
                    "page_size must be at most 1000".into(),
                ));
            }
        };
        let mut after = match page_token {
            "" => None,
            t => Some(SessionHandle::parse(t).ok_or_else(|| {
                BrokerError::InvalidArgument("page_token is not one this broker returned".into())
            })?),
        };
        let mut out = Vec::new();
        // A subject filter may skip many records: read at most LIST_SCAN_BUDGET per call and
        // hand back where to go on.
        let mut scanned = 0;
        loop {
            let want = size.min(LIST_SCAN_BUDGET - scanned);
            let batch = self.store.list_sessions(after.as_ref(), want).await?;
            let exhausted = batch.len() < want;
            for (h, r) in batch {
                scanned += 1;
                after = Some(h.clone());
                if !r.revoked && (subject.is_empty() || r.subject == subject) {
                    out.push((h, r));
                    if out.len() == size {
                        // The next page starts right after the last session returned.
                        return Ok((out, after));
                    }
                }
            }
            if exhausted {
                return Ok((out, None));
            }
            if scanned >= LIST_SCAN_BUDGET {
                return Ok((out, after));
            }
        }
    }

    /// Revokes a session for good (for the revocation retention). Returns false when already
    /// revoked. A session nobody bound is handled so that revoking made-up ids cannot grow the
    /// store: by handle it is NOT_FOUND (nothing is written; a handle names a session someone
    /// saw), by id it gets a tombstone kept [`UNBOUND_TOMBSTONE_TTL`] at most, so that id cannot
    /// be bound meanwhile.
    pub async fn revoke(&self, selector: &Selector) -> Result<(SessionHandle, bool), BrokerError> {
        let handle = self.handle_of(selector)?;
        for _ in 0..4 {
            let existing = self.store.get_session(&handle).await?;
            let (mut record, ttl) = match (&existing, selector) {
                (Some((r, _)), _) if r.revoked => return Ok((handle, false)),
                (Some((r, _)), _) => (r.clone(), self.settings.revoked_retention),
                (None, Selector::Handle(_)) => return Err(BrokerError::SessionGone),
                (None, Selector::Id(_)) => (
                    SessionRecord::default(),
                    self.settings.revoked_retention.min(UNBOUND_TOMBSTONE_TTL),
                ),
            };
            record.revoked = true;
            record.updated_at_ms = self.now_ms();
            let version = existing.as_ref().map(|(_, v)| v);
            if self
                .store
                .swap_session(&handle, version, &record, ttl)
                .await?
            {
                tracing::info!(session = %handle, subject = %record.subject, "session revoked");
                return Ok((handle, true));
            }
        }
        Err(BrokerError::Contention)
    }
}

/// A bound session's answer from its record and credentials (no new binding).
fn served(
    handle: SessionHandle,
    record: SessionRecord,
    credentials: Arc<CredentialRecord>,
    lookup: Lookup,
) -> SessionAnswer {
    if lookup == Lookup::Hit {
        tracing::debug!(session = %handle, subject = %record.subject, role = %record.scope.role, "using cached credentials for session");
    } else {
        tracing::info!(session = %handle, subject = %record.subject, role = %record.scope.role, "credentials issued for session");
    }
    SessionAnswer {
        handle,
        record,
        credentials,
        rebound: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, now_ms};
    use crate::credentials::EngineSettings;
    use crate::issuer::{Issuer, fake::FakeIssuer};
    use crate::role::ArnGlob;
    use crate::store::MemoryStore;
    use crate::token::ValidatorConfig;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const RW: &str = "arn:aws:iam::123456789012:role/demo-read-write";
    const SID: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";

    fn broker() -> (Broker, Arc<FakeIssuer>) {
        broker_with_leeway(0)
    }

    fn broker_with_leeway(leeway_secs: u64) -> (Broker, Arc<FakeIssuer>) {
        broker_with(leeway_secs, FakeIssuer::default())
    }

    fn broker_with(leeway_secs: u64, fake: FakeIssuer) -> (Broker, Arc<FakeIssuer>) {
        broker_on(leeway_secs, fake, Clock::system())
    }

    /// A broker whose sessions, credentials and store read `clock`.
    fn broker_on(leeway_secs: u64, fake: FakeIssuer, clock: Clock) -> (Broker, Arc<FakeIssuer>) {
        let fake = Arc::new(fake);
        let store = Arc::new(AnyStore::Memory(MemoryStore::with_clock(clock.clone())));
        let hasher = KeyedHasher::new(b"test");
        let engine = CredentialEngine::new(
            store.clone(),
            Issuer::Fake(fake.clone()),
            hasher.clone(),
            EngineSettings {
                clock,
                ..EngineSettings::default()
            },
        );
        let validator = TokenValidator::new(
            ValidatorConfig {
                algorithms: vec![Algorithm::HS256],
                issuers: vec![],
                audiences: vec![],
                leeway_secs,
                tag_claims: vec![],
                types: vec![],
            },
            Some(&Secret::new(SECRET)),
            None,
        );
        let roles = RolePolicy::new(
            Some(vec![
                ArnGlob::parse("arn:aws:iam::123456789012:role/demo-*").unwrap(),
            ]),
            None,
        );
        let settings = BrokerSettings {
            session_grace: Duration::from_secs(60),
            revoked_retention: Duration::from_secs(3600),
            duration_secs: 3600,
            subject_limit: None,
        };
        (
            Broker::new(validator, roles, engine, store, hasher, settings),
            fake,
        )
    }

    fn token(sub: &str, exp_in: i64, extra: serde_json::Value) -> Secret {
        let mut claims = json!({"sub": sub, "exp": now_ms() / 1000 + exp_in, "role_arn": RW});
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        Secret::new(
            encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap(),
        )
    }

    fn sid() -> Secret {
        Secret::new(SID)
    }

    #[tokio::test]
    async fn first_token_binds_then_same_token_is_served_from_cache() {
        let (b, fake) = broker();
        let t = token("alice", 600, json!({}));
        let a = b.session_credentials(&sid(), &t, None).await.unwrap();
        assert!(a.rebound);
        assert_eq!(a.record.subject, "alice");
        let again = b.session_credentials(&sid(), &t, None).await.unwrap();
        assert!(!again.rebound);
        assert_eq!(again.credentials.access_key_id, a.credentials.access_key_id);
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test]
    async fn a_call_without_a_token_is_unauthenticated_whether_bound_or_not() {
        let (b, fake) = broker();
        let empty = Secret::new("");
        assert_eq!(
            b.session_credentials(&sid(), &empty, None)
                .await
                .unwrap_err(),
            BrokerError::Token(TokenError::Missing)
        );
        // A bound session id is no credential either: the binding token is live, and still a
        // call without a token gets nothing.
        b.session_credentials(&sid(), &token("alice", 600, json!({})), None)
            .await
            .unwrap();
        assert_eq!(
            b.session_credentials(&sid(), &empty, None)
                .await
                .unwrap_err(),
            BrokerError::Token(TokenError::Missing)
        );
        assert_eq!(fake.calls(), 1, "the token-less calls issued nothing");
    }

    #[tokio::test]
    async fn new_token_same_subject_rebinds_other_subject_is_refused() {
        let (b, fake) = broker();
        b.session_credentials(&sid(), &token("alice", 600, json!({})), None)
            .await
            .unwrap();
        let newer = token("alice", 900, json!({"jti": "2"}));
        let a = b.session_credentials(&sid(), &newer, None).await.unwrap();
        assert!(a.rebound);
        assert_eq!(a.record.rebind_count, 1);
        assert_eq!(fake.calls(), 1, "same scope shares the credential");
        let e = b
            .session_credentials(&sid(), &token("mallory", 600, json!({})), None)
            .await
            .unwrap_err();
        assert_eq!(e, BrokerError::OtherSubject);
        let (_, rec, _) = b.describe(&Selector::Id(sid())).await.unwrap();
        assert_eq!(rec.subject, "alice", "session unchanged");
    }

    #[tokio::test]
    async fn revoked_session_stays_revoked() {
        let (b, _) = broker();
        let t = token("alice", 600, json!({}));
        b.session_credentials(&sid(), &t, None).await.unwrap();
        let (h, revoked) = b.revoke(&Selector::Id(sid())).await.unwrap();
        assert!(revoked);
        assert_eq!(
            b.session_credentials(&sid(), &t, None).await.unwrap_err(),
            BrokerError::SessionGone
        );
        assert_eq!(
            b.session_credentials(&sid(), &token("alice", 900, json!({"n":1})), None)
                .await
                .unwrap_err(),
            BrokerError::SessionGone
        );
        assert!(!b.revoke(&Selector::Handle(h.to_string())).await.unwrap().1);
        assert!(b.list(0, "", "").await.unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn revoking_an_unknown_session_prevents_binding_it() {
        let (b, _) = broker();
        b.revoke(&Selector::Id(sid())).await.unwrap();
        let e = b
            .session_credentials(&sid(), &token("alice", 600, json!({})), None)
            .await
            .unwrap_err();
        assert_eq!(e, BrokerError::SessionGone);
    }

    #[tokio::test]
    async fn revoking_made_up_handles_writes_nothing() {
        let (b, _) = broker();
        for i in 0..200u32 {
            let handle = format!("{i:032x}");
            assert_eq!(
                b.revoke(&Selector::Handle(handle)).await.unwrap_err(),
                BrokerError::SessionGone
            );
        }
        assert!(
            b.store()
                .list_sessions(None, 1000)
                .await
                .unwrap()
                .is_empty(),
            "no record was written"
        );
    }

    #[tokio::test]
    async fn a_filtered_listing_reads_a_bounded_number_of_records_per_page() {
        let (b, _) = broker();
        let total = LIST_SCAN_BUDGET + 200;
        for i in 0..total {
            let h = b
                .hasher
                .session_handle(&format!("bob-session-{i:06}-0123456789"));
            let record = SessionRecord {
                subject: "bob".into(),
                ..SessionRecord::default()
            };
            assert!(
                b.store()
                    .swap_session(&h, None, &record, Duration::from_secs(600))
                    .await
                    .unwrap()
            );
        }
        // No session of alice: the first page stops at the budget and says where to go on.
        let (page, next) = b.list(100, "", "alice").await.unwrap();
        assert!(page.is_empty());
        let next = next.expect("more to read after the budget");
        let (page, last) = b.list(100, next.as_str(), "alice").await.unwrap();
        assert!(page.is_empty() && last.is_none(), "the rest fits one call");
        // Unfiltered pages are full and reach every session once.
        let mut seen = std::collections::HashSet::new();
        let mut token = String::new();
        loop {
            let (page, next) = b.list(300, &token, "").await.unwrap();
            for (h, _) in page {
                assert!(seen.insert(h.to_string()));
            }
            match next {
                Some(n) => token = n.to_string(),
                None => break,
            }
        }
        assert_eq!(seen.len(), total);
    }

    #[tokio::test]
    async fn expired_session_token_is_never_served() {
        let (clock, manual) = Clock::manual();
        let (b, _) = broker_on(0, FakeIssuer::default(), clock);
        let t = token("alice", 2, json!({}));
        b.session_credentials(&sid(), &t, None).await.unwrap();
        manual.advance(Duration::from_millis(2100));
        // The same token takes the fast path (no validation again); its exp is still checked.
        assert_eq!(
            b.session_credentials(&sid(), &t, None).await.unwrap_err(),
            BrokerError::TokenExpired
        );
    }

    #[tokio::test]
    async fn no_path_accepts_a_token_past_exp_whatever_the_leeway() {
        // A 60 s leeway (the default) must not stretch exp on any path.
        let (b, fake) = broker_with_leeway(60);
        let late = token("alice", -10, json!({}));
        assert_eq!(
            b.exchange(&late, None).await.unwrap_err(),
            BrokerError::Token(TokenError::Expired),
            "ExchangeToken"
        );
        assert_eq!(
            b.session_credentials(&sid(), &late, None)
                .await
                .unwrap_err(),
            BrokerError::Token(TokenError::Expired),
            "bind"
        );
        b.session_credentials(&sid(), &token("alice", 600, json!({})), None)
            .await
            .unwrap();
        assert_eq!(
            b.session_credentials(&sid(), &late, None)
                .await
                .unwrap_err(),
            BrokerError::Token(TokenError::Expired),
            "rebind"
        );
        assert_eq!(fake.calls(), 1, "only the valid token reached STS");
    }

    #[tokio::test]
    async fn web_identity_credentials_belong_to_one_token() {
        // STS reads tags, source identity and trust-policy conditions (aud, amr, …) from the
        // token itself: a second token of the same subject and role must not get the first
        // token's credential.
        let (b, fake) = broker_with(
            0,
            FakeIssuer {
                web_identity: true,
                ..FakeIssuer::default()
            },
        );
        let mfa = token("alice", 600, json!({"amr": ["mfa"], "aud": "app-a"}));
        let plain = token("alice", 600, json!({"amr": ["pwd"], "aud": "app-b"}));
        let (_, first) = b.exchange(&mfa, None).await.unwrap();
        let (_, second) = b.exchange(&plain, None).await.unwrap();
        assert_ne!(first.access_key_id, second.access_key_id);
        assert_eq!(fake.calls(), 2, "each token made its own STS call");
        let (_, again) = b.exchange(&mfa, None).await.unwrap();
        assert_eq!(
            again.access_key_id, first.access_key_id,
            "same token: cached"
        );
        // Sessions too: a rebind with another token gets that token's credential.
        let bound = b.session_credentials(&sid(), &mfa, None).await.unwrap();
        assert_eq!(bound.credentials.access_key_id, first.access_key_id);
        let rebound = b.session_credentials(&sid(), &plain, None).await.unwrap();
        assert_eq!(rebound.credentials.access_key_id, second.access_key_id);
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn an_exp_that_overflows_milliseconds_binds_nothing() {
        let (b, fake) = broker();
        let far = token("alice", 0, json!({"exp": i64::MAX}));
        for _ in 0..2 {
            assert!(matches!(
                b.session_credentials(&sid(), &far, None).await,
                Err(BrokerError::Token(TokenError::Claim(_)))
            ));
        }
        assert_eq!(fake.calls(), 0);
    }

    #[tokio::test]
    async fn narrower_bucket_scope_gets_its_own_credential() {
        let (b, fake) = broker();
        let wide = b
            .exchange(&token("alice", 600, json!({})), None)
            .await
            .unwrap()
            .1;
        let narrow = b
            .exchange(
                &token("alice", 600, json!({"buckets": ["demo-bucket"]})),
                None,
            )
            .await
            .unwrap()
            .1;
        assert_ne!(wide.access_key_id, narrow.access_key_id);
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn ten_sessions_of_one_user_share_one_sts_call() {
        let (b, fake) = broker();
        for i in 0..10 {
            let id = Secret::new(format!("session-{i:02}-0123456789abcdef"));
            b.session_credentials(&id, &token("alice", 600, json!({"n": i})), None)
                .await
                .unwrap();
        }
        assert_eq!(fake.calls(), 1);
        let (page, next) = b.list(4, "", "alice").await.unwrap();
        assert_eq!(page.len(), 4);
        let (rest, _) = b.list(100, next.unwrap().as_str(), "").await.unwrap();
        assert_eq!(rest.len(), 6);
    }

    #[tokio::test]
    async fn every_credential_path_spends_the_principals_rate_and_only_a_genuine_token_does() {
        let (clock, manual) = Clock::manual();
        let (b, fake) = broker_on(0, FakeIssuer::default(), clock.clone());
        let limit = crate::quota::SubjectLimit::new(
            crate::quota::subject_rate("1/m,burst=3").unwrap(),
            crate::store::bucket::Buckets::for_store(b.store(), clock.clone()),
            KeyedHasher::new(b"test"),
            clock,
        );
        let b = b.with_subject_limit(Some(limit));
        let alice = token("alice", 600, json!({}));
        // A forged token naming alice is refused before it can spend her bucket.
        let forged = Secret::new(format!("{}x", alice.expose()));
        for _ in 0..5 {
            assert!(matches!(
                b.exchange(&forged, None).await,
                Err(BrokerError::Token(_))
            ));
        }
        // Bind (validating path), the same token again (fast path), an exchange: three tokens.
        let sid = Secret::new(SID);
        b.session_credentials(&sid, &alice, None).await.unwrap();
        b.session_credentials(&sid, &alice, None).await.unwrap();
        b.exchange(&alice, None).await.unwrap();
        for refused in [
            b.session_credentials(&sid, &alice, None).await.unwrap_err(),
            b.exchange(&alice, None).await.unwrap_err(),
        ] {
            let BrokerError::RateLimited(limited) = &refused else {
                panic!("{refused:?}")
            };
            assert_eq!(limited.retry_after, Duration::from_secs(60));
            let status = crate::service::status(&refused);
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            assert!(
                status.message().contains("retry in 60.000 s"),
                "{}",
                status.message()
            );
            assert!(status.message().contains("BROKER_RATE_PER_SUBJECT"));
            assert_eq!(
                status.metadata().get("grpc-retry-pushback-ms").unwrap(),
                "60000"
            );
        }
        assert_eq!(fake.calls(), 1, "refused requests make no STS call");
        // Another principal is not affected; a minute later alice has one token again.
        b.exchange(&token("bob", 600, json!({})), None)
            .await
            .unwrap();
        manual.advance(Duration::from_secs(60));
        b.session_credentials(&sid, &alice, None).await.unwrap();
        assert!(b.exchange(&alice, None).await.is_err());
    }

    #[tokio::test]
    async fn bad_session_ids_and_selectors_are_invalid_arguments() {
        let (b, _) = broker();
        let t = token("alice", 600, json!({}));
        assert!(matches!(
            b.session_credentials(&Secret::new("short"), &t, None).await,
            Err(BrokerError::InvalidArgument(_))
        ));
        assert!(matches!(
            b.describe(&Selector::Handle("zz".into())).await,
            Err(BrokerError::InvalidArgument(_))
        ));
        assert!(matches!(
            b.list(5000, "", "").await,
            Err(BrokerError::InvalidArgument(_))
        ));
    }
}
