//! Span export over OTLP: weir's span of each sampled request ([`SpanRecord`]) goes on the request
//! path to a bounded queue ([`SpanExport::record`], a lock-free `try_send`; a full queue drops
//! and counts), and a background task sends them in batches to an OpenTelemetry collector, over
//! OTLP/gRPC (`TraceService/Export`, HTTP/2) or OTLP/HTTP (`POST /v1/traces`, protobuf).
//!
//! The messages are the `opentelemetry-proto` crate's types generated from the official protocol
//! definitions; the transport is weir's own hyper client (the one its webhooks use), with the gRPC
//! framing done here (a 5-byte prefix, `grpc-status` from the trailers), so no gRPC framework
//! and no OpenTelemetry SDK is linked into weir.
//!
//! Batching follows the OpenTelemetry SDK's batch processor defaults: a queue of 2,048 spans,
//! batches of at most 512, sent when full or every second. A batch the collector refuses or that
//! fails is dropped, counted and warned about (at most every 10 s); weir does not retry it (the
//! queue behind it keeps filling, and traces are sampled data).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prometheus::IntCounter;
use prost::Message;
use tokio::sync::mpsc;

use super::access::ResponseFlags;
use super::request_id::RequestId;
use super::trace_context::{Sampler, SpanContext};

/// Spans waiting for the exporter, at most (the SDK's `maxQueueSize`).
pub const QUEUE: usize = 2_048;
/// Spans in one export request, at most (the SDK's `maxExportBatchSize`).
pub const MAX_BATCH: usize = 512;
/// A batch that is not full is sent this long after its first span arrived.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// At most one warning per this interval while exports fail.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How spans reach the collector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC: `POST /opentelemetry.proto.collector.trace.v1.TraceService/Export` over
    /// HTTP/2 (h2c for `http://`, ALPN `h2` for `https://`); the collector's port 4317.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies: `POST /v1/traces`; the collector's port 4318.
    HttpProtobuf,
}

/// The `tracing.otlp` section, once validated.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpSettings {
    /// `http://host:port` or `https://host:port`. For OTLP/HTTP, a path other than `/` is used
    /// as it is; without one, `/v1/traces` is added (as `OTEL_EXPORTER_OTLP_ENDPOINT` does).
    pub endpoint: Uri,
    pub protocol: Protocol,
    /// Each export request must be answered within this.
    pub timeout: Duration,
    /// Sent with every export (an API key, a tenant).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// The `tracing` section, once validated. Without it weir leaves `traceparent` alone.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingSettings {
    /// The share of the traces weir starts that are sampled (0 to 1); a caller's sampled flag
    /// decides for the traces it started.
    pub sampling: f64,
    /// Where sampled spans go; without it spans are not recorded, only propagated.
    pub otlp: Option<OtlpSettings>,
}

impl TracingSettings {
    pub fn sampler(&self) -> Sampler {
        Sampler::new(self.sampling)
    }
}

/// weir's span of one request, as the request path hands it over: values it holds anyway (`Arc`
/// names, `Bytes`-backed header values), no formatting. The exporter turns it into an OTLP span.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub context: SpanContext,
    /// When the request arrived; the exporter turns it into wall-clock time.
    pub started: Instant,
    /// From the request's arrival to the end of the response.
    pub duration: Duration,
    pub method: Method,
    pub path: PathAndQuery,
    pub authority: Option<HeaderValue>,
    pub protocol: Version,
    pub client: SocketAddr,
    pub request_id: Option<RequestId>,
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    pub endpoint: Option<Authority>,
    /// The status the client got; 0 when none was sent.
    pub status: u16,
    pub grpc_status: Option<u16>,
    pub flags: ResponseFlags,
    /// Tries after the first.
    pub retries: u32,
}

/// The counters of span export (`weir_trace_spans_*`, registered in `metrics::telemetry`).
#[derive(Clone)]
pub struct SpanCounters {
    pub exported: IntCounter,
    /// Spans dropped because the queue was full.
    pub dropped_full: IntCounter,
    /// Spans lost because their export failed or the collector refused them.
    pub dropped_failed: IntCounter,
}

/// Why span export could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpanExportError {
    #[error("OTLP endpoint `{0}` must be an http:// or https:// address with a host")]
    Endpoint(Uri),
    #[error("cannot start the OTLP exporter's thread: {0}")]
    Thread(std::io::Error),
}

/// A running exporter: the queue's sending end. The exporter runs on a thread of its own (one
/// single-threaded runtime): encoding batches and their HTTP exchanges never take a turn of the
/// request path's workers. It ends when the last `SpanExport` is dropped, after sending what was
/// queued.
pub struct SpanExport {
    settings: OtlpSettings,
    queue: mpsc::Sender<SpanRecord>,
    dropped_full: IntCounter,
}

impl SpanExport {
    /// Starts the exporter's thread.
    pub fn start(
        settings: OtlpSettings,
        counters: SpanCounters,
    ) -> Result<SpanExport, SpanExportError> {
        let target = Target::new(&settings)?;
        let (queue, spans) = mpsc::channel(QUEUE);
        let dropped_full = counters.dropped_full.clone();
        let resource = resource(&settings.service_name);
        std::thread::Builder::new()
            .name("weir-otlp".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(run(target, spans, counters, resource)),
                    Err(e) => tracing::error!(error = %e, "the OTLP exporter has no runtime; spans are dropped"),
                }
            })
            .map_err(SpanExportError::Thread)?;
        Ok(SpanExport {
            settings,
            queue,
            dropped_full,
        })
    }

    /// The running exporter when its settings are unchanged, or a new one (for a reload).
    pub fn keep_or_start(
        running: Option<&Arc<SpanExport>>,
        settings: &OtlpSettings,
        counters: &SpanCounters,
    ) -> Result<Arc<SpanExport>, SpanExportError> {
        match running {
            Some(e) if e.settings == *settings => Ok(e.clone()),
            _ => SpanExport::start(settings.clone(), counters.clone()).map(Arc::new),
        }
    }

    /// Queues a span; never waits. A full queue drops the span and counts it.
    pub fn record(&self, span: SpanRecord) {
        if self.queue.try_send(span).is_err() {
            self.dropped_full.inc();
        }
    }

    pub fn settings(&self) -> &OtlpSettings {
        &self.settings
    }
}

// === the export task ===

type ExportClient = crate::tls::outbound::OutboundClient<Full<Bytes>>;

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Where and how one export request goes.
struct Target {
    uri: Uri,
    protocol: Protocol,
    timeout: Duration,
    headers: Vec<(HeaderName, HeaderValue)>,
    client: ExportClient,
}

impl Target {
    fn new(settings: &OtlpSettings) -> Result<Target, SpanExportError> {
        let bad = || SpanExportError::Endpoint(settings.endpoint.clone());
        let scheme = settings.endpoint.scheme_str().ok_or_else(bad)?;
        if !matches!(scheme, "http" | "https") || settings.endpoint.authority().is_none() {
            return Err(bad());
        }
        let given = settings.endpoint.path();
        let path = match settings.protocol {
            Protocol::Grpc => GRPC_PATH,
            Protocol::HttpProtobuf if given.is_empty() || given == "/" => "/v1/traces",
            Protocol::HttpProtobuf => given,
        };
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(settings.endpoint.authority().expect("checked").clone())
            .path_and_query(path)
            .build()
            .map_err(|_| bad())?;
        Ok(Target {
            uri,
            protocol: settings.protocol,
            timeout: settings.timeout,
            headers: settings.headers.clone(),
            client: client(settings.protocol, settings.timeout),
        })
    }

    /// Sends one batch; how many spans the collector rejected (partial success), or why the
    /// whole batch failed.
    async fn export(&self, request: &ExportTraceServiceRequest) -> Result<u64, String> {
        let message = request.encode_to_vec();
        let (content_type, body) = match self.protocol {
            Protocol::Grpc => {
                let mut framed = BytesMut::with_capacity(5 + message.len());
                framed.put_u8(0); // not compressed
                framed.put_u32(message.len() as u32);
                framed.put_slice(&message);
                ("application/grpc", framed.freeze())
            }
            Protocol::HttpProtobuf => ("application/x-protobuf", Bytes::from(message)),
        };
        let mut req = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, content_type)
            .header(
                header::USER_AGENT,
                concat!("weir/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        if self.protocol == Protocol::Grpc {
            req.headers_mut()
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        for (name, value) in &self.headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        let exchange = async {
            let response = self.client.request(req).await.map_err(|e| e.to_string())?;
            let (head, body) = response.into_parts();
            let collected = body.collect().await.map_err(|e| e.to_string())?;
            let trailers = collected.trailers().cloned();
            Ok::<_, String>((head, trailers, collected.to_bytes()))
        };
        let (head, trailers, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))??;
        if !head.status.is_success() {
            return Err(format!("the collector answered HTTP {}", head.status));
        }
        let response = match self.protocol {
            Protocol::HttpProtobuf => body,
            Protocol::Grpc => {
                // A trailers-only answer carries grpc-status in the head.
                let status = trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .or_else(|| head.headers.get("grpc-status"));
                match status.map(HeaderValue::as_bytes) {
                    Some(b"0") => {}
                    Some(code) => {
                        let message = trailers
                            .as_ref()
                            .and_then(|t| t.get("grpc-message"))
                            .or_else(|| head.headers.get("grpc-message"))
                            .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                            .unwrap_or_default();
                        return Err(format!(
                            "the collector answered grpc-status {} {message}",
                            String::from_utf8_lossy(code)
                        ));
                    }
                    None => return Err("the collector's answer has no grpc-status".into()),
                }
                unframe(body)
            }
        };
        let rejected = ExportTraceServiceResponse::decode(response)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_spans.max(0) as u64);
        Ok(rejected)
    }
}

/// The message of a one-message gRPC body (the 5-byte prefix removed); empty when absent.
fn unframe(mut body: Bytes) -> Bytes {
    if body.len() < 5 || body[0] != 0 {
        return Bytes::new();
    }
    body.advance(1);
    let len = body.get_u32() as usize;
    body.slice(..len.min(body.len()))
}

fn client(protocol: Protocol, timeout: Duration) -> ExportClient {
    let versions = match protocol {
        Protocol::Grpc => crate::tls::outbound::Versions::Http2,
        Protocol::HttpProtobuf => crate::tls::outbound::Versions::Both,
    };
    crate::tls::outbound::outbound_client("OTLP export", timeout, versions)
}

async fn run(
    target: Target,
    mut spans: mpsc::Receiver<SpanRecord>,
    counters: SpanCounters,
    resource: Resource,
) {
    let mut batch: Vec<SpanRecord> = Vec::with_capacity(MAX_BATCH);
    let mut last_warning: Option<Instant> = None;
    let mut unreported = 0u64;
    loop {
        // Wait for a first span, then gather until the batch is full or its time is up.
        let Some(first) = spans.recv().await else {
            break;
        };
        batch.push(first);
        let due = tokio::time::Instant::now() + BATCH_DELAY;
        let mut closed = false;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(due, spans.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let request = export_request(&resource, &batch, SystemTime::now(), Instant::now());
        batch.clear();
        let failed = match target.export(&request).await {
            Ok(rejected) => {
                counters.exported.inc_by(n - rejected.min(n));
                counters.dropped_failed.inc_by(rejected.min(n));
                (rejected > 0).then(|| format!("the collector rejected {rejected} spans"))
            }
            Err(e) => {
                counters.dropped_failed.inc_by(n);
                Some(e)
            }
        };
        if let Some(error) = failed {
            unreported += n;
            if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                tracing::warn!(
                    endpoint = %target.uri,
                    %error,
                    spans = unreported,
                    "trace spans lost: the OTLP export failed"
                );
                last_warning = Some(Instant::now());
                unreported = 0;
            }
        }
        if closed {
            break;
        }
    }
}

// === OTLP messages ===

fn string_attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int_attr(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![
            string_attr("service.name", service_name),
            string_attr("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

/// One export request for `spans`; `wall` and `mono` are one reading of both clocks, which turns
/// each span's `Instant` into wall-clock time.
pub fn export_request(
    resource: &Resource,
    spans: &[SpanRecord],
    wall: SystemTime,
    mono: Instant,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "weir".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: spans.iter().map(|s| otlp_span(s, wall, mono)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// weir's span in OTLP: a SERVER span named `METHOD ROUTE`, with the OpenTelemetry HTTP
/// attributes and weir's own (`weir.route`, `weir.backend`, `weir.endpoint`, `weir.retries`,
/// `weir.response_flags`, `weir.request_id`); its status is an error for a 5xx or a response flag.
pub fn otlp_span(s: &SpanRecord, wall: SystemTime, mono: Instant) -> Span {
    let start = wall
        .checked_sub(mono.saturating_duration_since(s.started))
        .unwrap_or(wall);
    let start_ns = unix_nanos(start);
    let name = match &s.route {
        Some(route) => format!("{} {route}", s.method),
        None => s.method.to_string(),
    };
    let mut attributes = vec![
        string_attr("http.request.method", s.method.as_str()),
        string_attr("url.path", s.path.path()),
        int_attr("http.response.status_code", i64::from(s.status)),
        string_attr(
            "network.protocol.version",
            match s.protocol {
                Version::HTTP_10 => "1.0",
                Version::HTTP_11 => "1.1",
                Version::HTTP_2 => "2",
                Version::HTTP_3 => "3",
                _ => "0.9",
            },
        ),
        string_attr("client.address", s.client.ip().to_string()),
        int_attr("weir.retries", i64::from(s.retries)),
    ];
    if let Some(a) = &s.authority {
        attributes.push(string_attr(
            "server.address",
            String::from_utf8_lossy(a.as_bytes()),
        ));
    }
    if let Some(route) = &s.route {
        attributes.push(string_attr("weir.route", &**route));
    }
    if let Some(backend) = &s.backend {
        attributes.push(string_attr("weir.backend", &**backend));
    }
    if let Some(endpoint) = &s.endpoint {
        attributes.push(string_attr("weir.endpoint", endpoint.as_str()));
    }
    if let Some(g) = s.grpc_status {
        attributes.push(int_attr("rpc.grpc.status_code", i64::from(g)));
    }
    if !s.flags.is_empty() {
        attributes.push(string_attr("weir.response_flags", s.flags.to_string()));
    }
    if let Some(id) = &s.request_id {
        attributes.push(string_attr("weir.request_id", id.as_str()));
    }
    let failed = s.status >= 500 || !s.flags.is_empty();
    Span {
        trace_id: s.context.trace_id.bytes().to_vec(),
        span_id: s.context.span_id.bytes().to_vec(),
        parent_span_id: s
            .context
            .parent_id
            .map(|p| p.bytes().to_vec())
            .unwrap_or_default(),
        flags: u32::from(s.context.flags),
        name,
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns.saturating_add(s.duration.as_nanos() as u64),
        attributes,
        status: Some(Status {
            code: if failed {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Unset as i32
            },
            message: if failed {
                format!("HTTP {} {}", s.status, s.flags)
            } else {
                String::new()
            },
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::trace_context::{SpanId, TraceId};

    fn record() -> SpanRecord {
        SpanRecord {
            context: SpanContext {
                trace_id: TraceId::new([7; 16]).unwrap(),
                span_id: SpanId::new([2; 8]).unwrap(),
                parent_id: SpanId::new([1; 8]),
                flags: 1,
            },
            started: Instant::now(),
            duration: Duration::from_millis(12),
            method: Method::POST,
            path: "/api/orders?id=1".parse().unwrap(),
            authority: Some(HeaderValue::from_static("app.example.com")),
            protocol: Version::HTTP_2,
            client: "10.0.0.7:5000".parse().unwrap(),
            request_id: Some(RequestId::from_uuid(1)),
            route: Some(Arc::from("app")),
            backend: Some(Arc::from("app-canary")),
            endpoint: Some("127.0.0.1:9101".parse().unwrap()),
            status: 503,
            grpc_status: None,
            flags: ResponseFlags::NO_HEALTHY_ENDPOINT,
            retries: 2,
        }
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_span_carries_its_ids_times_and_attributes() {
        let r = record();
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let span = otlp_span(&r, wall, r.started + Duration::from_millis(20));
        assert_eq!(span.trace_id, vec![7; 16]);
        assert_eq!(span.span_id, vec![2; 8]);
        assert_eq!(span.parent_span_id, vec![1; 8]);
        assert_eq!(span.name, "POST app");
        assert_eq!(span.kind, span::SpanKind::Server as i32);
        assert_eq!(span.start_time_unix_nano, 1_799_999_999_980_000_000);
        assert_eq!(span.end_time_unix_nano, 1_799_999_999_992_000_000);
        let s = |v: &str| Some(any_value::Value::StringValue(v.into()));
        assert_eq!(attr(&span, "weir.route").cloned(), s("app"));
        assert_eq!(attr(&span, "weir.backend").cloned(), s("app-canary"));
        assert_eq!(attr(&span, "weir.endpoint").cloned(), s("127.0.0.1:9101"));
        assert_eq!(attr(&span, "weir.response_flags").cloned(), s("UH"));
        assert_eq!(attr(&span, "url.path").cloned(), s("/api/orders"));
        assert_eq!(attr(&span, "server.address").cloned(), s("app.example.com"));
        assert_eq!(attr(&span, "network.protocol.version").cloned(), s("2"));
        assert_eq!(
            attr(&span, "weir.retries").cloned(),
            Some(any_value::Value::IntValue(2))
        );
        assert_eq!(
            attr(&span, "http.response.status_code").cloned(),
            Some(any_value::Value::IntValue(503))
        );
        let status = span.status.unwrap();
        assert_eq!(status.code, status::StatusCode::Error as i32);
        assert_eq!(status.message, "HTTP 503 UH");
    }

    #[test]
    fn a_root_span_has_no_parent_and_a_success_no_error_status() {
        let mut r = record();
        r.context.parent_id = None;
        r.status = 200;
        r.flags = ResponseFlags::NONE;
        r.route = None;
        let span = otlp_span(&r, SystemTime::now(), Instant::now());
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.name, "POST");
        assert_eq!(
            span.status.as_ref().unwrap().code,
            status::StatusCode::Unset as i32
        );
        assert!(attr(&span, "weir.route").is_none());
        assert!(attr(&span, "weir.response_flags").is_none());
    }

    fn settings(endpoint: &str, protocol: Protocol) -> OtlpSettings {
        OtlpSettings {
            endpoint: endpoint.parse().unwrap(),
            protocol,
            timeout: Duration::from_secs(1),
            headers: vec![],
            service_name: "weir".into(),
        }
    }

    #[tokio::test]
    async fn the_export_path_follows_the_protocol_and_the_endpoint() {
        let cases = [
            (
                "http://c:4317",
                Protocol::Grpc,
                "http://c:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            ),
            (
                "http://c:4318",
                Protocol::HttpProtobuf,
                "http://c:4318/v1/traces",
            ),
            (
                "https://c:4318/",
                Protocol::HttpProtobuf,
                "https://c:4318/v1/traces",
            ),
            (
                "http://c/otlp/v1/traces",
                Protocol::HttpProtobuf,
                "http://c/otlp/v1/traces",
            ),
        ];
        for (endpoint, protocol, uri) in cases {
            let target = Target::new(&settings(endpoint, protocol)).unwrap();
            assert_eq!(target.uri.to_string(), uri);
        }
        for bad in ["/v1/traces", "ftp://c:21", "c:4317"] {
            assert!(
                Target::new(&settings(bad, Protocol::Grpc)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_grpc_body_is_unframed_and_a_short_one_is_empty() {
        assert_eq!(
            unframe(Bytes::from_static(b"\0\0\0\0\x02hiXX")),
            Bytes::from_static(b"hi")
        );
        assert_eq!(unframe(Bytes::from_static(b"\0\0")), Bytes::new());
        assert_eq!(
            unframe(Bytes::from_static(b"\x01\0\0\0\x01h")),
            Bytes::new()
        );
    }
}
