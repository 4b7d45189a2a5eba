//! Accepting connections on one listener and serving each: HTTP/1.1 requests without a body
//! with weir's own code (`proxy::h1`) until a head needs hyper, then hyper (HTTP/1.1, and HTTP/2
//! prior knowledge (h2c) on the same port), keep-alive, the limits of the config, and graceful
//! shutdown when the server drains or the connection sits idle.
//!
//! Every connection that makes no progress ends by a documented limit: no first request
//! within `header_read_timeout` (whatever the protocol: a silent TCP connection, an HTTP/2
//! client that sends its preface and nothing else) and no next HTTP/1.1 head within it either
//! (kept per connection by [`HeadClock`], not by hyper), no request in flight and none started for
//! `idle_timeout`, and, once weir asked it to close (idle or draining), not closed within
//! `header_read_timeout` with nothing in flight (an HTTP/2 client that ignores GOAWAY and the
//! PING after it). HTTP/2 connections are PINGed every quarter of `idle_timeout` and closed
//! when a PING is not answered within `header_read_timeout`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use tokio::io::{AsyncRead, AsyncWrite};

use super::body::{ClientBody, Delivery, ResponseBody, STALL_CHECKS, StallCheck};
use super::forward::{ConnInfo, ProxyError};
use super::framing::{Scan, Verdict};
use super::head::Refusal;

use crate::config::Limits;
use crate::metrics::{ConnectionGauge, ListenerMetrics};
use crate::snapshot::Snapshot;

/// What every connection of a listener shares.
#[derive(Clone)]
pub struct ListenerContext {
    pub name: Arc<str>,
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    /// Becomes `true` when the server starts draining.
    pub shutdown: watch::Receiver<bool>,
    /// Each connection task holds a clone; the server's drain waits until all are dropped.
    pub open: mpsc::Sender<()>,
    /// The drain epoch: when it moves, a connection served by a retired backend closes.
    pub drain: watch::Receiver<u64>,
    /// Connection and TLS handshake metrics, resolved once.
    pub metrics: ListenerMetrics,
}

/// Accepts until shutdown. Accept errors (out of file descriptors, say) are counted
/// (`weir_accept_errors_total`), logged at most once a second, and retried after a pause that
/// doubles from 10 ms up to 1 s while they last, instead of ending the listener.
pub async fn serve(listener: TcpListener, mut ctx: ListenerContext) {
    let mut failing = AcceptFailures::default();
    loop {
        tokio::select! {
            changed = ctx.shutdown.changed() => {
                if changed.is_err() || *ctx.shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    failing.pause = None;
                    tokio::spawn(connection(stream, peer, ctx.clone()));
                }
                Err(e) => {
                    ctx.metrics.accept_errors.inc();
                    let pause = failing.failed(&ctx.name, &e);
                    tokio::time::sleep(pause).await;
                }
            },
        }
    }
    tracing::debug!(listener = &*ctx.name, "stopped accepting");
}

/// The back-off and the log's rate limit while accepts fail.
#[derive(Default)]
pub struct AcceptFailures {
    pause: Option<Duration>,
    logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptFailures {
    /// Notes a failed accept; returns how long to pause before the next.
    pub fn failed(&mut self, listener: &str, e: &std::io::Error) -> Duration {
        let now = Instant::now();
        if self
            .logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tracing::warn!(listener, error = %e, also_failed = self.unlogged, "accept failed");
            (self.logged, self.unlogged) = (Some(now), 0);
        } else {
            self.unlogged += 1;
        }
        let pause = self.pause.map_or(Duration::from_millis(10), |p| {
            (p * 2).min(Duration::from_secs(1))
        });
        self.pause = Some(pause);
        pause
    }
}

/// State of one connection that its requests update.
struct Connection {
    snapshots: Arc<ArcSwap<Snapshot>>,
    info: ConnInfo,
    /// Requests started so far; the idle check watches it move.
    requests: AtomicU64,
    /// Requests whose response body has not been dropped yet.
    in_flight: AtomicU64,
    /// The request (by number) whose framing the byte scan found ambiguous.
    verdict: Arc<Verdict>,
    /// When the connection was accepted: the origin of `idle_since`.
    opened: tokio::time::Instant,
    /// When the last request in flight ended (its response body dropped), in nanoseconds since
    /// `opened`: where an HTTP/1.1 connection starts waiting for its next head.
    idle_since: AtomicU64,
    /// Whether the first request came over HTTP/2 (which has no head deadline after it).
    http2: AtomicBool,
    /// An HTTP/1.1 connection a retired backend served: its next response says
    /// `Connection: close` (set by the drain, see `serve_http`).
    drain_close: AtomicBool,
    /// Asked to close (the server drains, or the connection sat idle): the fast HTTP/1.1 path
    /// (`proxy::h1`) reads no new head and says `Connection: close` on the response in progress,
    /// as hyper's graceful shutdown does.
    closing: AtomicBool,
}

impl Connection {
    /// Where the head deadline stands now (read by the connection's own task).
    fn head_wait(&self) -> HeadWait {
        HeadWait {
            requests: self.requests.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            http2: self.http2.load(Ordering::Relaxed),
            idle_since: self.opened + Duration::from_nanos(self.idle_since.load(Ordering::Relaxed)),
            in_body: self.verdict.in_body(),
            write_blocked: self.verdict.write_blocked(),
        }
    }
}

/// What the head deadline looks at when its timer fires.
#[derive(Debug, Clone, Copy)]
struct HeadWait {
    requests: u64,
    in_flight: u64,
    http2: bool,
    idle_since: tokio::time::Instant,
    in_body: bool,
    write_blocked: bool,
}

/// What the connection does when its head deadline's timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadDeadline {
    /// The head did not come in time: close the connection.
    Expired,
    /// Not yet, or not waiting for a head now: fire again then.
    At(tokio::time::Instant),
    /// An HTTP/2 connection past its first request: no head deadline any more.
    Off,
}

/// The request head's deadline of one connection (`limits.header_read_timeout`), kept with one
/// timer per connection instead of hyper's boxed timer per request.
///
/// hyper starts that clock when it begins waiting for a head: when the connection opens, and on
/// HTTP/1.1 when the previous request is done (its response written, its body read). Here a
/// request's end costs one clock read (`Connection::idle_since`, stamped when its response body
/// is dropped) and the timer is only reset when it fires: before a deadline that moved (later
/// requests came), or while a request is in flight. Two cases where the response body is gone
/// but hyper is not waiting for a head yet (the client still sends the request body, or does not
/// read the end of the response) are seen through the byte scan ([`Verdict::in_body`],
/// [`Verdict::write_blocked`]); the head's clock then starts again at the next check, so in
/// those rare cases the client gets between one and two deadlines, never less than with hyper.
struct HeadClock {
    limit: Duration,
    /// The last check found the connection busy otherwise than with a request in flight.
    unsure: bool,
}

impl HeadClock {
    fn new(limit: Duration) -> HeadClock {
        HeadClock {
            limit,
            unsure: false,
        }
    }

    /// Decides at `now`, when the timer fired, from the connection's state `w`.
    fn check(&mut self, w: HeadWait, now: tokio::time::Instant) -> HeadDeadline {
        if w.requests == 0 {
            // No request yet, whatever the protocol: the deadline runs from the connection's start.
            return if now >= w.idle_since + self.limit {
                HeadDeadline::Expired
            } else {
                HeadDeadline::At(w.idle_since + self.limit)
            };
        }
        if w.http2 {
            return HeadDeadline::Off;
        }
        if w.in_flight > 0 {
            self.unsure = false;
            return HeadDeadline::At(now + self.limit);
        }
        if w.in_body || w.write_blocked || self.unsure {
            self.unsure = w.in_body || w.write_blocked;
            return HeadDeadline::At(now + self.limit);
        }
        let deadline = w.idle_since + self.limit;
        if now >= deadline {
            HeadDeadline::Expired
        } else {
            HeadDeadline::At(deadline)
        }
    }
}

/// One request of a connection in flight: from the start of its service call (a call dropped
/// early, by a reset stream, included) until hyper drops its response body.
struct InFlight {
    conn: Arc<Connection>,
    /// Set once the service call returned a response. A call dropped before that was given up
    /// by hyper because the client went away (closed its connection, reset its stream): the
    /// client's fault, counted as `closed`, and never recorded against a backend.
    answered: bool,
}

impl InFlight {
    fn new(conn: Arc<Connection>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            conn,
            answered: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.conn.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            // The connection's last request ended: an HTTP/1.1 client's next head is due from
            // here (one clock read per request; see `HeadClock`).
            let idle = self.conn.opened.elapsed().as_nanos();
            let idle = u64::try_from(idle).unwrap_or(u64::MAX);
            self.conn.idle_since.store(idle, Ordering::Relaxed);
        }
        if !self.answered {
            self.conn
                .info
                .client_errors
                .count(crate::metrics::ClientErrorKind::Closed);
        }
    }
}

/// A response body that keeps its request in flight until hyper drops it.
struct Tracked {
    body: ResponseBody,
    _in_flight: InFlight,
}

impl super::h1::UpstreamFields for Tracked {
    fn take_fields(&mut self) -> Option<super::wire::Fields> {
        self.body.take_fields()
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = super::conns::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, super::conns::BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves one request of `conn`, counted in flight until its response body is dropped.
///
/// Not an `async fn`: the request is kept once in its future (see `proxy::handle`).
#[allow(clippy::manual_async_fn)] // an `async fn` keeps the request twice (`proxy::handle`)
fn serve_request(
    conn: Arc<Connection>,
    mut req: http::Request<ClientBody>,
) -> impl Future<Output = Response<Tracked>> + Send {
    async move {
        let n = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let version = req.version();
        if n == 1 && req.version() == http::Version::HTTP_2 {
            conn.http2.store(true, Ordering::Relaxed);
        }
        let mut in_flight = InFlight::new(conn.clone());
        let response = if conn.verdict.refuses(n) {
            // hyper kept one of the ambiguous headers and would forward the rest; weir refuses the
            // request and closes the connection, whose next bytes cannot be trusted.
            let e = ProxyError::Refused(Refusal::Framing);
            conn.info
                .client_errors
                .count(crate::metrics::ClientErrorKind::Framing);
            let id = crate::observe::request_id::ensure(req.headers_mut());
            tracing::debug!(client = %conn.info.client, request_id = %id, error = %e, "request refused");
            let mut r =
                super::forward::error_response(&e, false, &id).map(|b| ResponseBody::new(b, None));
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            r
        } else {
            super::handle(&conn.snapshots, &conn.info, req).await
        };
        in_flight.answered = true;
        let mut response = response;
        if version == http::Version::HTTP_11 {
            // weir speaks HTTP/1.1 to an HTTP/1.1 client whatever its upstream spoke (hyper would
            // write an HTTP/1.0 upstream's version; weir's own writer always writes 1.1).
            *response.version_mut() = http::Version::HTTP_11;
        }
        // A connection a retired backend served, or one asked to close (the server drains, it sat
        // idle): the response says so and the connection closes after it, on weir's HTTP/1.1 path
        // and hyper's alike (hyper's own graceful shutdown cannot be asked before its first read,
        // see the hand-off in `serve_http`).
        let closing =
            conn.drain_close.load(Ordering::Relaxed) || conn.closing.load(Ordering::Relaxed);
        if closing && version < http::Version::HTTP_2 {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        response.map(|body| Tracked {
            body,
            _in_flight: in_flight,
        })
    }
}

/// The idle check runs this many times per idle timeout; a connection is idle after that many
/// checks in a row saw no new request.
const IDLE_CHECKS: u32 = 4;

async fn connection(stream: TcpStream, peer: std::net::SocketAddr, ctx: ListenerContext) {
    let _open = ctx.open.clone();
    let _active = ConnectionGauge::open(&ctx.metrics.active);
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    // Limits and certificates are read when the connection opens: a reload applies to new
    // connections, and an open connection keeps what it started with.
    let (limits, tls) = {
        let snapshot = ctx.snapshots.load();
        let tls = snapshot
            .config
            .listeners
            .iter()
            .find(|l| l.name == ctx.name)
            .and_then(|l| l.tls.clone());
        (snapshot.config.limits, tls)
    };
    let Some(tls) = tls else {
        return serve_http(stream, peer, "http", limits, ctx).await;
    };
    // The handshake shares the request head's deadline, so a silent client cannot hold a slot.
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    match tokio::time::timeout(limits.header_read_timeout, accept).await {
        Ok(Ok(stream)) => serve_http(stream, peer, "https", limits, ctx).await,
        Ok(Err(e)) => {
            ctx.metrics.tls_failed.inc();
            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            ctx.metrics.tls_timeout.inc();
            tracing::debug!(client = %peer, "TLS handshake timed out");
        }
    }
}

async fn serve_http<I>(
    io: I,
    peer: std::net::SocketAddr,
    scheme: &'static str,
    limits: Limits,
    mut ctx: ListenerContext,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / IDLE_CHECKS)
        .keep_alive_timeout(limits.header_read_timeout)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));

    let verdict = Arc::new(Verdict::default());
    // Seen first, then the epoch read: a retirement between the two wakes the loop below,
    // which then compares (and finds nothing to do when the epoch read already had it).
    ctx.drain.borrow_and_update();
    let epoch = ctx.snapshots.load().drain.epoch();
    let conn = Arc::new(Connection {
        snapshots: ctx.snapshots.clone(),
        info: ConnInfo {
            client: peer,
            forwarded_for: crate::proxy::forward::forwarded_for(peer),
            listener: ctx.name.clone(),
            scheme,
            client_errors: ctx.metrics.client_errors.clone(),
            delivery: Arc::new(Delivery::new(ctx.metrics.client_errors.clone())),
            served: crate::proxy::drain::Served::new(epoch),
            route_timer: Default::default(),
        },
        requests: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        verdict: verdict.clone(),
        opened: tokio::time::Instant::now(),
        idle_since: AtomicU64::new(0),
        http2: AtomicBool::new(false),
        drain_close: AtomicBool::new(false),
        closing: AtomicBool::new(false),
    });
    // hyper's HTTP/2 server for a connection that opened with HTTP/2's preface; an HTTP/1 head
    // goes to its HTTP/1 server, which starts busy with it (a graceful shutdown then answers it
    // with `Connection: close`), and a connection never changes protocols midway (hyper's
    // HTTP/1 server refuses `PRI`).
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // hyper's own head deadline arms a boxed timer per request; the connection keeps that
    // deadline itself with one timer (`HeadClock`).
    http1
        .keep_alive(true)
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes);
    let hyper_conn = |io, pre, h2: bool| {
        let io = TokioIo::new(super::h1::Rewind::new(pre, io));
        let conn = conn.clone();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(serve_request(conn, req.map(ClientBody::Hyper)).await) }
        });
        if h2 {
            Serving::Http2(Box::pin(http2.serve_connection(io, service)))
        } else {
            Serving::Http1(Box::pin(
                http1.serve_connection(io, service).with_upgrades(),
            ))
        }
    };
    let io = Scan::new(io, verdict, limits.max_header_bytes);
    // HTTP/1.1 requests without a body are served by weir's own code until the first head
    // that needs hyper (`proxy::h1`), which then takes the connection with what was read.
    let (fast_conn, closing_conn) = (conn.clone(), conn.clone());
    let fast = super::h1::serve(
        io,
        limits.max_header_bytes,
        limits.max_headers,
        conn.info.delivery.clone(),
        move |req| serve_request(fast_conn.clone(), req),
        move || closing_conn.closing.load(Ordering::Relaxed),
    );
    let mut serving = Serving::Fast(Box::pin(fast));
    let mut idle_check = tokio::time::interval(limits.idle_timeout / IDLE_CHECKS);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_seen, mut quiet_checks) = (0, 0);
    // A connection must start its first request within the head's deadline, whatever its
    // protocol, and every later HTTP/1.1 head too; and, asked to close, must close within it
    // once nothing is in flight.
    let mut head_clock = HeadClock::new(limits.header_read_timeout);
    let head_deadline = tokio::time::sleep_until(conn.opened + limits.header_read_timeout);
    tokio::pin!(head_deadline);
    let mut heads_watched = true;
    let give_up = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(give_up);
    // nginx's `send_timeout`: a client that stops reading a response (a full socket, a zero
    // HTTP/2 window) would hold the upstream connection behind it for as long as it likes.
    let mut stall_check = tokio::time::interval(limits.write_stall_timeout / STALL_CHECKS);
    stall_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stall = StallCheck::default();
    let mut closing = false;
    let mut drain_watched = true;
    let mut drain_marked = false;
    let close = |serving: &mut Serving<_, _, _>, give_up: Pin<&mut tokio::time::Sleep>| {
        conn.closing.store(true, Ordering::Relaxed);
        match serving {
            Serving::Fast(_) => {}
            Serving::Http2(h) => {
                hyper::server::conn::http2::Connection::graceful_shutdown(Pin::as_mut(h))
            }
            Serving::Http1(h) => {
                hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(Pin::as_mut(h))
            }
        }
        give_up.reset(tokio::time::Instant::now() + limits.header_read_timeout);
    };
    if *ctx.shutdown.borrow() {
        close(&mut serving, give_up.as_mut());
        closing = true;
    }
    let mut shutdown = Some(next_change(ctx.shutdown.clone()));
    let mut drain = Some(next_change(ctx.drain.clone()));
    // The control branches (the watches and timers below) are polled only when one of them
    // woke the task, not at every wake of the connection (see `ControlWake`).
    let gate = Arc::new(ControlWake::new());
    let gate_waker = std::task::Waker::from(gate.clone());
    loop {
        let event = std::future::poll_fn(|cx| {
            match &mut serving {
                Serving::Fast(f) => {
                    if let Poll::Ready(ended) = f.as_mut().poll(cx) {
                        return Poll::Ready(Control::Fast(ended));
                    }
                }
                Serving::Http2(h) => {
                    if let Poll::Ready(result) = h.as_mut().poll(cx) {
                        return Poll::Ready(Control::Served(result));
                    }
                }
                Serving::Http1(h) => {
                    if let Poll::Ready(result) = h.as_mut().poll(cx) {
                        return Poll::Ready(Control::Served(result));
                    }
                }
            }
            let Some(mut control) = gate.enter(cx, &gate_waker) else {
                return Poll::Pending;
            };
            let cx = &mut control;
            let ready = |event| {
                // Another branch may be ready too and its wake is spent: look at all of them
                // again at the next poll.
                gate.fired.store(true, Ordering::Relaxed);
                Poll::Ready(event)
            };
            if !closing
                && let Some(changed) = shutdown.as_mut()
                && changed.as_mut().poll(cx).is_ready()
            {
                shutdown = None;
                return ready(Control::Shutdown);
            }
            if drain_watched
                && !drain_marked
                && !closing
                && let Some(changed) = drain.as_mut()
                && let Poll::Ready((result, receiver)) = changed.as_mut().poll(cx)
            {
                drain = Some(next_change(receiver));
                return ready(Control::Drain(result.is_ok()));
            }
            if stall_check.poll_tick(cx).is_ready() {
                return ready(Control::StallCheck);
            }
            if closing && give_up.as_mut().poll(cx).is_ready() {
                return ready(Control::GiveUp);
            }
            if heads_watched && head_deadline.as_mut().poll(cx).is_ready() {
                return ready(Control::HeadDeadline);
            }
            if !closing && idle_check.poll_tick(cx).is_ready() {
                return ready(Control::IdleCheck);
            }
            Poll::Pending
        })
        .await;
        match event {
            Control::Served(result) => {
                if let Err(e) = result {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                break;
            }
            Control::Fast(super::h1::Ended::Closed(error)) => {
                if let Some(e) = error {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                break;
            }
            Control::Fast(super::h1::Ended::HandOff(io, pre)) => {
                // Only a connection's first bytes may be HTTP/2's preface.
                let h2 = conn.requests.load(Ordering::Relaxed) == 0 && super::h1::is_preface(&pre);
                serving = hyper_conn(io, pre, h2);
                // Asked to close already: hyper's graceful shutdown before its first read would
                // close the connection without reading the head that was handed over (its
                // bytes are still in the `Rewind`). An HTTP/1 head is answered instead, with
                // `Connection: close` (`serve_request`), and `give_up` (armed) bounds the rest.
                if closing && h2 {
                    close(&mut serving, give_up.as_mut());
                }
            }
            Control::Shutdown => {
                // Finish the request in flight, then close (HTTP/2: GOAWAY).
                close(&mut serving, give_up.as_mut());
                closing = true;
            }
            Control::Drain(false) => {
                // The control task is gone (the server stops): nothing more will retire.
                drain_watched = false;
            }
            Control::Drain(true) => {
                // A backend that served this connection retired. HTTP/2: GOAWAY, streams in
                // flight finish. HTTP/1.1: the next response says `Connection: close` and the
                // connection closes after it; an idle one is not closed now, since a request the
                // client is writing at this moment would be lost with it.
                if conn.info.served.check(&conn.snapshots.load().drain) {
                    tracing::debug!(client = %peer, "draining a connection a retired backend served");
                    ctx.metrics.drained.inc();
                    if conn.http2.load(Ordering::Relaxed) {
                        close(&mut serving, give_up.as_mut());
                        closing = true;
                    } else {
                        conn.drain_close.store(true, Ordering::Relaxed);
                        drain_marked = true;
                    }
                }
            }
            Control::StallCheck => {
                if conn.info.delivery.stalled(&mut stall) {
                    tracing::debug!(client = %peer, timeout = %crate::observe::human::duration(limits.write_stall_timeout), "closing a connection whose client stopped reading");
                    if conn.in_flight.load(Ordering::Relaxed) == 0 {
                        // The last bytes of a response whose body already ended (weir's own
                        // writer): no body is left to count the timeout when it drops.
                        conn.info
                            .client_errors
                            .count(crate::metrics::ClientErrorKind::Timeout);
                    }
                    break;
                }
            }
            Control::GiveUp => {
                if conn.in_flight.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(client = %peer, "did not close when asked: closed");
                    break;
                }
                give_up
                    .as_mut()
                    .reset(tokio::time::Instant::now() + limits.header_read_timeout);
            }
            Control::HeadDeadline => {
                match head_clock.check(conn.head_wait(), tokio::time::Instant::now()) {
                    HeadDeadline::Expired if conn.requests.load(Ordering::Relaxed) == 0 => {
                        tracing::debug!(client = %peer, "no request within the header read timeout");
                        conn.info
                            .client_errors
                            .count(crate::metrics::ClientErrorKind::Timeout);
                        break;
                    }
                    HeadDeadline::Expired => {
                        // As hyper did: closed with no answer and no count.
                        tracing::debug!(client = %peer, "no request head within the header read timeout");
                        break;
                    }
                    HeadDeadline::At(at) => head_deadline.as_mut().reset(at),
                    HeadDeadline::Off => heads_watched = false,
                }
            }
            Control::IdleCheck => {
                let busy = conn.in_flight.load(Ordering::Relaxed) != 0;
                let seen = conn.requests.load(Ordering::Relaxed);
                if seen != last_seen || busy {
                    (last_seen, quiet_checks) = (seen, 0);
                } else {
                    quiet_checks += 1;
                    if quiet_checks > IDLE_CHECKS {
                        close(&mut serving, give_up.as_mut());
                        closing = true;
                    }
                }
            }
        }
    }
}

/// Who serves a connection: weir's own HTTP/1.1 code (`proxy::h1`) until a head needs hyper,
/// then hyper: its HTTP/2 server when the connection opened with HTTP/2's preface, its HTTP/1
/// server for any other head.
enum Serving<F, H2, H1> {
    Fast(Pin<Box<F>>),
    Http2(Pin<Box<H2>>),
    Http1(Pin<Box<H1>>),
}

/// What woke a connection's loop.
enum Control<E, I> {
    /// The connection ended.
    Served(Result<(), E>),
    /// The fast path ended, or hands the connection to hyper.
    Fast(super::h1::Ended<I>),
    Shutdown,
    /// The drain epoch moved (`true`), or its sender is gone (`false`).
    Drain(bool),
    StallCheck,
    GiveUp,
    HeadDeadline,
    IdleCheck,
}

/// The next change of a watch, as a future that owns its receiver and gives it back.
type NextChange<T> = Pin<
    Box<
        dyn std::future::Future<Output = (Result<(), watch::error::RecvError>, watch::Receiver<T>)>
            + Send,
    >,
>;

fn next_change<T: Send + Sync + 'static>(mut receiver: watch::Receiver<T>) -> NextChange<T> {
    Box::pin(async move {
        let changed = receiver.changed().await;
        (changed, receiver)
    })
}

/// The waker a connection's control branches (timers, watches) register instead of the task's:
/// it notes that one of them may be ready, then wakes the task. The task wakes two or three
/// times per request for the connection itself (the client's bytes, the upstream's); polling
/// every timer and watch at each of those wakes cost about 1,550 instructions per request
/// (docs/PERFORMANCE.md).
struct ControlWake {
    /// A control branch's wake came since they were last polled (set at first).
    fired: AtomicBool,
    /// The connection task's waker, taken at its first poll.
    task: std::sync::OnceLock<std::task::Waker>,
}

impl ControlWake {
    fn new() -> ControlWake {
        ControlWake {
            fired: AtomicBool::new(true),
            task: std::sync::OnceLock::new(),
        }
    }

    /// The context to poll the control branches with, or `None` when none of them woke the task
    /// since they were last polled. A task polled with another waker than the one kept (a tokio
    /// task keeps one for its life) gets its own context: its branches register it directly,
    /// and are polled at every wake.
    fn enter<'a>(
        &self,
        cx: &'a mut Context<'_>,
        gate: &'a std::task::Waker,
    ) -> Option<Context<'a>> {
        let task = self.task.get_or_init(|| cx.waker().clone());
        if !task.will_wake(cx.waker()) {
            return Some(Context::from_waker(cx.waker()));
        }
        self.fired
            .swap(false, Ordering::Acquire)
            .then(|| Context::from_waker(gate))
    }
}

impl std::task::Wake for ControlWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(task) = self.task.get() {
            task.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    /// A task waker that counts its wakes.
    #[derive(Default)]
    struct Counted(AtomicU64);

    impl std::task::Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn control_branches_are_polled_first_and_then_only_after_their_own_wake() {
        let task = Arc::new(Counted::default());
        let task_waker = std::task::Waker::from(task.clone());
        let gate = Arc::new(ControlWake::new());
        let gate_waker = std::task::Waker::from(gate.clone());
        let mut cx = Context::from_waker(&task_waker);
        // The first poll registers every branch, with the gate's waker.
        let first = gate.enter(&mut cx, &gate_waker).expect("polled at first");
        assert!(first.waker().will_wake(&gate_waker));
        // A wake of the connection itself: the branches are left alone.
        assert!(gate.enter(&mut cx, &gate_waker).is_none());
        // A branch's wake: the task is woken and the next poll looks at the branches, once.
        gate_waker.wake_by_ref();
        assert_eq!(task.0.load(Ordering::Relaxed), 1);
        assert!(gate.enter(&mut cx, &gate_waker).is_some());
        assert!(gate.enter(&mut cx, &gate_waker).is_none());
        // Polled with another waker than the task's first: every poll, with that waker.
        let other = std::task::Waker::from(Arc::new(Counted::default()));
        let mut other_cx = Context::from_waker(&other);
        for _ in 0..2 {
            let direct = gate.enter(&mut other_cx, &gate_waker).expect("polled");
            assert!(direct.waker().will_wake(&other));
        }
    }

    fn waiting(requests: u64, idle_since: tokio::time::Instant) -> HeadWait {
        HeadWait {
            requests,
            in_flight: 0,
            http2: false,
            idle_since,
            in_body: false,
            write_blocked: false,
        }
    }

    #[test]
    fn a_connection_with_no_request_expires_a_deadline_after_it_opened() {
        let opened = tokio::time::Instant::now();
        let mut clock = HeadClock::new(LIMIT);
        let w = waiting(0, opened);
        assert_eq!(
            clock.check(w, opened + LIMIT / 2),
            HeadDeadline::At(opened + LIMIT)
        );
        assert_eq!(clock.check(w, opened + LIMIT), HeadDeadline::Expired);
    }

    #[test]
    fn a_later_request_moves_the_deadline_to_a_limit_after_its_end() {
        let opened = tokio::time::Instant::now();
        let mut clock = HeadClock::new(LIMIT);
        let ended = opened + Duration::from_secs(7);
        assert_eq!(
            clock.check(waiting(3, ended), opened + LIMIT),
            HeadDeadline::At(ended + LIMIT)
        );
        assert_eq!(
            clock.check(waiting(3, ended), ended + LIMIT),
            HeadDeadline::Expired
        );
    }

    #[test]
    fn a_request_in_flight_is_never_cut_off() {
        let opened = tokio::time::Instant::now();
        let mut clock = HeadClock::new(LIMIT);
        let late = opened + LIMIT * 5;
        let w = HeadWait {
            in_flight: 1,
            ..waiting(1, opened)
        };
        assert_eq!(clock.check(w, late), HeadDeadline::At(late + LIMIT));
    }

    #[test]
    fn http2_has_no_head_deadline_after_its_first_request() {
        let opened = tokio::time::Instant::now();
        let mut clock = HeadClock::new(LIMIT);
        let w = HeadWait {
            http2: true,
            ..waiting(1, opened)
        };
        assert_eq!(clock.check(w, opened + LIMIT * 3), HeadDeadline::Off);
        // Before its first request it has one, as every connection.
        let w = HeadWait {
            http2: true,
            ..waiting(0, opened)
        };
        assert_eq!(clock.check(w, opened + LIMIT), HeadDeadline::Expired);
    }

    #[test]
    fn a_body_still_coming_or_an_unread_response_restarts_the_clock_at_the_next_check() {
        let opened = tokio::time::Instant::now();
        for busy in [
            HeadWait {
                in_body: true,
                ..waiting(1, opened)
            },
            HeadWait {
                write_blocked: true,
                ..waiting(1, opened)
            },
        ] {
            let mut clock = HeadClock::new(LIMIT);
            let first = opened + LIMIT;
            assert_eq!(clock.check(busy, first), HeadDeadline::At(first + LIMIT));
            // Done now, but when within that deadline is not known: a whole deadline more.
            let second = first + LIMIT;
            assert_eq!(
                clock.check(waiting(1, opened), second),
                HeadDeadline::At(second + LIMIT)
            );
            assert_eq!(
                clock.check(waiting(1, opened), second + LIMIT),
                HeadDeadline::Expired
            );
        }
    }
}
