//! Shadow traffic: a copy of a share of a route's requests goes to the mirror upstream on a task
//! of its own. Its answer is read and discarded; it never delays or fails the real request, and
//! its metrics are families of their own (`weir_mirror_*`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use http::request::Parts;
use http_body_util::BodyExt;

use super::body::Replayable;
use super::forward::{self, ProxyError};
use super::pool::UpstreamPool;
use crate::metrics::MirrorMetrics;

/// `percent` is drawn in millionths: 0.0001 % is the finest share.
const PARTS: u64 = 1_000_000;

pub struct RouteMirror {
    pub pool: Arc<UpstreamPool>,
    /// Requests whose draw below [`PARTS`] is under this are copied.
    threshold: u64,
    pub metrics: Arc<MirrorMetrics>,
}

impl RouteMirror {
    pub fn new(pool: Arc<UpstreamPool>, percent: f64, metrics: Arc<MirrorMetrics>) -> RouteMirror {
        RouteMirror {
            pool,
            threshold: (percent / 100.0 * PARTS as f64).round() as u64,
            metrics,
        }
    }

    /// Whether this request is copied; `below(n)` draws uniformly from `0..n`.
    pub fn sampled(&self, below: impl FnOnce(u64) -> u64) -> bool {
        self.threshold >= PARTS || below(PARTS) < self.threshold
    }

    /// Sends the copy (`head` as prepared for the real request, and its whole `body`), unless
    /// [`super::pool::MAX_MIRRORS_IN_FLIGHT`] copies to this upstream are out already: then it is
    /// dropped and counted. `timeout` bounds the copy's whole exchange, answer body included.
    pub fn send(&self, head: Parts, body: &Replayable, timeout: Duration) {
        let Some(slot) = self.pool.mirror_slot() else {
            self.metrics.full.inc();
            return;
        };
        let metrics = self.metrics.clone();
        let req = Request::from_parts(head, body.body());
        tokio::spawn(async move {
            let pool = slot.pool();
            let started = Instant::now();
            let deadline = tokio::time::Instant::from_std(started + timeout);
            let answer = match pool.pick(None) {
                None => Err(ProxyError::NoHealthyEndpoint {
                    upstream: pool.name.clone(),
                }),
                Some(endpoint) => {
                    // The copy runs on a task of its own: a timer of its own.
                    let timer = forward::RouteTimer::default();
                    let within = (deadline, &timer);
                    forward::try_endpoint(pool, endpoint, req, None, within, timeout).await
                }
            };
            let status = match &answer {
                Ok(r) => r.status(),
                Err(e) => e.status(),
            };
            metrics.record(status, started.elapsed());
            match answer {
                // Read to the end so the connection goes back to the pool.
                Ok(r) => {
                    let mut body = r.into_body();
                    let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                    let _ = tokio::time::timeout_at(deadline, drain).await;
                }
                Err(e) => {
                    tracing::debug!(upstream = &*pool.name, error = %e, "mirror copy failed");
                }
            }
            drop(slot);
        });
    }
}
