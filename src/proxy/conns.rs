//! weir's own keep-alive pool for plain HTTP/1.1 upstreams: per endpoint, a lock-free queue of
//! idle hyper connections (`SendRequest`). A connection goes back to the queue when the
//! response body it carried ends, on the task that read that body: no lock, no hashing, no task
//! spawned per request. TLS and HTTP/2 upstreams use hyper-util's pooled client instead.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::request::{Progress, RequestBody};
use super::retry;
use crate::metrics::UpstreamErrorKind;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, timed out, name not found).
    Connect(BoxError),
    /// The TLS handshake failed (an untrusted certificate, a wrong name, no common protocol).
    Tls(BoxError),
    /// The connection failed before a response head.
    Reset(BoxError),
    /// The upstream answered with a head that breaks HTTP's framing rules.
    Protocol(BoxError),
}

impl SendError {
    /// A failure after the connection was made: `protocol` when the upstream broke HTTP's
    /// framing (found in `e`'s chain), else `reset`.
    pub fn after_connect(e: BoxError) -> SendError {
        match error_kind(&*e) {
            Some(UpstreamErrorKind::Protocol) => SendError::Protocol(e),
            _ => SendError::Reset(e),
        }
    }
}

/// What the chain of causes of `e` says about who failed: `tls` for a rustls error (the
/// handshake), `protocol` for a response hyper could not parse or a body whose framing is
/// broken (an invalid chunk); `None` when it says neither.
pub fn error_kind(e: &(dyn std::error::Error + 'static)) -> Option<UpstreamErrorKind> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<rustls::Error>().is_some() {
            return Some(UpstreamErrorKind::Tls);
        }
        if let Some(h) = c.downcast_ref::<hyper::Error>()
            && (h.is_parse() || h.is_parse_too_large() || h.is_parse_status())
        {
            return Some(UpstreamErrorKind::Protocol);
        }
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) => {
                // hyper's body decoder reports a bad chunk as invalid input or data.
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                ) && io
                    .get_ref()
                    .is_none_or(|inner| inner.downcast_ref::<rustls::Error>().is_none())
                {
                    return Some(UpstreamErrorKind::Protocol);
                }
                // An io::Error's `source` skips the error it wraps (tokio-rustls wraps the
                // rustls error in one, hyper-rustls that one in another): look at it first.
                match io.get_ref() {
                    Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                    None => c.source(),
                }
            }
            None => c.source(),
        };
    }
    None
}

/// Why a response head that hyper accepted is still refused: framing that a reader after weir
/// could take differently (response splitting). The connection it came on is closed.
pub fn framing_problem(response: &Response<Incoming>) -> Option<&'static str> {
    let headers = response.headers();
    let chunked = headers.contains_key(http::header::TRANSFER_ENCODING);
    let length = headers.get(http::header::CONTENT_LENGTH);
    if chunked && length.is_some() {
        return Some("the upstream sent both Content-Length and Transfer-Encoding");
    }
    // RFC 9110 8.6 and 9112 6.1: a 204 has no body and carries neither field.
    if response.status() == http::StatusCode::NO_CONTENT
        && (chunked || length.is_some_and(|l| l.as_bytes() != b"0"))
    {
        return Some("the upstream sent a body length with a 204");
    }
    None
}

pub struct Http1Pool {
    /// Idle connections per endpoint (in the upstream's endpoint order).
    idle: Box<[Arc<ArrayQueue<Upstream>>]>,
    connect_timeout: Duration,
}

/// hyper's connection future, with upgrades (a 101 hands the socket to the tunnel): boxed once
/// per connection, since hyper's upgradeable connection type has no name outside hyper.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One upstream connection: the handle requests go in by, and the future that reads and writes
/// its socket. No task of its own: the request that holds it drives it (while it waits for the
/// response head, then from the response body's `poll_frame`), so a request costs no wake-up
/// between tasks on the upstream side.
pub struct Upstream {
    sender: SendRequest<RequestBody>,
    /// `None` once the connection has ended (closed, failed, or handed to an upgrade).
    driver: Option<Driver>,
}

impl Upstream {
    /// Whether a connection taken from the idle queue takes a request now. Polled once with a
    /// waker that does nothing (the request's own polls register the real one right after): a
    /// close or a reset that arrived while it idled ends it here, and hyper finishes the last
    /// exchange's bookkeeping and asks for the next request.
    fn ready_now(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        drive(&mut self.driver, &mut cx);
        self.driver.is_some()
            && !self.sender.is_closed()
            && matches!(self.sender.poll_ready(&mut cx), Poll::Ready(Ok(())))
    }

    /// Sends `req` and drives the connection until the response head (or the failure) arrives.
    async fn exchange(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<RequestBody>>> {
        // Out of tokio's budget: the response future is polled with a waker that does nothing
        // (below), so it must never return `Pending` only to be woken.
        let mut response =
            std::pin::pin!(tokio::task::unconstrained(self.sender.try_send_request(req)));
        let driver = &mut self.driver;
        let result = std::future::poll_fn(|cx| {
            // The connection first: it writes the request and reads the answer, which the
            // response future then finds. While the connection lives, only its polls here
            // can deliver the answer, and they registered `cx` for whatever they wait on; so
            // the response future gets a waker that does nothing, and hyper's hand-over of
            // the head does not wake this task a second time.
            drive(driver, cx);
            if driver.is_some() {
                response
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
            } else {
                response.as_mut().poll(cx)
            }
        })
        .await;
        if let Ok(r) = &result
            && r.status() == http::StatusCode::SWITCHING_PROTOCOLS
            && let Some(d) = self.driver.take()
        {
            // The connection now belongs to the tunnel: its future hands the socket over to
            // the upgrade and ends, on a task of its own.
            tokio::spawn(async move {
                if let Err(e) = d.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
        }
        result
    }
}

/// Polls a connection: writes what is queued, reads what arrived, and notices its end (then
/// `driver` becomes `None`; an ended connection future is never polled again).
fn drive(driver: &mut Option<Driver>, cx: &mut Context<'_>) {
    if let Some(d) = driver
        && let Poll::Ready(result) = d.as_mut().poll(cx)
    {
        if let Err(e) = result {
            tracing::debug!(error = %e, "upstream connection ended");
        }
        *driver = None;
    }
}

/// A connection lent to one request, returned to its endpoint's queue when the response body
/// ends (see `body::UpstreamBody`), which drives it until then.
pub struct Lease {
    upstream: Upstream,
    home: Arc<ArrayQueue<Upstream>>,
    /// The request body's progress, when it streamed: an upstream may answer before the body
    /// is sent, and the connection is reusable only once both directions are complete.
    request: Option<Arc<Progress>>,
}

impl Lease {
    /// Polls the connection (the response body is read through it); `false` once it has
    /// ended, when the body holds all that will come.
    pub fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        drive(&mut self.upstream.driver, cx);
        self.upstream.driver.is_some()
    }

    /// Puts the connection back for the next request; a closed one is dropped, and so is one
    /// past the queue's capacity (it closes instead of idling). One whose request body has not
    /// ended (the upstream answered early) would keep the next request waiting: it finishes
    /// sending that body on a task of its own, and closes.
    pub fn give_back(self) {
        let sent = self.request.as_ref().is_none_or(|p| p.ended());
        let Upstream { sender, driver } = self.upstream;
        let Some(driver) = driver else { return };
        if !sent {
            drop(sender);
            tokio::spawn(async move {
                if let Err(e) = driver.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
        } else if !sender.is_closed() {
            let _ = self.home.push(Upstream {
                sender,
                driver: Some(driver),
            });
        }
    }
}

impl Http1Pool {
    pub fn new(endpoints: usize, max_idle: usize, connect_timeout: Duration) -> Http1Pool {
        Http1Pool {
            idle: (0..endpoints)
                .map(|_| Arc::new(ArrayQueue::new(max_idle)))
                .collect(),
            connect_timeout,
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `endpoint` (at `authority`) on an idle
    /// connection, or a new one. A pooled connection that turns out closed before the request
    /// went out is replaced by a new one, transparently: the request was not sent.
    ///
    /// An upstream may also close an idle connection while the request is on its way (it
    /// answered the last one without `Connection: close` and closed anyway, or its keep-alive
    /// timeout fired): the request then meets the end of the connection and no answer. An
    /// idempotent request without a body is sent once more on a new connection, as Go's HTTP
    /// transport does on a reused connection; any other request fails as a reset (the route's
    /// `retries` decide about it). Such a resend takes nothing from the retry budget: the
    /// upstream never answered the first copy.
    pub async fn send(
        &self,
        endpoint: usize,
        authority: &Authority,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let home = &self.idle[endpoint];
        let progress = req.body().progress();
        let resendable =
            retry::idempotent(req.method()) && http_body::Body::is_end_stream(req.body());
        while let Some(mut upstream) = home.pop() {
            if !upstream.ready_now() {
                continue;
            }
            let again = resendable.then(|| copy_bodiless(&req));
            match upstream.exchange(req).await {
                Ok(response) => return Ok((response, self.lease(upstream, endpoint, progress))),
                Err(mut e) => match (e.take_message(), again) {
                    (Some(unsent), _) => req = unsent,
                    (None, Some(again)) if closed_unanswered(e.error()) => {
                        tracing::debug!(endpoint = %authority, error = %e.error(), "pooled connection closed under the request; sending it on a new one");
                        req = again;
                        break;
                    }
                    (None, _) => return Err(SendError::after_connect(e.into_error().into())),
                },
            }
        }
        let mut upstream = self.connect(authority).await?;
        match upstream.exchange(req).await {
            Ok(response) => Ok((response, self.lease(upstream, endpoint, progress))),
            Err(e) => Err(SendError::after_connect(e.into_error().into())),
        }
    }

    fn lease(
        &self,
        upstream: Upstream,
        endpoint: usize,
        request: Option<Arc<Progress>>,
    ) -> Lease {
        Lease {
            upstream,
            home: self.idle[endpoint].clone(),
            request,
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<Upstream, SendError> {
        let connect = async {
            let stream = connect_any(authority).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(SendError::Connect(
                    format!("no connection within {:?}", self.connect_timeout).into(),
                ));
            }
            Ok(Err(e)) => return Err(SendError::Connect(e.into())),
            Ok(Ok(s)) => s,
        };
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        Ok(Upstream {
            sender,
            driver: Some(Box::pin(connection.with_upgrades())),
        })
    }
}

/// A copy of a request without a body, to send again.
fn copy_bodiless(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// Whether a request sent on a reused connection met the connection's end with no answer: the
/// upstream closed it (end of stream, reset, broken pipe) rather than answered badly.
fn closed_unanswered(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        cause = c.source();
    }
    false
}

/// A connection to `authority`: its IP literal, or each address its name resolves to, in order,
/// until one accepts (`localhost` may list `::1` before `127.0.0.1`).
async fn connect_any(authority: &Authority) -> std::io::Result<TcpStream> {
    if let Ok(address) = authority.as_str().parse::<SocketAddr>() {
        return TcpStream::connect(address).await;
    }
    let mut last = None;
    for address in tokio::net::lookup_host(authority.as_str()).await? {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{authority}` resolves to no address"),
        )
    }))
}
