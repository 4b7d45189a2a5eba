//! The response body weir hands to hyper: the upstream's stream or weir's own bytes. A request's
//! outcome is decided and recorded here, when its response ends (last frame, trailers, an
//! upstream error, or the client gone): the backend's metrics and window, a rollout's probe, the
//! endpoint's outlier count and, when the access log is on, the `weir::access` line.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use http::{HeaderMap, HeaderName, StatusCode};

use super::conns::{self, BoxError, Lease, WireBody};
use super::pool::{self, UpstreamPool};
pub use super::request::{ClientBody, NotReplayable, Progress, Replayable, RequestBody};
use super::wire;
use crate::config::{GRPC_UNKNOWN, GrpcCodes};
use crate::metrics::{
    BackendMetrics, ClientErrorKind, ClientErrors, Ended, Probe, UpstreamErrorKind,
    grpc_status_slot,
};
use crate::observe::access::{AccessLog, AccessRecord, ResponseFlags};
use crate::observe::span_export::{SpanExport, SpanRecord};
use crate::observe::trace_context::{SpanContext, TraceId};

/// Streamed from an upstream, or made by weir.
pub enum Inner {
    Upstream(UpstreamBody),
    Local(Full<Bytes>),
}

/// An upstream's response body: hyper's (HTTP/2, TLS, a request with a body, an upgrade) or
/// weir's own reading of a plain HTTP/1.1 connection (`conns::WireBody`). When it ends, the
/// connection it came on goes back to its pool (weir's own HTTP/1.1 pool); dropped before its
/// end, the connection closes with it.
pub enum UpstreamBody {
    Hyper {
        body: Incoming,
        lease: Option<Lease>,
    },
    Wire(WireBody),
}

impl UpstreamBody {
    pub fn new(body: Incoming, lease: Option<Lease>) -> UpstreamBody {
        let mut b = UpstreamBody::Hyper { body, lease };
        // An empty body may never be polled: the connection is free already.
        if b.is_end_stream() {
            b.give_back();
        }
        b
    }

    /// A wire's response head fields, as the upstream sent them (see `conns::WireBody`), once.
    pub fn take_fields(&mut self) -> Option<wire::Fields> {
        match self {
            UpstreamBody::Wire(body) => body.take_fields(),
            UpstreamBody::Hyper { .. } => None,
        }
    }

    fn give_back(&mut self) {
        if let UpstreamBody::Hyper { lease, .. } = self
            && let Some(lease) = lease.take()
        {
            lease.give_back();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            UpstreamBody::Hyper { body, .. } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                // hyper stops polling a body that says it has ended, so the last frame counts
                // as the end too, not only the final `None`.
                if matches!(polled, Poll::Ready(None)) || body.is_end_stream() {
                    self.give_back();
                }
                polled.map_err(|e| e.into())
            }
            UpstreamBody::Wire(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper { body, .. } => body.is_end_stream(),
            UpstreamBody::Wire(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper { body, .. } => body.size_hint(),
            UpstreamBody::Wire(body) => body.size_hint(),
        }
    }
}

pub struct ResponseBody {
    inner: Inner,
    /// What the end of the response records against its backend; `None` once recorded, and for
    /// responses that no backend answers for (no route, the client's own fault).
    record: Option<Record>,
    /// The client connection, for the write-stall timeout and the client-error counters.
    delivery: Option<Arc<Delivery>>,
    /// A frame went to hyper and hyper has not asked for the next one yet.
    waiting: bool,
    /// Data bytes handed to hyper for the client, added to the backend's
    /// `weir_response_bytes_total` once, when the response ends.
    sent: u64,
    access: Option<Box<Access>>,
}

/// What the access line says about one request. Boxed, and built only when the config's
/// `access_log` is on or the `weir::access` target is enabled, so a disabled log costs nothing.
/// Every field is a clone of what the request holds (`Arc`s, `Bytes`-backed values).
pub struct Access {
    /// The config's access log; `None`: the `weir::access` line of `RUST_LOG`.
    pub log: Option<Arc<AccessLog>>,
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    pub listener: Arc<str>,
    pub client: SocketAddr,
    pub protocol: http::Version,
    pub method: http::Method,
    pub authority: Option<http::HeaderValue>,
    pub path: http::uri::PathAndQuery,
    pub user_agent: Option<http::HeaderValue>,
    pub request_id: crate::observe::request_id::RequestId,
    pub endpoint: Option<http::uri::Authority>,
    pub status: u16,
    pub grpc_status: Option<u16>,
    pub flags: ResponseFlags,
    pub retries: u32,
    /// From sending the last try to the upstream's response head.
    pub upstream: Option<Duration>,
    pub started: Instant,
    /// Request body bytes: a replayed body's length, plus what a streamed body's `Progress`
    /// counted.
    pub bytes_received: u64,
    pub progress: Option<Arc<Progress>>,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// `success`, `failure`, the client's error kind when the client ended it, or `unjudged`
    /// (the client's own fault before any response).
    pub outcome: &'static str,
    /// weir's span and where it goes, when it is sampled and exported.
    pub span: Option<(SpanContext, Arc<SpanExport>)>,
    /// The request's trace, when tracing is on.
    pub trace_id: Option<TraceId>,
}

impl Access {
    fn write(self: Box<Access>) {
        let a = *self;
        let bytes_received = a.bytes_received + a.progress.as_ref().map_or(0, |p| p.received());
        let duration = a.started.elapsed();
        if let Some((context, export)) = &a.span {
            export.record(SpanRecord {
                context: *context,
                started: a.started,
                duration,
                method: a.method.clone(),
                path: a.path.clone(),
                authority: a.authority.clone(),
                protocol: a.protocol,
                client: a.client,
                request_id: Some(a.request_id.clone()),
                route: a.route.clone(),
                backend: a.backend.clone(),
                endpoint: a.endpoint.clone(),
                status: a.status,
                grpc_status: a.grpc_status,
                flags: a.flags,
                retries: a.retries,
            });
        }
        match a.log {
            Some(log) => log.log(AccessRecord {
                started: a.started,
                listener: a.listener,
                client: a.client,
                protocol: a.protocol,
                method: a.method,
                authority: a.authority,
                path: a.path,
                user_agent: a.user_agent,
                request_id: Some(a.request_id),
                trace_id: a.trace_id,
                route: a.route,
                backend: a.backend,
                endpoint: a.endpoint,
                status: a.status,
                grpc_status: a.grpc_status,
                flags: a.flags,
                retries: a.retries,
                upstream: a.upstream,
                duration,
                bytes_received,
                bytes_sent: a.bytes,
            }),
            None => {
                let (Some(route), Some(backend)) = (&a.route, &a.backend) else {
                    return;
                };
                tracing::info!(
                    target: "weir::access",
                    request_id = a.request_id.as_str(),
                    route = &**route,
                    backend = &**backend,
                    status = a.status,
                    outcome = a.outcome,
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
}

/// What a response's end records against the backend that was chosen, resolved before the head
/// goes out: reference-counted handles (cloned, never allocated) and what the head said.
pub struct Record {
    pub metrics: Arc<BackendMetrics>,
    pub probe: Option<Arc<Probe>>,
    pub pool: Arc<UpstreamPool>,
    /// The endpoint that answered; `None` for a response weir made, whose try reported already.
    pub endpoint: Option<usize>,
    /// The upstream's status, or that of the failure weir answered for it.
    pub status: StatusCode,
    pub started: Instant,
    /// From `started` to the response head.
    pub head: Duration,
    /// A gRPC call answered with HTTP 200: its `grpc-status` decides, failing on these codes.
    pub grpc: Option<GrpcCodes>,
    /// The `grpc-status` seen so far (a trailers-only head, then the trailers); 255 when it
    /// cannot be read.
    pub grpc_status: Option<u8>,
}

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// How a response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Its last frame (or trailers) went out.
    Clean,
    /// The upstream failed while it streamed.
    Upstream(UpstreamErrorKind),
    /// The client went away or stopped reading: never the backend's fault.
    Client(ClientErrorKind),
}

impl Record {
    /// Reads what the head says about the outcome: a trailers-only gRPC status.
    pub fn read_head(&mut self, headers: &HeaderMap) {
        if self.grpc.is_some()
            && let Some(v) = headers.get(&GRPC_STATUS)
        {
            self.grpc_status = Some(grpc_code(v.as_bytes()));
        }
    }

    fn read_trailers(&mut self, trailers: &HeaderMap) {
        if self.grpc.is_some()
            && let Some(v) = trailers.get(&GRPC_STATUS)
        {
            self.grpc_status = Some(grpc_code(v.as_bytes()));
        }
    }

    /// Whether the head alone already makes this a failure.
    fn failed_at_head(&self) -> bool {
        self.status.is_server_error()
            || self.endpoint.is_none()
            || self
                .grpc
                .zip(self.grpc_status)
                .is_some_and(|(fails, code)| fails.contains(judged_code(Some(code))))
    }

    fn success(&self) -> bool {
        !self.status.is_server_error()
            && self.endpoint.is_some()
            && self
                .grpc
                .is_none_or(|fails| !fails.contains(judged_code(self.grpc_status)))
    }

    /// Records the outcome; returns it for the access line.
    fn finish(self, end: End) -> &'static str {
        let success = match end {
            End::Clean => self.success(),
            End::Upstream(kind) => {
                self.pool.metrics.count(kind);
                false
            }
            // The client's fault judges nothing, unless the head had failed already: a failure
            // stays one even when nobody reads it to the end.
            End::Client(kind) if !self.failed_at_head() => return kind.label(),
            End::Client(_) => false,
        };
        let at = Instant::now();
        let bucket = self.metrics.record(&Ended {
            status: self.status,
            head: self.head,
            total: at.saturating_duration_since(self.started),
            at,
            success,
            grpc: self.grpc.map(|_| grpc_status_slot(self.grpc_status)),
        });
        if let Some(probe) = &self.probe {
            probe.record(success, bucket);
        }
        if let Some(endpoint) = self.endpoint {
            let outcome = if success {
                pool::Outcome::Success
            } else {
                pool::Outcome::Failure
            };
            self.pool.report(endpoint, outcome);
        }
        if success { "success" } else { "failure" }
    }
}

/// A `grpc-status` value: its code, or 255 when it is not a number below 256.
fn grpc_code(v: &[u8]) -> u8 {
    match v {
        [d] if d.is_ascii_digit() => d - b'0',
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() && *a != b'0' => {
            (a - b'0') * 10 + (b - b'0')
        }
        _ => 255,
    }
}

/// The code a status is judged as: one that is missing or unreadable is UNKNOWN, as gRPC
/// clients read it.
fn judged_code(code: Option<u8>) -> u8 {
    match code {
        Some(c) if c <= 16 => c,
        _ => GRPC_UNKNOWN,
    }
}

/// The kind of an upstream error while its body streamed: a framing error is `protocol`, any
/// other cut `reset`.
fn body_error_kind(e: &BoxError) -> UpstreamErrorKind {
    match conns::error_kind(&**e) {
        Some(UpstreamErrorKind::Protocol) => UpstreamErrorKind::Protocol,
        _ => UpstreamErrorKind::Reset,
    }
}

impl ResponseBody {
    /// An upstream's response head fields not put in the map (see
    /// `forward::with_fields_in_map`), once.
    pub fn take_fields(&mut self) -> Option<wire::Fields> {
        match &mut self.inner {
            Inner::Upstream(body) => body.take_fields(),
            Inner::Local(_) => None,
        }
    }

    pub fn new(inner: Inner, access: Option<Box<Access>>) -> ResponseBody {
        ResponseBody {
            inner,
            record: None,
            delivery: None,
            waiting: false,
            sent: 0,
            access,
        }
    }

    /// Records `record` when the body ends, and watches `delivery` for a stalled client. A
    /// body that is empty from the start (a trailers-only gRPC answer, a 204, weir's own
    /// answer for a failed backend) is recorded at once: hyper may never poll it.
    pub fn recording(mut self, record: Record, delivery: Arc<Delivery>) -> ResponseBody {
        self.record = Some(record);
        if matches!(self.inner, Inner::Local(_)) || self.is_end_stream() {
            self.finish(End::Clean);
        } else {
            // Until hyper asks for the first frame, the body waits on the client: an HTTP/2
            // stream with a zero window is never polled at all.
            self.waiting = true;
            delivery.waiting.fetch_add(1, Ordering::Relaxed);
        }
        self.delivery = Some(delivery);
        self
    }

    fn finish(&mut self, end: End) {
        if let Some(record) = self.record.take() {
            if self.sent != 0 {
                record.metrics.response_bytes.inc_by(self.sent);
            }
            let grpc_status = record.grpc.and(record.grpc_status);
            let outcome = record.finish(end);
            if let Some(access) = &mut self.access {
                access.outcome = outcome;
                access.grpc_status = grpc_status.filter(|c| *c != 255).map(u16::from);
                access.flags.insert(match end {
                    End::Clean => ResponseFlags::NONE,
                    End::Upstream(UpstreamErrorKind::Timeout) => ResponseFlags::UPSTREAM_TIMEOUT,
                    End::Upstream(UpstreamErrorKind::Protocol) => {
                        ResponseFlags::UPSTREAM_PROTOCOL_ERROR
                    }
                    End::Upstream(UpstreamErrorKind::Connect | UpstreamErrorKind::Tls) => {
                        ResponseFlags::UPSTREAM_CONNECT_FAILURE
                    }
                    End::Upstream(UpstreamErrorKind::Reset) => ResponseFlags::UPSTREAM_RESET,
                    End::Client(ClientErrorKind::Timeout) => ResponseFlags::CLIENT_STALLED,
                    End::Client(_) => ResponseFlags::CLIENT_CLOSED,
                });
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(d) = &this.delivery {
            d.polls.fetch_add(1, Ordering::Relaxed);
            if this.waiting {
                this.waiting = false;
                d.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let polled = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                    if let Some(access) = &mut this.access {
                        access.bytes += data.len() as u64;
                    }
                }
                if let (Some(record), Some(trailers)) = (&mut this.record, frame.trailers_ref()) {
                    record.read_trailers(trailers);
                }
                // hyper stops polling a body that says it has ended, so the last frame is the
                // end too, not only the final `None`.
                if this.is_end_stream() || frame.is_trailers() {
                    this.finish(End::Clean);
                } else if let Some(d) = &this.delivery {
                    this.waiting = true;
                    d.waiting.fetch_add(1, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(e))) => this.finish(End::Upstream(body_error_kind(e))),
            Poll::Ready(None) => this.finish(End::Clean),
            Poll::Pending => {}
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

/// Dropped before its end, the body was cut by the client's side: the client went away
/// (`closed`), or weir closed a connection whose client stopped reading (`timeout`). That is
/// counted for the listener and never against the backend. The access line is written here,
/// after the last frame or the cut (then `bytes` is what was sent).
impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(d) = &self.delivery {
            if self.waiting {
                d.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            if self.record.is_some() {
                let kind = if d.stalled.load(Ordering::Relaxed) {
                    ClientErrorKind::Timeout
                } else {
                    ClientErrorKind::Closed
                };
                d.errors.count(kind);
                self.finish(End::Client(kind));
            }
        }
        if let Some(a) = self.access.take() {
            a.write();
        }
    }
}

/// One client connection as its response bodies see it: how far they got, for the write-stall
/// timeout (nginx's `send_timeout`), and the listener's client-error counters. Shared by the
/// connection's task and its bodies: relaxed atomics, no lock.
pub struct Delivery {
    errors: ClientErrors,
    /// Frames hyper asked for, over every response of the connection.
    polls: AtomicU64,
    /// Responses that handed hyper a frame and wait for it to ask for the next: waiting on the
    /// client to read (a full socket, a zero HTTP/2 window), not on the upstream.
    waiting: AtomicU32,
    /// Set by the connection's task before it closes a connection whose client stopped reading.
    stalled: AtomicBool,
}

/// A write waiting on the client: see [`Delivery::blocked`].
pub struct Blocked<'a>(&'a Delivery);

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The write-stall check runs this many times per `write_stall_timeout`.
pub const STALL_CHECKS: u32 = 4;

/// What the connection's task remembers between two write-stall checks.
#[derive(Default)]
pub struct StallCheck {
    polls: u64,
    quiet: u32,
}

impl Delivery {
    pub fn new(errors: ClientErrors) -> Delivery {
        Delivery {
            errors,
            polls: AtomicU64::new(0),
            waiting: AtomicU32::new(0),
            stalled: AtomicBool::new(false),
        }
    }

    /// Counts a response waiting on the client until the guard drops: weir's own HTTP/1.1
    /// writer (`proxy::h1`) holds one while a write does not go through, as a frame handed to
    /// hyper and not followed by its next poll counts.
    pub fn blocked(&self) -> Blocked<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Blocked(self)
    }

    /// Some bytes of a write that had waited on the client went through: progress, as a frame
    /// asked for is (nginx's `send_timeout` also counts from the last successful write).
    pub fn progressed(&self) {
        self.polls.fetch_add(1, Ordering::Relaxed);
    }

    /// One check, every `write_stall_timeout / STALL_CHECKS`: `true` (and the bodies will
    /// count `timeout` when they drop) once responses waited on the client through
    /// [`STALL_CHECKS`] checks in a row without hyper asking for a frame, so between one and
    /// one and a quarter timeouts. A response waiting on its upstream is no stall.
    pub fn stalled(&self, check: &mut StallCheck) -> bool {
        let polls = self.polls.load(Ordering::Relaxed);
        if self.waiting.load(Ordering::Relaxed) == 0 || polls != check.polls {
            *check = StallCheck { polls, quiet: 0 };
            return false;
        }
        check.quiet += 1;
        if check.quiet < STALL_CHECKS {
            return false;
        }
        self.stalled.store(true, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_status_values_are_read_as_codes_or_as_unreadable() {
        for (text, code) in [
            (&b"0"[..], 0),
            (b"14", 14),
            (b"16", 16),
            (b"99", 99),
            (b"05", 255),
            (b"014", 255),
            (b"", 255),
            (b"1a", 255),
            (b" 1", 255),
        ] {
            assert_eq!(grpc_code(text), code, "{:?}", String::from_utf8_lossy(text));
        }
        // Every value of up to two bytes (what a fuzzer would try first, all of it): the code of
        // a canonical decimal, else unreadable; never a panic.
        for len in 0..=2usize {
            for n in 0..1u32 << (8 * len) {
                let bytes = &n.to_be_bytes()[4 - len..];
                let canonical = std::str::from_utf8(bytes)
                    .ok()
                    .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
                    .filter(|t| !t.is_empty() && (t.len() == 1 || !t.starts_with('0')))
                    .and_then(|t| t.parse::<u8>().ok());
                assert_eq!(grpc_code(bytes), canonical.unwrap_or(255), "{bytes:?}");
            }
        }
        assert_eq!(judged_code(None), GRPC_UNKNOWN);
        assert_eq!(judged_code(Some(99)), GRPC_UNKNOWN);
        assert_eq!(judged_code(Some(14)), 14);
        let fails = GrpcCodes::DEFAULT_FAILURES;
        assert!([2, 4, 12, 13, 14, 15].iter().all(|c| fails.contains(*c)));
        assert!(
            ![0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 16, 17]
                .iter()
                .any(|c| fails.contains(*c))
        );
    }

    #[test]
    fn a_stall_is_four_checks_in_a_row_with_a_response_waiting_and_no_frame_taken() {
        let metrics = crate::metrics::Metrics::new();
        let d = Delivery::new(metrics.listener("main").client_errors);
        let mut check = StallCheck::default();
        // Nothing waits on the client: no stall, however long.
        for _ in 0..10 {
            assert!(!d.stalled(&mut check));
        }
        d.waiting.fetch_add(1, Ordering::Relaxed);
        for _ in 0..3 {
            assert!(!d.stalled(&mut check));
        }
        // The client took a frame: the count starts again.
        d.polls.fetch_add(1, Ordering::Relaxed);
        for _ in 0..4 {
            assert!(!d.stalled(&mut check));
        }
        assert!(d.stalled(&mut check));
        assert!(d.stalled.load(Ordering::Relaxed));
    }
}
