//! The data plane: accept connections, find the route, pick the backend, forward.
//!
//! `proxy` reads only the current [`Snapshot`], never the config file.

pub mod body;
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
use body::{Access, ResponseBody};
use forward::ProxyError;

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
) -> Response<ResponseBody> {
    let snapshot = snapshots.load_full();
    let started = Instant::now();
    let host = router::request_host(&req);
    let grpc = forward::is_grpc(&req);
    let Some(route) = router::find(&snapshot.routes, host, req.uri().path()) else {
        return forward::error_response(&ProxyError::NoRoute, grpc)
            .map(|b| ResponseBody::new(b, None));
    };
    // A gRPC client's own deadline, when shorter, bounds the wait too.
    let timeout = match forward::grpc_timeout(&req) {
        Some(t) if grpc => t.min(route.timeout),
        _ => route.timeout,
    };
    let logged = tracing::enabled!(target: "weir::access", tracing::Level::INFO)
        .then(|| (req.method().clone(), req.uri().path_and_query().cloned()));
    let backend =
        &route.backends[split::choose(route, req.headers(), req.uri().query(), random_below)];
    let (response, status, from_upstream) = match forward::forward(backend, req, conn, timeout)
        .await
    {
        Ok(r) => {
            let status = r.status();
            (r.map(body::Inner::Upstream), status, true)
        }
        Err(e) => {
            tracing::warn!(route = &*route.name, backend = &**backend.name(), error = %e, "request failed");
            if let Some(kind) = e.upstream_kind() {
                backend.pool.metrics.count(kind);
            }
            // Metrics and the access log name the HTTP status of the failure, also when a gRPC
            // caller got it as HTTP 200 with a grpc-status.
            (forward::error_response(&e, grpc), e.status(), false)
        }
    };
    let finished = Instant::now();
    // A success is a status below 500 that came from the upstream; weir's own 502/503/504
    // count as failures of the chosen backend.
    let success = from_upstream && !status.is_server_error();
    let elapsed = finished - started;
    backend
        .metrics
        .record(status, elapsed, snapshot.metrics.second(finished), success);
    let access = logged.map(|(method, path)| {
        Box::new(Access {
            route: route.name.clone(),
            backend: backend.name().clone(),
            listener: conn.listener.clone(),
            client: conn.client,
            method,
            path: path.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            status: status.as_u16(),
            started,
            bytes: 0,
        })
    });
    response.map(|b| ResponseBody::new(b, access))
}
