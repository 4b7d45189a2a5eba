//! A rollout's arms measured on the request path. [`ArmCounters`] counts one arm's requests,
//! failures and latency buckets with relaxed atomic adds, never reset; a [`Probe`] wraps them for
//! a running rollout: the canary's probe (with fast-fail) and, when the rollout compares the
//! canary with stable (`analysis.compare`), one probe shared by the stable backends. The control
//! task reads the totals for the comparison (`rollout::compare` takes totals since a step
//! started) and takes the interval's share of them as a [`Measurement`] at each check. Fast-fail
//! is decided here, on the failing request itself, so a dead canary costs no more failures than
//! the threshold, whatever the interval and the request rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::window::{LATENCY_BUCKETS_MS, WindowStats};
use crate::config::FastFail;

/// Latency buckets per arm: one per bound of [`LATENCY_BUCKETS_MS`] plus the overflow bucket.
pub const BUCKETS: usize = LATENCY_BUCKETS_MS.len() + 1;

/// The canary's requests over one interval (or so far in it).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measurement {
    pub requests: u64,
    pub failures: u64,
    pub p99: Option<Duration>,
}

impl Measurement {
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| (self.requests - self.failures) as f64 / self.requests as f64)
    }
}

// === impl ArmCounters ===

/// One arm's counters for the request path: three relaxed atomic adds per request (two on
/// success), no lock. Totals only grow; readers keep their own starting points.
#[derive(Debug)]
pub struct ArmCounters {
    requests: AtomicU64,
    failures: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for ArmCounters {
    fn default() -> Self {
        ArmCounters {
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl ArmCounters {
    /// One request finished; `bucket` is `metrics::latency_bucket` of its latency. Returns the
    /// request count after this one.
    pub fn record(&self, success: bool, bucket: usize) -> u64 {
        let requests = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if !success {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        requests
    }

    /// The totals so far. Read without a lock while requests are recorded, so a request may be
    /// seen in one counter and not yet in another; `rollout::compare::Comparison::observe`
    /// allows for that.
    pub fn read(&self) -> ArmCounts {
        ArmCounts {
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }
}

/// One arm's totals (since a probe was made, or since a window started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArmCounts {
    pub requests: u64,
    pub failures: u64,
    /// Requests per latency bucket; bucket `i` holds latencies in
    /// `(LATENCY_BUCKETS_MS[i - 1], LATENCY_BUCKETS_MS[i]]`, the last one everything above.
    pub latency: [u64; BUCKETS],
}

impl Default for ArmCounts {
    fn default() -> Self {
        ArmCounts {
            requests: 0,
            failures: 0,
            latency: [0; BUCKETS],
        }
    }
}

impl ArmCounts {
    /// These totals minus `earlier` ones (0 where a counter seems to have gone back).
    pub fn since(&self, earlier: &ArmCounts) -> ArmCounts {
        ArmCounts {
            requests: self.requests.saturating_sub(earlier.requests),
            failures: self.failures.saturating_sub(earlier.failures),
            latency: std::array::from_fn(|i| self.latency[i].saturating_sub(earlier.latency[i])),
        }
    }

    /// Whether every counter is at least `earlier`'s: these totals can follow those.
    pub fn covers(&self, earlier: &ArmCounts) -> bool {
        self.requests >= earlier.requests
            && self.failures >= earlier.failures
            && self
                .latency
                .iter()
                .zip(&earlier.latency)
                .all(|(a, b)| a >= b)
    }

    /// As window statistics (percentiles, success rate).
    pub fn stats(&self) -> WindowStats {
        let failures = self.failures.min(self.requests);
        WindowStats {
            requests: self.requests,
            successes: self.requests - failures,
            latency: self.latency.to_vec(),
        }
    }
}

// === impl Probe ===

/// One rollout run's arm, shared by the snapshots that route to it: the canary (with its
/// fast-fail settings) or the stable backends it is compared with.
pub struct Probe {
    totals: ArmCounters,
    /// The totals when the interval began, written by [`Probe::take`] only; fast-fail reads the
    /// request and failure counts on a failing request. `take` stores the failures first and the
    /// requests last (release), and fast-fail loads the requests first (acquire): whoever sees
    /// the new request count sees the new failure count, so fast-fail never judges this
    /// interval's requests against the last interval's failures.
    interval_requests: AtomicU64,
    interval_failures: AtomicU64,
    interval_latency: [AtomicU64; BUCKETS],
    fast_fail: Option<FastFail>,
    tripped: AtomicBool,
    wake: Arc<Notify>,
}

impl Probe {
    pub fn new(fast_fail: Option<FastFail>, wake: Arc<Notify>) -> Probe {
        Probe {
            totals: ArmCounters::default(),
            interval_requests: AtomicU64::new(0),
            interval_failures: AtomicU64::new(0),
            interval_latency: std::array::from_fn(|_| AtomicU64::new(0)),
            fast_fail,
            tripped: AtomicBool::new(false),
            wake,
        }
    }

    /// One request of this arm finished; `bucket` is its latency bucket.
    pub fn record(&self, success: bool, bucket: usize) {
        let requests = self.totals.record(success, bucket);
        if success {
            return;
        }
        let Some(ff) = self.fast_fail else { return };
        let since = self.interval_requests.load(Ordering::Acquire);
        let failures_since = self.interval_failures.load(Ordering::Relaxed);
        // This request's own count may predate a concurrent `take`: then it belongs to the last
        // interval, and the subtraction saturates to too few requests to judge.
        let requests = requests.saturating_sub(since);
        let failures = self
            .totals
            .failures
            .load(Ordering::Relaxed)
            .saturating_sub(failures_since)
            .min(requests);
        if requests >= ff.min_requests
            && ((requests - failures) as f64) < ff.success_rate * requests as f64
            && !self.tripped.swap(true, Ordering::Relaxed)
        {
            self.wake.notify_one();
        }
    }

    /// Whether fast-fail tripped since the last [`take`](Probe::take).
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }

    /// The totals since the probe was made (never reset): what a comparison reads.
    pub fn totals(&self) -> ArmCounts {
        self.totals.read()
    }

    /// The measurement of the interval so far, without starting a new one.
    pub fn peek(&self) -> Measurement {
        measurement(&self.peek_stats())
    }

    /// The interval's measurement; the next interval starts now.
    pub fn take(&self) -> Measurement {
        measurement(&self.take_stats())
    }

    /// The interval's counts so far, as window statistics (percentiles, success rate).
    pub fn peek_stats(&self) -> WindowStats {
        self.totals.read().since(&self.interval_start()).stats()
    }

    /// The interval's counts, as window statistics; the next interval starts now.
    pub fn take_stats(&self) -> WindowStats {
        let now = self.totals.read();
        let start = self.interval_start();
        for (base, &n) in self.interval_latency.iter().zip(&now.latency) {
            base.store(n, Ordering::Relaxed);
        }
        self.interval_failures
            .store(now.failures, Ordering::Relaxed);
        self.interval_requests
            .store(now.requests, Ordering::Release);
        self.tripped.store(false, Ordering::Relaxed);
        now.since(&start).stats()
    }

    fn interval_start(&self) -> ArmCounts {
        ArmCounts {
            requests: self.interval_requests.load(Ordering::Acquire),
            failures: self.interval_failures.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| self.interval_latency[i].load(Ordering::Relaxed)),
        }
    }
}

fn measurement(s: &WindowStats) -> Measurement {
    Measurement {
        requests: s.requests,
        failures: s.requests - s.successes,
        p99: s
            .percentile_ms(0.99)
            .map(|ms| Duration::from_secs_f64(ms / 1e3)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_on_the_failure_that_crosses_the_threshold_and_take_resets() {
        let wake = Arc::new(Notify::new());
        let p = Probe::new(
            Some(FastFail {
                min_requests: 20,
                success_rate: 0.5,
            }),
            wake,
        );
        for _ in 0..19 {
            p.record(false, 3);
        }
        assert!(!p.tripped());
        p.record(false, 3);
        assert!(p.tripped());
        let m = p.take();
        assert_eq!((m.requests, m.failures), (20, 20));
        assert!(!p.tripped());
        assert_eq!(p.peek(), Measurement::default());
        // The totals go on: an interval starts from them, it does not reset them.
        assert_eq!(p.totals().requests, 20);
        // The next interval is judged on its own requests: 20 successes, then failures.
        for _ in 0..20 {
            p.record(true, 3);
        }
        for _ in 0..19 {
            p.record(false, 3);
        }
        assert!(
            !p.tripped(),
            "19 failures of 39 is above a 50 % success rate"
        );
        p.record(false, 3);
        p.record(false, 3);
        assert!(p.tripped(), "21 failures of 41 is below it");
        let m = p.take();
        assert_eq!((m.requests, m.failures), (41, 21));
        assert_eq!(p.totals().failures, 41);
    }
}
