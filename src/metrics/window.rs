//! A sliding 60-second window of request outcomes and latencies for one backend, recorded
//! without a lock: a ring of per-second slots of atomics.
//!
//! A slot is claimed for a new second by the first recorder that sees it stale (a compare-and-swap
//! on its second), which then zeroes it. A recorder racing that reset at the turn of a second may
//! lose its count from the window; the Prometheus counters, which are exact, are not affected.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in milliseconds, of the latency buckets: 0.5 ms to 30 s, about 1.3x to 2x apart,
/// dense around the 100 ms - 1 s range where latency thresholds usually sit.
pub const LATENCY_BUCKETS_MS: [f64; 32] = [
    0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0,
    200.0, 300.0, 400.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 7500.0, 10000.0,
    15000.0, 20000.0, 30000.0,
];

/// The index of the window bucket for `d` (the last index is the overflow bucket).
pub fn latency_bucket(d: Duration) -> usize {
    let ms = d.as_secs_f64() * 1e3;
    LATENCY_BUCKETS_MS.partition_point(|&upper| upper < ms)
}

pub const WINDOW_SECS: u64 = 60;
const SLOTS: usize = WINDOW_SECS as usize;

struct Slot {
    /// The second (since process start) this slot holds, or `u64::MAX` when never used.
    second: AtomicU64,
    requests: AtomicU64,
    successes: AtomicU64,
    /// Count per latency bucket; the last is the overflow bucket.
    latency: [AtomicU32; LATENCY_BUCKETS_MS.len() + 1],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            second: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

pub struct Window {
    slots: Box<[Slot]>,
}

/// The window's totals at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    pub requests: u64,
    pub successes: u64,
    pub latency: Vec<u64>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            slots: (0..SLOTS).map(|_| Slot::new()).collect(),
        }
    }
}

impl Window {
    /// Records one request finished at `second` (since process start).
    pub fn record(&self, second: u64, success: bool, bucket: usize) {
        let slot = &self.slots[(second % WINDOW_SECS) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != second
            && (seen == u64::MAX || seen < second)
            && slot
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.successes.store(0, Ordering::Relaxed);
            for b in &slot.latency {
                b.store(0, Ordering::Relaxed);
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if success {
            slot.successes.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Totals over the seconds `now - 59 ..= now`.
    pub fn stats(&self, now: u64) -> WindowStats {
        let mut s = WindowStats {
            latency: vec![0; LATENCY_BUCKETS_MS.len() + 1],
            ..WindowStats::default()
        };
        for slot in self.slots.iter() {
            let second = slot.second.load(Ordering::Acquire);
            if second == u64::MAX || second > now || now - second >= WINDOW_SECS {
                continue;
            }
            s.requests += slot.requests.load(Ordering::Relaxed);
            s.successes += slot.successes.load(Ordering::Relaxed);
            for (total, b) in s.latency.iter_mut().zip(&slot.latency) {
                *total += u64::from(b.load(Ordering::Relaxed));
            }
        }
        s
    }
}

impl WindowStats {
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.successes as f64 / self.requests as f64)
    }

    /// The latency in milliseconds below which a fraction `q` of requests fell, interpolated
    /// linearly inside its bucket. `None` without requests.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.latency.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lower = if i == 0 {
                    0.0
                } else {
                    LATENCY_BUCKETS_MS[i - 1]
                };
                let Some(&upper) = LATENCY_BUCKETS_MS.get(i) else {
                    // Overflow bucket: report its lower bound, the largest we can vouch for.
                    return Some(lower);
                };
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            below += n;
        }
        LATENCY_BUCKETS_MS.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::latency_bucket;
    use std::time::Duration;

    fn record_ms(w: &Window, second: u64, ms: u64, success: bool) {
        w.record(second, success, latency_bucket(Duration::from_millis(ms)));
    }

    #[test]
    fn counts_only_the_last_sixty_seconds() {
        let w = Window::default();
        record_ms(&w, 0, 1, false);
        record_ms(&w, 30, 1, true);
        record_ms(&w, 59, 1, true);
        assert_eq!(w.stats(59).requests, 3);
        assert_eq!(w.stats(60).requests, 2);
        assert_eq!(w.stats(60).success_rate(), Some(1.0));
        // Second 60 reuses second 0's slot and starts it from zero.
        record_ms(&w, 60, 1, false);
        let s = w.stats(60);
        assert_eq!((s.requests, s.successes), (3, 2));
        assert_eq!(w.stats(200).requests, 0);
        assert_eq!(w.stats(200).success_rate(), None);
    }

    #[test]
    fn percentiles_fall_inside_the_right_bucket() {
        let w = Window::default();
        for i in 0..1000u64 {
            // 990 fast requests at 2 ms, 10 slow ones at 450 ms.
            record_ms(&w, 5, if i < 990 { 2 } else { 450 }, true);
        }
        let s = w.stats(5);
        let p50 = s.percentile_ms(0.5).unwrap();
        let p999 = s.percentile_ms(0.999).unwrap();
        assert!((1.5..=2.0).contains(&p50), "{p50}");
        assert!((400.0..=500.0).contains(&p999), "{p999}");
        assert_eq!(Window::default().stats(5).percentile_ms(0.99), None);
    }
}
