//! Hostile clients, byte for byte over raw TCP, and upstreams that misbehave on demand: a
//! client's fault is a 4xx or a closed connection, counted in `weir_client_errors_total` and
//! never against a backend; an upstream's fault stays the backend's. docs/HARDENING.md has the
//! table of every case.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// One upstream `app` (with `upstream_extra` in its definition) behind route `app` (with
/// `route_extra`), and `limits_extra` under `limits:`.
fn one_route(up: SocketAddr, upstream_extra: &str, route_extra: &str, limits: &str) -> String {
    let mut y = config(
        &[("app", &[up])],
        &format!("  - name: app\n{route_extra}    backends: [{{ upstream: app, weight: 1 }}]\n"),
    )
    .replace(
        "    endpoints: [",
        &format!("{upstream_extra}    endpoints: ["),
    );
    if !limits.is_empty() {
        y.push_str("limits:\n");
        y.push_str(limits);
    }
    y
}

const OUTLIER: &str = "    outlier: { consecutive_failures: 5, ejection: 30s }\n";

async fn client_errors(w: &Weir, kind: &str) -> f64 {
    metric(
        w,
        "weir_client_errors_total",
        &[("listener", "main"), ("kind", kind)],
    )
    .await
}

async fn upstream_errors(w: &Weir) -> f64 {
    let text = get(&http1_client(), w.admin, "/metrics").await;
    text.text()
        .lines()
        .filter(|l| l.starts_with("weir_upstream_errors_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}

/// The `weir_requests_total` samples of route `app`, backend `app`, as `code count` text.
async fn recorded_codes(w: &Weir) -> Vec<String> {
    let text = get(&http1_client(), w.admin, "/metrics").await;
    text.text()
        .lines()
        .filter(|l| l.starts_with("weir_requests_total{"))
        .map(|l| {
            let code = l
                .split("code=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            format!("{code} {}", l.rsplit_once(' ').unwrap().1)
        })
        .collect()
}

/// Chunked bodies that hyper refuses, each a POST of its own on a new connection.
const BROKEN_BODIES: [(&str, &str); 7] = [
    ("chunk size zz", "zz\r\nabc\r\n0\r\n\r\n"),
    (
        "chunk size past 64 bits",
        "fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    ),
    ("negative chunk size", "-1\r\nabc\r\n0\r\n\r\n"),
    ("chunk size 0x5", "0x5\r\nabcde\r\n0\r\n\r\n"),
    ("data longer than its size", "2\r\nabcdef\r\n0\r\n\r\n"),
    ("bare LF chunk lines", "3\nabc\n0\n\n"),
    ("a 64 KiB chunk extension", "EXT"),
];

fn broken_post(body: &str) -> Vec<u8> {
    let body = if body == "EXT" {
        format!("3;x={}\r\nabc\r\n0\r\n\r\n", "a".repeat(64 * 1024))
    } else {
        body.to_owned()
    };
    format!("POST /record HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\nx-canary: always\r\n\r\n{body}")
        .into_bytes()
}

#[tokio::test]
async fn broken_chunked_bodies_are_400_and_never_eject_the_only_endpoint() {
    let up = upstream("app").await;
    let w = weir(&one_route(up.address, OUTLIER, "", "")).await;
    // Five of them used to eject the only endpoint: then every request got 503.
    for round in 0..2 {
        for (case, body) in BROKEN_BODIES {
            let a = raw(w.address, &broken_post(body)).await;
            assert!(
                a.status == 400 || a.status == 0,
                "round {round}, {case}: {}",
                a.text
            );
        }
    }
    assert_eq!(get(&http1_client(), w.address, "/").await.text(), "app");
    let endpoint = up.address.to_string();
    let labels = [("backend", "app"), ("endpoint", endpoint.as_str())];
    assert_eq!(
        metric(&w, "weir_outlier_ejections_total", &labels).await,
        0.0
    );
    assert_eq!(upstream_errors(&w).await, 0.0);
    assert_eq!(
        recorded_codes(&w).await,
        ["200 1"],
        "only the good request is the backend's"
    );
    assert_eq!(client_errors(&w, "body").await, 14.0);
}

#[tokio::test]
async fn an_aborted_upload_is_counted_as_the_client_gone() {
    let up = upstream("app").await;
    let w = weir(&one_route(up.address, OUTLIER, "", "")).await;
    for _ in 0..6 {
        let mut s = TcpStream::connect(w.address).await.unwrap();
        s.write_all(
            b"POST /record HTTP/1.1\r\nhost: app\r\ncontent-length: 1000\r\n\r\n0123456789",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(s);
    }
    let counted = async {
        while client_errors(&w, "closed").await < 6.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), counted)
        .await
        .expect("six aborted uploads counted as `closed`");
    assert_eq!(upstream_errors(&w).await, 0.0);
    assert!(recorded_codes(&w).await.is_empty());
    assert_eq!(get(&http1_client(), w.address, "/").await.text(), "app");
}

#[tokio::test]
async fn a_stalled_upload_gets_408_and_the_backend_is_not_blamed() {
    let up = upstream("app").await;
    let w = weir(&one_route(up.address, OUTLIER, "    timeout: 300ms\n", "")).await;
    let mut open = Vec::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect(w.address).await.unwrap();
        s.write_all(b"POST /record HTTP/1.1\r\nhost: app\r\ncontent-length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        let a = read_response(&mut s).await;
        assert_eq!(a.status, 408, "{}", a.text);
        open.push(s);
    }
    assert_eq!(client_errors(&w, "timeout").await, 6.0);
    assert_eq!(upstream_errors(&w).await, 0.0);
    assert!(recorded_codes(&w).await.is_empty());
    assert_eq!(get(&http1_client(), w.address, "/").await.text(), "app");
}

#[tokio::test]
async fn an_upstream_fault_still_counts_against_the_backend() {
    // It reads the request head and closes: a reset before any answer.
    let rude = raw_upstream(|mut s| async move {
        read_head(&mut s).await;
    })
    .await;
    let w = weir(&one_route(rude, OUTLIER, "", "")).await;
    for _ in 0..5 {
        let a = raw(
            w.address,
            b"POST / HTTP/1.1\r\nhost: app\r\ncontent-length: 3\r\n\r\nabc",
        )
        .await;
        assert_eq!(a.status, 502, "{}", a.text);
    }
    let a = get(&http1_client(), w.address, "/").await;
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "ejected after five resets"
    );
    let reset = [("backend", "app"), ("kind", "reset")];
    assert_eq!(metric(&w, "weir_upstream_errors_total", &reset).await, 5.0);
    assert_eq!(recorded_codes(&w).await, ["502 5", "503 1"]);
    for kind in ["framing", "body", "timeout", "closed"] {
        assert_eq!(client_errors(&w, kind).await, 0.0, "{kind}");
    }
}

#[tokio::test]
async fn broken_bodies_sent_to_the_canary_never_roll_it_back() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let yaml = config(
        &[("stable", &[stable.address]), ("canary", &[canary.address])],
        "  - name: app\n    rollout: { canary: canary, steps: [50, 100], interval: 30s, min_requests: 10 }\n\
         \x20   overrides: [{ match: { header: { x-canary: always } }, upstream: canary }]\n\
         \x20   backends:\n      - { upstream: stable, weight: 90 }\n      - { upstream: canary, weight: 10 }\n",
    );
    let w = weir(&yaml).await;
    // 22 of these used to roll a healthy canary back by fast-fail in about a second.
    for i in 0..30 {
        let (_, body) = BROKEN_BODIES[i % BROKEN_BODIES.len()];
        raw(w.address, &broken_post(body)).await;
    }
    let stats = get(&http1_client(), w.admin, "/stats").await;
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    assert_eq!(
        stats["routes"][0]["rollout"]["state"], "progressing",
        "{stats:#}"
    );
    assert_eq!(
        metric(&w, "weir_rollout_state", &[("route", "app")]).await,
        1.0
    );
    assert_eq!(client_errors(&w, "body").await, 30.0);
}

#[tokio::test]
async fn an_upstream_that_answers_a_stalled_upload_early_is_not_reused() {
    // Answers as soon as it has the head, never reads the body, keeps the connection open.
    let early = answering_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly").await;
    let w = weir(&one_route(early, "", "    timeout: 2s\n", "")).await;
    let mut stalled = TcpStream::connect(w.address).await.unwrap();
    stalled
        .write_all(b"POST / HTTP/1.1\r\nhost: app\r\ncontent-length: 100000\r\n\r\n0123456789")
        .await
        .unwrap();
    let a = read_response(&mut stalled).await;
    assert_eq!(a.status, 200, "{}", a.text);
    // The upstream connection still carries the stalled upload: the next requests must not wait
    // behind it (they used to, for the whole route timeout, and got 504).
    let client = http1_client();
    for _ in 0..4 {
        let started = Instant::now();
        let a = get(&client, w.address, "/").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.text(), "early");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "waited for the route timeout"
        );
    }
    drop(stalled);
}

#[tokio::test]
async fn ambiguous_framing_and_host_are_refused_with_400_and_never_forwarded() {
    let up = upstream("app").await;
    let w = weir(&one_route(up.address, "", "", "")).await;
    let cases: [(&str, &str, u16); 14] = [
        (
            "two Host",
            "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            400,
        ),
        ("no Host", "GET / HTTP/1.1\r\n\r\n", 400),
        ("an empty Host", "GET / HTTP/1.1\r\nhost:\r\n\r\n", 400),
        (
            "a target naming another host",
            "GET http://b.example/ HTTP/1.1\r\nhost: a.example\r\n\r\n",
            400,
        ),
        (
            "CL then TE",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "TE then CL",
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "CHUNKED with CL",
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: CHUNKED\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "tab chunked with CL",
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding:\tchunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "identity, chunked",
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: identity, chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "two TE",
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "the same CL twice",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",
            400,
        ),
        (
            "CONNECT",
            "CONNECT a.example:443 HTTP/1.1\r\nhost: a.example:443\r\n\r\n",
            501,
        ),
        (
            "Upgrade: h2c",
            "GET / HTTP/1.1\r\nhost: a\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n",
            400,
        ),
        ("101 headers", "", 431),
    ];
    for (case, bytes, status) in cases {
        let bytes = if case == "101 headers" {
            let fields: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
            format!("GET / HTTP/1.1\r\nhost: a\r\n{fields}\r\n")
        } else {
            bytes.to_owned()
        };
        let a = raw(w.address, bytes.as_bytes()).await;
        assert_eq!(a.status, status, "{case}: {}", a.text);
    }
    assert_eq!(up.hits(), 0, "nothing was forwarded");
    assert!(recorded_codes(&w).await.is_empty());
    assert_eq!(client_errors(&w, "framing").await, 13.0);
    // Smuggling: the body of a refused request is never read as a second request.
    let mut s = TcpStream::connect(w.address).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 29\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut all = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut all))
        .await
        .expect("weir closes after a refused framing")
        .unwrap();
    assert!(all.starts_with("HTTP/1.1 400"), "{all}");
    assert_eq!(all.matches("HTTP/1.1").count(), 1, "{all}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn host_is_forwarded_as_sent_even_when_connection_names_it() {
    let up = upstream("app").await;
    let w = weir(&one_route(up.address, "", "", "")).await;
    let a = raw(
        w.address,
        b"GET /headers HTTP/1.1\r\nhost: app.example.com\r\nconnection: host, x-drop\r\nx-drop: 1\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.text.contains("host: app.example.com\n"), "{}", a.text);
    assert!(!a.text.contains("x-drop"), "{}", a.text);
    // The same authority in the target and Host is fine.
    let a = raw(
        w.address,
        b"GET http://App.example.com/headers HTTP/1.1\r\nhost: app.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
}

#[tokio::test]
async fn an_http2_host_that_differs_from_the_authority_is_refused() {
    let up = upstream("app").await;
    let w = weir(&one_route(up.address, "", "", "")).await;
    let client = h2c_client();
    let req = |host: &str| {
        Request::get(format!("http://{}/headers", w.address))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let a = send(&client, req("other.example.com")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = send(&client, req(&w.address.to_string())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn only_the_routes_upgrade_protocols_are_tunnelled_and_a_bad_101_is_502() {
    let up = upstream("app").await;
    let w = weir(&one_route(up.address, "", "", "")).await;
    // A protocol the route does not tunnel: the request goes on without its Upgrade.
    let a = raw(
        w.address,
        b"GET /headers HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: foo\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(!a.text.contains("upgrade"), "{}", a.text);

    // An upstream whose 101 does not match the key.
    let liar = raw_upstream(|mut s| async move {
        if read_head(&mut s).await.is_some() {
            let answer = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
            let _ = s.write_all(answer).await;
            let _ = s.read(&mut [0u8; 16]).await;
        }
    })
    .await;
    let w = weir(&one_route(liar, "", "", "")).await;
    let ws = b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let a = raw(w.address, ws).await;
    assert_eq!(a.status, 502, "{}", a.text);
    let protocol = [("backend", "app"), ("kind", "protocol")];
    assert_eq!(
        metric(&w, "weir_upstream_errors_total", &protocol).await,
        1.0
    );
}

#[tokio::test]
async fn a_gets_chunked_body_is_forwarded() {
    let up = upstream("app").await;
    let w = weir(&one_route(up.address, "", "", "")).await;
    let a = raw(
        w.address,
        b"GET /record/get HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let recorded = up.recorded.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].2, Bytes::from_static(b"hello"));
}

#[tokio::test]
async fn status_codes_past_599_are_recorded_as_they_are() {
    let up = fixed_upstream(600, Duration::ZERO).await;
    let w = weir(&one_route(up.address, "", "", "")).await;
    assert_eq!(
        get(&http1_client(), w.address, "/").await.status.as_u16(),
        600
    );
    assert_eq!(recorded_codes(&w).await, ["600 1"]);
}

/// An upstream that answers with the number of data frames and bytes of the request body.
async fn frame_counter() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut body = req.into_body();
                    let (mut frames, mut bytes) = (0u64, 0usize);
                    while let Some(Ok(frame)) = body.frame().await {
                        if let Some(d) = frame.data_ref() {
                            frames += 1;
                            bytes += d.len();
                        }
                    }
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                        "{frames} {bytes}"
                    )))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

#[tokio::test]
async fn tiny_request_chunks_are_gathered_before_they_go_upstream() {
    let counter = frame_counter().await;
    let w = weir(&one_route(counter, "", "", "")).await;
    let chunks = 200_000;
    let mut body = Vec::with_capacity(chunks * 6 + 5);
    for _ in 0..chunks {
        body.extend_from_slice(b"1\r\nx\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut s = TcpStream::connect(w.address).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&body).await.unwrap();
    let a = tokio::time::timeout(Duration::from_secs(60), read_response(&mut s))
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    let (frames, bytes) = a
        .text
        .rsplit_once("\r\n\r\n")
        .unwrap()
        .1
        .split_once(' ')
        .unwrap();
    assert_eq!(bytes, chunks.to_string(), "every byte arrives");
    let frames: u64 = frames.parse().unwrap();
    // One frame per client chunk before; a frame now gathers what the client's connection had
    // read (at most 16 KiB). The bound leaves a factor of 10 for a slow, busy machine.
    assert!(
        frames <= chunks as u64 / 10,
        "{frames} frames for {chunks} chunks"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let up = upstream("app").await;
    let limits = "  header_read_timeout: 300ms\n  idle_timeout: 60s\n";
    let w = weir(&one_route(up.address, "", "", limits)).await;
    let mut silent = TcpStream::connect(w.address).await.unwrap();
    // An HTTP/2 client that sends its preface and SETTINGS, then no request.
    let mut h2 = TcpStream::connect(w.address).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    for (name, s) in [
        ("silent TCP", &mut silent),
        ("HTTP/2 preface only", &mut h2),
    ] {
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
        assert!(
            closed.is_ok(),
            "{name}: still open after 10 s (idle_timeout is 60 s)"
        );
    }
    assert_eq!(client_errors(&w, "timeout").await, 2.0);
}

#[tokio::test]
async fn an_idle_http2_client_that_ignores_goaway_and_ping_is_closed() {
    let up = upstream("app").await;
    let limits = "  header_read_timeout: 300ms\n  idle_timeout: 400ms\n";
    let w = weir(&one_route(up.address, "", "", limits)).await;
    let mut s = TcpStream::connect(w.address).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, &[]));
    // GET / over http (HPACK static table: :method GET, :scheme http, :path /), ending the stream.
    out.extend(h2_frame(1, 0x5, 1, &[0x82, 0x86, 0x84]));
    s.write_all(&out).await.unwrap();
    // Then it reads, and answers nothing: no SETTINGS ack, no PING ack, GOAWAY ignored.
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut seen)).await;
    assert!(
        closed.is_ok(),
        "an idle HTTP/2 connection that ignores weir stayed open"
    );
    assert_eq!(up.hits(), 1, "its request was served first");
}

#[tokio::test]
async fn the_admin_api_caps_its_connections_and_closes_silent_ones() {
    let up = upstream("app").await;
    let limits = "  header_read_timeout: 2s\n";
    let w = weir(&one_route(up.address, "", "", limits)).await;
    let max = weir::admin::MAX_CONNECTIONS;
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(TcpStream::connect(w.admin).await.unwrap());
    }
    // Past the cap a connection is closed at once, long before the head's 2 s deadline.
    let mut over = TcpStream::connect(w.admin).await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(1), over.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "a connection past the cap was kept");
    // The silent ones are closed by the head's deadline, and the API answers again.
    for mut s in held {
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "a silent admin connection stayed open");
    }
    assert_eq!(
        get(&http1_client(), w.admin, "/healthz").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_header_count_limit_is_configurable() {
    let up = upstream("app").await;
    let w = weir(&one_route(up.address, "", "", "  max_headers: 50\n")).await;
    let fields: String = (0..40).map(|i| format!("x-{i}: v\r\n")).collect();
    let a = raw(
        w.address,
        format!("GET / HTTP/1.1\r\nhost: a\r\n{fields}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let fields: String = (0..60).map(|i| format!("x-{i}: v\r\n")).collect();
    let a = raw(
        w.address,
        format!("GET / HTTP/1.1\r\nhost: a\r\n{fields}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(a.status, 431, "{}", a.text);
    assert_eq!(up.hits(), 1);
}
