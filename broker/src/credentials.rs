//! The credential engine: lookup → single flight → issue → store → refresh ahead → last good.
//!
//! - A credential is stored under the keyed hash of its [`Scope`], so every session and replica
//!   with the same scope shares it and STS is called once per scope, not once per request.
//! - Concurrent misses for one scope join one in-process flight; flights on different replicas
//!   agree through the store's set-if-absent lock, and losers wait (bounded by the lock's expiry)
//!   for the winner's record.
//! - With a remote store (Redis) a credential read is kept in a [`NearCache`] until its
//!   `refresh_at`, so a warm request reads only its session from the store.
//! - A credential past its jittered `refresh_at` is still served while a background refresh runs;
//!   if refreshes keep failing it is served until [`MIN_REMAINING`] before expiry, then the
//!   request fails UNAVAILABLE — never an expired or unscoped credential.
//! - After an STS call fails for a reason worth retrying, the credential id pauses
//!   ([`Cooldowns`]): requests for it get UNAVAILABLE at once and background refreshes wait,
//!   instead of every request starting another call against a throttling STS. After STS denied
//!   the role, the id pauses for `sts_denied_pause` and requests get PERMISSION_DENIED at once.
//! - With `BROKER_STS_RATE` every STS call first takes a token of the fleet's STS budget
//!   ([`StsBudget`]): background refreshes before first issues; cache hits never wait.
//! - In web-identity mode STS reads tags, source identity and trust-policy conditions from the
//!   caller's token itself, so the scope is bound to the token's fingerprint
//!   ([`CredentialEngine::keys_by_token`]): another token never receives this token's credential.

use crate::clock::{Clock, to_ms};
use crate::cooldown::Cooldowns;
use crate::hashing::{CredentialId, KeyedHasher};
use crate::issuer::{IssueError, IssueRequest, Issuer};
use crate::scope::{Scope, role_session_name};
use crate::secret::Secret;
use crate::store::{AnyStore, NearCache, Store, StoreError};
use crate::sts_budget::{BudgetError, BudgetExhausted, Class, Need, StsBudget};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

pub use crate::store::records::{CredentialRecord, MIN_REMAINING};

/// Was the answer served from the store or issued for this request?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
}

/// Why no credential could be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("timed out waiting for another broker replica's STS call for this credential")]
    WaitTimedOut,
    /// No STS call in time under `BROKER_STS_RATE` (UNAVAILABLE).
    #[error(transparent)]
    StsBudget(#[from] BudgetExhausted),
}

impl From<BudgetError> for EngineError {
    fn from(e: BudgetError) -> Self {
        match e {
            BudgetError::Exhausted(e) => EngineError::StsBudget(e),
            BudgetError::Store(e) => EngineError::Store(e),
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Refresh this long before expiry (plus up to 20 % jitter).
    pub refresh_margin: Duration,
    /// How long a replica may hold the issuing lock; bounds how long others wait on a dead holder.
    pub lock_ttl: Duration,
    /// Pause between polls while another replica issues.
    pub poll_interval: Duration,
    /// First pause after a failed STS call for a credential id; doubles per failure.
    pub sts_cooldown: Duration,
    /// The longest pause.
    pub sts_cooldown_max: Duration,
    /// Pause after STS denied the role for a credential id.
    pub sts_denied_pause: Duration,
    /// Where "now" comes from for expiry, refresh and pauses (the system clock; a manual one in
    /// tests). The sessions layer reads the same clock through [`CredentialEngine::clock`].
    pub clock: Clock,
    /// The fleet's STS budget (`BROKER_STS_RATE`), waited for just before each STS call.
    pub sts_budget: Option<Arc<StsBudget>>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            refresh_margin: Duration::from_secs(300),
            lock_ttl: Duration::from_secs(20),
            poll_interval: Duration::from_millis(25),
            sts_cooldown: Duration::from_secs(1),
            sts_cooldown_max: Duration::from_secs(4),
            sts_denied_pause: Duration::from_secs(30),
            clock: Clock::system(),
            sts_budget: None,
        }
    }
}

type Flight = Shared<BoxFuture<'static, Result<Arc<CredentialRecord>, EngineError>>>;

/// Shared state of the engine; cheap to clone via `Arc`.
pub struct CredentialEngine {
    store: Arc<AnyStore>,
    issuer: Issuer,
    hasher: KeyedHasher,
    settings: EngineSettings,
    flights: Mutex<HashMap<CredentialId, Flight>>,
    /// Credentials read from a remote store, until their refresh time; `None` for the memory store.
    near: Option<NearCache>,
    /// Credential ids whose last STS call failed, and until when none is tried again.
    cooldowns: Cooldowns,
    /// Background refreshes, so a test (or a shutdown) can wait for the ones running.
    background: tokio_util::task::TaskTracker,
    stats: Stats,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub sts_calls: std::sync::atomic::AtomicU64,
    pub sts_failures: std::sync::atomic::AtomicU64,
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
    pub refreshes: std::sync::atomic::AtomicU64,
    pub refresh_failures: std::sync::atomic::AtomicU64,
}

fn bump(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl CredentialEngine {
    pub fn new(
        store: Arc<AnyStore>,
        issuer: Issuer,
        hasher: KeyedHasher,
        settings: EngineSettings,
    ) -> Arc<Self> {
        let near = store
            .is_remote()
            .then(|| NearCache::new(NearCache::DEFAULT_CAPACITY));
        let cooldowns = Cooldowns::new(settings.sts_cooldown, settings.sts_cooldown_max);
        Arc::new(Self {
            store,
            near,
            issuer,
            hasher,
            settings,
            flights: Mutex::new(HashMap::new()),
            cooldowns,
            background: tokio_util::task::TaskTracker::new(),
            stats: Stats::default(),
        })
    }

    /// Forgets STS pauses that ended long ago (called with the store's sweep).
    pub fn sweep(&self) {
        self.cooldowns.sweep(self.now_ms());
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Clock {
        &self.settings.clock
    }

    fn now_ms(&self) -> i64 {
        self.settings.clock.now_ms()
    }

    /// Resolves once every background refresh started so far has finished (counters updated).
    pub async fn background_settled(&self) {
        self.background.close();
        self.background.wait().await;
        self.background.reopen();
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Does a credential belong to one token rather than to a scope? True in web-identity mode,
    /// where STS takes session tags, source identity and trust-policy conditions (`aud`, `amr`,
    /// …) from the token itself: the broker binds the scope to the token's fingerprint
    /// ([`Scope::bind_to_token`]) so a second token of the same subject and role never gets the
    /// first token's credential.
    pub fn keys_by_token(&self) -> bool {
        self.issuer.keys_by_token()
    }

    /// The store id of a scope's credential.
    pub fn credential_id(&self, scope: &Scope) -> CredentialId {
        self.hasher.credential_id(&scope.canonical())
    }

    /// The stored credential for `id`, without issuing (for operator answers).
    pub async fn peek(&self, id: &CredentialId) -> Result<Option<CredentialRecord>, EngineError> {
        Ok(self.store.get_credential(id).await?)
    }

    /// A servable credential for `scope`: from the store when it has one, else from STS (once,
    /// however many callers ask at the same time). `token` is only needed in web-identity mode.
    pub async fn credentials(
        self: &Arc<Self>,
        scope: &Scope,
        token: Option<&Secret>,
    ) -> Result<(Arc<CredentialRecord>, Lookup), EngineError> {
        let id = self.credential_id(scope);
        self.credentials_by_id(&id, scope, token).await
    }

    /// As [`CredentialEngine::credentials`], for a caller that already holds the scope's id (a
    /// session record stores it), saving the canonical encoding and one HMAC per request.
    pub async fn credentials_by_id(
        self: &Arc<Self>,
        id: &CredentialId,
        scope: &Scope,
        token: Option<&Secret>,
    ) -> Result<(Arc<CredentialRecord>, Lookup), EngineError> {
        let now = self.now_ms();
        if let Some(rec) = self.near.as_ref().and_then(|near| near.get(id, now)) {
            self.hit();
            return Ok((rec, Lookup::Hit));
        }
        if let Some(rec) = self.store.get_credential(id).await?
            && rec.servable(now)
        {
            let rec = Arc::new(rec);
            if now >= rec.refresh_at_ms {
                self.refresh_in_background(id, scope, token);
            } else if let Some(near) = &self.near {
                near.put(id, &rec, now);
            }
            self.hit();
            return Ok((rec, Lookup::Hit));
        }
        bump(&self.stats.misses);
        crate::metrics::lookup(false);
        if let Some(paused) = self.cooldowns.paused(id, now) {
            if paused.denied {
                return Err(EngineError::Issue(IssueError::Denied(format!(
                    "{}; not asked again for {:.0} s (BROKER_STS_DENIED_PAUSE)",
                    paused.cause,
                    paused.retry_in.as_secs_f64().ceil()
                ))));
            }
            return Err(EngineError::Issue(IssueError::Retryable(format!(
                "{}; the next STS attempt for this credential is in {:.1} s",
                paused.cause,
                paused.retry_in.as_secs_f64()
            ))));
        }
        // A first issue, bounded by this request's deadline if it waits for the STS budget.
        let need = Need {
            class: Class::FirstIssue,
            deadline: crate::sts_budget::current_deadline(),
        };
        // The wait for this scope's single flight (started here or joined).
        let wait = crate::telemetry::span!("single_flight.wait");
        // Boxed: the single flight's state is large and a miss is rare; unboxed, every warm
        // request's future would carry its size (BENCHMARKS.md, broker warm path, session 10).
        let rec = Box::pin(self.flight(id, scope, token, need).instrument(wait)).await?;
        if let Some(near) = &self.near {
            near.put(id, &rec, self.now_ms());
        }
        Ok((rec, Lookup::Miss))
    }

    fn hit(&self) {
        bump(&self.stats.hits);
        crate::metrics::lookup(true);
    }

    /// Starts a refresh unless one is running or the last one failed recently.
    fn refresh_in_background(
        self: &Arc<Self>,
        id: &CredentialId,
        scope: &Scope,
        token: Option<&Secret>,
    ) {
        if self.cooldowns.paused(id, self.now_ms()).is_some() {
            return;
        }
        if self
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(id)
        {
            return;
        }
        let need = Need {
            class: Class::Refresh,
            deadline: None,
        };
        // A refresh is a trace of its own (no request waits for it).
        let refresh = crate::telemetry::span!(parent: None, "credentials.refresh");
        let flight = refresh.in_scope(|| self.flight(id, scope, token, need));
        let this = Arc::clone(self);
        let id = id.clone();
        self.background.spawn(async move {
            match flight.await {
                Ok(_) => {
                    bump(&this.stats.refreshes);
                    crate::metrics::refresh(true);
                    tracing::info!(credential = %id.short(), "credential refreshed ahead of expiry");
                }
                Err(e) => {
                    bump(&this.stats.refresh_failures);
                    crate::metrics::refresh(false);
                    tracing::warn!(credential = %id.short(), error = %e, "credential refresh failed; serving the last good credential until its margin");
                }
            }
        }.instrument(refresh));
    }

    /// Joins the flight for `id`, starting it if there is none. The flight runs in its own task,
    /// so a caller that goes away (deadline, disconnect) does not cancel it for the others.
    fn flight(
        self: &Arc<Self>,
        id: &CredentialId,
        scope: &Scope,
        token: Option<&Secret>,
        need: Need,
    ) -> Flight {
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = flights.get(id) {
            return f.clone();
        }
        let this = Arc::clone(self);
        let (id_owned, scope, token) = (id.clone(), scope.clone(), token.cloned());
        // The flight's own span, a child of the request (or refresh) that started it.
        let span = crate::telemetry::span!("single_flight.issue");
        let task = tokio::spawn(async move {
            let result = this
                .issue_coordinated(&id_owned, &scope, token.as_ref(), need)
                .await;
            match &result {
                Ok(_) => this.cooldowns.succeeded(&id_owned),
                Err(EngineError::Issue(IssueError::Retryable(cause))) => {
                    let pause = this.cooldowns.failed(&id_owned, cause, this.now_ms());
                    tracing::info!(credential = %id_owned.short(), pause_ms = pause.as_millis() as u64, "STS failed; this credential pauses before its next STS call");
                }
                Err(EngineError::Issue(IssueError::Denied(cause))) => {
                    let pause = this.settings.sts_denied_pause;
                    this.cooldowns
                        .denied(&id_owned, cause, this.now_ms(), pause);
                    tracing::info!(credential = %id_owned.short(), pause_ms = pause.as_millis() as u64, "STS denied the role; this credential is answered PERMISSION_DENIED without STS for the pause");
                }
                Err(_) => {}
            }
            this.flights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id_owned);
            result.map(Arc::new)
        }.instrument(span));
        let flight = async move {
            task.await.unwrap_or_else(|_| {
                Err(EngineError::Issue(IssueError::Retryable(
                    "issuing task failed".into(),
                )))
            })
        }
        .boxed()
        .shared();
        flights.insert(id.clone(), flight.clone());
        flight
    }

    /// Across replicas: take the lock and call STS, or wait for the holder's record. The wait is
    /// bounded by the lock's expiry, after which a new holder is elected.
    async fn issue_coordinated(
        &self,
        id: &CredentialId,
        scope: &Scope,
        token: Option<&Secret>,
        need: Need,
    ) -> Result<CredentialRecord, EngineError> {
        let deadline = tokio::time::Instant::now() + self.settings.lock_ttl * 2;
        // Open while another replica holds the issuing lock and this one polls for its record.
        let mut replica_wait: Option<tracing::Span> = None;
        loop {
            if let Some(rec) = self.store.get_credential(id).await?
                && rec.fresh(self.now_ms())
            {
                return Ok(rec);
            }
            if let Some(lock) = self.store.try_lock(id, self.settings.lock_ttl).await? {
                let result = async {
                    if let Some(rec) = self.store.get_credential(id).await?
                        && rec.fresh(self.now_ms())
                    {
                        return Ok(rec);
                    }
                    let rec = self.issue(scope, token, need).await?;
                    self.store.put_credential(id, &rec).await?;
                    Ok(rec)
                }
                .await;
                if let Err(e) = self.store.unlock(id, &lock).await {
                    tracing::warn!(error = %e, "could not release the issuing lock; it expires by itself");
                }
                return result;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::WaitTimedOut);
            }
            replica_wait
                .get_or_insert_with(|| crate::telemetry::span!("single_flight.wait_replica"));
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    /// One STS call (after a token of the STS budget, when one is set), turned into a record
    /// with a jittered refresh time.
    async fn issue(
        &self,
        scope: &Scope,
        token: Option<&Secret>,
        need: Need,
    ) -> Result<CredentialRecord, EngineError> {
        let req = IssueRequest {
            role_arn: scope.role.clone(),
            role_session_name: role_session_name(&scope.subject),
            source_identity: scope.source_identity.clone(),
            tags: scope.tags.clone(),
            policy: scope.policy.clone(),
            duration_secs: scope.duration_secs,
            web_identity_token: token.cloned(),
        };
        if let Some(budget) = &self.settings.sts_budget {
            budget.acquire(need).await?;
        }
        bump(&self.stats.sts_calls);
        let started = std::time::Instant::now();
        let result = self.issuer.issue(&req).await;
        crate::metrics::sts_call(result.is_ok(), started.elapsed().as_secs_f64());
        let issued = result.inspect_err(|e| {
            bump(&self.stats.sts_failures);
            tracing::warn!(role = %scope.role, subject = %scope.subject, error = %e, "STS call failed");
        })?;
        let issued_at = self.now_ms();
        let expires = to_ms(issued.expiration);
        let margin = self.settings.refresh_margin.as_millis() as i64;
        let jitter = rand::random_range(0..=margin / 5);
        let lifetime = expires - issued_at;
        let refresh_at = (expires - margin - jitter).max(issued_at + lifetime / 2);
        tracing::info!(
            role = %scope.role,
            subject = %scope.subject,
            session_name = %req.role_session_name,
            access_key_id = %issued.access_key_id,
            expires_in_s = lifetime / 1000,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "STS call made"
        );
        // The audit trail's issuance record. A write failure marks the log unhealthy; the
        // request's own record then fails, so the credential is not served unrecorded.
        let _ = crate::audit::record(&crate::audit::Event {
            subject: Some(scope.subject.clone()),
            role_arn: Some(scope.role.clone()),
            access_key_id: Some(issued.access_key_id.clone()),
            source_identity: Some(scope.source_identity.clone()),
            duration_s: Some(lifetime / 1000),
            ..crate::audit::Event::new("credential_issued", "ok")
        });
        Ok(CredentialRecord {
            access_key_id: issued.access_key_id,
            secret_access_key: issued.secret_access_key,
            session_token: issued.session_token,
            expires_at_ms: expires,
            issued_at_ms: issued_at,
            refresh_at_ms: refresh_at,
            assumed_role_arn: issued.assumed_role_arn,
            role_session_name: req.role_session_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::fake::FakeIssuer;
    use crate::store::MemoryStore;
    use std::sync::atomic::Ordering;

    fn engine(fake: Arc<FakeIssuer>, margin: Duration) -> Arc<CredentialEngine> {
        engine_on(fake, margin, Clock::system())
    }

    /// An engine whose expiry, refresh and pause decisions read `clock`.
    fn engine_on(fake: Arc<FakeIssuer>, margin: Duration, clock: Clock) -> Arc<CredentialEngine> {
        CredentialEngine::new(
            Arc::new(AnyStore::Memory(MemoryStore::new())),
            Issuer::Fake(fake),
            KeyedHasher::new(b"k"),
            EngineSettings {
                refresh_margin: margin,
                // Pauses of 100–200 ms after an STS failure, which tests pass on the clock.
                sts_cooldown: Duration::from_millis(200),
                sts_cooldown_max: Duration::from_millis(200),
                clock,
                ..EngineSettings::default()
            },
        )
    }

    fn scope(sub: &str) -> Scope {
        Scope {
            subject: sub.into(),
            role: "arn:aws:iam::123456789012:role/r".into(),
            ..Scope::default()
        }
    }

    // Paused time: the fake STS call's 100 ms pass only once every task is waiting, so all 200
    // callers arrive while the one call is in flight.
    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_make_one_sts_call() {
        let fake = Arc::new(FakeIssuer {
            delay_ms: 100,
            ..FakeIssuer::default()
        });
        let e = engine(fake.clone(), Duration::from_secs(300));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let e = e.clone();
                tokio::spawn(async move {
                    e.credentials(&scope("alice"), None)
                        .await
                        .unwrap()
                        .0
                        .access_key_id
                        .clone()
                })
            })
            .collect();
        let keys: Vec<String> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(fake.calls(), 1);
        assert!(keys.iter().all(|k| k == &keys[0]));
    }

    #[tokio::test]
    async fn warm_lookups_hit_and_other_scopes_miss() {
        let fake = Arc::new(FakeIssuer::default());
        let e = engine(fake.clone(), Duration::from_secs(300));
        let (a, l1) = e.credentials(&scope("alice"), None).await.unwrap();
        let (b, l2) = e.credentials(&scope("alice"), None).await.unwrap();
        assert_eq!((l1, l2), (Lookup::Miss, Lookup::Hit));
        assert_eq!(a.access_key_id, b.access_key_id);
        let (c, _) = e.credentials(&scope("bob"), None).await.unwrap();
        assert_ne!(a.access_key_id, c.access_key_id);
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn failure_is_unavailable_not_a_guess() {
        let fake = Arc::new(FakeIssuer::default());
        fake.fail.store(true, Ordering::SeqCst);
        let e = engine(fake.clone(), Duration::from_secs(300));
        let err = e.credentials(&scope("alice"), None).await.unwrap_err();
        assert!(matches!(err, EngineError::Issue(IssueError::Retryable(_))));
    }

    #[tokio::test]
    async fn a_failed_sts_call_pauses_the_credential_then_it_is_tried_again() {
        let (clock, manual) = Clock::manual();
        let fake = Arc::new(FakeIssuer::default());
        fake.fail.store(true, Ordering::SeqCst);
        let e = CredentialEngine::new(
            Arc::new(AnyStore::Memory(MemoryStore::new())),
            Issuer::Fake(fake.clone()),
            KeyedHasher::new(b"k"),
            EngineSettings {
                sts_cooldown: Duration::from_millis(200),
                sts_cooldown_max: Duration::from_millis(200),
                clock,
                ..EngineSettings::default()
            },
        );
        e.credentials(&scope("alice"), None).await.unwrap_err();
        assert_eq!(fake.calls(), 1);
        // Within the pause: answered at once, STS not asked, and the answer says when.
        for _ in 0..20 {
            let err = e.credentials(&scope("alice"), None).await.unwrap_err();
            let EngineError::Issue(IssueError::Retryable(message)) = err else {
                panic!("{err:?}")
            };
            assert!(message.contains("next STS attempt"), "{message}");
        }
        assert_eq!(fake.calls(), 1, "no STS call during the pause");
        // Another credential is not paused.
        e.credentials(&scope("bob"), None).await.unwrap_err();
        assert_eq!(fake.calls(), 2);
        // After the pause STS is asked again, and a success clears the pause.
        manual.advance(Duration::from_millis(250));
        fake.fail.store(false, Ordering::SeqCst);
        e.credentials(&scope("alice"), None).await.unwrap();
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test]
    async fn a_denied_role_pauses_and_is_answered_permission_denied_without_sts() {
        let (clock, manual) = Clock::manual();
        let fake = Arc::new(FakeIssuer::default());
        fake.deny.store(true, Ordering::SeqCst);
        let e = CredentialEngine::new(
            Arc::new(AnyStore::Memory(MemoryStore::new())),
            Issuer::Fake(fake.clone()),
            KeyedHasher::new(b"k"),
            EngineSettings {
                sts_denied_pause: Duration::from_millis(300),
                clock,
                ..EngineSettings::default()
            },
        );
        let first = e.credentials(&scope("alice"), None).await.unwrap_err();
        assert!(matches!(first, EngineError::Issue(IssueError::Denied(_))));
        for _ in 0..20 {
            let err = e.credentials(&scope("alice"), None).await.unwrap_err();
            let EngineError::Issue(IssueError::Denied(message)) = err else {
                panic!("{err:?}")
            };
            assert!(message.contains("BROKER_STS_DENIED_PAUSE"), "{message}");
        }
        assert_eq!(fake.calls(), 1, "STS is not asked again during the pause");
        manual.advance(Duration::from_millis(350));
        fake.deny.store(false, Ordering::SeqCst);
        e.credentials(&scope("alice"), None).await.unwrap();
        assert_eq!(fake.calls(), 2, "asked again once the pause ended");
    }

    #[tokio::test]
    async fn refresh_runs_in_background_and_last_good_is_served_while_it_fails() {
        // 15-minute credentials with a 10-minute margin: due for refresh from the start.
        let fake = Arc::new(FakeIssuer {
            lifetime_secs: 900,
            ..FakeIssuer::default()
        });
        let (clock, manual) = Clock::manual();
        let e = engine_on(fake.clone(), Duration::from_secs(600), clock.clone());
        let (first, _) = e.credentials(&scope("alice"), None).await.unwrap();
        // Force the record to be due for refresh now.
        let id = e.credential_id(&scope("alice"));
        let mut rec = (*first).clone();
        rec.refresh_at_ms = clock.now_ms() - 1;
        e.store.put_credential(&id, &rec).await.unwrap();
        fake.fail.store(true, Ordering::SeqCst);
        let (served, lookup) = e.credentials(&scope("alice"), None).await.unwrap();
        assert_eq!(lookup, Lookup::Hit);
        assert_eq!(
            served.access_key_id, first.access_key_id,
            "last good credential served"
        );
        e.background_settled().await;
        assert_eq!(e.stats().refresh_failures.load(Ordering::SeqCst), 1);
        // Backoff: the next request does not call STS again at once.
        let _ = e.credentials(&scope("alice"), None).await.unwrap();
        e.background_settled().await;
        assert_eq!(fake.calls(), 2);
        // A credential within MIN_REMAINING of expiry is never served: the request fails closed.
        rec.expires_at_ms = clock.now_ms() + 30_000;
        e.store.put_credential(&id, &rec).await.unwrap();
        assert!(e.credentials(&scope("alice"), None).await.is_err());
        // When STS recovers (and the pause after the failure has ended), a fresh credential
        // replaces it.
        fake.fail.store(false, Ordering::SeqCst);
        manual.advance(Duration::from_millis(250));
        let (fresh, lookup) = e.credentials(&scope("alice"), None).await.unwrap();
        assert_eq!(lookup, Lookup::Miss);
        assert_ne!(fresh.access_key_id, first.access_key_id);
    }

    #[tokio::test]
    async fn under_an_empty_sts_budget_hits_are_served_and_misses_refused_naming_it() {
        use crate::store::bucket::Buckets;
        let (clock, manual) = Clock::manual();
        let store = Arc::new(AnyStore::Memory(MemoryStore::with_clock(clock.clone())));
        // One STS call a minute, and no waiting: a miss past the first is refused at once.
        let budget = Arc::new(StsBudget::new(
            crate::quota::sts_rate("1/m,burst=1").unwrap(),
            Buckets::for_store(&store, clock.clone()),
            Duration::ZERO,
        ));
        let fake = Arc::new(FakeIssuer::default());
        let e = CredentialEngine::new(
            store,
            Issuer::Fake(fake.clone()),
            KeyedHasher::new(b"k"),
            EngineSettings {
                clock,
                sts_budget: Some(budget),
                ..EngineSettings::default()
            },
        );
        let (first, lookup) = e.credentials(&scope("alice"), None).await.unwrap();
        assert_eq!(lookup, Lookup::Miss);
        for _ in 0..5 {
            let (again, lookup) = e.credentials(&scope("alice"), None).await.unwrap();
            assert_eq!(
                lookup,
                Lookup::Hit,
                "a cache hit never waits for the budget"
            );
            assert_eq!(again.access_key_id, first.access_key_id);
        }
        let err = e.credentials(&scope("bob"), None).await.unwrap_err();
        let EngineError::StsBudget(exhausted) = &err else {
            panic!("{err:?}")
        };
        assert!(
            err.to_string().contains("BROKER_STS_RATE=1/m,burst=1"),
            "{exhausted}"
        );
        assert_eq!(fake.calls(), 1, "no STS call without a token of the budget");
        // A refusal by the budget does not pause the credential: a minute later bob is served.
        manual.advance(Duration::from_secs(60));
        e.credentials(&scope("bob"), None).await.unwrap();
        assert_eq!(fake.calls(), 2);
    }

    #[test]
    fn refresh_time_is_before_expiry_minus_margin() {
        let rec = CredentialRecord {
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
            session_token: Secret::default(),
            expires_at_ms: 10_000_000,
            issued_at_ms: 0,
            refresh_at_ms: 9_000_000,
            assumed_role_arn: String::new(),
            role_session_name: String::new(),
        };
        assert!(rec.fresh(8_999_999));
        assert!(!rec.fresh(9_000_000));
        assert!(rec.servable(9_939_999));
        assert!(!rec.servable(9_940_000));
    }
}
