//! Forwarding one request to a backend: rewrite the URI to an endpoint, drop hop-by-hop headers,
//! set the `x-forwarded-*` headers, stream both bodies (and trailers) without buffering, pass
//! WebSocket upgrades through, and turn every failure into a response in one place.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::task::coop;

use super::body::{RequestBody, UpstreamBody};
use super::conns::{Answer, BoxError, SendError, framing_problem};
use super::head::Refusal;
use super::pool::UpstreamPool;
use super::request::{ClientFault, Progress};
use super::wire::{Fields, WireError, name_is};
use crate::metrics::UpstreamErrorKind;
use crate::observe::access::ResponseFlags;
use crate::observe::request_id::{self, RequestId};

use super::body::Inner as ProxyBody;

/// What a request knows about the connection it came on.
pub struct ConnInfo {
    pub client: SocketAddr,
    /// The client's IP as an `x-forwarded-for` element ([`forwarded_for`]), made once.
    pub forwarded_for: HeaderValue,
    pub listener: Arc<str>,
    /// `http` or `https`, for `x-forwarded-proto`.
    pub scheme: &'static str,
    /// The listener's `weir_client_errors_total` counters.
    pub client_errors: crate::metrics::ClientErrors,
    /// What the connection's response bodies report: progress (the write-stall timeout) and
    /// the client going away.
    pub delivery: Arc<super::body::Delivery>,
    /// The backends that served this connection, for the drain when one retires.
    pub served: super::drain::Served,
    /// The route deadline's timer, lent to each request.
    pub route_timer: RouteTimer,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Why weir answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("the request URI cannot be forwarded")]
    BadRequest,
    #[error("cannot connect to upstream `{upstream}`: {source}")]
    Connect {
        upstream: Arc<str>,
        source: BoxError,
    },
    #[error("TLS handshake with upstream `{upstream}` failed: {source}")]
    Tls {
        upstream: Arc<str>,
        source: BoxError,
    },
    #[error("upstream `{upstream}` failed before answering: {source}")]
    Reset {
        upstream: Arc<str>,
        source: BoxError,
    },
    #[error("upstream `{upstream}` broke HTTP's framing rules: {source}")]
    Protocol {
        upstream: Arc<str>,
        source: BoxError,
    },
    #[error("upstream `{upstream}` did not answer within the route timeout of {}", crate::observe::human::duration(*timeout))]
    Timeout {
        upstream: Arc<str>,
        timeout: Duration,
    },
    #[error("every endpoint of upstream `{upstream}` is ejected")]
    NoHealthyEndpoint { upstream: Arc<str> },
    #[error("the request head is refused: {0}")]
    Refused(Refusal),
    #[error("upstream `{upstream}` answered the upgrade with an invalid 101: {reason}")]
    BadUpgrade {
        upstream: Arc<str>,
        reason: &'static str,
    },
    #[error("the client's request body failed: {0}")]
    ClientBody(BoxError),
    #[error("the client went away before its request body ended: {0}")]
    ClientGone(BoxError),
    #[error("the client did not send its request body within the route timeout")]
    ClientTimeout,
}

/// Who failed, in the words of `weir_upstream_errors_total{kind}` and the logs.
impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest | ProxyError::ClientBody(_) | ProxyError::ClientGone(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::Refused(r) => r.status(),
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoHealthyEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. }
            | ProxyError::Tls { .. }
            | ProxyError::Reset { .. }
            | ProxyError::Protocol { .. }
            | ProxyError::BadUpgrade { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The access log's response flag: why weir answered itself (docs/OPERATIONS.md).
    pub fn flags(&self) -> ResponseFlags {
        match self {
            ProxyError::NoRoute => ResponseFlags::NO_ROUTE,
            ProxyError::NoHealthyEndpoint { .. } => ResponseFlags::NO_HEALTHY_ENDPOINT,
            ProxyError::Connect { .. } | ProxyError::Tls { .. } => {
                ResponseFlags::UPSTREAM_CONNECT_FAILURE
            }
            ProxyError::Timeout { .. } => ResponseFlags::UPSTREAM_TIMEOUT,
            ProxyError::Reset { .. } => ResponseFlags::UPSTREAM_RESET,
            ProxyError::Protocol { .. } | ProxyError::BadUpgrade { .. } => {
                ResponseFlags::UPSTREAM_PROTOCOL_ERROR
            }
            ProxyError::BadRequest | ProxyError::Refused(_) | ProxyError::ClientBody(_) => {
                ResponseFlags::CLIENT_PROTOCOL_ERROR
            }
            ProxyError::ClientGone(_) => ResponseFlags::CLIENT_CLOSED,
            ProxyError::ClientTimeout => ResponseFlags::CLIENT_STALLED,
        }
    }

    /// The client error kind when the client is the cause, else `None`.
    pub fn client_kind(&self) -> Option<crate::metrics::ClientErrorKind> {
        use crate::metrics::ClientErrorKind;
        match self {
            ProxyError::BadRequest | ProxyError::Refused(_) => Some(ClientErrorKind::Framing),
            ProxyError::ClientBody(_) => Some(ClientErrorKind::Body),
            ProxyError::ClientGone(_) => Some(ClientErrorKind::Closed),
            ProxyError::ClientTimeout => Some(ClientErrorKind::Timeout),
            _ => None,
        }
    }

    /// The upstream error kind, or `None` when the client or the config is the cause.
    pub fn upstream_kind(&self) -> Option<UpstreamErrorKind> {
        match self {
            ProxyError::NoRoute
            | ProxyError::BadRequest
            | ProxyError::Refused(_)
            | ProxyError::ClientBody(_)
            | ProxyError::ClientGone(_)
            | ProxyError::ClientTimeout
            | ProxyError::NoHealthyEndpoint { .. } => None,
            ProxyError::Connect { .. } => Some(UpstreamErrorKind::Connect),
            ProxyError::Tls { .. } => Some(UpstreamErrorKind::Tls),
            ProxyError::Reset { .. } => Some(UpstreamErrorKind::Reset),
            ProxyError::Protocol { .. } | ProxyError::BadUpgrade { .. } => {
                Some(UpstreamErrorKind::Protocol)
            }
            ProxyError::Timeout { .. } => Some(UpstreamErrorKind::Timeout),
        }
    }
}

/// Whether a request is gRPC (`content-type: application/grpc` or `application/grpc+...`).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The client's deadline from a `grpc-timeout` header (`<1-8 digits><H|M|S|m|u|n>`).
pub fn grpc_timeout<B>(req: &Request<B>) -> Option<Duration> {
    let v = req.headers().get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The one place where weir makes a response of its own. gRPC callers get what gRPC clients
/// understand: HTTP 200 with `grpc-status` and `grpc-message` in a trailers-only response. The
/// request's ID goes back in `x-request-id` and in the text (the body, or the `grpc-message`), so
/// a user who pastes the error hands over what finds it in the access log and the upstream's
/// logs. Failure path only: the text is formatted here.
pub fn error_response(err: &ProxyError, grpc: bool, id: &RequestId) -> Response<ProxyBody> {
    if grpc {
        let (code, message) = match err {
            ProxyError::NoRoute => ("12", "weir: no route matches this request"),
            ProxyError::BadRequest => ("13", "weir: the request cannot be forwarded"),
            ProxyError::Refused(_) => ("13", "weir: the request head is refused"),
            ProxyError::ClientBody(_) | ProxyError::ClientGone(_) | ProxyError::ClientTimeout => {
                ("13", "weir: the request body could not be read")
            }
            ProxyError::BadUpgrade { .. } => ("14", "weir: the upstream broke the upgrade"),
            ProxyError::NoHealthyEndpoint { .. } => {
                ("14", "weir: no healthy endpoint in the upstream")
            }
            ProxyError::Connect { .. } => ("14", "weir: cannot connect to the upstream"),
            ProxyError::Tls { .. } => ("14", "weir: the TLS handshake with the upstream failed"),
            ProxyError::Reset { .. } => ("14", "weir: the upstream closed the connection"),
            ProxyError::Protocol { .. } => ("14", "weir: the upstream's answer was malformed"),
            ProxyError::Timeout { .. } => ("4", "weir: the upstream did not answer in time"),
        };
        let mut response = Response::new(ProxyBody::Local(Full::new(Bytes::new())));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static(code));
        h.insert("grpc-message", grpc_message(message, id));
        h.insert(&request_id::HEADER, id.header_value().clone());
        return response;
    }
    let body: &'static str = match err {
        ProxyError::NoRoute => "weir: no route matches this request\n",
        ProxyError::BadRequest => "weir: the request URI cannot be forwarded\n",
        ProxyError::Refused(r) => r.text(),
        ProxyError::ClientBody(_) | ProxyError::ClientGone(_) | ProxyError::ClientTimeout => {
            "weir: the request body could not be read\n"
        }
        ProxyError::BadUpgrade { .. } => "weir: the upstream broke the protocol upgrade\n",
        ProxyError::NoHealthyEndpoint { .. } => "weir: no healthy endpoint in the upstream\n",
        ProxyError::Connect { .. } => "weir: cannot connect to the upstream\n",
        ProxyError::Tls { .. } => "weir: the TLS handshake with the upstream failed\n",
        ProxyError::Reset { .. } => "weir: the upstream closed the connection\n",
        ProxyError::Protocol { .. } => "weir: the upstream's answer was malformed\n",
        ProxyError::Timeout { .. } => "weir: the upstream did not answer in time\n",
    };
    let text = format!("{} (request ID {id})\n", body.trim_end());
    let mut response = Response::new(ProxyBody::Local(Full::new(Bytes::from(text))));
    *response.status_mut() = err.status();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(&request_id::HEADER, id.header_value().clone());
    response
}

/// `grpc-message`: `message (request ID ID)`, percent-encoded as gRPC asks (every byte outside
/// printable ASCII, and `%` itself; a valid ID may hold `%`).
fn grpc_message(message: &str, id: &RequestId) -> HeaderValue {
    use std::fmt::Write;
    let mut text = String::with_capacity(message.len() + id.as_str().len() + 16);
    text.push_str(message);
    text.push_str(" (request ID ");
    for b in id.as_str().bytes() {
        if b == b'%' || !(0x20..=0x7e).contains(&b) {
            let _ = write!(text, "%{b:02X}");
        } else {
            text.push(char::from(b));
        }
    }
    text.push(')');
    let mut value = HeaderValue::from_str(&text).expect("printable ASCII after encoding");
    // Never indexed over HTTP/2, as the ID's own header (`observe::request_id`): new every time.
    value.set_sensitive(true);
    value
}

/// Sends `req` to endpoint `endpoint` of `pool` and returns the upstream's response head; the
/// body streams on. `downstream` is the client's side of a WebSocket upgrade, tunnelled to the
/// upstream's when it switches protocols. The caller bounds the wait with the route deadline.
///
/// Not an `async fn` (nor is [`try_endpoint`]): the request is kept once in its future (see
/// `proxy::handle`).
#[allow(clippy::manual_async_fn)] // an `async fn` keeps the request twice (`proxy::handle`)
pub fn send(
    pool: &UpstreamPool,
    endpoint: usize,
    mut req: Request<RequestBody>,
    downstream: Option<hyper::upgrade::OnUpgrade>,
) -> impl Future<Output = Result<Response<UpstreamBody>, ProxyError>> + Send + '_ {
    async move {
        if pool.version == Version::HTTP_11 {
            frame_as_chunked(&mut req);
        }
        // What the 101 must answer, for an upgrade weir tunnels.
        let asked = downstream.as_ref().map(|_| Upgrade::asked(req.headers()));
        if pool.origin_form() {
            set_origin_form(&mut req, pool.endpoint(endpoint))?;
        } else {
            set_target(
                &mut req,
                pool.scheme.clone(),
                pool.endpoint(endpoint).clone(),
                pool.version,
            )?;
        }
        let upstream = || pool.name.clone();
        let (mut response, lease) = match pool.send(endpoint, req, downstream.is_some()).await {
            Err(e) => return Err(send_failed(e, upstream())),
            // A wire's response head passed `proxy::wire`'s framing rules already, and a wire never
            // carries an upgrade. Its fields stay as they came, in the body, hop-by-hop ones too:
            // `proxy::handle` puts them in the map (`forward::with_fields_in_map`) or leaves them for
            // weir's own HTTP/1.1 server side to write (`h1`), which drops the same ones.
            Ok(Answer::Wire(response)) => return Ok(response.map(UpstreamBody::Wire)),
            Ok(Answer::Hyper(response, lease)) => (response, lease),
        };
        // Dropped with its lease, the connection closes: what follows on it cannot be trusted.
        if let Some(why) = framing_problem(&response) {
            return Err(ProxyError::Protocol {
                upstream: upstream(),
                source: why.into(),
            });
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let checked = match &asked {
                Some(asked) => asked.check(response.headers()),
                None => Err("no upgrade was asked for"),
            };
            if let Err(reason) = checked {
                return Err(ProxyError::BadUpgrade {
                    upstream: upstream(),
                    reason,
                });
            }
        }
        match downstream {
            Some(downstream) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                tunnel(
                    downstream,
                    hyper::upgrade::on(&mut response),
                    pool.name.clone(),
                );
                // The connection now carries the tunnel; it never goes back to the pool.
                return Ok(response.map(|b| UpstreamBody::new(b, None)));
            }
            _ => strip_hop_by_hop(response.headers_mut(), false),
        }
        Ok(response.map(|b| UpstreamBody::new(b, lease)))
    }
}

/// What a failed [`send`] means for the request, naming the upstream.
fn send_failed(e: SendError, upstream: Arc<str>) -> ProxyError {
    match e {
        SendError::Connect(source) => ProxyError::Connect { upstream, source },
        SendError::Tls(source) => ProxyError::Tls { upstream, source },
        SendError::Reset(source) => ProxyError::Reset { upstream, source },
        SendError::Protocol(source) => ProxyError::Protocol { upstream, source },
    }
}

/// [`send`] within the route's `deadline` (past it: [`ProxyError::Timeout`] of `timeout`), timed
/// by `timer` (the client connection's, or one of the shadow copy's own). Real requests and
/// shadow copies both go through here; what the outcome means for the endpoint's outlier count
/// is the caller's business (real requests only: `proxy::exchange` for a try that got no
/// response, `ResponseBody` when a response ends).
#[allow(clippy::manual_async_fn)] // an `async fn` keeps the request twice (`proxy::handle`)
pub fn try_endpoint<'a>(
    pool: &'a UpstreamPool,
    endpoint: usize,
    req: Request<RequestBody>,
    downstream: Option<hyper::upgrade::OnUpgrade>,
    (deadline, timer): (tokio::time::Instant, &'a RouteTimer),
    timeout: Duration,
) -> impl Future<Output = Result<Response<UpstreamBody>, ProxyError>> + Send + 'a {
    async move {
        let progress = req.body().progress();
        // Pinned where it is made: `within` takes it by reference, so the large future is not moved.
        let send = std::pin::pin!(send(pool, endpoint, req, downstream));
        timer
            .within(deadline, send)
            .await
            .unwrap_or_else(|Elapsed| {
                Err(ProxyError::Timeout {
                    upstream: pool.name.clone(),
                    timeout,
                })
            })
            .map_err(|e| blame(e, progress.as_deref()))
    }
}

/// The timer of the route deadline, one per client connection, lent to each of its requests in
/// turn.
///
/// A tokio `Sleep` made for each request costs a handle lookup and an insertion into the timer
/// wheel and a removal from it, each under the wheel's lock. A connection's requests come one
/// after the other (HTTP/1.1) and each deadline lies after the one before, so while the timer has
/// not fired, resetting it only moves its expiry later, which tokio does with one
/// compare-and-swap. The wheel's lock is taken again when the timer is first set, when its old
/// expiry comes due while the connection is busy (tokio files it again, once per route timeout),
/// when a request comes after it fired (the connection was idle a whole route timeout; the one
/// wake-up the firing costs finds nothing to do), or when a deadline moves earlier. Requests
/// that overlap (the streams of one HTTP/2 connection) find the timer lent out and make their
/// own; the one given back last is kept. The idle timer holds the waker of the last request
/// that polled it until it fires or is polled again (on HTTP/2, a finished stream's task).
pub struct RouteTimer {
    /// A lock-free queue of one: taking and giving back are a few atomic operations, without a
    /// lock or `unsafe` code.
    idle: ArrayQueue<Pin<Box<tokio::time::Sleep>>>,
}

impl Default for RouteTimer {
    fn default() -> Self {
        RouteTimer {
            idle: ArrayQueue::new(1),
        }
    }
}

/// The deadline came before the answer.
pub struct Elapsed;

impl RouteTimer {
    /// `future`'s output, or [`Elapsed`] once `deadline` is past. As `tokio::time::timeout_at`:
    /// the future is polled first, and the timer is polled even when the future used up the
    /// task's cooperative budget.
    pub async fn within<F: Future>(
        &self,
        deadline: tokio::time::Instant,
        mut future: Pin<&mut F>,
    ) -> Result<F::Output, Elapsed> {
        let mut lent = Lent {
            timer: Some(match self.idle.pop() {
                Some(mut t) => {
                    t.as_mut().reset(deadline);
                    t
                }
                None => Box::pin(tokio::time::sleep_until(deadline)),
            }),
            home: self,
        };
        std::future::poll_fn(|cx| {
            let had_budget = coop::has_budget_remaining();
            if let Poll::Ready(v) = future.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            let timer = lent.timer.as_mut().expect("lent until dropped").as_mut();
            let fired = if had_budget && !coop::has_budget_remaining() {
                std::pin::pin!(coop::unconstrained(timer)).poll(cx)
            } else {
                timer.poll(cx)
            };
            fired.map(|()| Err(Elapsed))
        })
        .await
    }
}

/// A timer out of its [`RouteTimer`], given back when the request is done with it (answered,
/// timed out, or dropped with the client).
struct Lent<'a> {
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    home: &'a RouteTimer,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            // An overlapping request's timer given back first is dropped.
            self.home.idle.force_push(timer);
        }
    }
}

/// A try that failed while the client's body was broken, gone, or stalled (weir waiting for
/// the client's bytes when the deadline came) failed by the client's fault.
fn blame(e: ProxyError, progress: Option<&Progress>) -> ProxyError {
    let fault = progress.and_then(Progress::fault);
    match (e, fault) {
        // The client's broken body shows up in the send's error as a reset or as broken
        // framing (an invalid chunk), whichever hyper saw first.
        (
            ProxyError::Reset { source, .. } | ProxyError::Protocol { source, .. },
            Some(ClientFault::Broken),
        ) => ProxyError::ClientBody(source),
        (
            ProxyError::Reset { source, .. } | ProxyError::Protocol { source, .. },
            Some(ClientFault::Gone),
        ) => ProxyError::ClientGone(source),
        (ProxyError::Timeout { .. }, Some(_)) => ProxyError::ClientTimeout,
        (e, _) => e,
    }
}

/// A body of unknown length (the client's chunked body, whatever its method) goes to an
/// HTTP/1.1 upstream chunked: hyper would otherwise send a GET's body as no body at all.
fn frame_as_chunked(req: &mut Request<RequestBody>) {
    use http_body::Body;
    let body = req.body();
    if !body.is_end_stream()
        && body.size_hint().exact().is_none()
        && !req.headers().contains_key(header::CONTENT_LENGTH)
    {
        req.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
}

/// The protocols a tunnelled request asked for, and its WebSocket key, to check the 101 with.
struct Upgrade {
    protocols: HeaderValue,
    key: Option<HeaderValue>,
}

impl Upgrade {
    fn asked(headers: &HeaderMap) -> Upgrade {
        Upgrade {
            protocols: headers
                .get(header::UPGRADE)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("")),
            key: headers.get(header::SEC_WEBSOCKET_KEY).cloned(),
        }
    }

    /// A 101 must switch to one protocol that was asked for, say so in `Connection`, and, for
    /// WebSocket, carry the `Sec-WebSocket-Accept` that matches the client's key (RFC 6455).
    fn check(&self, response: &HeaderMap) -> Result<(), &'static str> {
        if !connection_has_token(response, "upgrade") {
            return Err("no `Connection: upgrade`");
        }
        let chosen = match response.get(header::UPGRADE).map(super::head::protocols) {
            Some(mut p) => match (p.next(), p.next()) {
                (Some(one), None) => one,
                _ => return Err("the Upgrade header names no single protocol"),
            },
            None => return Err("no Upgrade header"),
        };
        if !super::head::protocols(&self.protocols).any(|p| p.eq_ignore_ascii_case(chosen)) {
            return Err("a protocol the client did not ask for");
        }
        if chosen.eq_ignore_ascii_case("websocket") {
            let expected = self.key.as_ref().map(|k| websocket_accept(k.as_bytes()));
            let got = response.get(header::SEC_WEBSOCKET_ACCEPT);
            match (expected, got) {
                (Some(e), Some(g)) if g.as_bytes() == e.as_bytes() => {}
                _ => return Err("a Sec-WebSocket-Accept that does not match the key"),
            }
        }
        Ok(())
    }
}

/// `Sec-WebSocket-Accept` for a key: base64 of SHA-1 of the key and the RFC 6455 GUID.
fn websocket_accept(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    base64(ctx.finish().as_ref())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A copy of a prepared request head, for a second try or a shadow copy. Extensions (hyper's
/// upgrade handle among them) stay with the original.
pub fn copy_head(parts: &Parts) -> Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

/// Copies bytes both ways between an upgraded client connection and an upgraded upstream one
/// (WebSocket). Runs on its own task; ends when either side closes.
fn tunnel(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    name: Arc<str>,
) {
    tokio::spawn(async move {
        match tokio::try_join!(downstream, upstream) {
            Ok((d, u)) => {
                let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                if let Err(e) = tokio::io::copy_bidirectional(&mut d, &mut u).await {
                    tracing::debug!(upstream = &*name, error = %e, "upgraded connection ended");
                }
            }
            Err(e) => tracing::debug!(upstream = &*name, error = %e, "upgrade failed"),
        }
    });
}

/// Whether the request asks for a protocol upgrade (WebSocket), which HTTP/1.1 upstreams get.
pub fn is_upgrade(parts: &Parts) -> bool {
    parts.version == Version::HTTP_11
        && parts.headers.contains_key(header::UPGRADE)
        && connection_has_token(&parts.headers, "upgrade")
}

/// Whether every protocol the request's `Upgrade` names is one the route tunnels.
pub fn upgrade_allowed(parts: &Parts, allowed: &[Box<str>]) -> bool {
    let mut asked = parts
        .headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(super::head::protocols)
        .peekable();
    asked.peek().is_some() && asked.all(|p| allowed.iter().any(|a| a.eq_ignore_ascii_case(p)))
}

fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What `Connection` can never name away: the authority and the body's length.
static END_TO_END: [HeaderName; 2] = [header::HOST, header::CONTENT_LENGTH];

/// Drops hop-by-hop headers, those named in `Connection` included (but never `Host` or
/// `Content-Length`, which say what the request is and where it ends). `TE: trailers` is end to end
/// in practice (gRPC needs it) and stays; `keep_upgrade` keeps `Upgrade` and `Connection:
/// upgrade` for a WebSocket handshake.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: a head usually carries no hop-by-hop field but
    // `Connection`, and each removal hashes its name whether the field is there or not.
    let (mut connection, mut other) = (false, false);
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if is_hop_by_hop(name) {
            other = true;
        }
    }
    if connection {
        // Usually one value (`keep-alive`, `close`), held without a list.
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let rest: Vec<HeaderValue> = values.cloned().collect();
        for value in first.iter().chain(&rest) {
            for name in value.to_str().unwrap_or("").split(',') {
                let name = name.trim();
                let kept = (keep_upgrade && name.eq_ignore_ascii_case("upgrade"))
                    || END_TO_END
                        .iter()
                        .any(|h| name.eq_ignore_ascii_case(h.as_str()));
                // `Keep-Alive`, when present, goes below with the other hop-by-hop fields.
                if !name.is_empty() && !kept && !name.eq_ignore_ascii_case(KEEP_ALIVE.as_str()) {
                    headers.remove(name);
                }
            }
        }
        headers.remove(header::CONNECTION);
    }
    if other {
        // Rare (a client sending `Keep-Alive`, `TE: gzip`...): the names are gathered first,
        // as a map cannot lose fields while its names are walked.
        let dropped: Vec<HeaderName> = headers
            .keys()
            .filter(|n| {
                let bytes = n.as_str().as_bytes();
                hop_by_hop_name(bytes) && !(keep_upgrade && bytes == b"upgrade")
            })
            .cloned()
            .collect();
        for name in dropped {
            headers.remove(name);
        }
        if let Some(te) = headers.get(header::TE)
            && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
        {
            headers.remove(header::TE);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Puts a wire response's fields into its header map, less the hop-by-hop ones, as hyper's
/// responses have them: for every taker but weir's own HTTP/1.1 server side, which writes them
/// as they came (`h1`, with the same rules).
pub fn with_fields_in_map(response: &mut Response<UpstreamBody>) -> Result<(), WireError> {
    if let Some(fields) = response.body_mut().take_fields() {
        debug_assert!(response.headers().is_empty(), "a wire's map starts empty");
        *response.headers_mut() = fields_to_map(&fields)?;
    }
    Ok(())
}

/// An upstream's fields as a map, less the hop-by-hop ones: those [`HopByHop`] drops never go
/// in (what [`strip_hop_by_hop`] would take out of the whole map; the `upstream_response` fuzz
/// target and two unit tests hold the two to the same map).
pub fn fields_to_map(fields: &Fields) -> Result<HeaderMap, WireError> {
    let hop = HopByHop::of(fields);
    fields.to_map_without(|i, name| hop.drops(i, name))
}

/// [`strip_hop_by_hop`]'s rules (with `keep_upgrade` false) for an upstream's fields as they
/// came (`wire::Fields`), which weir's own HTTP/1.1 server side writes without putting them in a
/// map: [`HopByHop::drops`] says which of them the map would have lost. The `upstream_response`
/// fuzz target holds the two to the same result.
pub struct HopByHop {
    /// Bit `i`: the `Connection` fields name field `i` of the head (`keep-alive`, `Host` and
    /// `Content-Length` aside). A head has at most `wire::MAX_HEADERS` fields.
    named: u128,
    /// The first `TE` field says only `trailers`: every `TE` field stays.
    te_kept: bool,
}

const _: () = assert!(super::wire::MAX_HEADERS <= 128);

impl HopByHop {
    pub fn of(fields: &Fields) -> HopByHop {
        let mut hop = HopByHop {
            named: 0,
            te_kept: false,
        };
        let mut te_seen = false;
        for (name, value) in fields.iter() {
            if name_is(name, b"te") && !te_seen {
                te_seen = true;
                hop.te_kept = value.eq_ignore_ascii_case(b"trailers");
            } else if name_is(name, b"connection")
                // As `HeaderValue::to_str`: a value with other than visible ASCII names nothing.
                && value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
            {
                for listed in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if listed.is_empty()
                        || listed.eq_ignore_ascii_case(KEEP_ALIVE.as_str().as_bytes())
                        || END_TO_END
                            .iter()
                            .any(|h| listed.eq_ignore_ascii_case(h.as_str().as_bytes()))
                    {
                        continue;
                    }
                    // Marks the fields it names: no list of names is kept, however many a
                    // hostile upstream repeats (one pass over at most `MAX_HEADERS` names each).
                    for (i, (other, _)) in fields.iter().enumerate() {
                        if other.eq_ignore_ascii_case(listed) {
                            hop.named |= 1 << i;
                        }
                    }
                }
            }
        }
        hop
    }

    /// Whether field `index` of the head, named `name` (in lower case), goes no further than
    /// this hop.
    pub fn drops(&self, index: usize, name: &[u8]) -> bool {
        let listed = match name {
            b"connection" => true,
            b"te" => !self.te_kept,
            _ => hop_by_hop_name(name),
        };
        listed || self.named & (1 << index) != 0
    }
}

/// A hop-by-hop field other than `Connection`: one [`strip_hop_by_hop`] drops (`TE` only when
/// it says more than `trailers`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::TE || hop_by_hop_name(name.as_str().as_bytes())
}

/// The fields that go no further than one hop whatever they say, by name (in lower case): RFC
/// 9110's `Transfer-Encoding` and `Upgrade` (7.6.1), the proxy authentication fields (11.7), and
/// the `Keep-Alive` and `Proxy-Connection` of older clients. `Connection` and `TE` are judged
/// by their values, by [`strip_hop_by_hop`] on a map and [`HopByHop`] on fields as they came;
/// both take the names from here.
fn hop_by_hop_name(name: &[u8]) -> bool {
    matches!(
        name,
        b"transfer-encoding"
            | b"upgrade"
            | b"proxy-authorization"
            | b"proxy-authenticate"
            | b"keep-alive"
            | b"proxy-connection"
    )
}

/// Applies the forwarding rules to the request head; `upgrade` keeps a WebSocket handshake's
/// `Upgrade` and `Connection` headers.
pub fn prepare(parts: &mut Parts, conn: &ConnInfo, upgrade: bool) -> Result<(), ProxyError> {
    // An HTTP/2 request names its host in the URI; an HTTP/1 upstream needs it in `Host`.
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
    {
        let value =
            HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::BadRequest)?;
        parts.headers.insert(header::HOST, value);
    }
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    append_forwarded_for(headers, &conn.forwarded_for);
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(conn.scheme));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(&X_FORWARDED_HOST, host);
    }
    Ok(())
}

fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    // The client's own value is made once per connection and shared (`ConnInfo::forwarded_for`);
    // a prior chain is copied once, with the client after it.
    let value = match headers.get(&X_FORWARDED_FOR) {
        None => client.clone(),
        Some(prior) => {
            let mut chain = Vec::with_capacity(prior.len() + 2 + client.len());
            chain.extend_from_slice(prior.as_bytes());
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(client.as_bytes());
            match HeaderValue::from_maybe_shared(Bytes::from(chain)) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
    };
    headers.insert(&X_FORWARDED_FOR, value);
}

/// `client`'s address as an `x-forwarded-for` element (the IP, no port).
pub fn forwarded_for(client: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&client.ip().to_string()).expect("an IP address is a valid value")
}

/// For weir's own HTTP/1.1 pool: the request line carries only path and query, and `Host` names
/// the client's host (or, when the client sent none, the endpoint).
fn set_origin_form(
    req: &mut Request<RequestBody>,
    endpoint: &http::uri::Authority,
) -> Result<(), ProxyError> {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    *req.version_mut() = Version::HTTP_11;
    if !req.headers().contains_key(header::HOST) {
        let host = HeaderValue::from_str(endpoint.as_str()).map_err(|_| ProxyError::BadRequest)?;
        req.headers_mut().insert(header::HOST, host);
    }
    Ok(())
}

/// Points the request at `endpoint`, keeping path and query, in the upstream's HTTP version.
fn set_target(
    req: &mut Request<RequestBody>,
    scheme: Scheme,
    endpoint: http::uri::Authority,
    version: Version,
) -> Result<(), ProxyError> {
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(endpoint);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest)?;
    *req.version_mut() = version;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_dropped() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic x"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
            ("trailer", "grpc-status"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "trailer"]);
    }

    #[test]
    fn each_hop_by_hop_field_goes_alone_and_connection_may_name_fields_over_several_lines() {
        let names = |h: &HeaderMap| h.keys().map(|k| k.as_str().to_owned()).collect::<Vec<_>>();
        // Each field alone, with no `Connection` to name it.
        for name in [
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "transfer-encoding",
            "upgrade",
            "te",
        ] {
            let mut h = headers(&[(name, "x"), ("x-kept", "yes")]);
            strip_hop_by_hop(&mut h, false);
            assert_eq!(names(&h), ["x-kept"], "{name}");
        }
        // `Connection` over two lines: the fields named on each go.
        let mut h = headers(&[
            ("connection", "x-one"),
            ("connection", "close, x-two"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["x-kept"]);
        // A head with no hop-by-hop field keeps every field, `TE: trailers` included.
        let mut h = headers(&[("host", "a"), ("te", "trailers"), ("x-kept", "yes")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["host", "te", "x-kept"]);
    }

    #[test]
    fn an_upstreams_map_is_built_without_the_fields_strip_would_take_out() {
        let heads = [
            // Every hop-by-hop name, in any case, and a field `Connection` names.
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n\
             X-Secret: 1\r\nServer: a\r\nTE: gzip\r\nUpgrade: h2c\r\nProxy-Connection: x\r\n\
             PROXY-AUTHENTICATE: Basic\r\nproxy-authorization: b\r\n\
             Transfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n",
            // `TE: trailers` first keeps every `TE`, unless `Connection` names it; `Connection`
            // never names away `Host` or `Content-Length`.
            "HTTP/1.1 200 OK\r\nTE: trailers\r\nte: gzip\r\nContent-Length: 0\r\n\
             connection: te, host, content-length\r\nHost: h\r\nX-Kept: yes\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTE: trailers\r\nte: gzip\r\nContent-Length: 0\r\nX-Kept: yes\r\n\r\n",
            // `Connection` over two lines, a named field sent twice.
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nconnection: CLOSE\r\nconnection: x-a\r\n\
             X-A: 1\r\nX-A: 2\r\nX-Kept: yes\r\n\r\n",
        ];
        for head in heads {
            let mut buf = bytes::BytesMut::from(head);
            let parsed = super::super::wire::parse_response(&mut buf, &http::Method::GET)
                .unwrap()
                .unwrap();
            let mut stripped = parsed.fields.to_map().unwrap();
            strip_hop_by_hop(&mut stripped, false);
            let built = fields_to_map(&parsed.fields).unwrap();
            assert_eq!(built, stripped, "{head}");
            assert!(built.contains_key("x-kept") && !built.contains_key("connection"));
        }
    }

    #[test]
    fn connection_never_names_away_host_or_content_length() {
        let mut h = headers(&[
            ("connection", "host, Content-Length, x-drop"),
            ("host", "app.example.com"),
            ("content-length", "3"),
            ("x-drop", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "host"]);
    }

    #[test]
    fn a_websocket_101_must_carry_the_accept_for_the_key() {
        // RFC 6455, section 1.3.
        assert_eq!(
            websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        let asked = Upgrade::asked(&headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]));
        let good = [
            ("connection", "Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ];
        assert_eq!(asked.check(&headers(&good)), Ok(()));
        for (i, wrong) in [
            ("connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("sec-websocket-accept", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ]
        .into_iter()
        .enumerate()
        {
            let mut response = good;
            response[i] = wrong;
            assert!(asked.check(&headers(&response)).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn te_trailers_and_a_websocket_upgrade_survive() {
        let mut h = headers(&[
            ("te", "trailers"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let mut h = headers(&[("x-forwarded-for", "10.0.0.1")]);
        let v4 = forwarded_for("127.0.0.1:5000".parse().unwrap());
        append_forwarded_for(&mut h, &v4);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &forwarded_for("[::1]:5000".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "::1");
        // A long chain gets the client appended too.
        let long = vec!["10.0.0.1"; 40].join(", ");
        let mut h = headers(&[("x-forwarded-for", &long)]);
        append_forwarded_for(&mut h, &v4);
        assert_eq!(h["x-forwarded-for"], format!("{long}, 127.0.0.1").as_str());
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let with = |v: &str| {
            let req = Request::builder()
                .header("grpc-timeout", v)
                .body(())
                .unwrap();
            grpc_timeout(&req)
        };
        assert_eq!(with("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(with("2M"), Some(Duration::from_secs(120)));
        assert_eq!(with("3S"), Some(Duration::from_secs(3)));
        assert_eq!(with("250m"), Some(Duration::from_millis(250)));
        assert_eq!(with("7u"), Some(Duration::from_micros(7)));
        assert_eq!(with("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(with(bad), None, "{bad}");
        }
    }

    /// Where the timer a `RouteTimer` keeps is, if it keeps one.
    fn kept(t: &RouteTimer) -> Option<*const tokio::time::Sleep> {
        let timer = t.idle.pop();
        let at = timer.as_ref().map(|s| &**s as *const tokio::time::Sleep);
        if let Some(timer) = timer {
            t.idle.force_push(timer);
        }
        at
    }

    #[tokio::test(start_paused = true)]
    async fn one_request_after_another_reuses_the_timer_and_each_gets_its_own_deadline() {
        use tokio::time::{Duration, Instant, sleep};
        let t = RouteTimer::default();
        assert_eq!(kept(&t), None);
        let start = Instant::now();
        let answer = std::pin::pin!(async {
            sleep(Duration::from_millis(1)).await;
            7
        });
        assert!(matches!(
            t.within(start + Duration::from_millis(100), answer).await,
            Ok(7)
        ));
        let first = kept(&t).expect("the timer goes back");
        // The timer is still set for +100 ms: a shorter deadline must hold all the same; and
        // after it fired, a later one.
        for ms in [5, 30] {
            let silent = std::pin::pin!(std::future::pending::<()>());
            let begun = Instant::now();
            let deadline = begun + Duration::from_millis(ms);
            assert!(t.within(deadline, silent).await.is_err(), "{ms} ms");
            assert_eq!(begun.elapsed(), Duration::from_millis(ms));
        }
        assert_eq!(kept(&t), Some(first), "one timer served the three requests");
    }

    #[tokio::test(start_paused = true)]
    async fn overlapping_requests_time_apart_and_a_dropped_one_gives_its_timer_back() {
        use tokio::time::{Duration, Instant, sleep};
        let t = RouteTimer::default();
        let start = Instant::now();
        let (a, b) = (
            std::pin::pin!(sleep(Duration::from_millis(50))),
            std::pin::pin!(std::future::pending::<()>()),
        );
        let (a, b) = tokio::join!(
            t.within(start + Duration::from_millis(100), a),
            t.within(start + Duration::from_millis(10), b),
        );
        assert!(
            a.is_ok() && b.is_err(),
            "each request kept its own deadline"
        );
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        assert!(kept(&t).is_some());
        let silent = std::pin::pin!(std::future::pending::<()>());
        let far = t.within(Instant::now() + Duration::from_secs(60), silent);
        tokio::select! {
            _ = far => unreachable!("the request never ends"),
            () = sleep(Duration::from_millis(1)) => {}
        }
        assert!(
            kept(&t).is_some(),
            "the client went away: the timer is back"
        );
    }

    #[tokio::test]
    async fn the_deadline_holds_over_a_future_that_spends_the_whole_budget() {
        use tokio::time::{Duration, Instant};
        let t = RouteTimer::default();
        let busy = std::pin::pin!(async {
            loop {
                tokio::task::consume_budget().await;
            }
        });
        let within = t.within(Instant::now() + Duration::from_millis(20), busy);
        let outcome = tokio::time::timeout(Duration::from_secs(10), within).await;
        assert!(
            matches!(outcome, Ok(Err(Elapsed))),
            "the route deadline fired"
        );
    }
}
