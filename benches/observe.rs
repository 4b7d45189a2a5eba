//! What issue 21's parts cost a request: request IDs (keep, generate), trace context (parse,
//! continue, start), and handing an access record or a span to its queue; and, for scale, what
//! the background side costs (one JSON access line, one OTLP span encoded).
//! Run with `cargo bench --bench observe`. Before criterion's timings it prints the allocations
//! per call of each request-path operation, counted by a global allocator on this thread only.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, Criterion};
use http::{HeaderMap, HeaderValue, Method, Version};
use prometheus::IntCounter;
use prost::Message;
use weir::observe::access::{
    AccessLog, AccessLogCounters, AccessLogSettings, AccessRecord, Format, Output, ResponseFlags,
};
use weir::observe::request_id::{self, RequestId};
use weir::observe::span_export::{self, SpanRecord};
use weir::observe::trace_context::{self, Sampler};

#[path = "support/counting.rs"]
mod counting;
use counting::{ALLOCATIONS, COUNTED};

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A request's headers as curl sends them, plus `extra`.
fn headers(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("app.example.com"));
    h.insert("user-agent", HeaderValue::from_static("curl/8.5.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    for (k, v) in extra {
        h.insert(*k, HeaderValue::from_static(v));
    }
    h
}

/// Allocations per call of `f` on `inputs` (prepared before counting starts).
fn allocations<T>(inputs: Vec<T>, mut f: impl FnMut(T)) -> f64 {
    let n = inputs.len() as f64;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTED.with(|c| c.set(true));
    for input in inputs {
        f(input);
    }
    COUNTED.with(|c| c.set(false));
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / n
}

fn record() -> AccessRecord {
    AccessRecord {
        started: Instant::now(),
        listener: Arc::from("public"),
        client: "10.0.0.7:51234".parse().unwrap(),
        protocol: Version::HTTP_11,
        method: Method::GET,
        authority: Some(HeaderValue::from_static("app.example.com")),
        path: "/api/users?id=7".parse().unwrap(),
        user_agent: Some(HeaderValue::from_static("curl/8.5.0")),
        request_id: Some(RequestId::generate()),
        trace_id: None,
        route: Some(Arc::from("app")),
        backend: Some(Arc::from("app-canary")),
        endpoint: Some("127.0.0.1:9101".parse().unwrap()),
        status: 200,
        grpc_status: None,
        flags: ResponseFlags::NONE,
        retries: 0,
        upstream: Some(Duration::from_micros(11_900)),
        duration: Duration::from_micros(12_500),
        bytes_received: 0,
        bytes_sent: 512,
    }
}

fn span(r: &AccessRecord) -> SpanRecord {
    let mut h = headers(&[("traceparent", CALLER)]);
    SpanRecord {
        context: trace_context::propagate(&mut h, Sampler::new(1.0)),
        started: r.started,
        duration: r.duration,
        method: r.method.clone(),
        path: r.path.clone(),
        authority: r.authority.clone(),
        protocol: r.protocol,
        client: r.client,
        request_id: r.request_id.clone(),
        route: r.route.clone(),
        backend: r.backend.clone(),
        endpoint: r.endpoint.clone(),
        status: r.status,
        grpc_status: None,
        flags: r.flags,
        retries: r.retries,
    }
}

fn counter(name: &str) -> IntCounter {
    IntCounter::new(name, "bench").unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = 10_000;
    // OBSERVE_ONLY=N runs only the Nth of these (0-4) and no criterion bench, so that
    // `valgrind --tool=callgrind` can count the instructions of one operation per run.
    let only: Option<usize> = std::env::var("OBSERVE_ONLY")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut index = 0;
    let mut print = |what: &str, run: &mut dyn FnMut() -> f64| {
        if only.is_none_or(|o| o == index) {
            println!("allocations per call: {what}: {:.2}", run());
        }
        index += 1;
    };
    print("request_id::ensure, valid incoming ID kept", &mut || {
        allocations(
            (0..n)
                .map(|_| headers(&[("x-request-id", "abc-123")]))
                .collect(),
            |mut h| {
                black_box(request_id::ensure(&mut h));
            },
        )
    });
    print(
        "request_id::ensure, none incoming: generate + insert",
        &mut || {
            allocations((0..n).map(|_| headers(&[])).collect(), |mut h| {
                black_box(request_id::ensure(&mut h));
            })
        },
    );
    print(
        "trace_context::propagate, caller's traceparent + tracestate continued",
        &mut || {
            allocations(
                (0..n)
                    .map(|_| {
                        headers(&[
                            ("traceparent", CALLER),
                            ("tracestate", "rojo=00f067aa0ba902b7"),
                        ])
                    })
                    .collect(),
                |mut h| {
                    black_box(trace_context::propagate(&mut h, Sampler::new(0.1)));
                },
            )
        },
    );
    print("trace_context::propagate, new trace started", &mut || {
        allocations((0..n).map(|_| headers(&[])).collect(), |mut h| {
            black_box(trace_context::propagate(&mut h, Sampler::new(0.1)));
        })
    });
    let counters = AccessLogCounters {
        written: counter("w"),
        dropped_full: counter("f"),
        dropped_write_error: counter("e"),
    };
    let log = AccessLog::start(
        AccessLogSettings {
            format: Format::Json,
            output: Output::File("/dev/null".into()),
        },
        counters.clone(),
    )
    .unwrap();
    print(
        "AccessLog::log (record built from values the request holds, queued)",
        &mut || allocations((0..n).map(|_| record()).collect(), |r| log.log(r)),
    );
    if only.is_some() {
        return;
    }

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("request_id_generate_and_format", |b| {
        b.iter(|| black_box(RequestId::generate()))
    });
    let mut valid = headers(&[("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e")]);
    c.bench_function("request_id_keep_valid_incoming", |b| {
        b.iter(|| black_box(request_id::ensure(black_box(&mut valid))))
    });
    c.bench_function("request_id_generate_and_insert", |b| {
        b.iter_batched(
            || headers(&[]),
            |mut h| black_box(request_id::ensure(&mut h)),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("traceparent_parse", |b| {
        b.iter(|| trace_context::parse_traceparent(black_box(CALLER.as_bytes())).unwrap())
    });
    let mut caller = headers(&[
        ("traceparent", CALLER),
        ("tracestate", "rojo=00f067aa0ba902b7"),
    ]);
    c.bench_function("traceparent_continue_with_tracestate", |b| {
        // Each call replaces traceparent with weir's, which the next call continues: the same
        // path every time.
        b.iter(|| black_box(trace_context::propagate(&mut caller, Sampler::new(0.1))))
    });
    c.bench_function("traceparent_start_new_trace", |b| {
        b.iter_batched(
            || headers(&[]),
            |mut h| black_box(trace_context::propagate(&mut h, Sampler::new(0.1))),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("access_log_queue_one_record", |b| {
        b.iter_batched(record, |r| log.log(r), BatchSize::SmallInput)
    });
    let mut line = Vec::with_capacity(1024);
    let r = record();
    c.bench_function("access_log_format_json_line_background", |b| {
        b.iter(|| {
            line.clear();
            weir::observe::access::format::write_line(
                Format::Json,
                &r,
                SystemTime::now(),
                &mut line,
            );
            black_box(line.len())
        })
    });
    let spans: Vec<SpanRecord> = (0..span_export::MAX_BATCH).map(|_| span(&r)).collect();
    let resource = Default::default();
    c.bench_function("otlp_encode_batch_of_512_spans_background", |b| {
        b.iter(|| {
            let request =
                span_export::export_request(&resource, &spans, SystemTime::now(), Instant::now());
            black_box(request.encode_to_vec().len())
        })
    });
    c.final_summary();
    drop(log);
    println!(
        "access log: {} lines written, {} dropped (queue full) during the bench",
        counters.written.get(),
        counters.dropped_full.get()
    );
}
