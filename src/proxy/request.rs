//! The request body weir sends upstream: the client's stream, or a copy of a small body read in
//! full so that it can be sent more than once (retries, mirroring).
//!
//! A streamed body keeps a [`Progress`] that says how far the client got: whether the body
//! ended, failed (bad framing, an abort) or is waiting for the client's next bytes. That is how
//! a failed try is blamed on the client or on the upstream, and whether an upstream connection
//! is reusable (both directions complete). Tiny frames (a client that sends one-byte chunks)
//! are gathered into larger ones before they go upstream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntCounter;

/// A client's request body as the listener hands it over: hyper's stream, or none at all (a
/// request without a body that weir's own HTTP/1.1 server side read, `proxy::h1`).
pub enum ClientBody {
    Hyper(Incoming),
    Empty,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The request body weir sends upstream: the client's stream, passed through as it arrives, or a
/// copy of a small body read in full, which can be sent again (retries) or twice (mirroring).
pub enum RequestBody {
    Streaming(Streaming),
    Replay {
        data: Option<Bytes>,
        /// Boxed, as the rare trailers after gathered data below: a request is moved through
        /// several futures, and a `HeaderMap` inline would add 88 bytes to every move.
        trailers: Option<Box<http::HeaderMap>>,
    },
}

/// Frames shorter than this are gathered with the frames that follow at once.
const SMALL_FRAME: usize = 1024;
/// Gathered data is sent on when it reaches this size.
const GATHERED: usize = 16 * 1024;
/// Gathering yields to the scheduler at most this many times in a row without a new frame
/// before it sends what it has: the client's connection task hands over one decoded chunk per
/// turn and may need more than one turn for the next (measured: about two). A few task polls,
/// never a timer: a lone small frame waits microseconds, not milliseconds.
const YIELDS: u8 = 4;

/// The client's body, streamed: see the module's documentation.
pub struct Streaming {
    body: ClientBody,
    /// Shared with the try that sends it; `None` for a body that was empty from the start.
    progress: Option<Arc<Progress>>,
    /// A small frame held back, not copied, until it is known whether more follow at once.
    held: Option<Bytes>,
    /// Small frames gathered (copied together) and not yet sent on.
    gathered: BytesMut,
    /// How many polls in a row yielded to let more of the client's frames arrive.
    yielded: u8,
    /// What came after gathered data, given on the next poll: trailers, or the end (`None`).
    after: Option<Option<Box<Frame<Bytes>>>>,
    /// The backend's `weir_request_bytes_total`, counted as the client's bytes arrive.
    received: Option<IntCounter>,
}

/// How far a client got with its request body, as the body saw it.
#[derive(Debug, Default)]
pub struct Progress(AtomicU8, AtomicU64);

const ENDED: u8 = 1;
const WAITING: u8 = 2;
const BROKEN: u8 = 4;
const GONE: u8 = 8;

/// What a streamed body's client did wrong, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The body broke: bad chunked framing, data past its length.
    Broken,
    /// The client went away before the body ended.
    Gone,
    /// The body had not ended and weir was waiting for the client's bytes.
    Stalled,
}

impl Progress {
    /// Whether the client's body ended cleanly.
    pub fn ended(&self) -> bool {
        self.0.load(Ordering::Relaxed) & ENDED != 0
    }

    /// The client's fault, if its body broke, or had not ended and was waiting for the client.
    pub fn fault(&self) -> Option<ClientFault> {
        let s = self.0.load(Ordering::Relaxed);
        if s & GONE != 0 {
            Some(ClientFault::Gone)
        } else if s & BROKEN != 0 {
            Some(ClientFault::Broken)
        } else if s & (ENDED | WAITING) == WAITING {
            Some(ClientFault::Stalled)
        } else {
            None
        }
    }

    /// Data bytes the client sent so far.
    pub fn received(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }

    fn set(&self, flags: u8) {
        self.0.fetch_or(flags, Ordering::Relaxed);
    }

    fn waiting(&self, yes: bool) {
        if yes {
            self.0.fetch_or(WAITING, Ordering::Relaxed);
        } else if self.0.load(Ordering::Relaxed) & WAITING != 0 {
            self.0.fetch_and(!WAITING, Ordering::Relaxed);
        }
    }
}

impl RequestBody {
    /// The client's body, to stream; tracked unless it is empty. Its data bytes are counted in
    /// `received` (a pre-resolved handle) as they arrive.
    pub fn streaming(body: ClientBody, received: Option<IntCounter>) -> RequestBody {
        let progress = (!body.is_end_stream()).then(Arc::default);
        RequestBody::Streaming(Streaming {
            body,
            progress,
            held: None,
            gathered: BytesMut::new(),
            yielded: 0,
            after: None,
            received,
        })
    }

    /// No body at all.
    pub fn empty() -> RequestBody {
        RequestBody::Replay {
            data: None,
            trailers: None,
        }
    }

    /// How far the client got, for a streamed body that was not empty.
    pub fn progress(&self) -> Option<Arc<Progress>> {
        match self {
            RequestBody::Streaming(s) => s.progress.clone(),
            RequestBody::Replay { .. } => None,
        }
    }
}

/// A request that may be sent twice without changing the outcome (RFC 9110, 9.2.2), less
/// `TRACE`, which no upstream should see twice.
pub fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Whether a client's body failed because the client went away (its connection ended before
/// the body did) rather than because of what it sent.
pub fn went_away(e: &hyper::Error) -> bool {
    use std::error::Error;
    if e.is_incomplete_message() || e.is_canceled() {
        return true;
    }
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{
                BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof,
            };
            return matches!(
                io.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
            );
        }
        cause = c.source();
    }
    false
}

/// A whole request body, kept so that it can be sent more than once.
#[derive(Clone, Default)]
pub struct Replayable {
    data: Bytes,
    trailers: Option<http::HeaderMap>,
}

/// Why a body was not made [`Replayable`].
pub enum NotReplayable {
    /// Longer than the limit, or of unknown length: here it is, untouched, to be streamed.
    TooLarge(ClientBody),
    /// The client failed while sending it.
    Broken(hyper::Error),
}

impl Replayable {
    /// Reads `body` in full when it is empty or announces a length (`content-length`) of at most
    /// `limit` bytes; a body of unknown or larger length is handed back untouched, so a large
    /// upload is never buffered.
    pub async fn read(body: ClientBody, limit: u64) -> Result<Replayable, NotReplayable> {
        use http_body_util::BodyExt;
        if body.is_end_stream() {
            return Ok(Replayable::default());
        }
        match body.size_hint().exact() {
            Some(n) if n <= limit => {}
            _ => return Err(NotReplayable::TooLarge(body)),
        }
        let collected = body.collect().await.map_err(NotReplayable::Broken)?;
        let trailers = collected.trailers().cloned();
        Ok(Replayable {
            data: collected.to_bytes(),
            trailers,
        })
    }

    /// The body's data bytes.
    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn body(&self) -> RequestBody {
        RequestBody::Replay {
            data: (!self.data.is_empty()).then(|| self.data.clone()),
            trailers: self.trailers.clone().map(Box::new),
        }
    }
}

impl Streaming {
    fn poll_gathering(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(after) = self.after.take() {
            return Poll::Ready(after.map(|frame| Ok(*frame)));
        }
        loop {
            let polled = Pin::new(&mut self.body).poll_frame(cx);
            if let Some(p) = &self.progress {
                p.waiting(polled.is_pending());
            }
            match polled {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.yielded = 0;
                        if let Some(c) = &self.received {
                            c.inc_by(data.len() as u64);
                        }
                        if let Some(p) = &self.progress {
                            p.1.fetch_add(data.len() as u64, Ordering::Relaxed);
                        }
                        let end = self.body.is_end_stream();
                        if end {
                            self.ended();
                        }
                        if self.nothing_gathered() {
                            if data.len() >= SMALL_FRAME || end {
                                return Poll::Ready(Some(Ok(Frame::data(data))));
                            }
                            self.held = Some(data);
                            continue;
                        }
                        if let Some(first) = self.held.take() {
                            self.gathered.extend_from_slice(&first);
                        }
                        self.gathered.extend_from_slice(&data);
                        if self.gathered.len() >= GATHERED || end {
                            return Poll::Ready(Some(Ok(self.send_gathered())));
                        }
                    }
                    Err(trailers) => {
                        self.ended();
                        if self.nothing_gathered() {
                            return Poll::Ready(Some(Ok(trailers)));
                        }
                        self.after = Some(Some(Box::new(trailers)));
                        return Poll::Ready(Some(Ok(self.send_gathered())));
                    }
                },
                Poll::Ready(None) => {
                    self.ended();
                    if self.nothing_gathered() {
                        return Poll::Ready(None);
                    }
                    self.after = Some(None);
                    return Poll::Ready(Some(Ok(self.send_gathered())));
                }
                Poll::Ready(Some(Err(e))) => {
                    if let Some(p) = &self.progress {
                        p.set(if went_away(&e) { GONE } else { BROKEN });
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending if self.nothing_gathered() => return Poll::Pending,
                Poll::Pending if self.yielded < YIELDS => {
                    // Let the client's connection hand over what it already read, then send all
                    // of it as one frame: one upstream write instead of one per tiny chunk.
                    self.yielded += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => {
                    self.yielded = 0;
                    return Poll::Ready(Some(Ok(self.send_gathered())));
                }
            }
        }
    }

    fn nothing_gathered(&self) -> bool {
        self.held.is_none() && self.gathered.is_empty()
    }

    fn send_gathered(&mut self) -> Frame<Bytes> {
        match self.held.take() {
            Some(one) => Frame::data(one),
            None => Frame::data(self.gathered.split().freeze()),
        }
    }

    fn gathered_len(&self) -> u64 {
        (self.held.as_ref().map_or(0, Bytes::len) + self.gathered.len()) as u64
    }

    fn ended(&self) {
        if let Some(p) = &self.progress {
            p.set(ENDED);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Streaming(s) => s.poll_gathering(cx),
            RequestBody::Replay { data, trailers } => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(*t))),
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming(s) => match &s.after {
                Some(after) => after.is_none(),
                None => s.nothing_gathered() && s.body.is_end_stream(),
            },
            RequestBody::Replay { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(s) => {
                let hint = s.body.size_hint();
                let held = s.gathered_len();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower() + held);
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper + held);
                }
                sum
            }
            RequestBody::Replay { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
