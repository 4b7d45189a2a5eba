//! Accepting connections on one listener and serving each with hyper: HTTP/1.1 and HTTP/2
//! prior knowledge (h2c) on the same port, keep-alive, the limits of the config, and graceful
//! shutdown when the server drains or the connection sits idle.
//!
//! Every connection that makes no progress ends by a documented limit: no first request
//! within `header_read_timeout` (whatever the protocol: a silent TCP connection, an HTTP/2
//! client that sends its preface and nothing else), no request in flight and none started for
//! `idle_timeout`, and, once weir asked it to close (idle or draining), not closed within
//! `header_read_timeout` with nothing in flight (an HTTP/2 client that ignores GOAWAY and the
//! PING after it). HTTP/2 connections are PINGed every quarter of `idle_timeout` and closed
//! when a PING is not answered within `header_read_timeout`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use tokio::io::{AsyncRead, AsyncWrite};

use super::body::{Delivery, ResponseBody, STALL_CHECKS, StallCheck};
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
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
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

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
async fn serve_request(
    conn: Arc<Connection>,
    mut req: http::Request<hyper::body::Incoming>,
) -> Response<Tracked> {
    let n = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
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
    response.map(|body| Tracked {
        body,
        _in_flight: in_flight,
    })
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / IDLE_CHECKS)
        .keep_alive_timeout(limits.header_read_timeout)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));

    let verdict = Arc::new(Verdict::default());
    let conn = Arc::new(Connection {
        snapshots: ctx.snapshots.clone(),
        info: ConnInfo {
            client: peer,
            listener: ctx.name.clone(),
            scheme,
            client_errors: ctx.metrics.client_errors.clone(),
            delivery: Arc::new(Delivery::new(ctx.metrics.client_errors.clone())),
        },
        requests: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        verdict: verdict.clone(),
    });
    let service_conn = conn.clone();
    let service = service_fn(move |req| {
        let conn = service_conn.clone();
        async move { Ok::<_, Infallible>(serve_request(conn, req).await) }
    });
    let io = Scan::new(io, verdict, limits.max_header_bytes);
    let serving = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(serving);
    let mut idle_check = tokio::time::interval(limits.idle_timeout / IDLE_CHECKS);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_seen, mut quiet_checks) = (0, 0);
    // A connection must start its first request within the head's deadline, whatever its
    // protocol; and, asked to close, must close within it once nothing is in flight.
    let first_request = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(first_request);
    let give_up = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(give_up);
    // nginx's `send_timeout`: a client that stops reading a response (a full socket, a zero
    // HTTP/2 window) would hold the upstream connection behind it for as long as it likes.
    let mut stall_check = tokio::time::interval(limits.write_stall_timeout / STALL_CHECKS);
    stall_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stall = StallCheck::default();
    let mut closing = false;
    let close = |serving: Pin<&mut _>, give_up: Pin<&mut tokio::time::Sleep>| {
        auto::UpgradeableConnection::graceful_shutdown(serving);
        give_up.reset(tokio::time::Instant::now() + limits.header_read_timeout);
    };
    if *ctx.shutdown.borrow() {
        close(serving.as_mut(), give_up.as_mut());
        closing = true;
    }
    loop {
        tokio::select! {
            result = serving.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = ctx.shutdown.changed(), if !closing => {
                // Finish the request in flight, then close (HTTP/2: GOAWAY).
                close(serving.as_mut(), give_up.as_mut());
                closing = true;
            }
            _ = stall_check.tick() => {
                if conn.info.delivery.stalled(&mut stall) {
                    tracing::debug!(client = %peer, timeout = %crate::observe::human::duration(limits.write_stall_timeout), "closing a connection whose client stopped reading");
                    break;
                }
            }
            _ = &mut give_up, if closing => {
                if conn.in_flight.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(client = %peer, "did not close when asked: closed");
                    break;
                }
                give_up.as_mut().reset(tokio::time::Instant::now() + limits.header_read_timeout);
            }
            _ = &mut first_request, if conn.requests.load(Ordering::Relaxed) == 0 => {
                if conn.requests.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(client = %peer, "no request within the header read timeout");
                    conn.info.client_errors.count(crate::metrics::ClientErrorKind::Timeout);
                    break;
                }
            }
            _ = idle_check.tick(), if !closing => {
                let busy = conn.in_flight.load(Ordering::Relaxed) != 0;
                let seen = conn.requests.load(Ordering::Relaxed);
                if seen != last_seen || busy {
                    (last_seen, quiet_checks) = (seen, 0);
                } else {
                    quiet_checks += 1;
                    if quiet_checks > IDLE_CHECKS {
                        close(serving.as_mut(), give_up.as_mut());
                        closing = true;
                    }
                }
            }
        }
    }
}
