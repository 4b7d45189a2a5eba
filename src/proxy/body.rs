//! The response body weir hands to hyper: the upstream's stream or weir's own bytes, and, when
//! the access log is on, the record that becomes its `weir::access` line once the body ends.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::conns::Lease;

/// Streamed from an upstream, or made by weir.
pub enum Inner {
    Upstream(UpstreamBody),
    Local(Full<Bytes>),
}

/// An upstream's response body. When it ends, the connection it came on goes back to its pool
/// (weir's own HTTP/1.1 pool); dropped before its end, the connection closes with it.
pub struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    pub fn new(body: Incoming, lease: Option<Lease>) -> UpstreamBody {
        let mut b = UpstreamBody { body, lease };
        // An empty body may never be polled: the connection is free already.
        if b.body.is_end_stream() {
            b.give_back();
        }
        b
    }

    fn give_back(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.give_back();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // hyper stops polling a body that says it has ended, so the last frame counts as the
        // end too, not only the final `None`.
        if matches!(polled, Poll::Ready(None)) || self.body.is_end_stream() {
            self.give_back();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pub struct ResponseBody {
    inner: Inner,
    access: Option<Box<Access>>,
}

/// What the access line says about one request. Boxed, and built only when the `weir::access`
/// target is enabled, so a disabled log costs nothing.
pub struct Access {
    pub route: Arc<str>,
    pub backend: Arc<str>,
    pub listener: Arc<str>,
    pub client: SocketAddr,
    pub method: http::Method,
    pub path: http::uri::PathAndQuery,
    pub status: u16,
    pub started: Instant,
    pub bytes: u64,
}

impl ResponseBody {
    pub fn new(inner: Inner, access: Option<Box<Access>>) -> ResponseBody {
        ResponseBody { inner, access }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        };
        if let (Some(access), Poll::Ready(Some(Ok(frame)))) = (&mut this.access, &polled)
            && let Some(data) = frame.data_ref()
        {
            access.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Local(b) => b.size_hint(),
        }
    }
}

/// The line is written when hyper drops the body: after the last frame, or when the client went
/// away mid-stream (then `bytes` is what was sent).
impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(a) = self.access.take() {
            tracing::info!(
                target: "weir::access",
                route = &*a.route,
                backend = &*a.backend,
                status = a.status,
                duration_ms = a.started.elapsed().as_secs_f64() * 1e3,
                bytes = a.bytes,
                method = a.method.as_str(),
                path = a.path.as_str(),
                client = %a.client,
                listener = &*a.listener,
            );
        }
    }
}

/// The request body weir sends upstream: the client's stream, passed through as it arrives, or a
/// copy of a small body read in full, which can be sent again (retries) or twice (mirroring).
pub enum RequestBody {
    Streaming(Incoming),
    Replay {
        data: Option<Bytes>,
        trailers: Option<http::HeaderMap>,
    },
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
    TooLarge(Incoming),
    /// The client failed while sending it.
    Broken(hyper::Error),
}

impl Replayable {
    /// Reads `body` in full when it is empty or announces a length (`content-length`) of at most
    /// `limit` bytes; a body of unknown or larger length is handed back untouched, so a large
    /// upload is never buffered.
    pub async fn read(body: Incoming, limit: u64) -> Result<Replayable, NotReplayable> {
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

    pub fn body(&self) -> RequestBody {
        RequestBody::Replay {
            data: (!self.data.is_empty()).then(|| self.data.clone()),
            trailers: self.trailers.clone(),
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
            RequestBody::Streaming(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Replay { data, trailers } => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming(b) => b.is_end_stream(),
            RequestBody::Replay { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(b) => b.size_hint(),
            RequestBody::Replay { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
