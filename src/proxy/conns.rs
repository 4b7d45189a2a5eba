//! weir's own keep-alive pool for plain HTTP/1.1 upstreams: per endpoint, a lock-free queue of
//! idle hyper connections (`SendRequest`). A connection goes back to the queue when the
//! response body it carried ends, on the task that read that body: no lock, no hashing, no task
//! spawned per request. TLS and HTTP/2 upstreams use hyper-util's pooled client instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::request::{self, Progress, RequestBody};
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
    idle: Box<[Arc<ArrayQueue<SendRequest<RequestBody>>>]>,
    connect_timeout: Duration,
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
    }

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
            request::idempotent(req.method()) && http_body::Body::is_end_stream(req.body());
        while let Some(mut sender) = home.pop() {
            if sender.is_closed() || sender.ready().await.is_err() {
                continue;
            }
            let again = resendable.then(|| copy_bodiless(&req));
            match sender.try_send_request(req).await {
                Ok(response) => return Ok((response, self.lease(sender, endpoint, progress))),
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
            Ok(response) => Ok((response, self.lease(sender, endpoint, progress))),
            Err(e) => Err(SendError::after_connect(e.into())),
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

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<RequestBody>, SendError> {
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
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
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
