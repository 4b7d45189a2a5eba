//! weir's own keep-alive pool for plain HTTP/1.1 upstreams: per endpoint, lock-free queues of
//! idle connections. A connection goes back to its queue when the response body it carried
//! ends, on the task that read that body: no lock, no hashing, no task spawned per request. TLS
//! and HTTP/2 upstreams use hyper-util's pooled client instead.
//!
//! A request without a body (and not asking for a tunnel) goes on a [`Wire`]: weir writes its
//! head as bytes and reads the response on the request's own task, with the strict codec of
//! `proxy::wire`; no task per connection, no channel between the request and its connection,
//! and the head written once serves a resend too. A request with a body, or an upgrade, goes on
//! a hyper connection (`SendRequest`), which streams the body while it reads the response.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crossbeam_queue::ArrayQueue;
use futures_util::future::Either;
use http::uri::Authority;
use http::{Method, Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::request::{self, Progress, RequestBody};
use super::wire::{self, Chunk, Chunked, Framing, WireError};
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
        if c.downcast_ref::<WireError>().is_some() {
            return Some(UpstreamErrorKind::Protocol);
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
    /// Idle hyper connections per endpoint (in the upstream's endpoint order).
    idle: Box<[Arc<ArrayQueue<SendRequest<RequestBody>>>]>,
    /// Idle wires per endpoint.
    wires: Box<[Arc<ArrayQueue<Box<Wire>>>]>,
    connect_timeout: Duration,
}

/// What an upstream answered, and on which kind of connection.
pub enum Answer {
    /// On a hyper connection (weir's own pool: with its lease) or hyper-util's client.
    Hyper(Response<Incoming>, Option<Lease>),
    /// On a wire; the body returns the wire to its pool when it ends.
    Wire(Response<WireBody>),
}

/// A connection lent to one request, returned to its endpoint's queue when the response body
/// ends (see `body::UpstreamBody`).
pub struct Lease {
    sender: SendRequest<RequestBody>,
    home: Arc<ArrayQueue<SendRequest<RequestBody>>>,
    /// The request body's progress, when it streamed: an upstream may answer before the body
    /// is sent, and the connection is reusable only once both directions are complete.
    request: Option<Arc<Progress>>,
}

impl Lease {
    /// Puts the connection back for the next request; a closed one is dropped, and so is one
    /// past the queue's capacity (it closes instead of idling), and one whose request body has
    /// not ended (the next request would wait behind it).
    pub fn give_back(self) {
        let sent = self.request.as_ref().is_none_or(|p| p.ended());
        if sent && !self.sender.is_closed() {
            let _ = self.home.push(self.sender);
        }
    }
}

impl Http1Pool {
    /// Drops every idle connection (hyper closes a connection whose sender is dropped).
    pub fn close_idle(&self) {
        for queue in self.idle.iter() {
            while queue.pop().is_some() {}
        }
        for queue in self.wires.iter() {
            while queue.pop().is_some() {}
        }
    }

    pub fn new(endpoints: usize, max_idle: usize, connect_timeout: Duration) -> Http1Pool {
        Http1Pool {
            idle: (0..endpoints)
                .map(|_| Arc::new(ArrayQueue::new(max_idle)))
                .collect(),
            wires: (0..endpoints)
                .map(|_| Arc::new(ArrayQueue::new(max_idle)))
                .collect(),
            connect_timeout,
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `endpoint` (at `authority`) on an idle
    /// connection, or a new one: a wire when the request has no body and asks for no tunnel
    /// (`tunnel`), else a hyper connection. A pooled connection that turns out closed before
    /// the request went out is replaced by a new one, transparently: the request was not sent.
    ///
    /// An upstream may also close an idle connection while the request is on its way (it
    /// answered the last one without `Connection: close` and closed anyway, or its keep-alive
    /// timeout fired): the request then meets the end of the connection and no answer. An
    /// idempotent request without a body is sent once more on a new connection, as Go's HTTP
    /// transport does on a reused connection; any other request fails as a reset (the route's
    /// `retries` decide about it). Such a resend takes nothing from the retry budget: the
    /// upstream never answered the first copy.
    ///
    /// Not an `async fn`: it hands back the chosen path's future itself, so the request is not
    /// moved into one more future on its way.
    pub fn send<'a>(
        &'a self,
        endpoint: usize,
        authority: &'a Authority,
        req: Request<RequestBody>,
        tunnel: bool,
    ) -> impl Future<Output = Result<Answer, SendError>> + Send + 'a {
        if !tunnel && req.method() != Method::CONNECT && http_body::Body::is_end_stream(req.body())
        {
            Either::Left(self.send_wire(endpoint, authority, req))
        } else {
            Either::Right(self.send_hyper(endpoint, authority, req))
        }
    }

    /// Not an `async fn` (nor is [`Self::send_hyper`]): an `async fn` keeps its request twice in
    /// its future, as the argument and as the local it is moved into, while an `async move`
    /// block works on the one it captured (see `proxy::handle`).
    #[allow(clippy::manual_async_fn)] // an `async fn` keeps the request twice (`proxy::handle`)
    fn send_wire<'a>(
        &'a self,
        endpoint: usize,
        authority: &'a Authority,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Result<Answer, SendError>> + Send + 'a {
        async move {
            let home = &self.wires[endpoint];
            let method = req.method();
            let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let mut head = match pop_open(home) {
                Some(mut wire) => {
                    wire.out.clear();
                    wire::encode_request(method, target, req.headers(), &mut wire.out);
                    match wire.exchange(method).await {
                        Ok(response) => return Ok(Answer::Wire(wire.respond(response, home))),
                        Err(Failure::Unanswered(e)) if request::idempotent(method) => {
                            tracing::debug!(endpoint = %authority, error = %e, "pooled connection closed under the request; sending it on a new one");
                            std::mem::take(&mut wire.out)
                        }
                        Err(failure) => return Err(failure.into()),
                    }
                }
                None => Vec::new(),
            };
            if head.is_empty() {
                wire::encode_request(method, target, req.headers(), &mut head);
            }
            let mut wire = Wire::new(self.dial(authority).await?, head);
            match wire.exchange(method).await {
                Ok(response) => Ok(Answer::Wire(wire.respond(response, home))),
                Err(failure) => Err(failure.into()),
            }
        }
    }

    #[allow(clippy::manual_async_fn)] // an `async fn` keeps the request twice (`proxy::handle`)
    fn send_hyper<'a>(
        &'a self,
        endpoint: usize,
        authority: &'a Authority,
        mut req: Request<RequestBody>,
    ) -> impl Future<Output = Result<Answer, SendError>> + Send + 'a {
        async move {
            let home = &self.idle[endpoint];
            let progress = req.body().progress();
            let resendable =
                request::idempotent(req.method()) && http_body::Body::is_end_stream(req.body());
            while let Some(mut sender) = home.pop() {
                if sender.is_closed() || sender.ready().await.is_err() {
                    continue;
                }
                let again = resendable.then(|| copy_bodiless(&req));
                match sender.try_send_request(req).await {
                    Ok(response) => {
                        let lease = self.lease(sender, endpoint, progress);
                        return Ok(Answer::Hyper(response, Some(lease)));
                    }
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
            let mut sender = self.connect(authority).await?;
            match sender.send_request(req).await {
                Ok(response) => {
                    let lease = self.lease(sender, endpoint, progress);
                    Ok(Answer::Hyper(response, Some(lease)))
                }
                Err(e) => Err(SendError::after_connect(e.into())),
            }
        }
    }

    fn lease(
        &self,
        sender: SendRequest<RequestBody>,
        endpoint: usize,
        request: Option<Arc<Progress>>,
    ) -> Lease {
        Lease {
            sender,
            home: self.idle[endpoint].clone(),
            request,
        }
    }

    /// A new TCP connection to `authority`, within the connect timeout.
    async fn dial(&self, authority: &Authority) -> Result<TcpStream, SendError> {
        let connect = async {
            let stream = connect_any(authority).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => Err(SendError::Connect(
                format!("no connection within {:?}", self.connect_timeout).into(),
            )),
            Ok(Err(e)) => Err(SendError::Connect(e.into())),
            Ok(Ok(s)) => Ok(s),
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<RequestBody>, SendError> {
        let stream = self.dial(authority).await?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// The first idle wire of `home` that is still open.
fn pop_open(home: &ArrayQueue<Box<Wire>>) -> Option<Box<Wire>> {
    while let Some(mut wire) = home.pop() {
        if wire.is_open() {
            return Some(wire);
        }
    }
    None
}

/// A plain HTTP/1.1 upstream connection that weir reads and writes itself: the socket, the
/// bytes read and not yet taken (`buf`, reused from response to response), and the last request
/// head written (`out`, reused, and what a resend writes again).
pub struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    out: Vec<u8>,
}

/// Room the read buffer keeps for the next read.
const READ_ROOM: usize = 4096;
/// What the read buffer grows by when it lacks that room.
const READ_GROWTH: usize = 16 * 1024;

/// Why a request on a wire got no response head.
enum Failure {
    /// The connection ended (closed, reset, broken pipe) before a byte of the response: the
    /// upstream may not have seen the request at all.
    Unanswered(io::Error),
    /// The connection failed after part of the response came.
    Reset(io::Error),
    /// The response broke HTTP/1.1's rules.
    Protocol(WireError),
}

impl From<Failure> for SendError {
    fn from(failure: Failure) -> SendError {
        match failure {
            Failure::Unanswered(e) | Failure::Reset(e) => SendError::Reset(e.into()),
            Failure::Protocol(e) => SendError::Protocol(e.into()),
        }
    }
}

impl Wire {
    /// Boxed once for its life: its pool's queue then holds a pointer per slot, and the
    /// queue's slots are allocated in full when the pool is made.
    fn new(stream: TcpStream, out: Vec<u8>) -> Box<Wire> {
        Box::new(Wire {
            stream,
            buf: BytesMut::with_capacity(READ_GROWTH),
            out,
        })
    }

    /// Whether an idle wire can carry a request: the upstream has not closed it, and sent
    /// nothing since its last response. It reads only when the socket reported readable, so an
    /// open idle connection costs no system call; unlike a poll, the read ignores the task's
    /// cooperative budget, which could otherwise answer "not ready" without looking.
    fn is_open(&mut self) -> bool {
        self.make_room();
        matches!(self.stream.try_read_buf(&mut self.buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < READ_ROOM {
            self.buf.reserve(READ_GROWTH);
        }
    }

    /// Reads what the socket has into `buf`: Ready(Ok(0)) at the connection's end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.make_room();
        pin!(self.stream.read_buf(&mut self.buf)).poll(cx)
    }

    /// Writes the request head in `out` and reads the response head.
    async fn exchange(&mut self, method: &Method) -> Result<wire::Head, Failure> {
        if let Err(e) = self.stream.write_all(&self.out).await {
            return Err(Failure::Unanswered(e));
        }
        let mut answered = false;
        loop {
            // A wire is idle only with an empty buffer: parse only once bytes came.
            if answered
                && let Some(head) =
                    wire::parse_response(&mut self.buf, method).map_err(Failure::Protocol)?
            {
                return Ok(head);
            }
            let read = std::future::poll_fn(|cx| self.poll_fill(cx)).await;
            match read {
                Ok(0) if answered => {
                    return Err(Failure::Reset(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection in the middle of the response head",
                    )));
                }
                Ok(0) => {
                    return Err(Failure::Unanswered(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before answering",
                    )));
                }
                Ok(_) => answered = true,
                Err(e) if answered => return Err(Failure::Reset(e)),
                Err(e) => return Err(Failure::Unanswered(e)),
            }
        }
    }

    /// The response for `head`, its body read from this wire, which goes back to `home` when
    /// the body ends (if the response leaves it reusable).
    fn respond(
        self: Box<Self>,
        head: wire::Head,
        home: &Arc<ArrayQueue<Box<Wire>>>,
    ) -> Response<WireBody> {
        let left = match head.framing {
            Framing::None | Framing::Length(0) => Left::Done,
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(Chunked::new()),
            Framing::Close => Left::Close,
        };
        let mut body = WireBody {
            wire: Some(self),
            left,
            reusable: head.reusable,
            home: home.clone(),
            fields: Some(head.fields),
        };
        if matches!(body.left, Left::Done) {
            body.end();
        }
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        if let Some(reason) = head.reason
            && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason)
        {
            response.extensions_mut().insert(reason);
        }
        response
    }
}

/// What is left of a response body on a wire.
enum Left {
    /// This many bytes (Content-Length).
    Length(u64),
    Chunked(Chunked),
    /// Whatever comes until the upstream closes the connection.
    Close,
    Done,
}

/// A response body read from a [`Wire`] on the task that polls it. At its end the wire goes
/// back to its pool when the response left it reusable and nothing follows the body on it;
/// dropped before its end, or failed, the wire closes.
pub struct WireBody {
    wire: Option<Box<Wire>>,
    left: Left,
    reusable: bool,
    home: Arc<ArrayQueue<Box<Wire>>>,
    /// The response head's fields as the upstream sent them, hop-by-hop ones included: the
    /// response's header map starts empty, and whoever takes the response puts them in it
    /// (`forward::with_fields_in_map`) or writes them out (`h1`).
    fields: Option<wire::Fields>,
}

impl WireBody {
    /// The head's fields, once.
    pub fn take_fields(&mut self) -> Option<wire::Fields> {
        self.fields.take()
    }

    /// The body is complete: the wire goes back, or closes.
    fn end(&mut self) {
        self.left = Left::Done;
        if let Some(wire) = self.wire.take()
            && self.reusable
            && wire.buf.is_empty()
        {
            let _ = self.home.push(wire);
        }
    }

    /// The wire failed under the body: it closes, and the body ends with `e`.
    fn fail(&mut self, e: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.wire = None;
        self.left = Left::Done;
        Poll::Ready(Some(Err(e)))
    }
}

impl http_body::Body for WireBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(wire) = this.wire.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = match &mut this.left {
                // A body that ended has given its wire back or closed it: not reached.
                Left::Done => return Poll::Ready(None),
                Left::Length(n) => (!wire.buf.is_empty()).then(|| {
                    let take =
                        usize::try_from(*n).map_or(wire.buf.len(), |n| n.min(wire.buf.len()));
                    *n -= take as u64;
                    Frame::data(wire.buf.split_to(take).freeze())
                }),
                Left::Chunked(chunked) => match chunked.decode(&mut wire.buf) {
                    Ok(Some(Chunk::Data(data))) => Some(Frame::data(data)),
                    Ok(Some(Chunk::Trailers(trailers))) => {
                        // The trailers are the body's last frame: the wire is reusable once the
                        // section's end came too.
                        if !matches!(chunked.decode(&mut wire.buf), Ok(Some(Chunk::End))) {
                            this.reusable = false;
                        }
                        this.end();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Some(Chunk::End)) => {
                        this.end();
                        return Poll::Ready(None);
                    }
                    Ok(None) => None,
                    Err(e) => return this.fail(e.into()),
                },
                Left::Close => {
                    (!wire.buf.is_empty()).then(|| Frame::data(wire.buf.split().freeze()))
                }
            };
            if let Some(frame) = frame {
                if matches!(this.left, Left::Length(0)) {
                    this.end();
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            match ready!(wire.poll_fill(cx)) {
                // A body until close is never reusable: `end` closes the wire.
                Ok(0) if matches!(this.left, Left::Close) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail(
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the upstream closed the connection before the end of the response body",
                        )
                        .into(),
                    );
                }
                Ok(_) => {}
                Err(e) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.left, Left::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Length(n) => SizeHint::with_exact(n),
            Left::Done => SizeHint::with_exact(0),
            Left::Chunked(_) | Left::Close => SizeHint::default(),
        }
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
