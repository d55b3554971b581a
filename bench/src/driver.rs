//! A closed-loop async load driver with HDR histograms.
//!
//! `concurrency` workers each run one request at a time, back to back, for a warm-up period (not
//! recorded: connections, allocator and caches settle) and then for the measured period. Closed
//! loop, because the question the benchmarks ask is "how much can this serve at a given number of
//! callers in flight", and because an open-loop driver on a 2-core machine would measure its own
//! queueing as much as the server.
//!
//! Every operation started inside the measured window is recorded; the window closes when the last
//! of them completes, so throughput = recorded / (last completion − window start) counts neither
//! the warm-up nor a tail of requests that never finished. Latencies are recorded in nanoseconds
//! with 3 significant digits (0.1 % resolution), per worker, and merged at the end, so workers never
//! contend on a shared histogram.
//!
//! An operation that fails is counted, not recorded, and the first failure's message is kept: a
//! benchmark whose requests fail measures the failure path, so reports refuse such results.

use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// One request kind, with whatever per-worker state it needs (a client, a session, a token).
///
/// Each worker owns one `Op`, so state such as an MCP session id is never shared between workers.
pub trait Op: Send + 'static {
    /// Runs one request; `Err` carries a description of the failure.
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// How long and how wide one measurement is.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What one measurement saw.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub concurrency: usize,
    /// Successful requests started inside the measured window.
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the window's start to the completion of its last request.
    pub elapsed: Duration,
    /// Latency of the successful requests, nanoseconds.
    pub hist: Histogram<u64>,
}

/// The figures of a [`LoadResult`] as they appear in reports (latencies in microseconds).
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub concurrency: usize,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub throughput: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.hist.value_at_quantile(q))
    }

    pub fn summary(&self) -> LoadSummary {
        let us = |ns: u64| ns as f64 / 1_000.0;
        LoadSummary {
            concurrency: self.concurrency,
            ops: self.ops,
            errors: self.errors,
            seconds: self.elapsed.as_secs_f64(),
            throughput: self.throughput(),
            p50_us: us(self.hist.value_at_quantile(0.50)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
            mean_us: self.hist.mean() / 1_000.0,
        }
    }

    /// `Err` naming the first failure when any request failed or none succeeded.
    pub fn ensure_clean(&self, what: &str) -> anyhow::Result<()> {
        if self.errors > 0 {
            anyhow::bail!(
                "{what}: {} of {} requests failed at concurrency {}; first failure: {}",
                self.errors,
                self.errors + self.ops,
                self.concurrency,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        if self.ops == 0 {
            anyhow::bail!(
                "{what}: no request completed at concurrency {}",
                self.concurrency
            );
        }
        Ok(())
    }
}

/// A histogram for latencies from 1 ns to 10 min at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `d` (clamped to the histogram's range).
pub fn record(hist: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    hist.saturating_record(ns.max(1));
}

struct WorkerResult {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
    last_completion: Instant,
}

/// Runs `ops.len()` workers (the concurrency) for `spec.warmup + spec.duration`.
///
/// `spec.concurrency` must equal `ops.len()`; it is passed separately so reports say what was
/// asked for.
pub async fn run<O: Op>(spec: LoadSpec, ops: Vec<O>) -> LoadResult {
    assert_eq!(spec.concurrency, ops.len(), "one Op per worker");
    let start = Instant::now();
    let window_start = start + spec.warmup;
    let window_end = window_start + spec.duration;
    let workers: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            tokio::spawn(async move {
                let mut out = WorkerResult {
                    ops: 0,
                    errors: 0,
                    first_error: None,
                    hist: new_histogram(),
                    last_completion: window_start,
                };
                loop {
                    let began = Instant::now();
                    if began >= window_end {
                        break;
                    }
                    let result = op.call().await;
                    let done = Instant::now();
                    if began < window_start {
                        continue;
                    }
                    out.last_completion = out.last_completion.max(done);
                    match result {
                        Ok(()) => {
                            out.ops += 1;
                            record(&mut out.hist, done - began);
                        }
                        Err(e) => {
                            out.errors += 1;
                            out.first_error.get_or_insert(e);
                        }
                    }
                }
                out
            })
        })
        .collect();
    let mut total = LoadResult {
        concurrency: spec.concurrency,
        ops: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        hist: new_histogram(),
    };
    let mut last = window_start;
    for worker in workers {
        let w = worker.await.expect("load worker panicked");
        total.ops += w.ops;
        total.errors += w.errors;
        if total.first_error.is_none() {
            total.first_error = w.first_error;
        }
        total.hist.add(&w.hist).expect("same histogram bounds");
        last = last.max(w.last_completion);
    }
    total.elapsed = last.saturating_duration_since(window_start);
    total
}

/// Nearest-rank percentile of a small sample (start-up times, cold-request latencies).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sleep(Duration);
    impl Op for Sleep {
        async fn call(&mut self) -> Result<(), String> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    struct Fail;
    impl Op for Fail {
        async fn call(&mut self) -> Result<(), String> {
            tokio::task::yield_now().await;
            Err("boom".into())
        }
    }

    #[tokio::test]
    async fn closed_loop_counts_only_the_window() {
        let spec = LoadSpec {
            concurrency: 4,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(200),
        };
        let result = run(
            spec,
            (0..4).map(|_| Sleep(Duration::from_millis(10))).collect(),
        )
        .await;
        result.ensure_clean("sleep").unwrap();
        // 4 workers × ~200 ms / ~10 ms; timer granularity makes each sleep a little longer.
        assert!((40..=88).contains(&result.ops), "ops = {}", result.ops);
        assert!(result.quantile(0.5) >= Duration::from_millis(10));
        assert!(result.elapsed >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn failures_are_counted_and_refused() {
        let spec = LoadSpec {
            concurrency: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(20),
        };
        let result = run(spec, vec![Fail]).await;
        assert_eq!(result.ops, 0);
        assert!(result.errors > 0);
        let err = result.ensure_clean("fail").unwrap_err().to_string();
        assert!(err.contains("boom"), "{err}");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(5));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(10));
        assert_eq!(percentile(&v, 0.0), Duration::from_millis(1));
    }
}
