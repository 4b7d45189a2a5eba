//! weir's own server side for the plain HTTP/1.1 request: a head with no body, read, answered
//! and written by the connection's task itself, with hyper handed the connection for anything
//! else.
//!
//! hyper's HTTP/1 server was about a third of the user-space work of a proxied request (see
//! docs/PERFORMANCE.md): its dispatcher, its read buffer made again for each request, its
//! encoder. Most requests a proxy sees are the simplest kind: `GET` over HTTP/1.1 keep-alive with
//! no body. For those, [`serve`] parses the head with `httparse` from a buffer it keeps for the
//! connection's life, builds the `http::Request` with its field values pointing into that buffer,
//! and writes the response head and body itself into a second kept buffer (one write when the
//! body is ready with its head).
//!
//! Strictness comes by construction, not by a second parser of every framing rule: the first
//! head that is not of that simplest kind ([`Parsed::HandOff`]) ends the fast path, and hyper
//! serves the connection from there, starting with the bytes already read, exactly as it would
//! have served them from the start. That covers every head with a body or a framing question
//! (`Content-Length`, `Transfer-Encoding`), `Expect`, `Upgrade`, `CONNECT`, `TE`, a
//! `Connection` other than `keep-alive`, HTTP/1.0, HTTP/2's preface, more fields than
//! [`MAX_FIELDS`] or the listener's `max_headers`, and anything `httparse` or `http` refuses:
//! hyper answers those as it always did, and `proxy::framing` still follows the bytes beneath
//! both. A fast head cannot be ambiguous, since it has no framing at all: RFC 9112 (6.3, rule
//! 7) gives a request with neither field a body of length zero, and its next bytes are the next
//! head (pipelining included).
//!
//! The response is written by hyper's rules (`proto::h1::role` in hyper 1.x): the status line
//! with the upstream's reason phrase when it had one, the fields in the map's order (an answer
//! that came on weir's own upstream connection, `conns::Wire`, has its fields as the upstream
//! sent them, `wire::Fields`, not in a map: those go first, in their order, names in lower case
//! as hyper writes a map's, less the hop-by-hop ones `forward::HopByHop` names and those the
//! map sets, then the map's: the same head `forward::strip_hop_by_hop` and the map would give),
//! `Content-Length` from the body's exact size or `Transfer-Encoding: chunked` (sizes in
//! upper-case hex) when unknown, none of either for `HEAD`'s body, 204 and 304, a cached `Date`
//! when the response has none, the `Trailer` field but not the trailers (hyper sends them only
//! when asked by `TE: trailers`, which goes to hyper), `Connection: close` when the connection
//! is closing, every write flushed, and the body dropped as soon as it says it has ended, or
//! unpolled when it may not be sent. Two differences a client can see: a field with several
//! values goes one line per value (hyper joins `Connection`, `Transfer-Encoding` and
//! `Trailer` into one line; the meaning is the same, RFC 9110 5.3), and a body longer than its
//! `Content-Length` closes the connection (weir's upstream readers already refuse one). No
//! interim (1xx) response reaches this writer: `proxy::wire` skips them and `proxy::forward`
//! refuses a 101 it did not ask for.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::body::Delivery;
use super::forward::HopByHop;
use super::request::ClientBody;
use super::wire::Fields;

/// Header fields a fast head may have; a head with more goes to hyper, which applies the
/// listener's `max_headers` itself. The slots are not initialised per parse.
pub const MAX_FIELDS: usize = 64;

/// The connection's read buffer grows by this much when it has less room than [`MIN_ROOM`].
const READ_CHUNK: usize = 8 * 1024;
const MIN_ROOM: usize = 1024;

/// Body data is gathered with the head into one write up to this size; a larger frame is
/// written on its own.
const GATHER: usize = 16 * 1024;

/// HTTP/2's connection preface (RFC 9113, 3.4): an h2c client with prior knowledge.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `bytes` begin with HTTP/2's connection preface.
pub fn is_preface(bytes: &[u8]) -> bool {
    bytes.starts_with(PREFACE)
}

/// What [`Reader::parse`] found at the start of a connection's unread bytes.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made and moved once per head; a box would allocate
pub enum Parsed {
    /// Not a whole head yet, and within the limit: read more.
    Partial,
    /// A head the fast path serves; its bytes were taken from the buffer.
    Request(Request<()>),
    /// hyper serves the connection from here, starting with the buffer as it is.
    HandOff,
}

/// Reads request heads for one connection, keeping what can serve the next one: the field
/// positions of the last head, and the header map of the last response (cleared), which the
/// next request's fields go into, as hyper does, instead of a map made and grown per request.
pub struct Reader {
    max_head: usize,
    max_fields: usize,
    /// Where each field's name and value sit in the head: (name, length, value, length).
    at: Vec<(usize, usize, usize, usize)>,
    spare: Option<HeaderMap>,
    /// No head taken yet: only the connection's first bytes may be HTTP/2's preface.
    first: bool,
}

impl Reader {
    /// `max_head` is the listener's `max_header_bytes`, `max_fields` its `max_headers`.
    pub fn new(max_head: usize, max_fields: usize) -> Reader {
        Reader {
            max_head,
            max_fields: max_fields.min(MAX_FIELDS),
            at: Vec::new(),
            spare: None,
            first: true,
        }
    }

    /// Keeps `map`'s room for the next request's fields.
    pub fn recycle(&mut self, mut map: HeaderMap) {
        map.clear();
        self.spare = Some(map);
    }

    /// Reads one request head from the start of `buf` (see the module's documentation for which
    /// heads the fast path takes). On [`Parsed::Request`] the head's bytes are split off `buf`
    /// and the request's URI and field values point into them; otherwise `buf` is left as it
    /// was.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Parsed {
        if self.first && PREFACE.starts_with(&buf[..buf.len().min(PREFACE.len())]) {
            // HTTP/2's preface, or as much of it as came: hyper tells the two protocols apart.
            // Later on, `PRI` is an HTTP/1.1 head that `httparse` refuses (hyper too).
            return if buf.len() >= PREFACE.len() {
                Parsed::HandOff
            } else {
                Parsed::Partial
            };
        }
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut head = httparse::Request::new(&mut []);
        let len = match head.parse_with_uninit_headers(buf, &mut slots[..self.max_fields]) {
            Ok(httparse::Status::Complete(len)) if len <= self.max_head => len,
            Ok(httparse::Status::Partial) if buf.len() < self.max_head => return Parsed::Partial,
            _ => return Parsed::HandOff,
        };
        if head.version != Some(1) || !head.headers.iter().all(fast_field) {
            return Parsed::HandOff;
        }
        let (Some(method), Some(target)) = (head.method, head.path) else {
            return Parsed::HandOff;
        };
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Parsed::HandOff;
        };
        if method == Method::CONNECT {
            return Parsed::HandOff;
        }
        // Where each piece sits in the head, to point into it once it is split off.
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
        let target = at(target.as_bytes());
        self.at.clear();
        self.at.extend(head.headers.iter().map(|h| {
            let ((n, nl), (v, vl)) = (at(h.name.as_bytes()), at(h.value));
            (n, nl, v, vl)
        }));
        let bytes = buf.split_to(len).freeze();
        let headers = self.spare.take().unwrap_or_default();
        match build(&bytes, method, target, &self.at, headers) {
            Some(req) => {
                self.first = false;
                Parsed::Request(req)
            }
            None => {
                // `http` refused the target or a field that `httparse` let through: put the
                // bytes back for hyper (a rare path, so a copy is fine).
                let mut whole = BytesMut::with_capacity(bytes.len() + buf.len());
                whole.extend_from_slice(&bytes);
                whole.extend_from_slice(buf);
                *buf = whole;
                Parsed::HandOff
            }
        }
    }
}

/// Whether a field leaves the request on the fast path: nothing about a body, a tunnel, an
/// interim response, trailers or the connection's end.
fn fast_field(h: &httparse::Header<'_>) -> bool {
    let name = h.name.as_bytes();
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 => !is(b"te"),
        6 => !is(b"expect"),
        7 => !is(b"upgrade"),
        10 => !is(b"connection") || h.value.eq_ignore_ascii_case(b"keep-alive"),
        14 => !is(b"content-length") && !is(b"http2-settings"),
        17 => !is(b"transfer-encoding"),
        _ => true,
    }
}

fn build(
    head: &Bytes,
    method: Method,
    (t, tl): (usize, usize),
    fields: &[(usize, usize, usize, usize)],
    mut headers: HeaderMap,
) -> Option<Request<()>> {
    let uri = Uri::from_maybe_shared(head.slice(t..t + tl)).ok()?;
    headers.reserve(fields.len());
    for &(n, nl, v, vl) in fields {
        let name = HeaderName::from_bytes(&head[n..n + nl]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(v..v + vl)).ok()?;
        headers.append(name, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

/// How a fast connection ended.
pub enum Ended<I> {
    /// Closed, by the client, by weir after a `Connection: close`, or by an error.
    Closed(Option<io::Error>),
    /// hyper serves the rest: the connection, and the bytes read from it and not used.
    HandOff(I, Bytes),
}

/// Serves `io` on the fast path until it closes or a head needs hyper. `respond` answers one
/// request; `closing` says whether the connection has been asked to close (the server drains,
/// or it sat idle): then no new head is read and the response in progress says
/// `Connection: close`.
///
/// While a request is in flight the client's side is watched, as hyper does: bytes that come
/// (a pipelined head) are kept and answered in turn, and the client's end with nothing of it
/// left unread (or a read error) abandons the request, which is then counted as `closed`.
pub async fn serve<I, S, F, B>(
    io: I,
    max_head: usize,
    max_fields: usize,
    delivery: Arc<Delivery>,
    mut respond: S,
    closing: impl Fn() -> bool,
) -> Ended<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<ClientBody>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + UpstreamFields,
{
    let mut c = Conn {
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(1024),
        reader: Reader::new(max_head, max_fields),
        max_head,
        eof: false,
        delivery,
    };
    loop {
        let req = loop {
            match c.reader.parse(&mut c.buf) {
                Parsed::Request(req) => break req,
                Parsed::HandOff => return Ended::HandOff(c.io, c.buf.freeze()),
                Parsed::Partial => {}
            }
            c.make_room();
            let read = poll_fn(|cx| {
                if c.buf.is_empty() && closing() {
                    return Poll::Ready(Ok(0));
                }
                let read = c.io.read_buf(&mut c.buf);
                std::pin::pin!(read).poll(cx)
            })
            .await;
            match read {
                Ok(0) if c.buf.is_empty() => return Ended::Closed(None),
                // A head cut short: hyper says what it says of that.
                Ok(0) => return Ended::HandOff(c.io, c.buf.freeze()),
                Ok(_) => {}
                Err(e) => return Ended::Closed(Some(e)),
            }
        };
        let head_only = req.method() == Method::HEAD;
        let mut answer = std::pin::pin!(respond(req.map(|()| ClientBody::Empty)));
        let response = poll_fn(|cx| match answer.as_mut().poll(cx) {
            Poll::Ready(response) => Poll::Ready(Ok(response)),
            Poll::Pending => c.poll_gone(cx).map(Err),
        })
        .await;
        let response = match response {
            Ok(response) => response,
            Err(gone) => return Ended::Closed(gone),
        };
        match c.write_response(response, head_only, closing()).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = c.io.shutdown().await;
                return Ended::Closed(None);
            }
            Err(e) => return Ended::Closed(Some(e)),
        }
    }
}

/// A response head for `fields` (an upstream's, as it sent them) written both ways weir writes
/// one: from the fields as they came, and from the map `forward::with_fields_in_map` makes of them;
/// each with weir's `x-request-id` set over the upstream's. The lines of each, the status line
/// first and the rest ordered by name (a map keeps a name's values together), the `date` weir
/// makes left out (it may change between the two). For the tests and the `upstream_response` fuzz target: the two must agree.
#[doc(hidden)]
pub fn written_both_ways(
    status: StatusCode,
    fields: &Fields,
    length: Option<Option<u64>>,
    head_only: bool,
    closing: bool,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let id = HeaderValue::from_static("weir-id");
    let mapped = super::forward::fields_to_map(fields);
    // weir writes its own `date` last, when no upstream's passed.
    let ours = mapped
        .as_ref()
        .is_ok_and(|m| !m.contains_key(http::header::DATE));
    let written = |map: HeaderMap, fields: Option<&Fields>| {
        let mut r = Response::new(());
        *r.status_mut() = status;
        *r.headers_mut() = map;
        r.headers_mut()
            .insert(crate::observe::request_id::HEADER.clone(), id.clone());
        let (parts, ()) = r.into_parts();
        let mut out = Vec::new();
        let plan = encode_head(&mut out, &parts, fields, length, head_only, closing);
        let mut lines: Vec<Vec<u8>> = out
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .filter(|l| !l.is_empty())
            .collect();
        let status = lines.remove(0);
        if ours {
            lines.pop();
        }
        lines.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        lines.insert(0, status);
        lines.push(format!("{:?} last {}", plan.framing, plan.last).into_bytes());
        lines
    };
    let as_sent = written(HeaderMap::new(), Some(fields));
    let mapped = match mapped {
        Ok(map) => written(map, None),
        Err(e) => vec![format!("{e}").into_bytes()],
    };
    (as_sent, mapped)
}

fn name_of(line: &[u8]) -> &[u8] {
    line.split(|&b| b == b':').next().unwrap_or(line)
}

/// A response body that may carry its upstream's head fields as they came (`wire::Fields`,
/// left out of the response's map by `proxy::handle` for this writer): the head copies them,
/// less the hop-by-hop ones and those the map replaces.
pub trait UpstreamFields {
    fn take_fields(&mut self) -> Option<Fields>;
}

/// One fast connection: the client, the bytes read and not used yet, the bytes to write.
struct Conn<I> {
    io: I,
    buf: BytesMut,
    out: Vec<u8>,
    reader: Reader,
    max_head: usize,
    /// The client's side ended while bytes it sent before were still unread (pipelined heads,
    /// which are answered first, as hyper does).
    eof: bool,
    /// The connection's delivery record, for the write-stall timeout: a write that waits on the
    /// client counts as a response waiting on it.
    delivery: Arc<Delivery>,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<I> {
    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < MIN_ROOM {
            // Reclaims the buffer in place once the last request's field values are gone.
            self.buf.reserve(READ_CHUNK);
        }
    }

    /// Watches the client while a request is in flight: reads what it sends into the buffer
    /// (up to the head limit, then no more until the buffer is used), and is ready when the
    /// client's side ended (with the read error, if one) with nothing of it left unread.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Error>> {
        while !self.eof && self.buf.len() < self.max_head {
            self.make_room();
            let read = self.io.read_buf(&mut self.buf);
            match std::pin::pin!(read).poll(cx) {
                Poll::Ready(Ok(0)) if self.buf.is_empty() => return Poll::Ready(None),
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Some(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }

    /// Writes one response; `Ok(true)` when the connection stays open for the next request.
    async fn write_response<B: Body<Data = Bytes> + UpstreamFields>(
        &mut self,
        response: Response<B>,
        head_only: bool,
        closing: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        self.out.clear();
        let length = body_length(&body);
        let fields = body.take_fields();
        let plan = encode_head(
            &mut self.out,
            &parts,
            fields.as_ref(),
            length,
            head_only,
            closing,
        );
        self.reader.recycle(parts.headers);
        let complete = match (plan.framing, length) {
            // Nothing to send, or a body that may not be sent: dropped unpolled, as hyper does.
            (Framing::Length(0), _) | (_, None) => {
                drop(body);
                if plan.framing == Framing::Chunked {
                    self.out.extend_from_slice(b"0\r\n\r\n");
                }
                true
            }
            _ => self.write_body(body, &plan).await?,
        };
        self.send_out().await?;
        Ok(complete && !plan.last)
    }

    /// Streams `body` after the head in `out`; `Ok(false)` when it broke (an error, or not the
    /// length it announced), and the connection must close. Whatever is left to write stays in
    /// `out`; the body is dropped as soon as it ends.
    async fn write_body<B: Body<Data = Bytes>>(
        &mut self,
        body: B,
        plan: &Plan,
    ) -> io::Result<bool> {
        let mut body = std::pin::pin!(body);
        let mut left = match plan.framing {
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        };
        loop {
            let step = poll_fn(|cx| match body.as_mut().poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Step::Frame(frame)),
                // Bytes waiting: send them before waiting on the body.
                Poll::Pending if !self.out.is_empty() => Poll::Ready(Step::Flush),
                Poll::Pending => self.poll_gone(cx).map(Step::Gone),
            })
            .await;
            let frame = match step {
                Step::Flush => {
                    self.send_out().await?;
                    continue;
                }
                Step::Gone(e) => {
                    return Err(e.unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into()));
                }
                Step::Frame(None) => break,
                Step::Frame(Some(Ok(frame))) => frame,
                Step::Frame(Some(Err(_))) => return Ok(false),
            };
            // Trailers end the body and are not sent: hyper sends them only to a client that
            // asked with `TE: trailers`, and such a head goes to hyper.
            let Ok(data) = frame.into_data() else { break };
            match &mut left {
                Some(n) => {
                    let Some(rest) = n.checked_sub(data.len() as u64) else {
                        return Ok(false);
                    };
                    *n = rest;
                    self.put(&data).await?;
                }
                None if data.is_empty() => {}
                None => {
                    let mut size = [0u8; 16];
                    self.out.extend_from_slice(hex(data.len(), &mut size));
                    self.out.extend_from_slice(b"\r\n");
                    self.put(&data).await?;
                    self.out.extend_from_slice(b"\r\n");
                }
            }
            if body.is_end_stream() {
                break;
            }
        }
        // The body is dropped on return, before the last bytes are written.
        Ok(match left {
            Some(n) => n == 0,
            None => {
                self.out.extend_from_slice(b"0\r\n\r\n");
                true
            }
        })
    }

    /// Adds `data` to `out`, or, when that would make `out` large, writes `out` and then `data`.
    async fn put(&mut self, data: &[u8]) -> io::Result<()> {
        if self.out.len() + data.len() <= GATHER {
            self.out.extend_from_slice(data);
            return Ok(());
        }
        self.send_out().await?;
        send(&mut self.io, data, &self.delivery).await
    }

    /// Writes and flushes `out`, and empties it.
    async fn send_out(&mut self) -> io::Result<()> {
        send(&mut self.io, &self.out, &self.delivery).await?;
        self.out.clear();
        Ok(())
    }
}

/// Writes all of `data` and flushes (TLS keeps records until then). While the client does not
/// take the bytes, the connection's `delivery` counts a response waiting on it: the listener's
/// write-stall check then closes a connection whose client stopped reading, as it does when
/// hyper holds a frame it cannot write.
async fn send<I: AsyncWrite + Unpin>(
    io: &mut I,
    data: &[u8],
    delivery: &Delivery,
) -> io::Result<()> {
    let mut written = 0;
    let mut blocked = None;
    poll_fn(|cx| {
        while written < data.len() {
            match Pin::new(&mut *io).poll_write(cx, &data[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    written += n;
                    if blocked.is_some() {
                        delivery.progressed();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    blocked.get_or_insert_with(|| delivery.blocked());
                    return Poll::Pending;
                }
            }
        }
        let flushed = Pin::new(&mut *io).poll_flush(cx);
        if flushed.is_pending() {
            blocked.get_or_insert_with(|| delivery.blocked());
        }
        flushed
    })
    .await
}

/// What the wait for a response body's next frame gave.
enum Step<F> {
    Frame(Option<F>),
    /// Nothing yet, and bytes are waiting to be written.
    Flush,
    /// The client's side ended.
    Gone(Option<io::Error>),
}

/// How the response's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Exactly this many bytes (none for `HEAD`, 1xx, 204, 304: the body is not polled).
    Length(u64),
    Chunked,
}

/// What [`encode_head`] decided.
struct Plan {
    framing: Framing,
    /// The connection closes after this response.
    last: bool,
}

/// The response's body size as hyper's dispatcher sees it: none (ended), known, unknown.
fn body_length<B: Body>(body: &B) -> Option<Option<u64>> {
    if body.is_end_stream() {
        None
    } else {
        Some(body.size_hint().exact())
    }
}

fn can_have_body(head_only: bool, status: StatusCode) -> bool {
    !head_only && can_have_length(status)
}

fn can_have_length(status: StatusCode) -> bool {
    !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// Writes the status line and fields of `parts` into `out` by hyper's rules (see the module's
/// documentation). `length` is [`body_length`]'s.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    fields: Option<&Fields>,
    length: Option<Option<u64>>,
    head_only: bool,
    closing: bool,
) -> Plan {
    let status = parts.status;
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        match reason {
            Some(r) => out.extend_from_slice(r.as_bytes()),
            None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }
    let chunkable = can_have_body(head_only, status);
    let mut w = Written {
        length,
        head_only,
        chunkable,
        framing: Framing::Length(0),
        wrote_len: false,
        wrote_date: false,
        lengths: 0,
        chunked_last: true,
        said_close: false,
    };
    // An upstream's fields as they came, less the hop-by-hop ones and those the map replaces
    // (what `forward::with_fields_in_map` and the map's `insert` would leave); then the map's. In
    // the map, each name's values come together, as hyper's encoder writes them. A name goes in
    // lower case, as hyper writes a map's; a field left out is taken back.
    if let Some(fields) = fields {
        let hop = HopByHop::of(fields);
        for (i, (name, value)) in fields.iter().enumerate() {
            let at = out.len();
            out.extend_from_slice(name);
            lower_ascii(&mut out[at..]);
            let name = &out[at..];
            let passes =
                !hop.drops(i, name) && !parts.headers.keys().any(|k| k.as_str().as_bytes() == name);
            if passes && w.keeps(name, value) {
                end_field(out, value);
            } else {
                out.truncate(at);
            }
        }
    }
    for (name, value) in &parts.headers {
        let at = out.len();
        out.extend_from_slice(name.as_str().as_bytes());
        if w.keeps(&out[at..], value.as_bytes()) {
            end_field(out, value.as_bytes());
        } else {
            out.truncate(at);
        }
    }
    let Written {
        mut framing,
        wrote_len,
        wrote_date,
        chunked_last,
        said_close,
        ..
    } = w;
    let mut last = closing;
    if !chunked_last {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    last |= said_close;
    if closing && !said_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !wrote_len {
        framing = match length {
            Some(None) if chunkable => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            Some(None) => Framing::Length(0),
            None | Some(Some(0)) => {
                if can_have_length(status) && !head_only {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            Some(Some(n)) if can_have_length(status) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa(n, &mut [0; 20]));
                out.extend_from_slice(b"\r\n");
                Framing::Length(n)
            }
            Some(Some(_)) => Framing::Length(0),
        };
    }
    if !chunkable {
        framing = Framing::Length(0);
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Plan { framing, last }
}

/// What the fields written so far decided, by hyper's rules.
struct Written {
    length: Option<Option<u64>>,
    head_only: bool,
    chunkable: bool,
    framing: Framing,
    wrote_len: bool,
    wrote_date: bool,
    lengths: usize,
    chunked_last: bool,
    said_close: bool,
}

impl Written {
    /// Whether the field `name` (lower case) with `value` is written.
    fn keeps(&mut self, name: &[u8], value: &[u8]) -> bool {
        match name {
            b"content-length" => {
                self.lengths += 1;
                let framing = match self.length {
                    _ if self.lengths > 1 || self.wrote_len => None,
                    // An empty body: the field stays only for `HEAD` (hyper writes it then).
                    None if !self.head_only => None,
                    None => Some(self.framing),
                    Some(Some(n)) => Some(Framing::Length(n)),
                    Some(None) => parse_length(value).map(Framing::Length),
                };
                if let Some(f) = framing {
                    self.framing = f;
                    self.wrote_len = true;
                }
                framing.is_some()
            }
            b"transfer-encoding" => {
                let keep = self.chunkable && (!self.wrote_len || self.framing == Framing::Chunked);
                if keep {
                    self.wrote_len = true;
                    self.framing = Framing::Chunked;
                    self.chunked_last = value
                        .rsplit(|&b| b == b',')
                        .next()
                        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                }
                keep
            }
            b"connection" => {
                self.said_close |= says_close(value);
                true
            }
            b"date" => {
                self.wrote_date = true;
                true
            }
            b"trailer" => self.chunkable,
            _ => true,
        }
    }
}

/// Lower-cases the ASCII letters of `bytes` in place, eight at a time (`make_ascii_lowercase`
/// goes a byte at a time); the last eight may overlap the ones before, which changes nothing.
fn lower_ascii(bytes: &mut [u8]) {
    let n = bytes.len();
    if n < 8 {
        let mut word = [0; 8];
        word[..n].copy_from_slice(bytes);
        bytes.copy_from_slice(&lower_word(word)[..n]);
        return;
    }
    let mut at = 0;
    while at < n {
        let start = at.min(n - 8);
        let mut word = [0; 8];
        word.copy_from_slice(&bytes[start..start + 8]);
        bytes[start..start + 8].copy_from_slice(&lower_word(word));
        at += 8;
    }
}

/// The eight bytes with their ASCII letters in lower case. Per byte, without carries between
/// bytes: the high bit of `from_a` is set when the low seven bits are at least `A`, that of
/// `past_z` when they are past `Z`; a byte with its own high bit set is not ASCII.
fn lower_word(word: [u8; 8]) -> [u8; 8] {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let x = u64::from_ne_bytes(word);
    let low = x & !HIGH;
    let from_a = low + ONES * u64::from(0x80 - b'A');
    let past_z = low + ONES * u64::from(0x80 - b'Z' - 1);
    let upper = from_a & !past_z & !x & HIGH;
    (x | (upper >> 2)).to_ne_bytes()
}

/// Ends a field whose name is written.
fn end_field(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn says_close(v: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

fn parse_length(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `n` in decimal, in `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// `n` in upper-case hexadecimal (as hyper writes chunk sizes), in `buf`.
fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[n & 15];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The `Date` field's value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }

    pub fn extend(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with_borrow_mut(|(at, text)| {
            if *at != second {
                let formatted = httpdate::fmt_http_date(now);
                if formatted.len() == text.len() {
                    text.copy_from_slice(formatted.as_bytes());
                    *at = second;
                }
            }
            out.extend_from_slice(text);
        });
    }
}

/// A connection whose first bytes were already read: they are read again first.
pub struct Rewind<I> {
    pre: Bytes,
    io: I,
}

impl<I> Rewind<I> {
    pub fn new(pre: Bytes, io: I) -> Rewind<I> {
        Rewind { pre, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> Reader {
        Reader::new(8 * 1024, 100)
    }

    #[test]
    fn a_plain_head_is_taken_and_everything_else_is_left_whole_for_hyper() {
        let mut r = reader();
        let mut buf =
            BytesMut::from(&b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-Y: 1\r\n\r\nGET /next"[..]);
        let Parsed::Request(req) = r.parse(&mut buf) else {
            panic!("not taken")
        };
        assert_eq!(req.uri(), "/a?b");
        assert_eq!(req.headers()["x-y"], "1");
        assert_eq!(&buf[..], b"GET /next");
        assert!(matches!(r.parse(&mut buf), Parsed::Partial));
        let handed = [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        for bytes in handed {
            let mut buf = BytesMut::from(bytes);
            assert!(
                matches!(reader().parse(&mut buf), Parsed::HandOff),
                "{}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(&buf[..], bytes, "the buffer is left as it was");
        }
    }

    #[test]
    fn only_the_first_bytes_may_be_http2s_preface() {
        let mut buf = BytesMut::from(&PREFACE[..10]);
        assert!(matches!(reader().parse(&mut buf), Parsed::Partial));
        buf.extend_from_slice(&PREFACE[10..]);
        assert!(matches!(reader().parse(&mut buf), Parsed::HandOff));
        let mut r = reader();
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPRI"[..]);
        assert!(matches!(r.parse(&mut buf), Parsed::Request(_)));
        // A later `PRI` is an HTTP/1.1 head httparse refuses once it has its version (on the
        // first bytes, the same 16 bytes would be a preface still coming: `Partial`).
        buf.extend_from_slice(&PREFACE[3..16]);
        assert!(matches!(r.parse(&mut buf), Parsed::HandOff));
        let mut buf = BytesMut::from(&PREFACE[..16]);
        assert!(matches!(reader().parse(&mut buf), Parsed::Partial));
    }

    #[test]
    fn heads_over_the_limits_go_to_hyper() {
        let mut r = Reader::new(64, 2);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n"[..]);
        assert!(matches!(r.parse(&mut buf), Parsed::HandOff), "three fields");
        let mut buf = BytesMut::from(&[b'x'; 64][..]);
        assert!(
            matches!(r.parse(&mut buf), Parsed::HandOff),
            "64 bytes and no head"
        );
    }

    fn head(
        status: u16,
        fields: &[(&str, &str)],
        length: Option<Option<u64>>,
        head_only: bool,
    ) -> (String, Plan) {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in fields {
            r.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let (parts, ()) = r.into_parts();
        let mut out = Vec::new();
        let plan = encode_head(&mut out, &parts, None, length, head_only, false);
        let text = String::from_utf8(out).unwrap();
        // The date is the only part that changes.
        let text = text
            .lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n");
        (text, plan)
    }

    /// An upstream's head as `proxy::wire` parses it: status and fields.
    fn upstream(text: &[u8], method: &Method) -> (StatusCode, Fields) {
        let mut buf = BytesMut::from(text);
        let head = crate::proxy::wire::parse_response(&mut buf, method)
            .unwrap()
            .unwrap();
        (head.status, head.fields)
    }

    #[test]
    fn an_upstreams_fields_are_written_as_they_came_less_the_hop_by_hop_ones() {
        let (status, fields) = upstream(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Request-Id: theirs\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nX-Empty:\r\nset-cookie: b=2\r\n\r\n",
            &Method::GET,
        );
        let mut r = Response::new(());
        *r.status_mut() = status;
        r.headers_mut().insert(
            crate::observe::request_id::HEADER.clone(),
            HeaderValue::from_static("ours"),
        );
        let (parts, ()) = r.into_parts();
        let mut out = Vec::new();
        let plan = encode_head(&mut out, &parts, Some(&fields), Some(Some(2)), false, false);
        let text = String::from_utf8(out).unwrap();
        let text = text.split("date: ").next().unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nset-cookie: a=1\r\ncontent-length: 2\r\nx-empty: \r\nset-cookie: b=2\r\nx-request-id: ours\r\n",
            "in order, names in lower case, weir's ID over theirs"
        );
        assert_eq!(plan.framing, Framing::Length(2));
    }

    #[test]
    fn an_upstreams_fields_written_as_they_came_read_as_the_map_would() {
        let cases: &[(&[u8], Option<Option<u64>>)] = &[
            (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 29 Nov 2026 18:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\n", Some(Some(6))),
            (b"HTTP/1.1 200 OK\r\nSet-Cookie: a\r\nX-A: 1\r\nSet-Cookie: b\r\nX-Request-Id: up\r\nx-request-id: up2\r\nContent-Length: 1\r\n\r\n", Some(Some(1))),
            (b"HTTP/1.1 200 OK\r\nConnection: close, X-Foo, content-length, HOST, te\r\nX-Foo: 1\r\nx-foo: 2\r\nHost: h\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nProxy-Authenticate: Basic\r\nProxy-Authorization: y\r\nKeep-Alive: 1\r\nContent-Length: 3\r\n\r\n", Some(Some(3))),
            (b"HTTP/1.1 200 OK\r\nTE: gzip\r\nTE: trailers\r\nTrailer: x-t\r\nTransfer-Encoding: chunked\r\n\r\n", Some(None)),
            (b"HTTP/1.1 200 OK\r\nTE: trailers\r\nTE: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", Some(None)),
            (b"HTTP/1.1 200 OK\r\nConnection: x-a, \xffx-b\r\nConnection: x-c\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: \xfe\r\n\r\n", Some(None)),
            (b"HTTP/1.1 204 No Content\r\nTrailer: x\r\nX-A: 1\r\n\r\n", None),
            (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"a\"\r\n\r\n", None),
            (b"HTTP/1.1 404 Gone Fishing\r\nContent-Length: 0\r\n\r\n", None),
            (b"HTTP/1.1 200 OK\r\nConnection: x-a, X-A,, x-a , x-b\r\nX-A: 1\r\nX-C: 2\r\nx-a: 3\r\nX-B: 4\r\n\r\n", Some(None)),
        ];
        for ((text, length), closing) in cases.iter().flat_map(|c| [(c, false), (c, true)]) {
            let (status, fields) = upstream(text, &Method::GET);
            let (as_sent, mapped) = written_both_ways(status, &fields, *length, false, closing);
            assert_eq!(as_sent, mapped, "{}", String::from_utf8_lossy(text));
            // Both ways drop what `HopByHop` says; the map it builds is the whole map stripped.
            let mut stripped = fields.to_map().unwrap();
            super::super::forward::strip_hop_by_hop(&mut stripped, false);
            let built = super::super::forward::fields_to_map(&fields).unwrap();
            assert_eq!(built, stripped, "{}", String::from_utf8_lossy(text));
        }
        // HEAD: the length stays, and nothing follows.
        let (status, fields) = upstream(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: Keep-Alive\r\n\r\n",
            &Method::HEAD,
        );
        let (as_sent, mapped) = written_both_ways(status, &fields, None, true, false);
        assert_eq!(as_sent, mapped);
        assert!(as_sent.contains(&b"content-length: 10".to_vec()));
    }

    #[test]
    fn ascii_is_lower_cased_eight_bytes_at_a_time_as_a_byte_at_a_time() {
        let all: Vec<u8> = (0..=255).collect();
        for (start, len) in (0..8).flat_map(|s| (0..=20).chain([256 - s]).map(move |l| (s, l))) {
            let mut fast = all[start..start + len].to_vec();
            let mut slow = fast.clone();
            lower_ascii(&mut fast);
            slow.make_ascii_lowercase();
            assert_eq!(fast, slow, "from byte {start}");
        }
        let mut name = b"X-Request-ID-@[`{".to_vec();
        lower_ascii(&mut name);
        assert_eq!(name, b"x-request-id-@[`{");
    }

    #[test]
    fn the_head_is_framed_as_hypers() {
        let (t, p) = head(200, &[("content-length", "5")], Some(Some(5)), false);
        assert_eq!(t, "HTTP/1.1 200 OK\ncontent-length: 5\n");
        assert_eq!(p.framing, Framing::Length(5));
        let (t, p) = head(200, &[("x-a", "1")], Some(None), false);
        assert_eq!(t, "HTTP/1.1 200 OK\nx-a: 1\ntransfer-encoding: chunked\n");
        assert_eq!(p.framing, Framing::Chunked);
        let (t, _) = head(200, &[], None, false);
        assert_eq!(t, "HTTP/1.1 200 OK\ncontent-length: 0\n");
        // HEAD keeps the length it was given and sends nothing; 204 and 304 have neither.
        let (t, p) = head(200, &[("content-length", "5")], None, true);
        assert_eq!(t, "HTTP/1.1 200 OK\ncontent-length: 5\n");
        assert_eq!(p.framing, Framing::Length(0));
        for status in [204, 304] {
            let (t, p) = head(status, &[], Some(None), false);
            assert!(
                !t.contains("content-length") && !t.contains("transfer-encoding"),
                "{t}"
            );
            assert_eq!(p.framing, Framing::Length(0));
        }
        let (t, _) = head(599, &[], None, false);
        assert!(t.starts_with("HTTP/1.1 599 <none>\n"), "{t}");
        let (t, p) = head(200, &[("connection", "close")], Some(Some(1)), false);
        assert!(t.contains("connection: close\n") && p.last, "{t}");
        let (t, p) = head(200, &[("transfer-encoding", "gzip")], Some(None), false);
        assert!(
            t.contains("transfer-encoding: gzip\ntransfer-encoding: chunked\n"),
            "{t}"
        );
        assert_eq!(p.framing, Framing::Chunked);
    }

    #[test]
    fn numbers_are_written_in_decimal_and_chunk_sizes_in_upper_hex() {
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(
            itoa(u64::MAX, &mut [0; 20]),
            u64::MAX.to_string().as_bytes()
        );
        assert_eq!(hex(0, &mut [0; 16]), b"0");
        assert_eq!(hex(0xABC1, &mut [0; 16]), b"ABC1");
        assert_eq!(
            hex(usize::MAX, &mut [0; 16]),
            format!("{:X}", usize::MAX).as_bytes()
        );
    }
}
