//! The fleet's STS budget (`BROKER_STS_RATE`): at most so many STS calls per second across every
//! replica, below the account's STS quota, so a burst of new principals cannot throttle everybody
//! else's refreshes.
//!
//! - It stands in front of the STS call only: a request served from the store never waits. The
//!   engine asks for a token after it won the credential's single flight and its issuing lock, just
//!   before it calls STS.
//! - **Priority**: a refresh of a credential in use (the background refresh ahead of expiry) may
//!   take every token of the bucket; a first issue (no servable credential yet: a new principal,
//!   or a credential that expired unused) must leave `reserve` tokens of the burst, so refreshes
//!   find tokens while first issues queue. Within a replica each kind waits in its own FIFO line
//!   and only the head of a line asks the store, so waiting costs one store round trip per token
//!   interval, not one per waiter.
//! - **Deadline**: a request waits until its gRPC deadline (`grpc-timeout`, less
//!   [`STS_CALL_ALLOWANCE`] for the call itself) or `BROKER_STS_MAX_WAIT`, whichever comes first.
//!   When the bucket says the wait would pass that limit, or the limit passes in line, the answer is
//!   UNAVAILABLE naming the budget and the variable — at once, not after the wait.
//! - The bucket lives in the store ([`crate::store::bucket`], key `cb:v1:budget:{sts}`); a store
//!   that cannot answer fails the request closed (UNAVAILABLE naming the store).
//!
//! The count is of the broker's STS requests: the SDK's own retries of a throttled call
//! (`BROKER_STS_MAX_ATTEMPTS`) and the one retry at 3600 s for a role whose maximum is shorter are
//! not taken from the budget.

use crate::quota::Rate;
use crate::store::StoreError;
use crate::store::bucket::{Buckets, Take};
use std::fmt;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// The budget's bucket in the store (one for the fleet; its own cluster slot).
const KEY: &str = "cb:v1:budget:{sts}";

/// Time kept for the STS call after the wait, when a request's deadline bounds the wait.
pub const STS_CALL_ALLOWANCE: Duration = Duration::from_millis(500);

/// Which side of the budget a call is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A background refresh of a credential someone is using.
    Refresh,
    /// The first STS call for a credential with nothing servable in the store.
    FirstIssue,
}

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::Refresh => "refresh",
            Class::FirstIssue => "first_issue",
        }
    }
}

/// What a flight needs to know to wait for the budget.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    pub class: Class,
    /// The deadline of the request that started the flight, if it had one.
    pub deadline: Option<Instant>,
}

/// No token in time: UNAVAILABLE naming the budget and its setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "STS budget exhausted (BROKER_STS_RATE={rate}): {what}; no STS call was made for this request, retry later"
)]
pub struct BudgetExhausted {
    pub rate: String,
    pub what: String,
}

/// Why no token was taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    #[error(transparent)]
    Exhausted(#[from] BudgetExhausted),
    /// The store holding the bucket cannot answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The budget; shared by the engine's flights.
pub struct StsBudget {
    rate: Rate,
    buckets: Buckets,
    max_wait: Duration,
    /// One FIFO line per [`Class`]: only its head asks the store.
    lines: [tokio::sync::Mutex<()>; 2],
}

impl fmt::Debug for StsBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StsBudget")
            .field("rate", &self.rate.to_string())
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl StsBudget {
    /// A budget of `rate` for the fleet, its bucket in `buckets`; no wait longer than `max_wait`.
    pub fn new(rate: Rate, buckets: Buckets, max_wait: Duration) -> Self {
        Self {
            rate,
            buckets,
            max_wait,
            lines: [tokio::sync::Mutex::new(()), tokio::sync::Mutex::new(())],
        }
    }

    /// Waits for a token for one STS call of `need.class`, until the request's deadline (less
    /// [`STS_CALL_ALLOWANCE`]) or `BROKER_STS_MAX_WAIT`. Returns the grant's instant on the
    /// bucket's clock (µs since the epoch).
    pub async fn acquire(&self, need: Need) -> Result<i64, BudgetError> {
        let started = Instant::now();
        let mut limit = started + self.max_wait;
        if let Some(deadline) = need.deadline {
            limit = limit.min(deadline.checked_sub(STS_CALL_ALLOWANCE).unwrap_or(started));
        }
        let (line, spec) = match need.class {
            Class::Refresh => (&self.lines[0], self.rate.spec()),
            Class::FirstIssue => (&self.lines[1], self.rate.spec_keeping(self.rate.reserve)),
        };
        let mut had_to_wait = false;
        let _turn = match line.try_lock() {
            Ok(turn) => turn,
            Err(_) => {
                had_to_wait = true;
                let Ok(turn) = tokio::time::timeout_at(limit, line.lock()).await else {
                    return Err(self.refuse(need.class, started, None));
                };
                turn
            }
        };
        loop {
            let take: Take = self.buckets.take(KEY, spec).await?;
            if take.granted {
                let waited = started.elapsed();
                crate::metrics::sts_budget_wait(
                    need.class.label(),
                    waited.as_secs_f64(),
                    had_to_wait,
                );
                tracing::debug!(
                    class = need.class.label(),
                    budget_at_us = take.at_us,
                    waited_ms = waited.as_millis() as u64,
                    "STS budget: call granted"
                );
                return Ok(take.at_us);
            }
            let jitter = Duration::from_micros(rand::random_range(
                0..=(self.rate.interval_us() as u64 / 8).min(50_000),
            ));
            let wake = Instant::now() + take.retry_after + jitter;
            if wake > limit {
                return Err(self.refuse(need.class, started, Some(take.retry_after)));
            }
            had_to_wait = true;
            tokio::time::sleep_until(wake).await;
        }
    }

    fn refuse(&self, class: Class, started: Instant, next: Option<Duration>) -> BudgetError {
        crate::metrics::limit_refusal("sts_budget");
        let waited = started.elapsed().as_secs_f64();
        let what = match (class, next) {
            (Class::FirstIssue, Some(next)) => format!(
                "the next STS call for a new credential could start in {:.1} s, after this request's deadline (or BROKER_STS_MAX_WAIT={}); waited {waited:.1} s",
                next.as_secs_f64(),
                humantime::format_duration(self.max_wait)
            ),
            (Class::Refresh, Some(next)) => format!(
                "the next STS call for a refresh could start in {:.1} s, after BROKER_STS_MAX_WAIT={}",
                next.as_secs_f64(),
                humantime::format_duration(self.max_wait)
            ),
            (_, None) => format!(
                "waited {waited:.1} s behind other STS calls, until this request's deadline (or BROKER_STS_MAX_WAIT={})",
                humantime::format_duration(self.max_wait)
            ),
        };
        tracing::info!(class = class.label(), "STS budget: {what}");
        BudgetExhausted {
            rate: self.rate.to_string(),
            what,
        }
        .into()
    }
}

tokio::task_local! {
    /// The deadline of the gRPC request this task serves.
    static DEADLINE: Option<Instant>;
}

/// Runs `f` (a request handler) with `deadline` visible to [`current_deadline`].
///
/// A plain function returning tokio's scope future, not an `async fn` awaiting it: an async
/// wrapper would hold `f` twice (its argument and the scope's copy), and `f` is the request's
/// whole future.
pub fn with_deadline<F: Future>(
    deadline: Option<Instant>,
    f: F,
) -> tokio::task::futures::TaskLocalFuture<Option<Instant>, F> {
    DEADLINE.scope(deadline, f)
}

/// The deadline of the request the current task serves, if it sent one.
pub fn current_deadline() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok().flatten()
}

/// The deadline a request's `grpc-timeout` header sets (gRPC over HTTP/2: at most 8 digits and
/// a unit H, M, S, m, u or n), counted from now. tonic enforces the header but does not expose its
/// parser; a malformed one is ignored here as tonic ignores it.
pub fn grpc_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, TimeSource};
    use crate::quota::sts_rate;
    use crate::store::bucket::LocalBuckets;
    use std::sync::{Arc, Mutex};

    /// A clock that follows tokio's (paused) time, so the buckets and the waits agree.
    struct TokioClock(Instant);
    impl TimeSource for TokioClock {
        fn now_ms(&self) -> i64 {
            1_000_000 + self.0.elapsed().as_millis() as i64
        }
    }

    fn budget(rate: &str, max_wait: Duration) -> Arc<StsBudget> {
        let clock = Clock::from_source(TokioClock(Instant::now()));
        Arc::new(StsBudget::new(
            sts_rate(rate).unwrap(),
            Buckets::Local(LocalBuckets::new(clock)),
            max_wait,
        ))
    }

    fn first(deadline: Option<Instant>) -> Need {
        Need {
            class: Class::FirstIssue,
            deadline,
        }
    }

    // Paused time: sleeps end when every task waits, in order; nothing depends on the machine.
    #[tokio::test(start_paused = true)]
    async fn a_refresh_goes_before_queued_first_issues_and_the_rate_holds() {
        // 10/s, burst 4, one token kept for refreshes.
        let b = budget("10/s,burst=4,reserve=1", Duration::from_secs(10));
        let t0 = Instant::now();
        let grants = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..30 {
            let (b, grants) = (b.clone(), grants.clone());
            tasks.push(tokio::spawn(async move {
                b.acquire(first(None)).await.unwrap();
                grants
                    .lock()
                    .unwrap()
                    .push((Instant::now() - t0, format!("new-{i}")));
            }));
        }
        // A second in, first issues are queued (about 2 s of them); a refresh comes.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let arrived = Instant::now();
        b.acquire(Need {
            class: Class::Refresh,
            deadline: None,
        })
        .await
        .unwrap();
        let refresh_wait = arrived.elapsed();
        grants
            .lock()
            .unwrap()
            .push((Instant::now() - t0, "refresh".into()));
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            refresh_wait,
            Duration::ZERO,
            "the refresh takes the reserved token at once, not a place behind first issues"
        );
        let mut times: Vec<Duration> = grants.lock().unwrap().iter().map(|g| g.0).collect();
        times.sort();
        assert_eq!(times.len(), 31);
        // Never more than rate × window + burst in any window.
        for i in 0..times.len() {
            for j in i..times.len() {
                let window = (times[j] - times[i]).as_micros() as i64;
                assert!(
                    (j - i + 1) as i64 <= window / 100_000 + 4,
                    "{} grants in {window} µs",
                    j - i + 1
                );
            }
        }
        // First issues got 3 at once (the burst less the reserve), then the rate.
        assert!(times[2] < Duration::from_millis(1) && times[3] >= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn while_refreshes_wait_first_issues_get_no_token() {
        let b = budget("10/s,burst=4,reserve=1", Duration::from_secs(10));
        // Spend the burst: the first issues' share, then the reserve.
        for _ in 0..3 {
            b.acquire(first(None)).await.unwrap();
        }
        let refresh = Need {
            class: Class::Refresh,
            deadline: None,
        };
        b.acquire(refresh).await.unwrap();
        let t0 = Instant::now();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (b, order) = (b.clone(), order.clone());
            let need = if i % 2 == 0 { refresh } else { first(None) };
            tasks.push(tokio::spawn(async move {
                b.acquire(need).await.unwrap();
                order
                    .lock()
                    .unwrap()
                    .push((need.class, Instant::now() - t0));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        let classes: Vec<Class> = order.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            classes[..8],
            [Class::Refresh; 8],
            "every waiting refresh is served before any first issue: {order:?}"
        );
        assert_eq!(classes[8..], [Class::FirstIssue; 8]);
        // At the budget's rate: the 16th token comes 16 intervals (and the jitter) later.
        let last = order.last().unwrap().1;
        assert!(
            last >= Duration::from_millis(1600) && last < Duration::from_millis(2500),
            "{last:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_is_refused_at_once_naming_the_budget() {
        let b = budget("1/s,burst=1", Duration::from_secs(10));
        b.acquire(first(None)).await.unwrap();
        let started = Instant::now();
        // The next token is a second away; the deadline leaves 0.7 s (less the call allowance).
        let deadline = Some(started + Duration::from_millis(700));
        let Err(BudgetError::Exhausted(e)) = b.acquire(first(deadline)).await else {
            panic!("refused")
        };
        assert_eq!(started.elapsed(), Duration::ZERO, "refused without waiting");
        let message = e.to_string();
        assert!(
            message.starts_with("STS budget exhausted (BROKER_STS_RATE=1/s,burst=1)"),
            "{message}"
        );
        assert!(message.contains("deadline"), "{message}");
        // With time enough, the same request waits for its token.
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        b.acquire(first(deadline)).await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1200),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_in_line_give_up_at_their_own_limit() {
        let b = budget("1/s,burst=1", Duration::from_millis(2500));
        b.acquire(first(None)).await.unwrap();
        let started = Instant::now();
        let runs: Vec<_> = (0..5)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.acquire(first(None)).await.map(|_| Instant::now()) })
            })
            .collect();
        let mut granted = 0;
        let mut refused = 0;
        for r in runs {
            match r.await.unwrap() {
                Ok(at) => {
                    granted += 1;
                    assert!(at - started <= Duration::from_millis(2500));
                }
                Err(BudgetError::Exhausted(e)) => {
                    refused += 1;
                    assert!(
                        e.to_string().contains("BROKER_STS_MAX_WAIT=2s 500ms"),
                        "{e}"
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
        // Tokens at 1 s and 2 s; the other three could not start within 2.5 s.
        assert_eq!((granted, refused), (2, 3));
        assert!(started.elapsed() <= Duration::from_millis(2500));
    }

    #[test]
    fn grpc_timeouts_parse_as_the_spec_says() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert!(grpc_deadline(&m).is_none());
        for (value, expect) in [
            ("5S", Some(Duration::from_secs(5))),
            ("4999m", Some(Duration::from_millis(4999))),
            ("2M", Some(Duration::from_secs(120))),
            ("100u", Some(Duration::from_micros(100))),
            ("123456789S", None),
            ("5", None),
            ("5x", None),
            ("S", None),
        ] {
            m.insert("grpc-timeout", value.parse().unwrap());
            let before = Instant::now();
            let got = grpc_deadline(&m).map(|d| d - before);
            match expect {
                Some(e) => {
                    let got = got.unwrap_or_else(|| panic!("{value}"));
                    assert!(
                        got >= e && got < e + Duration::from_secs(1),
                        "{value}: {got:?}"
                    );
                }
                None => assert!(got.is_none(), "{value}"),
            }
        }
    }
}
