//! The data plane: accept connections, find the route, pick the backend, forward.
//!
//! `proxy` reads only the current [`Snapshot`], never the config file.

pub mod body;
pub mod conns;
pub mod forward;
pub mod framing;
pub mod head;
pub mod listener;
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
use body::{Access, NotReplayable, Record, Replayable, RequestBody, ResponseBody};
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
    let grpc = forward::is_grpc(&req);
    if let Err(refusal) = head::check(&req, snapshot.config.limits.max_headers) {
        return refuse(conn, ProxyError::Refused(refusal), grpc);
    }
    let host = router::request_host(&req);
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
    // (status, answering endpoint): what the response's end is judged on, `None` when the
    // client was at fault, which never counts against the backend.
    let (response, judged, status) = match exchange(route, backend, req, conn, started, timeout)
        .await
    {
        Ok((r, endpoint)) => {
            let status = r.status();
            (r.map(body::Inner::Upstream), Some(Some(endpoint)), status)
        }
        Err(e) => {
            if let Some(kind) = e.client_kind() {
                tracing::debug!(route = &*route.name, error = %e, "the client failed its request");
                conn.client_errors.count(kind);
            } else {
                tracing::warn!(route = &*route.name, backend = &**backend.name(), error = %e, "request failed");
            }
            if let Some(kind) = e.upstream_kind() {
                backend.pool.metrics.count(kind);
            }
            // weir's own 502/503/504 are failures of the chosen backend. Metrics and the
            // access log name the HTTP status of the failure, also when a gRPC caller got
            // it as HTTP 200 with a grpc-status.
            let judged = e.client_kind().is_none().then_some(None);
            (forward::error_response(&e, grpc), judged, e.status())
        }
    };
    let record = judged.map(|endpoint| {
        let mut r = Record {
            metrics: backend.metrics.clone(),
            probe: backend.probe.clone(),
            pool: backend.pool.clone(),
            endpoint,
            status,
            started,
            head: started.elapsed(),
            grpc: (grpc && response.status() == http::StatusCode::OK)
                .then_some(route.grpc_failures),
            grpc_status: None,
        };
        r.read_head(response.headers());
        r
    });
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
            outcome: "unjudged",
        })
    });
    // The outcome is recorded when the body ends (at once for an empty one).
    response.map(|b| {
        let body = ResponseBody::new(b, access);
        match record {
            Some(r) => body.recording(r, conn.delivery.clone()),
            None => body,
        }
    })
}

/// weir's answer to a request it refuses before routing: counted as the client's error only.
fn refuse(conn: &ConnInfo, e: ProxyError, grpc: bool) -> Response<ResponseBody> {
    tracing::debug!(client = %conn.client, error = %e, "request refused");
    if let Some(kind) = e.client_kind() {
        conn.client_errors.count(kind);
    }
    forward::error_response(&e, grpc).map(|b| ResponseBody::new(b, None))
}

/// Sends the request to `backend`: one try, or more when the route retries and the request may
/// be repeated; and a shadow copy when the route mirrors and this request is drawn. Returns the
/// response and the endpoint that gave it.
async fn exchange(
    route: &Route,
    backend: &Backend,
    req: Request<Incoming>,
    conn: &ConnInfo,
    started: Instant,
    timeout: Duration,
) -> Result<(Response<body::UpstreamBody>, usize), ProxyError> {
    let pool = &backend.pool;
    let (mut head, body) = req.into_parts();
    // Only the protocols the route allows are tunnelled; another `Upgrade` is dropped as a
    // hop-by-hop header and the request goes on as a plain one.
    let upgrade = pool.version == Version::HTTP_11
        && forward::is_upgrade(&head)
        && forward::upgrade_allowed(&head, &route.upgrades);
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
            Ok(Err(NotReplayable::Broken(e))) if request::went_away(&e) => {
                return Err(ProxyError::ClientGone(e.into()));
            }
            Ok(Err(NotReplayable::Broken(e))) => return Err(ProxyError::ClientBody(e.into())),
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
            (None, Some(b)) => RequestBody::streaming(b),
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
        // A try without a response is judged now; a response, when it ends (`ResponseBody`).
        if let Err(e) = &result
            && e.upstream_kind().is_some()
        {
            pool.report(endpoint, pool::Outcome::Failure);
        }
        if !last && retries.is_some_and(|r| retry::wanted(r, &result)) && pool.withdraw_retry() {
            match &result {
                Err(e) => {
                    tracing::debug!(upstream = &*pool.name, error = %e, "retrying on another endpoint");
                    if let Some(kind) = e.upstream_kind() {
                        pool.metrics.count(kind);
                    }
                }
                // A 5xx the route retries: a failure, dropped unread.
                Ok(_) => pool.report(endpoint, pool::Outcome::Failure),
            }
            tries += 1;
            avoid = Some(endpoint);
            continue;
        }
        return result.map(|r| (r, endpoint));
    }
}
