//! The data plane: accept connections, find the route, pick the backend, forward.
//!
//! `proxy` reads only the current [`Snapshot`], never the config file.

pub mod affinity;
pub mod body;
pub mod conns;
pub mod drain;
pub mod filters;
pub mod forward;
pub mod health;
pub mod listener;
pub mod matching;
pub mod mirror;
pub mod pool;
pub mod request;
pub mod retry;
pub mod router;
pub mod split;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::snapshot::{Backend, Route, Snapshot};
use body::{Access, NotReplayable, Replayable, RequestBody, ResponseBody};
pub use forward::ConnInfo;
use forward::ProxyError;

/// Request bodies up to this size (with a known length) are read in full when the route retries
/// or mirrors the request, so they can be sent again; larger ones stream and are neither retried
/// nor mirrored.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

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
    let backend = &route.backends
        [split::choose(&route.split, req.headers(), req.uri().query(), random_below)];
    let (response, status) = match exchange(route, backend, req, conn, started, timeout).await {
        Ok(r) => {
            let status = r.status();
            (r.map(body::Inner::Upstream), status)
        }
        Err(e) => {
            tracing::warn!(route = &*route.name, backend = &**backend.name(), error = %e, "request failed");
            if let Some(kind) = e.upstream_kind() {
                backend.pool.metrics.count(kind);
            }
            if let Some(kind) = e.client_kind() {
                conn.client_errors.count(kind);
            }
            // Metrics and the access log name the HTTP status of the failure, also when a gRPC
            // caller got it as HTTP 200 with a grpc-status.
            (forward::error_response(&e, grpc), e.status())
        }
    };
    let finished = Instant::now();
    // A success is a status below 500 from the upstream; weir's own 502/503/504 count as
    // failures of the chosen backend, and its 400/408 for a broken client body as the client's
    // fault, not the backend's.
    let success = !status.is_server_error();
    let elapsed = finished - started;
    backend
        .metrics
        .record(status, elapsed, snapshot.metrics.second(finished), success);
    if let Some(probe) = &backend.probe {
        probe.record(success, crate::metrics::latency_bucket(elapsed));
    }
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

/// Sends the request to `backend`: one try, or more when the route retries and the request may
/// be repeated; and a shadow copy when the route mirrors and this request is drawn.
async fn exchange(
    route: &Route,
    backend: &Backend,
    req: Request<Incoming>,
    conn: &ConnInfo,
    started: Instant,
    timeout: Duration,
) -> Result<Response<body::UpstreamBody>, ProxyError> {
    let pool = &backend.pool;
    let (mut head, body) = req.into_parts();
    let upgrade = pool.version == Version::HTTP_11 && forward::is_upgrade(&head);
    forward::prepare(&mut head, conn, upgrade)?;
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let retries = route.retries.as_ref().filter(|_| !upgrade);
    if retries.is_some() {
        pool.deposit_retry_token();
    }
    let retries = retries.filter(|_| retry::idempotent(&head.method));
    let mirror = route
        .mirror
        .as_ref()
        .filter(|m| !upgrade && m.sampled(random_below));

    let (body, replay) = if retries.is_some() || mirror.is_some() {
        match tokio::time::timeout_at(deadline, Replayable::read(body, MAX_REPLAY_BODY)).await {
            Err(_) => return Err(ProxyError::ClientTimeout),
            Ok(Ok(r)) => (None, Some(r)),
            Ok(Err(NotReplayable::TooLarge(b))) => (Some(b), None),
            Ok(Err(NotReplayable::Broken(e))) => return Err(ProxyError::ClientBody(e)),
        }
    } else {
        (Some(body), None)
    };
    if let Some(m) = mirror {
        match &replay {
            Some(r) => m.send(forward::copy_head(&head), r, timeout),
            None => m.metrics.too_large.inc(),
        }
    }

    let mut downstream = upgrade
        .then(|| head.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let retries = retries.filter(|_| replay.is_some());
    let most = retries.map_or(0, |r| r.attempts);
    let (mut head, mut body) = (Some(head), body);
    let mut avoid = None;
    let mut tries = 0;
    loop {
        let Some(endpoint) = pool.pick(avoid) else {
            return Err(ProxyError::NoHealthyEndpoint {
                upstream: pool.name.clone(),
            });
        };
        let last = tries == most;
        let req_head = match (&head, last) {
            (Some(h), false) => forward::copy_head(h),
            _ => head.take().expect("the last try takes the head"),
        };
        let req_body = match (&replay, body.take()) {
            (Some(r), _) => r.body(),
            (None, Some(b)) => RequestBody::Streaming(b),
            (None, None) => unreachable!("a streamed body is sent once, on the only try"),
        };
        let result = forward::try_endpoint(
            pool,
            endpoint,
            Request::from_parts(req_head, req_body),
            downstream.take(),
            deadline,
            timeout,
        )
        .await;
        if !last && retries.is_some_and(|r| retry::wanted(r, &result)) && pool.withdraw_retry() {
            if let Err(e) = &result {
                tracing::debug!(upstream = &*pool.name, error = %e, "retrying on another endpoint");
                if let Some(kind) = e.upstream_kind() {
                    pool.metrics.count(kind);
                }
            }
            tries += 1;
            avoid = Some(endpoint);
            continue;
        }
        return result;
    }
}
