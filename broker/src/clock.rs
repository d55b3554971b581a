//! Where the broker reads the time. Records carry unix milliseconds so that every replica reads
//! the same instants from a shared store.
//!
//! The engine, sessions, pauses and the memory store take a [`Clock`] from outside instead of
//! reading the system clock themselves, so refresh margins, pauses, token `exp` and TTLs — the
//! service's core logic — can be tested by advancing a [`ManualClock`] rather than by sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of "now", in milliseconds since the epoch.
pub trait TimeSource: Send + Sync + 'static {
    /// Now, in milliseconds since the epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock: what a running broker uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl TimeSource for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that moves only when told to: for tests.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(start_ms)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
            Ordering::SeqCst,
        );
    }
}

impl TimeSource for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The clock handed to the parts that decide by time; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Clock(Arc<dyn TimeSource>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self(Arc::new(SystemClock))
    }

    /// A clock read from `source` (a [`ManualClock`] in tests).
    pub fn from_source(source: impl TimeSource) -> Self {
        Self(Arc::new(source))
    }

    /// A manual clock starting at the system's now, and the handle that moves it.
    pub fn manual() -> (Self, ManualClock) {
        let manual = ManualClock::new(now_ms());
        (Self::from_source(manual.clone()), manual)
    }

    /// Now, in milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// Now on the system's wall clock, in milliseconds since the epoch. For what is not decided by
/// time (log and audit timestamps, the sampling minute); decisions read an injected [`Clock`].
pub fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// A `SystemTime` in milliseconds since the epoch.
pub fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let (clock, manual) = Clock::manual();
        let start = clock.now_ms();
        assert_eq!(clock.now_ms(), start);
        manual.advance(Duration::from_millis(2_100));
        assert_eq!(clock.now_ms(), start + 2_100);
    }
}
