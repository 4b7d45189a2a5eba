//! Draining connections when a version retires: when a rollout promotes (stable's weight goes to
//! 0) or rolls back (the canary's does), client connections that were served by the retired
//! backend are closed gracefully (HTTP/1.1: `Connection: close` on the response in flight, or at
//! once when idle; HTTP/2: GOAWAY, streams in flight finish), so clients reconnect and long-lived
//! connections do not keep a retired version in use (istio#13908, argo-rollouts#3761). The
//! retired upstream's idle pooled connections are closed too. docs/GATEWAY.md, "Drain on a
//! version change", has the whole design; this module holds its pure parts:
//!
//! - [`backend_bit`]: each (route, backend) owns one bit of a 64-bit mask, from a fixed hash, so
//!   a bit means the same pair in every snapshot and every process.
//! - [`Served`]: per client connection, the bits of the backends that served it (one relaxed
//!   load per request; an atomic OR the first time a backend serves the connection) and the
//!   drain epoch it last compared against.
//! - [`DrainLog`]: in each snapshot, the drain epoch and the masks of the last retirements.
//! - [`retired`]: which (route, backend) pairs a new snapshot retires, and
//!   [`unused_upstreams`]: which upstreams no longer take any request by weight.
//!
//! Two pairs may share a bit (64 bits, hashed): a connection served by one of them is then
//! closed when the other retires too. That costs a reconnect, never a wrong answer.

use std::sync::atomic::{AtomicU64, Ordering};

use super::split::sticky_hash;

/// The bit of (route, backend): bit `h % 64` of the sticky hash (FNV-1a 64 and SplitMix64, fixed
/// and documented) of `route \0 backend`.
pub fn backend_bit(route: &str, backend: &str) -> u64 {
    let mut key = Vec::with_capacity(route.len() + 1 + backend.len());
    key.extend_from_slice(route.as_bytes());
    key.push(0);
    key.extend_from_slice(backend.as_bytes());
    1u64 << (sticky_hash(&key) % 64)
}

/// Retirements a snapshot remembers: a connection that last compared more than this many
/// retirements ago is closed if it was served at all (it cannot tell which it missed).
pub const DRAIN_HISTORY: usize = 8;

/// The drain state of one snapshot: its epoch (how many retirements happened since start) and
/// the masks of the most recent ones, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainLog {
    epoch: u64,
    /// `(epoch, mask)`; epoch 0 marks an empty slot.
    recent: [(u64, u64); DRAIN_HISTORY],
}

impl DrainLog {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The log of the next snapshot: unchanged when nothing retired (`mask` 0), else one epoch
    /// later with `mask` remembered.
    pub fn after(&self, mask: u64) -> DrainLog {
        if mask == 0 {
            return self.clone();
        }
        let epoch = self.epoch + 1;
        let mut recent = [(0, 0); DRAIN_HISTORY];
        recent[0] = (epoch, mask);
        recent[1..].copy_from_slice(&self.recent[..DRAIN_HISTORY - 1]);
        DrainLog { epoch, recent }
    }

    /// Whether a connection that was served by `served` (bits) and last compared at epoch `seen`
    /// must close: one of the retirements after `seen` covers a backend that served it.
    pub fn must_close(&self, seen: u64, served: u64) -> bool {
        if seen >= self.epoch || served == 0 {
            return false;
        }
        let mut missed = self.epoch - seen;
        for &(epoch, mask) in self.recent.iter().take_while(|(e, _)| *e > seen) {
            if epoch != 0 {
                missed -= 1;
                if served & mask != 0 {
                    return true;
                }
            }
        }
        // Retirements older than the log keeps: close to be safe.
        missed > 0
    }
}

/// What one client connection remembers: the backends that served it and the drain epoch it
/// compared last. Shared by the connection's requests (HTTP/2 runs them at once) and its task.
#[derive(Debug)]
pub struct Served {
    bits: AtomicU64,
    seen: AtomicU64,
}

impl Served {
    /// A connection opened while the running snapshot's drain epoch is `epoch`.
    pub fn new(epoch: u64) -> Served {
        Served {
            bits: AtomicU64::new(0),
            seen: AtomicU64::new(epoch),
        }
    }

    /// A request of this connection went to the backend owning `bit`. A relaxed load, and an
    /// atomic OR only the first time that backend serves the connection.
    pub fn mark(&self, bit: u64) {
        if self.bits.load(Ordering::Relaxed) & bit == 0 {
            self.bits.fetch_or(bit, Ordering::Relaxed);
        }
    }

    /// The connection task's check when the drain epoch moves: `true` when the connection must
    /// close; otherwise it is up to date with `log` from now on.
    pub fn check(&self, log: &DrainLog) -> bool {
        let close = log.must_close(
            self.seen.load(Ordering::Relaxed),
            self.bits.load(Ordering::Relaxed),
        );
        if !close {
            self.seen.store(log.epoch(), Ordering::Relaxed);
        }
        close
    }
}

/// A route's backends and weights, as a snapshot has them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteWeights<'a> {
    pub route: &'a str,
    pub backends: Vec<(&'a str, u32)>,
}

/// The (route, backend) pairs that took traffic by weight in `old` and take none in `new` (weight
/// 0, or gone with their route), and the mask of their bits: what a promotion (stable to 0) or a
/// rollback (canary to 0) retires. A backend that only an override or a sticky key reaches keeps
/// weight 0 throughout and is never retired here.
pub fn retired<'a>(
    old: &[RouteWeights<'a>],
    new: &[RouteWeights<'_>],
) -> (Vec<(&'a str, &'a str)>, u64) {
    let mut pairs = Vec::new();
    let mut mask = 0;
    for r in old {
        let now = new.iter().find(|n| n.route == r.route);
        for &(backend, weight) in &r.backends {
            if weight == 0 {
                continue;
            }
            let still = now.is_some_and(|n| n.backends.iter().any(|&(b, w)| b == backend && w > 0));
            if !still {
                pairs.push((r.route, backend));
                mask |= backend_bit(r.route, backend);
            }
        }
    }
    (pairs, mask)
}

/// Upstreams some route sent traffic to by weight in `old` and none does in `new`: their idle
/// pooled connections can be closed, so the retired version's endpoints see weir's connections
/// go (requests still in flight finish on theirs).
pub fn unused_upstreams<'a>(old: &[RouteWeights<'a>], new: &[RouteWeights<'_>]) -> Vec<&'a str> {
    let used = |routes: &[RouteWeights<'_>], upstream: &str| {
        routes
            .iter()
            .any(|r| r.backends.iter().any(|&(b, w)| b == upstream && w > 0))
    };
    let mut out: Vec<&'a str> = Vec::new();
    for r in old {
        for &(b, w) in &r.backends {
            if w > 0 && !used(new, b) && !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
