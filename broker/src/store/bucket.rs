//! Token buckets shared by every replica through the store: the per-subject rate limit and the
//! fleet's STS budget both take their tokens here.
//!
//! The bucket is kept as GCRA (the generic cell rate algorithm): one number per bucket, its
//! *theoretical arrival time* (TAT), the instant at which the bucket would be full again. With an
//! emission interval `I` (one token per `I`) and a burst of `B` tokens, a request at `now` is
//! granted when `max(TAT, now) − now ≤ tolerance`, with `tolerance = (B − 1)·I`, and then moves
//! `TAT` on by `I`; otherwise it is refused with `retry after = max(TAT, now) − now − tolerance`.
//! A smaller tolerance for one kind of request keeps the last tokens of the burst for the others
//! (the STS budget's reserve for refreshes). One integer per bucket, integer arithmetic in
//! microseconds: the Lua script and [`gcra`] compute exactly the same decisions.
//!
//! - **Redis**: one round trip, a Lua script on one key (`cb:v1:rate:{…}`, `cb:v1:budget:{sts}`)
//!   that reads Redis's own `TIME`, so replicas with skewed clocks share one timeline; the key
//!   expires when the bucket is full again, so idle subjects leave nothing behind.
//! - **memory**: the same function over an in-process map, on the injected [`Clock`] (tests move
//!   a `ManualClock` instead of sleeping).
//!
//! A store that cannot be reached is an error ([`StoreError::Unavailable`] naming it): the caller
//! fails closed, never grants on a guess.

use super::{AnyStore, RedisStore, StoreError};
use crate::clock::Clock;
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

/// How a bucket hands out tokens: one per `interval_us`, granted while the bucket is no more than
/// `tolerance_us` "ahead" (`(burst − 1 − reserve) · interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpec {
    /// Microseconds per token (the rate's emission interval); at least 1.
    pub interval_us: i64,
    /// How far ahead of now the bucket may run and still grant, in microseconds.
    pub tolerance_us: i64,
}

/// One decision of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    /// Whether the token was taken.
    pub granted: bool,
    /// Refused: how long until this request would be granted (nobody else taking meanwhile).
    pub retry_after: Duration,
    /// The bucket's clock at the decision, microseconds since the epoch (Redis `TIME`, or the
    /// injected clock): the instant a grant is recorded at.
    pub at_us: i64,
    /// How long until the bucket is full again (it names nothing once it is).
    pub full_in: Duration,
}

/// The decision for a request at `now_us` on a bucket whose TAT is `tat_us` (`None`: a full,
/// absent bucket). Returns the decision and the new TAT (unchanged when refused).
pub fn gcra(tat_us: Option<i64>, now_us: i64, spec: BucketSpec) -> (Take, i64) {
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let ahead = tat - now_us;
    if ahead > spec.tolerance_us {
        let take = Take {
            granted: false,
            retry_after: micros(ahead - spec.tolerance_us),
            at_us: now_us,
            full_in: micros(ahead),
        };
        return (take, tat);
    }
    let tat = tat + spec.interval_us;
    let take = Take {
        granted: true,
        retry_after: Duration::ZERO,
        at_us: now_us,
        full_in: micros(tat - now_us),
    };
    (take, tat)
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// [`gcra`] in Lua, for Redis. KEYS[1]: the bucket; ARGV: interval, tolerance (µs). Returns
/// `{granted, retry_after_us, now_us, full_in_us}`. `redis.replicate_commands()` lets Redis 5–6
/// replicate the writes after `TIME` (Redis 7 always does; the call is then a no-op). Numbers are
/// written with `%.0f`: Lua would print a TAT of 1.7e15 µs in exponent form.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = tonumber(stored) or now end
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then
  return {0, ahead - tolerance, now, ahead}
end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', math.ceil((tat - now) / 1000)))
return {1, 0, now, tat - now}",
    )
});

impl RedisStore {
    /// One token from the bucket at `key`, decided by [`TAKE`] in one round trip.
    pub(crate) async fn take_token(&self, key: &str, spec: BucketSpec) -> Result<Take, StoreError> {
        let (granted, retry_us, now_us, full_us): (i64, i64, i64, i64) = self
            .script(
                "token bucket",
                &TAKE,
                &[key],
                &[
                    spec.interval_us.to_string().as_bytes(),
                    spec.tolerance_us.to_string().as_bytes(),
                ],
            )
            .await?;
        Ok(Take {
            granted: granted == 1,
            retry_after: micros(retry_us),
            at_us: now_us,
            full_in: micros(full_us),
        })
    }
}

/// Buckets in this process: bucket key → TAT (µs), on the injected clock.
#[derive(Debug, Default)]
pub struct LocalBuckets {
    clock: Clock,
    tats: Mutex<LocalState>,
}

#[derive(Debug, Default)]
struct LocalState {
    tats: HashMap<String, i64>,
    /// Size after the last pruning: the map is pruned when it has doubled since.
    pruned_at_len: usize,
}

impl LocalBuckets {
    /// Buckets whose time is `clock`'s.
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            tats: Mutex::default(),
        }
    }

    fn now_us(&self) -> i64 {
        self.clock.now_ms().saturating_mul(1000)
    }

    /// One token from the bucket at `key`.
    pub fn take(&self, key: &str, spec: BucketSpec) -> Take {
        let now = self.now_us();
        let mut state = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        let (take, tat) = gcra(state.tats.get(key).copied(), now, spec);
        if take.granted {
            state.tats.insert(key.to_string(), tat);
        }
        // Full buckets hold no information: drop them, amortised over the map's growth.
        if state.tats.len() > 64 && state.tats.len() >= state.pruned_at_len * 2 {
            state.tats.retain(|_, tat| *tat > now);
            state.pruned_at_len = state.tats.len().max(32);
        }
        take
    }

    /// Buckets that are not full (someone spent tokens and they have not all come back).
    pub fn in_use(&self) -> usize {
        let now = self.now_us();
        let mut state = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        state.tats.retain(|_, tat| *tat > now);
        state.pruned_at_len = state.tats.len().max(32);
        state.tats.len()
    }
}

/// Where a limit keeps its buckets: in the shared Redis, or in this process with the memory store.
pub enum Buckets {
    Local(LocalBuckets),
    Shared(Arc<AnyStore>),
}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Buckets::Local(_) => f.write_str("Buckets(memory)"),
            Buckets::Shared(store) => write!(f, "Buckets({})", store.kind()),
        }
    }
}

impl Buckets {
    /// Buckets in the store the broker uses: Redis shares them with every replica; the memory
    /// store keeps them here, on `clock`.
    pub fn for_store(store: &Arc<AnyStore>, clock: Clock) -> Self {
        match store.as_ref() {
            AnyStore::Memory(_) => Buckets::Local(LocalBuckets::new(clock)),
            AnyStore::Redis(_) => Buckets::Shared(Arc::clone(store)),
        }
    }

    /// One token from the bucket at `key`; a store that cannot answer is an error.
    pub async fn take(&self, key: &str, spec: BucketSpec) -> Result<Take, StoreError> {
        match self {
            Buckets::Local(local) => Ok(local.take(key, spec)),
            Buckets::Shared(store) => match store.as_ref() {
                AnyStore::Redis(redis) => redis.take_token(key, spec).await,
                AnyStore::Memory(_) => Err(StoreError::Unavailable(
                    "token buckets: the memory store keeps its buckets in process".into(),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    /// 10 per second, burst 3.
    const SPEC: BucketSpec = BucketSpec {
        interval_us: 100_000,
        tolerance_us: 200_000,
    };

    #[test]
    fn a_full_bucket_grants_its_burst_at_once_then_refuses_with_the_exact_wait() {
        let now = 1_000_000_000;
        let mut tat = None;
        for i in 0..3 {
            let (take, next) = gcra(tat, now, SPEC);
            assert!(take.granted, "token {i} of the burst");
            assert_eq!(take.full_in, Duration::from_millis(100 * (i + 1)));
            tat = Some(next);
        }
        let (refused, same) = gcra(tat, now, SPEC);
        assert!(!refused.granted);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(Some(same), tat, "a refusal takes nothing");
        // 99.999 ms later: still refused, 1 µs to go; at 100 ms: granted.
        let (refused, _) = gcra(tat, now + 99_999, SPEC);
        assert_eq!(refused.retry_after, Duration::from_micros(1));
        let (granted, _) = gcra(tat, now + 100_000, SPEC);
        assert!(granted.granted);
    }

    #[test]
    fn over_any_window_grants_never_exceed_rate_times_window_plus_burst() {
        // A request every 7 ms for 3 s against 10/s burst 3: grants follow the rate.
        let start = 5_000_000;
        let mut tat = None;
        let mut grants = Vec::new();
        for step in 0..430 {
            let now = start + step * 7_000;
            let (take, next) = gcra(tat, now, SPEC);
            if take.granted {
                grants.push(now);
                tat = Some(next);
            }
        }
        for (i, from) in grants.iter().enumerate() {
            for (j, to) in grants.iter().enumerate().skip(i) {
                let window = to - from;
                let allowed = window / SPEC.interval_us + 3;
                assert!(
                    (j - i + 1) as i64 <= allowed,
                    "{} grants in {window} µs",
                    j - i + 1
                );
            }
        }
        // And the rate is used, not starved: 3 s at 10/s plus the burst.
        assert!((30..=33).contains(&grants.len()), "{}", grants.len());
    }

    #[test]
    fn a_smaller_tolerance_keeps_the_last_tokens_for_the_others() {
        // Burst 4 with one token reserved: the reserving side gets 3, the other the 4th.
        let spec = BucketSpec {
            interval_us: 100_000,
            tolerance_us: 300_000,
        };
        let reserved = BucketSpec {
            tolerance_us: 200_000,
            ..spec
        };
        let now = 0;
        let mut tat = None;
        for _ in 0..3 {
            let (take, next) = gcra(tat, now, reserved);
            assert!(take.granted);
            tat = Some(next);
        }
        let (refused, _) = gcra(tat, now, reserved);
        assert!(!refused.granted);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        let (take, next) = gcra(tat, now, spec);
        assert!(take.granted, "the reserve is there for the other side");
        let (refused, _) = gcra(Some(next), now, spec);
        assert!(!refused.granted);
    }

    #[test]
    fn local_buckets_follow_the_injected_clock_and_forget_full_ones() {
        let (clock, manual) = Clock::manual();
        let buckets = LocalBuckets::new(clock);
        for _ in 0..3 {
            assert!(buckets.take("a", SPEC).granted);
        }
        assert!(!buckets.take("a", SPEC).granted);
        assert!(
            buckets.take("b", SPEC).granted,
            "another key has its own bucket"
        );
        assert_eq!(buckets.in_use(), 2);
        manual.advance(Duration::from_millis(100));
        assert!(
            buckets.take("a", SPEC).granted,
            "one token back after one interval"
        );
        assert!(!buckets.take("a", SPEC).granted);
        manual.advance(Duration::from_millis(300));
        assert_eq!(buckets.in_use(), 0, "full again: nothing kept");
    }
}
