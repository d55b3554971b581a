//! A short per-credential pause after STS failed, so a throttling or failing STS is not asked
//! again on every request.
//!
//! The SDK already retries inside one call (`BROKER_STS_MAX_ATTEMPTS`, backing off with jitter).
//! Without a pause between calls, once a credential is past its margin every request (coalesced
//! per credential) would start a new call of several attempts — with many users during STS
//! throttling that multiplies the load on the one thing that is already overloaded. After a
//! failed call for a credential id, further requests for it are answered at once with the same
//! UNAVAILABLE (saying when the next attempt will be) until the pause ends; the pause doubles with
//! each consecutive failure up to a bound, with jitter so replicas and credentials do not retry
//! in step. A success ends it.
//!
//! A denial (STS `AccessDenied`: the role's trust policy refuses the broker or the token) pauses
//! too, for a fixed time (`BROKER_STS_DENIED_PAUSE`), answered PERMISSION_DENIED from the pause:
//! asking again would get the same answer, and one caller repeating a request for a role it may
//! not assume must not burn the account's STS quota. A rejected request (bad policy, tags) is
//! answered as it is, each time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Consecutive failures of one credential id and when it may be tried again.
#[derive(Debug, Clone)]
struct Pause {
    failures: u32,
    until_ms: i64,
    cause: String,
    denied: bool,
}

/// A credential id still in its pause: why, and for how much longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    pub cause: String,
    pub retry_in: Duration,
    /// STS refused (PERMISSION_DENIED) rather than failed (UNAVAILABLE).
    pub denied: bool,
}

/// Pauses by credential id.
#[derive(Debug)]
pub struct Cooldowns {
    base: Duration,
    max: Duration,
    pauses: Mutex<HashMap<String, Pause>>,
}

impl Cooldowns {
    /// The first pause lasts between `base / 2` and `base`; each further failure doubles it, up
    /// to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            pauses: Mutex::new(HashMap::new()),
        }
    }

    /// The pause `id` is in at `now_ms`, if any.
    pub fn paused(&self, id: &str, now_ms: i64) -> Option<Paused> {
        let pauses = self
            .pauses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pause = pauses.get(id)?;
        (now_ms < pause.until_ms).then(|| Paused {
            cause: pause.cause.clone(),
            retry_in: Duration::from_millis((pause.until_ms - now_ms) as u64),
            denied: pause.denied,
        })
    }

    /// Records a failed STS call for `id` at `now_ms`; returns the pause it starts.
    pub fn failed(&self, id: &str, cause: &str, now_ms: i64) -> Duration {
        let mut pauses = self
            .pauses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let failures = pauses.get(id).map_or(0, |p| p.failures).saturating_add(1);
        let pause = self.pause_for(failures);
        pauses.insert(
            id.to_string(),
            Pause {
                failures,
                until_ms: now_ms + pause.as_millis() as i64,
                cause: cause.to_string(),
                denied: false,
            },
        );
        pause
    }

    /// Records that STS refused `id` at `now_ms`: no STS call for it during `pause`.
    pub fn denied(&self, id: &str, cause: &str, now_ms: i64, pause: Duration) {
        self.pauses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                id.to_string(),
                Pause {
                    failures: 0,
                    until_ms: now_ms.saturating_add(pause.as_millis() as i64),
                    cause: cause.to_string(),
                    denied: true,
                },
            );
    }

    /// Records a successful STS call for `id`: no pause.
    pub fn succeeded(&self, id: &str) {
        self.pauses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    /// Drops pauses that ended before `now_ms` (their failure counts restart from zero).
    pub fn sweep(&self, now_ms: i64) {
        // A denial pause may be longer than `max`; it is kept until it ends at least.
        // Kept one `max` past their end, so a failure soon after still doubles the pause.
        let keep = self.max.as_millis() as i64;
        self.pauses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, p| now_ms < p.until_ms + keep);
    }

    /// `base × 2^(failures−1)`, at most `max`, then a random point in its upper half.
    fn pause_for(&self, failures: u32) -> Duration {
        let doubled = self
            .base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let full = doubled.min(self.max).as_millis() as u64;
        Duration::from_millis(rand::random_range(full / 2..=full.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_pauses_the_id_and_a_success_ends_it() {
        let c = Cooldowns::new(Duration::from_secs(1), Duration::from_secs(8));
        assert!(c.paused("a", 0).is_none());
        let pause = c.failed("a", "throttled", 0);
        assert!(
            (500..=1000).contains(&(pause.as_millis() as i64)),
            "{pause:?}"
        );
        let paused = c.paused("a", 100).expect("paused");
        assert_eq!(paused.cause, "throttled");
        assert!(paused.retry_in <= pause);
        assert!(c.paused("b", 100).is_none(), "other ids are not paused");
        assert!(c.paused("a", 1_001).is_none(), "the pause ends");
        c.failed("a", "throttled", 2_000);
        c.succeeded("a");
        assert!(c.paused("a", 2_001).is_none());
    }

    #[test]
    fn consecutive_failures_double_the_pause_up_to_the_bound() {
        let c = Cooldowns::new(Duration::from_secs(1), Duration::from_secs(8));
        let mut now = 0;
        let mut upper = Vec::new();
        for _ in 0..6 {
            let pause = c.failed("a", "x", now);
            upper.push(pause);
            now += pause.as_millis() as i64;
        }
        let bounds = [1_000, 2_000, 4_000, 8_000, 8_000, 8_000];
        for (pause, bound) in upper.iter().zip(bounds) {
            let ms = pause.as_millis() as u64;
            assert!(
                bound / 2 <= ms && ms <= bound,
                "{ms} ms outside {bound}/2..{bound}"
            );
        }
    }

    #[test]
    fn a_denial_pauses_for_its_own_time_and_says_so() {
        let c = Cooldowns::new(Duration::from_secs(1), Duration::from_secs(4));
        c.denied("a", "AccessDenied (HTTP 403)", 0, Duration::from_secs(30));
        let p = c.paused("a", 29_000).expect("still paused after 29 s");
        assert!(p.denied);
        assert_eq!(p.cause, "AccessDenied (HTTP 403)");
        c.sweep(29_000);
        assert!(
            c.paused("a", 29_500).is_some(),
            "sweep keeps a running pause"
        );
        assert!(c.paused("a", 30_000).is_none());
        assert!(!c.failed("b", "x", 0).is_zero());
        assert!(!c.paused("b", 1).unwrap().denied);
    }

    #[test]
    fn sweep_forgets_old_pauses_so_counts_restart() {
        let c = Cooldowns::new(Duration::from_secs(1), Duration::from_secs(2));
        c.failed("a", "x", 0);
        c.failed("a", "x", 1_000);
        c.sweep(100_000);
        let pause = c.failed("a", "x", 100_000);
        assert!(pause <= Duration::from_secs(1), "{pause:?}");
    }
}
