//! Limits on what one principal, and the whole fleet, may ask of the broker.
//!
//! - **Per-subject rate** (`BROKER_RATE_PER_SUBJECT`): every credential request of a principal
//!   (GetCredentials, ExchangeToken and BindSession — BindSession issues the session's credential
//!   too) takes a token from that principal's bucket, after its token was verified (a forged token
//!   cannot spend someone else's bucket) and before any store lookup or STS call. An empty bucket
//!   is `RESOURCE_EXHAUSTED` with the wait in the message and in `grpc-retry-pushback-ms`. The
//!   bucket is shared by every replica through the store ([`crate::store::bucket`]) under a keyed
//!   hash of issuer and subject, so the store never names who is limited.
//! - **STS budget** (`BROKER_STS_RATE`, `BROKER_STS_MAX_WAIT`): see [`crate::sts_budget`].
//!
//! Both are off unless set. Settings are parsed by clap here ([`LimitArgs`], flattened into the
//! broker's flags), with an error that names the variable and shows an example.

use crate::clock::Clock;
use crate::hashing::KeyedHasher;
use crate::store::bucket::{BucketSpec, Buckets};
use crate::store::{AnyStore, StoreError};
use crate::sts_budget::StsBudget;
use clap::Args;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The example each setting's error shows.
const SUBJECT_EXAMPLE: &str = "BROKER_RATE_PER_SUBJECT=20/s,burst=40";
const STS_EXAMPLE: &str = "BROKER_STS_RATE=10/s,burst=20,reserve=5";
/// Most requests per second a rate may allow (one token per microsecond is the bucket's grain).
const MAX_PER_SECOND: u64 = 1_000_000;
/// The longest `BROKER_STS_MAX_WAIT`: a request waits for the budget while holding the issuing
/// lock, whose 20 s expiry must not pass meanwhile.
pub const MAX_STS_WAIT: Duration = Duration::from_secs(10);

/// Flags of the limits, flattened into `serve`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Per-principal rate of credential requests (GetCredentials, ExchangeToken, BindSession),
    /// shared by all replicas through the store: COUNT/UNIT[,burst=N] with UNIT s, m or h, e.g.
    /// 20/s,burst=40 (burst defaults to COUNT). Over it: RESOURCE_EXHAUSTED with the wait. Off
    /// when unset, empty or `off`.
    #[arg(long, env = "BROKER_RATE_PER_SUBJECT", value_name = "RATE", value_parser = subject_setting)]
    pub rate_per_subject: Option<Setting>,
    /// STS calls per second for the whole fleet, shared through the store:
    /// COUNT/UNIT[,burst=N][,reserve=N], e.g. 10/s,burst=20,reserve=5. Refreshes of credentials
    /// in use may take every token; first issues leave `reserve` tokens of the burst for them
    /// (default: a quarter of the burst, at least 1). Off when unset, empty or `off`.
    #[arg(long, env = "BROKER_STS_RATE", value_name = "RATE", value_parser = sts_setting)]
    pub sts_rate: Option<Setting>,
    /// Longest wait for the STS budget before UNAVAILABLE (shorter when the request's gRPC
    /// deadline comes first); at most 10s.
    #[arg(long, env = "BROKER_STS_MAX_WAIT", default_value = "3s", value_parser = sts_max_wait)]
    pub sts_max_wait: Duration,
}

impl LimitArgs {
    /// The per-subject limit, when configured, keeping its buckets in `store`.
    pub fn subject_limit(
        &self,
        store: &Arc<AnyStore>,
        clock: &Clock,
        hasher: &KeyedHasher,
    ) -> Option<Arc<SubjectLimit>> {
        let rate = self.rate_per_subject.and_then(|s| s.0)?;
        tracing::info!(rate = %rate, store = store.kind(), "per-subject rate limit on (BROKER_RATE_PER_SUBJECT)");
        Some(Arc::new(SubjectLimit::new(
            rate,
            Buckets::for_store(store, clock.clone()),
            hasher.clone(),
            clock.clone(),
        )))
    }

    /// The STS budget, when configured, keeping its bucket in `store`.
    pub fn sts_budget(&self, store: &Arc<AnyStore>, clock: &Clock) -> Option<Arc<StsBudget>> {
        let rate = self.sts_rate.and_then(|s| s.0)?;
        tracing::info!(rate = %rate, max_wait = ?self.sts_max_wait, store = store.kind(), "STS budget on (BROKER_STS_RATE)");
        Some(Arc::new(StsBudget::new(
            rate,
            Buckets::for_store(store, clock.clone()),
            self.sts_max_wait,
        )))
    }
}

/// The unit of a rate (`s`, `m`, `h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    fn micros(self) -> u64 {
        match self {
            Per::Second => 1_000_000,
            Per::Minute => 60_000_000,
            Per::Hour => 3_600_000_000,
        }
    }

    fn letter(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "m",
            Per::Hour => "h",
        }
    }
}

/// `count` per `per`, up to `burst` at once; `reserve` tokens of the burst kept back from the
/// lower-priority side (the STS budget's first issues; 0 for the per-subject rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub per: Per,
    pub burst: u64,
    pub reserve: u64,
}

impl Rate {
    /// Microseconds per token, rounded up (never faster than configured).
    pub fn interval_us(&self) -> i64 {
        i64::try_from(self.per.micros().div_ceil(self.count)).unwrap_or(i64::MAX)
    }

    /// The bucket for the side that may take every token of the burst.
    pub fn spec(&self) -> BucketSpec {
        self.spec_keeping(0)
    }

    /// The bucket for a side that must leave `reserve` tokens of the burst.
    pub fn spec_keeping(&self, reserve: u64) -> BucketSpec {
        let interval_us = self.interval_us();
        let tokens = self.burst.saturating_sub(1).saturating_sub(reserve);
        BucketSpec {
            interval_us,
            tolerance_us: interval_us.saturating_mul(i64::try_from(tokens).unwrap_or(i64::MAX)),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{},burst={}",
            self.count,
            self.per.letter(),
            self.burst
        )?;
        if self.reserve > 0 {
            write!(f, ",reserve={}", self.reserve)?;
        }
        Ok(())
    }
}

/// Why a rate setting cannot be used. Each message names the variable and shows an example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateError {
    #[error(
        "{var}: {value:?} is not a rate: write COUNT/UNIT[,burst=N] with UNIT s, m or h, e.g. {example}"
    )]
    Syntax {
        var: &'static str,
        value: String,
        example: &'static str,
    },
    #[error(
        "{var}: {value:?}: the count must be a whole number from 1 to {MAX_PER_SECOND} per second, e.g. {example}"
    )]
    Count {
        var: &'static str,
        value: String,
        example: &'static str,
    },
    #[error("{var}: {value:?}: unknown or repeated option {option:?}, e.g. {example}")]
    Option {
        var: &'static str,
        value: String,
        option: String,
        example: &'static str,
    },
    #[error(
        "{var}: {value:?}: burst must be a whole number from 1 to {MAX_PER_SECOND}, e.g. {example}"
    )]
    Burst {
        var: &'static str,
        value: String,
        example: &'static str,
    },
    #[error(
        "{var}: {value:?}: reserve must be smaller than the burst (it is the part of the burst first issues leave to refreshes), e.g. {example}"
    )]
    Reserve {
        var: &'static str,
        value: String,
        example: &'static str,
    },
}

/// A rate setting as given: a rate, or off (`off`, or empty: a task definition can list the
/// variable without turning the limit on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting(pub Option<Rate>);

fn setting(value: &str, parse: fn(&str) -> Result<Rate, RateError>) -> Result<Setting, RateError> {
    match value.trim() {
        "" | "off" => Ok(Setting(None)),
        _ => parse(value).map(|r| Setting(Some(r))),
    }
}

/// BROKER_RATE_PER_SUBJECT as clap reads it.
pub fn subject_setting(value: &str) -> Result<Setting, RateError> {
    setting(value, subject_rate)
}

/// BROKER_STS_RATE as clap reads it.
pub fn sts_setting(value: &str) -> Result<Setting, RateError> {
    setting(value, sts_rate)
}

/// BROKER_RATE_PER_SUBJECT's parser (no `reserve`: a subject's requests have one priority).
pub fn subject_rate(value: &str) -> Result<Rate, RateError> {
    parse_rate("BROKER_RATE_PER_SUBJECT", value, SUBJECT_EXAMPLE, false)
}

/// BROKER_STS_RATE's parser.
pub fn sts_rate(value: &str) -> Result<Rate, RateError> {
    parse_rate("BROKER_STS_RATE", value, STS_EXAMPLE, true)
}

/// BROKER_STS_MAX_WAIT's parser: a duration up to [`MAX_STS_WAIT`].
pub fn sts_max_wait(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        format!("BROKER_STS_MAX_WAIT: {value:?} is not a duration (e.g. 3s, 500ms): {e}")
    })?;
    if d > MAX_STS_WAIT {
        return Err(format!(
            "BROKER_STS_MAX_WAIT: {value:?} is longer than 10s: a request waits holding the credential's issuing lock (20 s); e.g. BROKER_STS_MAX_WAIT=3s"
        ));
    }
    Ok(d)
}

/// `COUNT/UNIT[,burst=N][,reserve=N]`; `reserve` only where `with_reserve`.
fn parse_rate(
    var: &'static str,
    value: &str,
    example: &'static str,
    with_reserve: bool,
) -> Result<Rate, RateError> {
    let syntax = || RateError::Syntax {
        var,
        value: value.to_string(),
        example,
    };
    let mut parts = value.trim().split(',').map(str::trim);
    let head = parts.next().ok_or_else(syntax)?;
    let (count, unit) = head.split_once('/').ok_or_else(syntax)?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Per::Second,
        "m" | "min" | "minute" => Per::Minute,
        "h" | "hour" => Per::Hour,
        _ => return Err(syntax()),
    };
    let count: u64 = count.trim().parse().map_err(|_| syntax())?;
    if count == 0 || count.saturating_mul(1_000_000) / per.micros() > MAX_PER_SECOND {
        return Err(RateError::Count {
            var,
            value: value.to_string(),
            example,
        });
    }
    let (mut burst, mut reserve) = (None, None);
    for option in parts {
        let unknown = || RateError::Option {
            var,
            value: value.to_string(),
            option: option.to_string(),
            example,
        };
        let (key, n) = option.split_once('=').ok_or_else(unknown)?;
        let slot = match key.trim() {
            "burst" if burst.is_none() => &mut burst,
            "reserve" if with_reserve && reserve.is_none() => &mut reserve,
            _ => return Err(unknown()),
        };
        *slot = Some(n.trim().parse::<u64>().map_err(|_| unknown())?);
    }
    let burst = burst.unwrap_or(count);
    if burst == 0 || burst > MAX_PER_SECOND {
        return Err(RateError::Burst {
            var,
            value: value.to_string(),
            example,
        });
    }
    let reserve = match reserve {
        Some(r) => r,
        None if with_reserve && burst >= 2 => (burst / 4).max(1),
        None => 0,
    };
    if reserve > 0 && reserve >= burst {
        return Err(RateError::Reserve {
            var,
            value: value.to_string(),
            example,
        });
    }
    Ok(Rate {
        count,
        per,
        burst,
        reserve,
    })
}

/// A request over its principal's rate: RESOURCE_EXHAUSTED, with when to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rate limit reached: this principal may make {count} credential requests per {per} with bursts of {burst} (BROKER_RATE_PER_SUBJECT={rate}); retry in {secs:.3} s",
    count = rate.count,
    per = per_word(rate.per),
    burst = rate.burst,
    secs = retry_after.as_secs_f64()
)]
pub struct RateLimited {
    pub retry_after: Duration,
    pub rate: Rate,
    /// Who was limited, for the audit trail and logs; never in the message (the client knows).
    pub issuer: String,
    pub subject: String,
}

fn per_word(per: Per) -> &'static str {
    match per {
        Per::Second => "second",
        Per::Minute => "minute",
        Per::Hour => "hour",
    }
}

impl RateLimited {
    /// The wait in whole milliseconds, rounded up (for `grpc-retry-pushback-ms`).
    pub fn retry_after_ms(&self) -> u64 {
        u64::try_from(self.retry_after.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
    }
}

/// Why a request was not let through the per-subject limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    #[error(transparent)]
    Exceeded(#[from] RateLimited),
    /// The store holding the buckets cannot answer: the request fails closed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The per-subject limit: one bucket per (issuer, subject), shared through the store.
#[derive(Debug)]
pub struct SubjectLimit {
    rate: Rate,
    buckets: Buckets,
    hasher: KeyedHasher,
    /// Buckets this replica spent from, until they are full again: the in-use gauge.
    in_use: InUse,
}

impl SubjectLimit {
    /// A limit of `rate` per principal, its buckets in `buckets`, keyed by `hasher` (the store's
    /// keyed hash, so every replica names a principal's bucket alike).
    pub fn new(rate: Rate, buckets: Buckets, hasher: KeyedHasher, clock: Clock) -> Self {
        Self {
            rate,
            buckets,
            hasher,
            in_use: InUse::new(clock),
        }
    }

    /// The setting, for messages.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token of the principal's bucket, or says how long to wait.
    pub async fn check(&self, issuer: &str, subject: &str) -> Result<(), LimitError> {
        let key = format!(
            "cb:v1:rate:{{{}}}",
            self.hasher.subject_key(issuer, subject)
        );
        let take = self.buckets.take(&key, self.rate.spec()).await?;
        let in_use = self.in_use.saw(key, take.full_in);
        crate::metrics::rate_buckets_in_use(in_use);
        if take.granted {
            return Ok(());
        }
        crate::metrics::limit_refusal("subject_rate");
        tracing::debug!(%subject, retry_after_ms = take.retry_after.as_millis() as u64, "request over the principal's rate limit");
        Err(RateLimited {
            retry_after: take.retry_after,
            rate: self.rate,
            issuer: issuer.to_string(),
            subject: subject.to_string(),
        }
        .into())
    }
}

/// Buckets not full again yet, as this replica saw them (full ones are dropped within a second):
/// with the memory store every principal, with Redis the principals this replica served (replicas
/// overlap, so the fleet's sum over-counts).
#[derive(Debug)]
struct InUse {
    clock: Clock,
    /// Bucket key → when it is full again (ms); and when the map was last pruned.
    until: Mutex<(HashMap<String, i64>, i64)>,
}

/// How often the in-use map drops full buckets: a request must not scan every active principal.
const PRUNE_EVERY_MS: i64 = 1000;

impl InUse {
    fn new(clock: Clock) -> Self {
        Self {
            clock,
            until: Mutex::default(),
        }
    }

    /// Records that `key`'s bucket is full again in `full_in`; returns how many are in use.
    fn saw(&self, key: String, full_in: Duration) -> usize {
        let now = self.clock.now_ms();
        let until = now.saturating_add(i64::try_from(full_in.as_millis()).unwrap_or(i64::MAX));
        let mut guard = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, pruned_at) = &mut *guard;
        if until > now {
            map.insert(key, until);
        } else {
            map.remove(&key);
        }
        // Full buckets leave at most a second late, so a request never scans the whole map.
        if now - *pruned_at >= PRUNE_EVERY_MS || now < *pruned_at {
            map.retain(|_, u| *u > now);
            *pruned_at = now;
        }
        map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn rates_parse_with_their_defaults() {
        let r = subject_rate("20/s").unwrap();
        assert_eq!(
            (r.count, r.per, r.burst, r.reserve),
            (20, Per::Second, 20, 0)
        );
        assert_eq!(r.interval_us(), 50_000);
        let r = subject_rate(" 20/s, burst=40 ").unwrap();
        assert_eq!(r.burst, 40);
        assert_eq!(r.to_string(), "20/s,burst=40");
        let r = subject_rate("600/m,burst=5").unwrap();
        assert_eq!((r.per, r.interval_us(), r.burst), (Per::Minute, 100_000, 5));
        let r = subject_rate("7/h").unwrap();
        assert_eq!(
            r.interval_us(),
            514_285_715,
            "rounded up: never faster than asked"
        );
        let r = sts_rate("10/s,burst=20").unwrap();
        assert_eq!(r.reserve, 5, "a quarter of the burst by default");
        assert_eq!(sts_rate("10/s,burst=2").unwrap().reserve, 1);
        assert_eq!(sts_rate("10/s,burst=1").unwrap().reserve, 0);
        let r = sts_rate("10/s,burst=20,reserve=0").unwrap();
        assert_eq!(r.reserve, 0);
        assert_eq!(r.to_string(), "10/s,burst=20");
        assert_eq!(
            sts_rate("10/s,burst=20,reserve=3").unwrap().to_string(),
            "10/s,burst=20,reserve=3"
        );
    }

    #[test]
    fn bad_rates_name_the_variable_and_show_an_example() {
        for (value, problem) in [
            ("20", "is not a rate"),
            ("20/d", "is not a rate"),
            ("x/s", "is not a rate"),
            ("-1/s", "is not a rate"),
            ("0/s", "count"),
            ("2000000/s", "count"),
            ("20/s,burst=0", "burst"),
            ("20/s,burst=x", "option"),
            ("20/s,burst=1,burst=2", "option"),
            ("20/s,reserve=1", "option"),
            ("20/s,speed=1", "option"),
        ] {
            let e = subject_rate(value).unwrap_err().to_string();
            assert!(e.starts_with("BROKER_RATE_PER_SUBJECT: "), "{value}: {e}");
            assert!(e.contains(problem), "{value}: {e}");
            assert!(
                e.contains("e.g. BROKER_RATE_PER_SUBJECT=20/s,burst=40"),
                "{e}"
            );
        }
        let e = sts_rate("10/s,burst=4,reserve=4").unwrap_err().to_string();
        assert!(
            e.starts_with("BROKER_STS_RATE: ") && e.contains("reserve"),
            "{e}"
        );
        assert!(
            e.contains("e.g. BROKER_STS_RATE=10/s,burst=20,reserve=5"),
            "{e}"
        );
        let e = sts_max_wait("11s").unwrap_err();
        assert!(e.starts_with("BROKER_STS_MAX_WAIT: "), "{e}");
        assert!(sts_max_wait("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn limits_are_off_by_default_and_the_flags_reach_clap() {
        let t = T::try_parse_from(["x"]).unwrap();
        assert!(t.limits.rate_per_subject.is_none() && t.limits.sts_rate.is_none());
        assert_eq!(t.limits.sts_max_wait, Duration::from_secs(3));
        let t = T::try_parse_from([
            "x",
            "--rate-per-subject",
            "5/s,burst=10",
            "--sts-rate",
            "10/s",
            "--sts-max-wait",
            "1s",
        ])
        .unwrap();
        assert_eq!(t.limits.rate_per_subject.unwrap().0.unwrap().burst, 10);
        assert_eq!(t.limits.sts_rate.unwrap().0.unwrap().count, 10);
        let t = T::try_parse_from(["x", "--rate-per-subject", "off", "--sts-rate", ""]).unwrap();
        assert_eq!(t.limits.rate_per_subject, Some(Setting(None)));
        assert_eq!(t.limits.sts_rate, Some(Setting(None)));
        let e = T::try_parse_from(["x", "--rate-per-subject", "fast"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("BROKER_RATE_PER_SUBJECT: \"fast\" is not a rate"),
            "{e}"
        );
    }

    fn limit(rate: &str) -> (SubjectLimit, crate::clock::ManualClock) {
        let (clock, manual) = Clock::manual();
        let store = Arc::new(AnyStore::Memory(MemoryStore::with_clock(clock.clone())));
        let limit = SubjectLimit::new(
            subject_rate(rate).unwrap(),
            Buckets::for_store(&store, clock.clone()),
            KeyedHasher::new(b"k"),
            clock,
        );
        (limit, manual)
    }

    #[tokio::test]
    async fn a_principal_over_its_rate_is_told_when_to_retry_and_others_are_not_affected() {
        let (limit, manual) = limit("2/s,burst=3");
        for _ in 0..3 {
            limit.check("iss", "alice").await.unwrap();
        }
        let Err(LimitError::Exceeded(refused)) = limit.check("iss", "alice").await else {
            panic!("the fourth request in the same instant is over the burst")
        };
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert_eq!(refused.retry_after_ms(), 500);
        let message = refused.to_string();
        assert!(
            message.contains("BROKER_RATE_PER_SUBJECT=2/s,burst=3"),
            "{message}"
        );
        assert!(message.contains("retry in 0.500 s"), "{message}");
        assert!(
            !message.contains("alice"),
            "the message names no principal: {message}"
        );
        // Another subject, and the same subject of another issuer, have their own buckets.
        limit.check("iss", "bob").await.unwrap();
        limit.check("other-iss", "alice").await.unwrap();
        assert_eq!(limit.in_use.saw("x".into(), Duration::ZERO), 3);
        // Half a second later one token is back, and only one.
        manual.advance(Duration::from_millis(499));
        assert!(limit.check("iss", "alice").await.is_err());
        manual.advance(Duration::from_millis(1));
        limit.check("iss", "alice").await.unwrap();
        assert!(limit.check("iss", "alice").await.is_err());
        // Idle long enough, every bucket is full again and none is in use.
        manual.advance(Duration::from_secs(2));
        assert_eq!(limit.in_use.saw("x".into(), Duration::ZERO), 0);
    }

    #[test]
    fn the_bucket_key_names_no_principal() {
        let h = KeyedHasher::new(b"k");
        let key = h.subject_key("https://idp.example/", "alice@example.com");
        assert_eq!(key.len(), 32);
        assert!(!key.contains("alice"));
        assert_ne!(
            key,
            h.subject_key("https://idp.example/", "bob@example.com")
        );
        assert_ne!(
            key,
            KeyedHasher::new(b"other").subject_key("https://idp.example/", "alice@example.com")
        );
        // Issuer and subject cannot be shifted into each other.
        assert_ne!(h.subject_key("ab", "c"), h.subject_key("a", "bc"));
    }
}
