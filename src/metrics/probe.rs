//! A rollout's canary measured on the request path: [`Probe`] counts the requests, failures and
//! latency buckets of the interval in progress with relaxed atomic adds; the control task takes
//! (and zeroes) them as a [`Measurement`] at each check. Fast-fail is decided here, on the
//! failing request itself, so a dead canary costs no more failures than the threshold, whatever
//! the interval and the request rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::window::{LATENCY_BUCKETS_MS, WindowStats};
use crate::config::FastFail;

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

/// One rollout run's canary counters, shared by the snapshots that route to it.
pub struct Probe {
    requests: AtomicU64,
    failures: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    fast_fail: Option<FastFail>,
    tripped: AtomicBool,
    wake: Arc<Notify>,
}

impl Probe {
    pub fn new(fast_fail: Option<FastFail>, wake: Arc<Notify>) -> Probe {
        Probe {
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            fast_fail,
            tripped: AtomicBool::new(false),
            wake,
        }
    }

    /// One canary request finished; `bucket` is its latency bucket.
    pub fn record(&self, success: bool, bucket: usize) {
        let requests = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        if success {
            return;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(ff) = self.fast_fail
            && requests >= ff.min_requests
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

    /// The measurement so far, without resetting it.
    pub fn peek(&self) -> Measurement {
        measurement(&self.peek_stats())
    }

    /// The interval's measurement; starts the next interval from zero.
    pub fn take(&self) -> Measurement {
        measurement(&self.take_stats())
    }

    /// The counts so far, as window statistics (percentiles, success rate).
    pub fn peek_stats(&self) -> WindowStats {
        self.stats(|a| a.load(Ordering::Relaxed))
    }

    /// The counts so far, zeroed: the next interval starts.
    pub fn take_stats(&self) -> WindowStats {
        let s = self.stats(|a| a.swap(0, Ordering::Relaxed));
        self.tripped.store(false, Ordering::Relaxed);
        s
    }

    fn stats(&self, read: impl Fn(&AtomicU64) -> u64) -> WindowStats {
        let requests = read(&self.requests);
        let failures = read(&self.failures).min(requests);
        WindowStats {
            requests,
            successes: requests - failures,
            latency: self.latency.iter().map(read).collect(),
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
    }
}
