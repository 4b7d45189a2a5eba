//! What counts as a failure, decided when the response ends: a body cut by the upstream, the
//! time to the last byte, a client that goes away or stops reading, upstreams that break HTTP's
//! framing, and shadow copies that must not touch the outlier state real traffic sees. The
//! upstreams that misbehave are raw TCP servers that write exactly the bytes of each case.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// One step of a raw upstream's answer.
#[derive(Clone, Debug)]
enum Step {
    Write(Vec<u8>),
    Sleep(u64),
    /// Writes zeros until the write fails (the reader closed), then sets the flag.
    Flood(Arc<AtomicBool>),
    Close,
    /// Writes 8 KiB every millisecond until the write fails (the reader closed), then sets the
    /// flag: pieces small enough for weir to gather, with waits on the upstream between them.
    Trickle(Arc<AtomicBool>),
}

/// What a raw upstream saw: (connection number, request line), in order.
type Seen = Arc<Mutex<Vec<(u64, String)>>>;

/// A raw HTTP/1.1 upstream: for each request head it reads (requests carry no body here), it
/// plays the steps `script` gives for the request line, and keeps the connection for the next
/// request unless a step closes it.
async fn raw_upstream<F>(script: F) -> (SocketAddr, Seen)
where
    F: Fn(&str) -> Vec<Step> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Seen::default();
    let script = Arc::new(script);
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            n += 1;
            tokio::spawn(play(stream, n, script.clone(), log.clone()));
        }
    });
    (address, seen)
}

async fn play<F>(mut stream: TcpStream, n: u64, script: Arc<F>, seen: Seen)
where
    F: Fn(&str) -> Vec<Step> + Send + Sync + 'static,
{
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let line = head.lines().next().unwrap_or("").to_owned();
        seen.lock().unwrap().push((n, line.clone()));
        for step in script(&line) {
            match step {
                Step::Write(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Step::Flood(closed) => {
                    let zeros = vec![0u8; 64 * 1024];
                    while stream.write_all(&zeros).await.is_ok() {}
                    closed.store(true, Ordering::SeqCst);
                    return;
                }
                Step::Close => return,
                Step::Trickle(closed) => {
                    let zeros = vec![0u8; 8 * 1024];
                    while stream.write_all(&zeros).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    closed.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

fn write(bytes: &[u8]) -> Step {
    Step::Write(bytes.to_vec())
}

/// One route `app` over `upstream` (and `extra` YAML at the end of the file).
fn one_route(upstream: SocketAddr, extra: &str) -> String {
    config(
        &[("up", &[upstream])],
        "  - name: app\n    backends: [{ upstream: up, weight: 1 }]\n",
    ) + extra
}

/// Polls the metric until it reaches `want` (at most 10 s); returns the last value.
async fn metric_reaches(w: &Weir, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    let mut last = 0.0;
    for _ in 0..500 {
        last = metric(w, name, labels).await;
        if last >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

/// Sends `req` and reads the whole answer: `Ok((status, body))`, or `Err` when the answer was
/// cut (no head, or a body that failed).
async fn try_send(
    client: &TestClient,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("no answer within 20 s")
        .map_err(|e| format!("head: {e}"))?;
    let status = response.status();
    let body = tokio::time::timeout(Duration::from_secs(20), response.into_body().collect())
        .await
        .expect("no body within 20 s")
        .map_err(|e| format!("body: {e}"))?;
    Ok((status, body.to_bytes()))
}

fn request(method: Method, address: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn a_response_cut_after_its_head_is_a_reset_failure_that_the_client_and_the_probe_see() {
    let (up, _) = raw_upstream(|_| {
        vec![
            write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"),
            Step::Close,
        ]
    })
    .await;
    let yaml = config(
        &[("stable", &[up]), ("canary", &[up])],
        "  - name: app\n    rollout: { canary: canary, steps: [50, 100], interval: 30s, fast_fail: { enabled: false } }\n    backends:\n      - { upstream: stable, weight: 50 }\n      - { upstream: canary, weight: 50 }\n",
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    // 20 requests at 50 %: the canary gets none with probability 2^-20.
    for _ in 0..20 {
        let answer = try_send(&client, request(Method::GET, w.address, "/")).await;
        assert!(answer.is_err(), "the client must see the cut: {answer:?}");
    }
    let snapshot = w.running.reloader.snapshots.load_full();
    let probe = snapshot.routes[0].backends[1].probe.clone().unwrap();
    let seen = probe.peek();
    assert!(seen.requests > 0, "{seen:?}");
    assert_eq!(seen.failures, seen.requests, "every cut is a failure");
    let mut resets = 0.0;
    for backend in ["stable", "canary"] {
        let b = [("backend", backend)];
        resets += metric(&w, "weir_upstream_errors_total", &[b[0], ("kind", "reset")]).await;
        let failures = [("route", "app"), b[0], ("outcome", "failure")];
        let successes = [("route", "app"), b[0], ("outcome", "success")];
        assert_eq!(metric(&w, "weir_responses_total", &successes).await, 0.0);
        if backend == "canary" {
            let failed = metric(&w, "weir_responses_total", &failures).await;
            assert_eq!(failed, seen.requests as f64);
        }
    }
    assert_eq!(resets, 20.0);
    let closed = [("listener", "main"), ("kind", "closed")];
    assert_eq!(
        metric(&w, "weir_client_errors_total", &closed).await,
        0.0,
        "an upstream's cut is not the client leaving"
    );
}

#[tokio::test]
async fn the_latency_histogram_measures_to_the_end_of_a_body_streamed_for_300_ms() {
    let (up, _) = raw_upstream(|_| {
        vec![
            write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
            Step::Sleep(300),
            write(b"world"),
        ]
    })
    .await;
    let w = weir(&one_route(up, "")).await;
    let a = get(&http1_client(), w.address, "/").await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "helloworld"));
    let labels = [("route", "app"), ("backend", "up")];
    let text = get(&http1_client(), w.admin, "/metrics").await;
    let text = text.text();
    let total = |suffix: &str, extra: Option<(&str, &str)>| {
        let mut l = labels.to_vec();
        l.extend(extra);
        sample(text, &format!("weir_request_duration_seconds{suffix}"), &l).unwrap()
    };
    assert_eq!(total("_count", None), 1.0);
    assert!(total("_sum", None) >= 0.3, "{text}");
    assert_eq!(total("_bucket", Some(("le", "0.2"))), 0.0, "{text}");
    let head = |suffix: &str, extra: Option<(&str, &str)>| {
        let mut l = labels.to_vec();
        l.extend(extra);
        sample(
            text,
            &format!("weir_response_head_duration_seconds{suffix}"),
            &l,
        )
        .unwrap()
    };
    assert_eq!(head("_bucket", Some(("le", "0.2"))), 1.0, "{text}");
    let stats: Value =
        serde_json::from_slice(&get(&http1_client(), w.admin, "/stats").await.body).unwrap();
    let p50 = stats["routes"][0]["backends"][0]["latency_ms"]["p50"]
        .as_f64()
        .unwrap();
    assert!(p50 >= 300.0, "{stats}");
}

#[tokio::test]
async fn a_client_that_goes_away_mid_body_is_counted_as_closed_and_never_against_the_backend() {
    let (up, _) = raw_upstream(|_| {
        vec![
            write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n0123456789"),
            Step::Sleep(10_000),
        ]
    })
    .await;
    let w = weir(&one_route(up, "")).await;
    let mut client = TcpStream::connect(w.address).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = client.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    drop(client);
    let closed = [("listener", "main"), ("kind", "closed")];
    assert_eq!(
        metric_reaches(&w, "weir_client_errors_total", &closed, 1.0).await,
        1.0
    );
    for outcome in ["success", "failure"] {
        let labels = [("route", "app"), ("backend", "up"), ("outcome", outcome)];
        assert_eq!(metric(&w, "weir_responses_total", &labels).await, 0.0);
    }
    let stats: Value =
        serde_json::from_slice(&get(&http1_client(), w.admin, "/stats").await.body).unwrap();
    assert_eq!(stats["routes"][0]["backends"][0]["requests"], 0, "{stats}");
}

/// weir (write stall timeout 300 ms) over an upstream that answers an endless body as fast as
/// it can; the flag turns true when weir closes that upstream connection.
async fn weir_over_a_flood() -> (Weir, Arc<AtomicBool>) {
    weir_over(Step::Flood).await
}

/// The same with an upstream whose body comes in pieces with pauses between them, so that weir
/// waits on the upstream between two writes that wait on the client.
async fn weir_over_a_trickle() -> (Weir, Arc<AtomicBool>) {
    weir_over(Step::Trickle).await
}

async fn weir_over(body: fn(Arc<AtomicBool>) -> Step) -> (Weir, Arc<AtomicBool>) {
    let freed = Arc::new(AtomicBool::new(false));
    let flag = freed.clone();
    let (up, _) = raw_upstream(move |_| {
        vec![
            write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n"),
            body(flag.clone()),
        ]
    })
    .await;
    let w = weir(&one_route(up, "limits:\n  write_stall_timeout: 300ms\n")).await;
    (w, freed)
}

/// Waits (10 s at most) for weir to close the flooding upstream's connection.
async fn upstream_connection_closes(freed: &AtomicBool) {
    for _ in 0..500 {
        if freed.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        freed.load(Ordering::SeqCst),
        "the upstream connection behind the stalled client was closed"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_write_stall_timeout() {
    for (w, freed) in [weir_over_a_flood().await, weir_over_a_trickle().await] {
        stops_reading(w, freed).await;
    }
}

async fn stops_reading(w: Weir, freed: Arc<AtomicBool>) {
    // An HTTP/1.1 client that sends its request and never reads a byte.
    let mut client = TcpStream::connect(w.address).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let timeout = [("listener", "main"), ("kind", "timeout")];
    assert_eq!(
        metric_reaches(&w, "weir_client_errors_total", &timeout, 1.0).await,
        1.0
    );
    upstream_connection_closes(&freed).await;
    let failures = [("route", "app"), ("backend", "up"), ("outcome", "failure")];
    assert_eq!(metric(&w, "weir_responses_total", &failures).await, 0.0);
    drop(client);
}

#[tokio::test]
async fn an_http2_client_with_a_zero_window_is_cut_off_after_the_write_stall_timeout() {
    let (w, freed) = weir_over_a_flood().await;
    let client: TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .http2_initial_stream_window_size(0)
            .build_http();
    // The head arrives (headers are not flow-controlled); the body can never be sent.
    let response = client
        .request(request(Method::GET, w.address, "/"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let timeout = [("listener", "main"), ("kind", "timeout")];
    assert_eq!(
        metric_reaches(&w, "weir_client_errors_total", &timeout, 1.0).await,
        1.0
    );
    upstream_connection_closes(&freed).await;
    drop(response);
}

/// One misbehaving upstream: what it answers to `/bad`, and what weir must make of it.
struct Case {
    name: &'static str,
    method: Method,
    answer: Vec<u8>,
    /// The client's status, or `None` when it sees the response cut.
    status: Option<StatusCode>,
    /// The `weir_upstream_errors_total` kind counted, if any.
    kind: Option<&'static str>,
    /// Whether the upstream connection must not carry the next request.
    fresh_connection: bool,
}

#[tokio::test]
async fn misbehaving_upstreams_get_the_right_answer_and_spoil_nothing_after_them() {
    let many_headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases = [
        Case {
            name: "a malformed status line",
            method: Method::GET,
            answer: b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            status: Some(StatusCode::BAD_GATEWAY),
            kind: Some("protocol"),
            fresh_connection: true,
        },
        Case {
            name: "Content-Length with Transfer-Encoding",
            method: Method::GET,
            answer: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            status: Some(StatusCode::BAD_GATEWAY),
            kind: Some("protocol"),
            fresh_connection: true,
        },
        Case {
            name: "an invalid chunk",
            method: Method::GET,
            answer: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
            status: None,
            kind: Some("protocol"),
            fresh_connection: true,
        },
        Case {
            name: "a 1xx then the final answer",
            method: Method::GET,
            answer: b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            status: Some(StatusCode::OK),
            kind: None,
            fresh_connection: false,
        },
        Case {
            name: "a HEAD answered with a body",
            method: Method::HEAD,
            answer: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            status: Some(StatusCode::OK),
            kind: None,
            fresh_connection: true,
        },
        Case {
            name: "a 204 with a body",
            method: Method::GET,
            answer: b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            status: Some(StatusCode::BAD_GATEWAY),
            kind: Some("protocol"),
            fresh_connection: true,
        },
        Case {
            name: "a close without a response",
            method: Method::GET,
            answer: Vec::new(),
            status: Some(StatusCode::BAD_GATEWAY),
            kind: Some("reset"),
            fresh_connection: true,
        },
        Case {
            name: "150 response headers",
            method: Method::GET,
            answer: format!("HTTP/1.1 200 OK\r\n{many_headers}Content-Length: 0\r\n\r\n").into_bytes(),
            status: Some(StatusCode::BAD_GATEWAY),
            kind: Some("protocol"),
            fresh_connection: true,
        },
    ];
    for case in cases {
        let answer = case.answer.clone();
        let (up, seen) = raw_upstream(move |line| {
            if line.contains("/good") {
                vec![write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")]
            } else if answer.is_empty() {
                vec![Step::Close]
            } else {
                vec![Step::Write(answer.clone())]
            }
        })
        .await;
        let w = weir(&one_route(up, "")).await;
        let client = http1_client();
        let bad = try_send(&client, request(case.method.clone(), w.address, "/bad")).await;
        match case.status {
            Some(status) => {
                let (got, body) = bad.unwrap_or_else(|e| panic!("{}: {e}", case.name));
                assert_eq!(got, status, "{}", case.name);
                if status == StatusCode::OK && case.method == Method::GET {
                    assert_eq!(&body[..], b"ok", "{}", case.name);
                }
                if case.method == Method::HEAD {
                    assert!(body.is_empty(), "{}", case.name);
                }
            }
            None => assert!(bad.is_err(), "{}: the client must see the cut", case.name),
        }
        let good = try_send(&client, request(Method::GET, w.address, "/good")).await;
        assert_eq!(
            good,
            Ok((StatusCode::OK, Bytes::from_static(b"good"))),
            "{}: the next request",
            case.name
        );
        for kind in ["connect", "timeout", "reset", "tls", "protocol"] {
            let labels = [("backend", "up"), ("kind", kind)];
            let want = if case.kind == Some(kind) { 1.0 } else { 0.0 };
            assert_eq!(
                metric(&w, "weir_upstream_errors_total", &labels).await,
                want,
                "{}: kind {kind}",
                case.name
            );
        }
        let failures = [("route", "app"), ("backend", "up"), ("outcome", "failure")];
        let want = if case.kind.is_some() { 1.0 } else { 0.0 };
        assert_eq!(
            metric(&w, "weir_responses_total", &failures).await,
            want,
            "{}",
            case.name
        );
        if case.fresh_connection {
            let seen = seen.lock().unwrap().clone();
            let bad = seen.iter().find(|(_, l)| l.contains("/bad")).unwrap().0;
            let good = seen.iter().find(|(_, l)| l.contains("/good")).unwrap().0;
            assert_ne!(
                bad, good,
                "{}: the connection was used again: {seen:?}",
                case.name
            );
        }
    }
}

#[tokio::test]
async fn failing_shadow_copies_eject_nothing_that_real_traffic_uses() {
    let app = upstream("app").await;
    let other = upstream("other").await;
    let yaml = format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n\
         upstreams:\n  - name: app\n    endpoints: [\"{}\"]\n    outlier: {{ consecutive_failures: 3, ejection: 30s }}\n\
         \x20 - name: other\n    endpoints: [\"{}\"]\n\
         routes:\n  - name: copied\n    match: {{ path_prefix: /status/503 }}\n    backends: [{{ upstream: other, weight: 1 }}]\n    mirror: {{ upstream: app, percent: 100 }}\n\
         \x20 - name: real\n    backends: [{{ upstream: app, weight: 1 }}]\n",
        app.address, other.address
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    // Each copy of /status/503 gets a 503 from app's one endpoint: ten failures in a row, where
    // three eject an endpoint that real traffic fails on.
    for _ in 0..10 {
        assert_eq!(
            get(&client, w.address, "/status/503").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let copies = [("route", "copied"), ("backend", "app"), ("code", "503")];
    assert_eq!(
        metric_reaches(&w, "weir_mirror_requests_total", &copies, 10.0).await,
        10.0
    );
    let a = get(&client, w.address, "/").await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "app"));
    let endpoint = app.address.to_string();
    let labels = [("backend", "app"), ("endpoint", endpoint.as_str())];
    assert_eq!(
        metric(&w, "weir_outlier_ejections_total", &labels).await,
        0.0
    );
    // Real traffic still ejects on its own failures.
    for _ in 0..3 {
        get(&client, w.address, "/status/500").await;
    }
    assert_eq!(
        metric(&w, "weir_outlier_ejections_total", &labels).await,
        1.0
    );
}

#[tokio::test]
async fn counters_of_outcomes_add_up_to_the_requests_judged() {
    let up = fixed_upstream(503, Duration::ZERO).await;
    let ok = upstream("ok").await;
    let w = weir(&split_config(ok.address, up.address, 1, 1)).await;
    let client = http1_client();
    for _ in 0..40 {
        get(&client, w.address, "/").await;
    }
    let count = |backend: &'static str, outcome: &'static str| {
        let w = &w;
        async move {
            metric(
                w,
                "weir_responses_total",
                &[("route", "app"), ("backend", backend), ("outcome", outcome)],
            )
            .await
        }
    };
    let (s_ok, s_fail) = (
        count("stable", "success").await,
        count("stable", "failure").await,
    );
    let (c_ok, c_fail) = (
        count("canary", "success").await,
        count("canary", "failure").await,
    );
    assert_eq!((s_fail, c_ok), (0.0, 0.0));
    assert_eq!(s_ok + c_fail, 40.0);
    assert_eq!(
        c_fail,
        metric(
            &w,
            "weir_requests_total",
            &[("route", "app"), ("backend", "canary"), ("code", "503")]
        )
        .await
    );
}
