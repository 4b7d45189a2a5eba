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
pub use super::request::{NotReplayable, Replayable, RequestBody};

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
