//! The data plane: accept connections, find the route, pick the backend, forward.
//!
//! `proxy` reads only the current [`Snapshot`], never the config file.

pub mod affinity;
pub mod body;
pub mod conns;
pub mod drain;
pub mod draw;
pub mod filters;
pub mod forward;
pub mod framing;
pub mod h1;
pub mod head;
pub mod health;
pub mod listener;
pub mod matching;
pub mod mirror;
pub mod pool;
pub mod request;
pub mod retry;
pub mod router;
pub mod split;
pub mod wire;

use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Request, Response, Version};

use crate::observe::access::{AccessLog, ResponseFlags};
use crate::observe::request_id::{self, RequestId};
use crate::observe::trace_context;
use crate::snapshot::{Backend, Route, Snapshot};
use body::{Access, ClientBody, NotReplayable, Record, Replayable, RequestBody, ResponseBody};
use draw::random_below;
pub use forward::ConnInfo;
use forward::ProxyError;
use std::sync::Arc;

/// Request bodies up to this size (with a known length) are read in full when the route retries
/// or mirrors the request, so they can be sent again; larger ones stream and are neither retried
/// nor mirrored.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// Serves one request: one snapshot load, route, weighted pick, forward.
///
/// Not an `async fn`, nor are the layers it hands the request down to (`forward::try_endpoint`,
/// `forward::send`, `Http1Pool::send_wire` and `send_hyper`) or the one above it
/// (`listener::serve_request`). An `async fn` keeps its arguments in its future for its whole
/// life and moves each into a local of its own; when the body borrows the request before it
/// passes it on, the future keeps both, so each of these layers held the request twice (264 or
/// 368 bytes each time). An `async move` block works on what it captured, in place: the service
/// future hyper runs per HTTP/2 stream went from 6,344 to 4,624 bytes (the task it spawns for
/// it from 6,528 to 4,864), and weir's HTTP/1.1 connection future from 8,472 to 6,752
/// (`-Zprint-type-sizes`, docs/PERFORMANCE.md).
#[allow(clippy::manual_async_fn)] // an `async fn` keeps the request twice (see above)
pub fn handle<'a>(
    snapshots: &'a ArcSwap<Snapshot>,
    conn: &'a ConnInfo,
    mut req: Request<ClientBody>,
) -> impl Future<Output = Response<ResponseBody>> + Send + 'a {
    async move {
        let snapshot = snapshots.load_full();
        let started = Instant::now();
        let grpc = forward::is_grpc(&req);
        let checked = head::check(&req, snapshot.config.limits.max_headers);
        // After the check, which counts the client's header fields, not weir's.
        let id = request_id::ensure(req.headers_mut());
        // With a `tracing` section: continue the caller's trace or start one, and name weir's span
        // as the upstream's parent. Without one, `traceparent` is not even read.
        let span = match (&snapshot.tracer, &checked) {
            (Some(t), Ok(())) => Some(trace_context::propagate(req.headers_mut(), t.sampler)),
            _ => None,
        };
        let export = snapshot
            .tracer
            .as_ref()
            .and_then(|t| t.export.clone())
            .filter(|_| span.is_some_and(|s| s.sampled()));
        // The access line's record (and the span's), when the config's access log is on, a
        // sampled span is exported or `RUST_LOG` enables the `weir::access` target; nothing is
        // built otherwise.
        let mut access = (snapshot.access_log.is_some()
            || export.is_some()
            || tracing::enabled!(target: "weir::access", tracing::Level::INFO))
        .then(|| {
            let mut a = access_of(&req, conn, &id, snapshot.access_log.clone(), started);
            a.span = span.zip(export);
            a.trace_id = span.map(|s| s.trace_id);
            a
        });
        if let Err(refusal) = checked {
            return refuse(conn, ProxyError::Refused(refusal), grpc, &id, access);
        }
        let host = router::request_host(&req);
        let view = matching::RequestView {
            method: req.method(),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
        };
        let Some((route, matched)) = router::find(&snapshot.routes, host, &view) else {
            if let Some(a) = &mut access {
                a.flags = ProxyError::NoRoute.flags();
                a.status = 404;
            }
            return forward::error_response(&ProxyError::NoRoute, grpc, &id)
                .map(|b| ResponseBody::new(b, access));
        };
        // A gRPC client's own deadline, when shorter, bounds the wait too.
        let timeout = match forward::grpc_timeout(&req) {
            Some(t) if grpc => t.min(route.timeout),
            _ => route.timeout,
        };
        let gateway = route.gateway.as_deref();
        if let Some(r) = gateway.and_then(|g| g.filters.redirect(None)) {
            return redirect(r, req, conn, matched, route, None, &id, access);
        }
        // Session affinity: the client's cookie may pin it to a backend that still takes traffic
        // and has an endpoint to send to.
        let decision = gateway.and_then(|g| g.affinity.as_ref()).map(|a| {
            a.decide(req.headers(), |b| {
                route.backends[b].weight > 0 && route.backends[b].pool.has_endpoint()
            })
        });
        let pin = match decision {
            Some(affinity::Decision::Pinned(b)) => Some(b),
            _ => None,
        };
        let mut chosen = split::choose_pinned(
            &route.split,
            req.headers(),
            req.uri().query(),
            pin,
            random_below,
        );
        let mut backend = &route.backends[chosen];
        // The first endpoint is picked here, so a backend with none can hand its request to
        // another backend of the route (`health::live_pick`); only then is it a 503.
        let first = match backend.pool.pick(None) {
            Some(e) => Some(e),
            None => {
                backend.metrics.unavailable.inc();
                backend.pool.note_unavailable(&route.name);
                // A rollout judges the backend on what it could serve: a canary with no endpoint
                // fails its analysis (and is rolled back) rather than stalling for lack of requests.
                if let Some(probe) = &backend.probe {
                    probe.record(false, 0);
                }
                match fallback(route, chosen, &req) {
                    Some((b, e)) => {
                        chosen = b;
                        backend = &route.backends[b];
                        Some(e)
                    }
                    None => None,
                }
            }
        };
        if let Some(r) = gateway.and_then(|g| g.filters.redirect(Some(chosen))) {
            return redirect(r, req, conn, matched, route, Some(chosen), &id, access);
        }
        // The drain closes this connection if the backend that serves it now retires.
        conn.served.mark(backend.drain_bit);
        let mut tries = Tries {
            timed: access.is_some(),
            ..Tries::default()
        };
        // A request weir's own HTTP/1.1 server side read (`h1`, the only maker of `ClientBody::Empty`)
        // gets a wire's response fields written as they came, unless something here reads or
        // changes the response's fields (gateway filters and affinity, gRPC's status).
        let fields_as_sent = matches!(req.body(), ClientBody::Empty) && !grpc && gateway.is_none();
        let mut answer = exchange(
            route,
            Picked {
                backend,
                index: chosen,
                matched,
                first,
            },
            req,
            conn,
            started,
            timeout,
            &mut tries,
        )
        .await;
        // The map takes every field httparse took (the `upstream_response` fuzz target holds it to
        // that); should the two parsers ever differ, the answer fails closed as the upstream's fault.
        if !fields_as_sent
            && let Ok((r, _)) = &mut answer
            && let Err(e) = forward::with_fields_in_map(r)
        {
            answer = Err(ProxyError::Protocol {
                upstream: backend.pool.name.clone(),
                source: e.into(),
            });
        }
        // (status, answering endpoint): what the response's end is judged on, `None` when the
        // client was at fault, which never counts against the backend.
        let (mut response, judged, status) = match answer {
            Ok((mut r, endpoint)) => {
                let status = r.status();
                // The client gets the ID the upstream and the access log got, whatever the
                // upstream answered in the header.
                r.headers_mut()
                    .insert(&request_id::HEADER, id.header_value().clone());
                if let (Some(a), Some(d)) = (gateway.and_then(|g| g.affinity.as_ref()), decision)
                    && let Some(cookie) = a.set_cookie(d, chosen)
                {
                    r.headers_mut()
                        .append(http::header::SET_COOKIE, cookie.clone());
                }
                if let Some(a) = &mut access {
                    a.endpoint = Some(backend.pool.endpoint(endpoint).clone());
                    a.upstream = tries.sent.map(|t| t.elapsed());
                }
                (r.map(body::Inner::Upstream), Some(Some(endpoint)), status)
            }
            Err(e) => {
                if let Some(kind) = e.client_kind() {
                    tracing::debug!(route = &*route.name, request_id = %id, error = %e, "the client failed its request");
                    conn.client_errors.count(kind);
                } else {
                    tracing::warn!(route = &*route.name, backend = &**backend.name(), request_id = %id, error = %e, "request failed");
                }
                if let Some(kind) = e.upstream_kind() {
                    backend.pool.metrics.count(kind);
                }
                if let Some(a) = &mut access {
                    a.flags = e.flags();
                    if tries.retries > 0 && e.upstream_kind().is_some() {
                        a.flags.insert(ResponseFlags::RETRY_LIMIT_EXCEEDED);
                    }
                }
                // weir's own 502/503/504 are failures of the chosen backend. Metrics and the
                // access log name the HTTP status of the failure, also when a gRPC caller got
                // it as HTTP 200 with a grpc-status.
                let judged = e.client_kind().is_none().then_some(None);
                (forward::error_response(&e, grpc, &id), judged, e.status())
            }
        };
        // Response filters and `x-weir-backend`, on the upstream's answers and weir's own.
        if let Some(g) = gateway {
            g.filters.apply_response(chosen, response.headers_mut());
        }
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
        if let Some(a) = &mut access {
            a.route = Some(route.name.clone());
            a.backend = Some(backend.name().clone());
            a.status = status.as_u16();
            a.retries = tries.retries;
            a.bytes_received = tries.replayed;
            a.progress = tries.progress.take();
        }
        // The outcome is recorded when the body ends (at once for an empty one).
        response.map(|b| {
            let body = ResponseBody::new(b, access);
            match record {
                Some(r) => body.recording(r, conn.delivery.clone()),
                None => body,
            }
        })
    }
}

/// The backend (its index in the route) and endpoint for a request whose chosen backend
/// (`chosen`) has no endpoint: the route's draw scaled onto the backends that have one
/// (`health::live_pick`, which keeps a sticky key's place among them). `None` when no backend
/// with weight has an endpoint.
fn fallback(route: &Route, chosen: usize, req: &Request<ClientBody>) -> Option<(usize, usize)> {
    let weights = route.backends.iter().map(|b| b.weight);
    let draw = route.split.fallback_draw(req.headers(), random_below);
    let b = health::live_pick(weights, draw, |b| {
        b != chosen && route.backends[b].pool.has_endpoint()
    })?;
    route.backends[b].pool.pick(None).map(|e| (b, e))
}

/// The access record of a request, before it is routed: what the client sent.
fn access_of(
    req: &Request<ClientBody>,
    conn: &ConnInfo,
    id: &RequestId,
    log: Option<Arc<AccessLog>>,
    started: Instant,
) -> Box<Access> {
    let authority = req.headers().get(http::header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    });
    Box::new(Access {
        log,
        route: None,
        backend: None,
        listener: conn.listener.clone(),
        client: conn.client,
        protocol: req.version(),
        method: req.method().clone(),
        authority,
        path: req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        user_agent: req.headers().get(http::header::USER_AGENT).cloned(),
        request_id: id.clone(),
        endpoint: None,
        status: 0,
        grpc_status: None,
        flags: ResponseFlags::NONE,
        retries: 0,
        upstream: None,
        started,
        bytes_received: 0,
        progress: None,
        bytes: 0,
        outcome: "unjudged",
        span: None,
        trace_id: None,
    })
}

/// What the tries of one request did, for the access log: filled in by [`exchange`].
#[derive(Default)]
struct Tries {
    /// Read the clock when the last try goes out (only for the access log).
    timed: bool,
    /// Tries after the first.
    retries: u32,
    /// When the last try went out.
    sent: Option<Instant>,
    /// A replayed body's length.
    replayed: u64,
    /// A streamed body's progress, which counts its bytes.
    progress: Option<Arc<request::Progress>>,
}

/// weir's answer to a request it refuses before routing: counted as the client's error only.
fn refuse(
    conn: &ConnInfo,
    e: ProxyError,
    grpc: bool,
    id: &RequestId,
    mut access: Option<Box<Access>>,
) -> Response<ResponseBody> {
    tracing::debug!(client = %conn.client, request_id = %id, error = %e, "request refused");
    if let Some(kind) = e.client_kind() {
        conn.client_errors.count(kind);
    }
    if let Some(a) = &mut access {
        a.flags = e.flags();
        a.status = e.status().as_u16();
    }
    forward::error_response(&e, grpc, id).map(|b| ResponseBody::new(b, access))
}

/// weir's answer to a request that a redirect filter (the route's, or the chosen backend's when
/// `backend` is set) redirects: no upstream sees it. A `Host` that cannot go into `Location`
/// is the client's fault (400).
#[allow(clippy::too_many_arguments)]
fn redirect(
    r: &filters::Redirect,
    req: Request<ClientBody>,
    conn: &ConnInfo,
    matched: usize,
    route: &Route,
    backend: Option<usize>,
    id: &RequestId,
    mut access: Option<Box<Access>>,
) -> Response<ResponseBody> {
    let (parts, _body) = req.into_parts();
    // The listener's port only counts for a request without any host, and such a request gets
    // a relative `Location`, which has no port: 0 is never written.
    let origin = filters::Origin::of(&parts, conn.scheme, 0);
    let prefix = route
        .gateway
        .as_deref()
        .and_then(|g| g.config.matches.prefix(matched));
    let location = match r.location(&parts.uri, &origin, prefix) {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(route = &*route.name, request_id = %id, error = %e, "redirect refused");
            return refuse(conn, ProxyError::BadRequest, false, id, access);
        }
    };
    let mut response = Response::new(body::Inner::Local(http_body_util::Full::new(
        bytes::Bytes::new(),
    )));
    *response.status_mut() = r.status();
    let h = response.headers_mut();
    h.insert(http::header::LOCATION, location);
    h.insert(&request_id::HEADER, id.header_value().clone());
    if let (Some(b), Some(g)) = (backend, route.gateway.as_deref()) {
        g.filters.apply_response(b, h);
    } else if let Some(m) = route
        .gateway
        .as_deref()
        .and_then(|g| g.filters.route.response_headers.as_ref())
    {
        m.apply(h);
    }
    if let Some(a) = &mut access {
        a.route = Some(route.name.clone());
        a.backend = backend.map(|b| route.backends[b].name().clone());
        a.status = r.status().as_u16();
    }
    response.map(|b| ResponseBody::new(b, access))
}

/// The backend a request goes to: the backend, its index in the route, and the element of the
/// route's match list that held (for a prefix rewrite).
struct Picked<'a> {
    backend: &'a Backend,
    index: usize,
    matched: usize,
    /// The endpoint picked for the first try (`None`: no backend of the route has one).
    first: Option<usize>,
}

/// Sends the request to `backend`: one try, or more when the route retries and the request may
/// be repeated; and a shadow copy when the route mirrors and this request is drawn. Returns the
/// response and the endpoint that gave it.
async fn exchange(
    route: &Route,
    picked: Picked<'_>,
    req: Request<ClientBody>,
    conn: &ConnInfo,
    started: Instant,
    timeout: Duration,
    done: &mut Tries,
) -> Result<(Response<body::UpstreamBody>, usize), ProxyError> {
    let (backend, first) = (picked.backend, picked.first);
    let pool = &backend.pool;
    let (mut head, body) = req.into_parts();
    // Only the protocols the route allows are tunnelled; another `Upgrade` is dropped as a
    // hop-by-hop header and the request goes on as a plain one.
    let upgrade = pool.version == Version::HTTP_11
        && forward::is_upgrade(&head)
        && forward::upgrade_allowed(&head, &route.upgrades);
    forward::prepare(&mut head, conn, upgrade)?;
    // After `prepare`, so `x-forwarded-host` keeps the client's host through a host rewrite.
    if let Some(g) = route.gateway.as_deref() {
        g.filters
            .apply_request(
                picked.index,
                &mut head,
                g.config.matches.prefix(picked.matched),
            )
            .map_err(|_| ProxyError::BadRequest)?;
    }
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
            Ok(Ok(r)) => {
                backend.metrics.request_bytes.inc_by(r.len());
                done.replayed = r.len();
                (None, Some(r))
            }
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
        let next = match tries {
            0 => first,
            _ => pool.pick(avoid),
        };
        let Some(endpoint) = next else {
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
            (None, Some(b)) => {
                RequestBody::streaming(b, Some(backend.metrics.request_bytes.clone()))
            }
            (None, None) => unreachable!("a streamed body is sent once, on the only try"),
        };
        if done.timed {
            done.sent = Some(Instant::now());
            if done.progress.is_none() {
                done.progress = req_body.progress();
            }
        }
        done.retries = tries;
        let result = forward::try_endpoint(
            pool,
            endpoint,
            Request::from_parts(req_head, req_body),
            downstream.take(),
            (deadline, &conn.route_timer),
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
