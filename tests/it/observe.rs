//! weir's telemetry against real peers: spans exported to a real OTLP collector service (the
//! `TraceService` server that `opentelemetry-proto` generates from the official protocol
//! definitions, served by hyper on an ephemeral loopback port) and to an OTLP/HTTP receiver that
//! decodes the official messages; the build info, process and telemetry metrics through
//! `promtool check metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prometheus::{IntCounter, Registry};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use weir::observe::access::ResponseFlags;
use weir::observe::request_id::RequestId;
use weir::observe::span_export::{OtlpSettings, Protocol, SpanCounters, SpanExport, SpanRecord};
use weir::observe::trace_context::{self, Sampler, SpanContext};

use crate::support::{blackhole, promtool_is_silent};

type Received = mpsc::UnboundedReceiver<(HeaderMap, ExportTraceServiceRequest)>;

/// The collector side of OTLP/gRPC: records what it gets, answers OK or `refuse`.
struct Collector {
    received: mpsc::UnboundedSender<(HeaderMap, ExportTraceServiceRequest)>,
    refuse: Option<tonic::Code>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(code) = self.refuse {
            return Err(tonic::Status::new(code, "collector refuses"));
        }
        let headers = request.metadata().clone().into_headers();
        let _ = self.received.send((headers, request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A real OTLP/gRPC collector service on an ephemeral port (h2c, as a collector's 4317 port).
async fn grpc_collector(refuse: Option<tonic::Code>) -> (SocketAddr, Received) {
    use tonic::codegen::Service;
    let (tx, rx) = mpsc::unbounded_channel();
    let server = TraceServiceServer::new(Collector {
        received: tx,
        refuse,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let mut server = server.clone();
                    async move { server.call(req).await }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, rx)
}

/// An OTLP/HTTP receiver: decodes the official request message from a protobuf body at
/// `/v1/traces` and answers with the official response message.
async fn http_collector() -> (SocketAddr, Received) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let ok = req.uri().path() == "/v1/traces"
                            && req.headers()["content-type"] == "application/x-protobuf";
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let status = match ExportTraceServiceRequest::decode(body) {
                            Ok(message) if ok => {
                                let _ = tx.send((headers, message));
                                200
                            }
                            _ => 400,
                        };
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, rx)
}

fn counters() -> SpanCounters {
    let c = |name: &str| IntCounter::new(name, "test").unwrap();
    SpanCounters {
        exported: c("exported"),
        dropped_full: c("dropped_full"),
        dropped_failed: c("dropped_failed"),
    }
}

fn settings(endpoint: String, protocol: Protocol) -> OtlpSettings {
    OtlpSettings {
        endpoint: endpoint.parse().unwrap(),
        protocol,
        timeout: Duration::from_secs(10),
        headers: vec![(
            http::HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("k-123"),
        )],
        service_name: "weir-test".into(),
    }
}

fn span_of(context: SpanContext, route: &str, status: u16) -> SpanRecord {
    SpanRecord {
        context,
        started: Instant::now(),
        duration: Duration::from_millis(3),
        method: Method::GET,
        path: "/orders?id=7".parse().unwrap(),
        authority: Some(HeaderValue::from_static("app.example.com")),
        protocol: Version::HTTP_11,
        client: "127.0.0.1:40000".parse().unwrap(),
        request_id: Some(RequestId::generate()),
        route: Some(Arc::from(route)),
        backend: Some(Arc::from("app-canary")),
        endpoint: Some("127.0.0.1:9101".parse().unwrap()),
        status,
        grpc_status: None,
        flags: ResponseFlags::NONE,
        retries: 1,
    }
}

/// Every span the collector receives until `n` arrived (bounded generously: the batch is sent
/// within a second).
async fn spans(rx: &mut Received, n: usize) -> (Vec<HeaderMap>, Vec<Span>) {
    let mut headers = Vec::new();
    let mut spans = Vec::new();
    while spans.len() < n {
        let (h, request) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the collector got the spans in time")
            .unwrap();
        headers.push(h);
        for rs in request.resource_spans {
            let resource = rs.resource.unwrap();
            assert!(resource.attributes.iter().any(|kv| kv.key == "service.name"
                && kv.value.as_ref().unwrap().value
                    == Some(Value::StringValue("weir-test".into()))));
            for ss in rs.scope_spans {
                assert_eq!(ss.scope.unwrap().name, "weir");
                spans.extend(ss.spans);
            }
        }
    }
    (headers, spans)
}

fn attr(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn text(v: &str) -> Option<Value> {
    Some(Value::StringValue(v.into()))
}

/// The request's headers as a caller sends them, after weir made its span: `traceparent` now
/// names weir's span.
fn continued(traceparent: &str) -> (HeaderMap, SpanContext) {
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_str(traceparent).unwrap());
    let context = trace_context::propagate(&mut h, Sampler::new(0.0));
    (h, context)
}

async fn check_export(protocol: Protocol, address: SocketAddr, rx: &mut Received) {
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (upstream_headers, child) = continued(caller);
    let mut h = HeaderMap::new();
    let root = trace_context::propagate(&mut h, Sampler::new(1.0));
    let counters = counters();
    let export = SpanExport::start(
        settings(format!("http://{address}"), protocol),
        counters.clone(),
    )
    .unwrap();
    export.record(span_of(child, "app", 200));
    export.record(span_of(root, "api", 503));

    let (headers, got) = spans(rx, 2).await;
    assert_eq!(headers[0]["x-api-key"], "k-123");
    let child_span = got.iter().find(|s| s.name == "GET app").unwrap();
    // Same trace as the caller, the caller's span as parent, weir's own span ID, and that span ID
    // is what the upstream was told is its parent.
    assert_eq!(
        child_span.trace_id,
        hex("4bf92f3577b34da6a3ce929d0e0e4736"),
        "same trace"
    );
    assert_eq!(child_span.parent_span_id, hex("00f067aa0ba902b7"));
    assert_eq!(child_span.span_id, child.span_id.bytes());
    assert_eq!(
        upstream_headers["traceparent"],
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", child.span_id)
    );
    assert_eq!(attr(child_span, "weir.route"), text("app"));
    assert_eq!(attr(child_span, "weir.backend"), text("app-canary"));
    assert_eq!(attr(child_span, "weir.endpoint"), text("127.0.0.1:9101"));
    assert_eq!(attr(child_span, "weir.retries"), Some(Value::IntValue(1)));
    assert_eq!(
        attr(child_span, "http.response.status_code"),
        Some(Value::IntValue(200))
    );
    assert!(child_span.end_time_unix_nano - child_span.start_time_unix_nano == 3_000_000);

    let root_span = got.iter().find(|s| s.name == "GET api").unwrap();
    assert!(root_span.parent_span_id.is_empty(), "a new trace's root");
    assert_eq!(root_span.trace_id, root.trace_id.bytes());
    assert_eq!(
        attr(root_span, "http.response.status_code"),
        Some(Value::IntValue(503))
    );
    assert_eq!(
        root_span.status.as_ref().unwrap().code,
        2,
        "STATUS_CODE_ERROR"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    while counters.exported.get() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counters.exported.get(), 2);
    assert_eq!(counters.dropped_failed.get(), 0);
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn spans_reach_a_real_grpc_collector_as_children_of_the_callers_span() {
    let (address, mut rx) = grpc_collector(None).await;
    check_export(Protocol::Grpc, address, &mut rx).await;
}

#[tokio::test]
async fn spans_reach_an_otlp_http_receiver_as_protobuf() {
    let (address, mut rx) = http_collector().await;
    check_export(Protocol::HttpProtobuf, address, &mut rx).await;
}

#[tokio::test]
async fn spans_a_collector_refuses_are_counted_as_lost() {
    let (address, _rx) = grpc_collector(Some(tonic::Code::Unavailable)).await;
    let counters = counters();
    let export = SpanExport::start(
        settings(format!("http://{address}"), Protocol::Grpc),
        counters.clone(),
    )
    .unwrap();
    let (_, context) = continued("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    for _ in 0..3 {
        export.record(span_of(context, "app", 200));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while counters.dropped_failed.get() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counters.dropped_failed.get(), 3);
    assert_eq!(counters.exported.get(), 0);
}

#[tokio::test]
async fn a_full_span_queue_drops_and_counts_instead_of_waiting() {
    // A collector that accepts connections and never answers (for 10 s, the export timeout):
    // the exporter's thread takes at most one batch (MAX_BATCH spans) off the queue before its
    // first export hangs, the queue holds QUEUE more, and the rest are dropped.
    let address = blackhole().await;
    let counters = counters();
    let export = SpanExport::start(
        settings(format!("http://{address}"), Protocol::Grpc),
        counters.clone(),
    )
    .unwrap();
    let (_, context) = continued("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let extra = 1_000;
    for _ in 0..weir::observe::span_export::QUEUE + extra {
        export.record(span_of(context, "app", 200));
    }
    let dropped = counters.dropped_full.get();
    let batch = weir::observe::span_export::MAX_BATCH as u64;
    assert!(
        (extra as u64 - batch..=extra as u64).contains(&dropped),
        "{dropped} spans dropped"
    );
}

#[test]
fn build_info_process_and_telemetry_metrics_pass_promtool_check_metrics() {
    let registry = Registry::new();
    weir::metrics::process::register(&registry).unwrap();
    let telemetry = weir::metrics::telemetry::Telemetry::register(&registry).unwrap();
    telemetry.access_log.written.inc();
    telemetry.spans.dropped_full.inc();
    let mut text = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut text,
    )
    .unwrap();
    let exposition = String::from_utf8(text).unwrap();
    for name in [
        "weir_build_info{",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "weir_access_log_lines_total 1",
        "weir_access_log_dropped_total{reason=\"queue_full\"} 0",
        "weir_trace_spans_dropped_total{reason=\"queue_full\"} 1",
        "weir_trace_spans_exported_total 0",
    ] {
        assert!(exposition.contains(name), "{name} in\n{exposition}");
    }
    promtool_is_silent(&exposition);
}

// === through weir ===

/// What the upstream (support's `/headers`) was told: `traceparent`, as text.
fn upstream_traceparent(answer: &crate::support::Answer) -> String {
    answer
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_else(|| panic!("the upstream got a traceparent: {}", answer.text()))
        .to_owned()
}

fn hex_text(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// weir over one upstream `app`, tracing at `sampling` and exporting to a gRPC collector whose
/// spans arrive on the receiver.
async fn traced_weir(sampling: f64) -> (crate::support::Weir, crate::support::Upstream, Received) {
    use crate::support::*;
    let (collector, rx) = grpc_collector(None).await;
    let up = upstream("app").await;
    let yaml = config(
        &[("app", &[up.address])],
        "  - name: app\n    backends: [{ upstream: app, weight: 1 }]\n",
    ) + &format!(
        "tracing:\n  sampling: {sampling:?}\n  otlp:\n    endpoint: http://{collector}\n    service_name: weir-test\n"
    );
    (weir(&yaml).await, up, rx)
}

#[tokio::test]
async fn weir_continues_or_starts_a_trace_and_exports_its_span_with_the_route_and_backend() {
    use crate::support::*;
    let (w, up, mut rx) = traced_weir(1.0).await;

    // A caller's sampled trace: weir's span is the caller's child and the upstream's parent.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    for client in [http1_client(), h2c_client()] {
        let req = http::Request::get(format!("http://{}/headers", w.address))
            .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
            .header("tracestate", "vendor=abc")
            .header("x-request-id", "trace-req-1")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let a = send(&client, req).await;
        let sent = upstream_traceparent(&a);
        let parts: Vec<&str> = sent.split('-').collect();
        assert_eq!(parts.len(), 4, "{sent}");
        assert_eq!((parts[0], parts[1], parts[3]), ("00", caller_trace, "01"));
        assert_ne!(parts[2], caller_span, "weir's own span is the parent");
        assert!(a.text().contains("tracestate: vendor=abc"), "{}", a.text());

        let (_, got) = spans(&mut rx, 1).await;
        let span = &got[0];
        assert_eq!(hex_text(&span.trace_id), caller_trace);
        assert_eq!(hex_text(&span.parent_span_id), caller_span);
        assert_eq!(hex_text(&span.span_id), parts[2]);
        assert_eq!(span.name, "GET app");
        assert_eq!(attr(span, "weir.route"), text("app"));
        assert_eq!(attr(span, "weir.backend"), text("app"));
        assert_eq!(attr(span, "weir.endpoint"), text(&up.address.to_string()));
        assert_eq!(attr(span, "weir.request_id"), text("trace-req-1"));
        assert_eq!(attr(span, "weir.retries"), Some(Value::IntValue(0)));
        assert_eq!(
            attr(span, "http.response.status_code"),
            Some(Value::IntValue(200))
        );
    }

    // No traceparent: weir starts a sampled trace (sampling 1.0), with no parent.
    let a = get(&http1_client(), w.address, "/headers").await;
    let sent = upstream_traceparent(&a);
    let parts: Vec<&str> = sent.split('-').collect();
    let (_, got) = spans(&mut rx, 1).await;
    let span = &got[0];
    assert_eq!(hex_text(&span.trace_id), parts[1]);
    assert_eq!(hex_text(&span.span_id), parts[2]);
    assert!(span.parent_span_id.is_empty(), "a root span");
    assert_eq!(parts[3], "03", "sampled, with a random trace ID");
}

#[tokio::test]
async fn without_a_tracing_section_traceparent_passes_untouched() {
    use crate::support::*;
    let up = upstream("app").await;
    let w = weir(&config(
        &[("app", &[up.address])],
        "  - name: app\n    backends: [{ upstream: app, weight: 1 }]\n",
    ))
    .await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = http::Request::get(format!("http://{}/headers", w.address))
        .header("traceparent", incoming)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let a = send(&http1_client(), req).await;
    assert_eq!(upstream_traceparent(&a), incoming);
    let a = get(&http1_client(), w.address, "/headers").await;
    assert!(!a.text().contains("traceparent"), "{}", a.text());
}

#[tokio::test]
async fn an_unsampled_trace_is_propagated_and_not_exported() {
    use crate::support::*;
    let (w, _up, mut rx) = traced_weir(0.0).await;
    let a = get(&http1_client(), w.address, "/headers").await;
    let sent = upstream_traceparent(&a);
    assert!(
        sent.ends_with("-02"),
        "not sampled, random trace ID: {sent}"
    );
    // A sampled caller's trace still is.
    let req = http::Request::get(format!("http://{}/headers", w.address))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    send(&http1_client(), req).await;
    let (_, got) = spans(&mut rx, 1).await;
    assert_eq!(got.len(), 1, "only the sampled trace's span");
    assert_eq!(
        hex_text(&got[0].trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}
