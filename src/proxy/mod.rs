//! The data plane: accept connections, find the route, pick the backend, forward.
//!
//! `proxy` reads only the current [`Snapshot`], never the config file.

pub mod forward;
pub mod listener;
pub mod pool;
pub mod router;
pub mod split;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::snapshot::Snapshot;
use forward::{ProxyBody, ProxyError};

/// What a request knows about the connection it came on.
pub struct ConnInfo {
    pub client: SocketAddr,
    pub listener: Arc<str>,
    /// `http` or `https`, for `x-forwarded-proto`.
    pub scheme: &'static str,
}

thread_local! {
    // One generator per worker thread: a weighted pick costs a few nanoseconds and takes no lock.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

fn random_below(n: u64) -> u64 {
    RNG.with_borrow_mut(|rng| rng.random_range(0..n))
}

/// Serves one request: one snapshot load, route, weighted pick, forward.
pub async fn handle(
    snapshots: &ArcSwap<Snapshot>,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let snapshot = snapshots.load_full();
    let started = Instant::now();
    let host = router::request_host(&req);
    let Some(route) = router::find(&snapshot.routes, host, req.uri().path()) else {
        return forward::error_response(&ProxyError::NoRoute);
    };
    let backend = &route.backends[route.weights.pick(random_below(route.weights.total()))];
    let response = match forward::forward(backend, req, conn, route.timeout).await {
        Ok(r) => r.map(ProxyBody::Left),
        Err(e) => {
            tracing::warn!(route = &*route.name, backend = &**backend.name(), error = %e, "request failed");
            forward::error_response(&e)
        }
    };
    tracing::info!(
        target: "weir::access",
        route = &*route.name,
        backend = &**backend.name(),
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1e3,
        client = %conn.client,
        listener = &*conn.listener,
    );
    response
}
