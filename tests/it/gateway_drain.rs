//! Draining client connections when a version retires (issue 23, docs/GATEWAY.md "Drain on a
//! version change"): on a promotion, keep-alive HTTP/1.1 and HTTP/2 connections that stable
//! served close gracefully (`Connection: close` / GOAWAY); connections only the canary served
//! stay open.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Route `app`: stable by weight, the canary only for requests with `x-canary: always`.
fn promotion_config(
    stable: SocketAddr,
    canary: SocketAddr,
    ws: u32,
    wc: u32,
    extra: &str,
) -> String {
    config(
        &[("stable", &[stable]), ("canary", &[canary])],
        &format!(
            "  - name: app\n    backends:\n      - {{ upstream: stable, weight: {ws} }}\n      - {{ upstream: canary, weight: {wc} }}\n    overrides:\n      - {{ match: {{ header: {{ x-canary: always }} }}, upstream: canary }}\n{extra}"
        ),
    )
}

/// Sends one keep-alive HTTP/1.1 GET of `path` on `s` and reads its response.
async fn http1_get(s: &mut TcpStream, path: &str, canary: bool) -> RawAnswer {
    let extra = if canary { "x-canary: always\r\n" } else { "" };
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: app\r\n{extra}\r\n").as_bytes())
        .await
        .unwrap();
    read_response(s).await
}

/// Whether the peer closes `s` within a generous 20 s (reading nothing more).
async fn closes(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// An HTTP/2 (h2c) connection to `address`: its sender, and a task that ends when the
/// connection does.
async fn h2_connection(
    address: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(address).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

async fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    address: SocketAddr,
    canary: bool,
) -> (StatusCode, String) {
    let mut req = Request::get(format!("http://{address}/"))
        .body(Empty::new())
        .unwrap();
    if canary {
        req.headers_mut()
            .insert("x-canary", "always".parse().unwrap());
    }
    let response = send.send_request(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_promotion_drains_the_connections_stable_served_and_keeps_the_canary_s() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&promotion_config(
        stable.address,
        canary.address,
        100,
        0,
        "",
    ))
    .await;

    // HTTP/1.1: one idle connection stable served, one with a slow stable response in flight,
    // one only the canary served.
    let mut idle_stable = TcpStream::connect(w.address).await.unwrap();
    let a = http1_get(&mut idle_stable, "/", false).await;
    assert!(a.text.ends_with("stable"), "{}", a.text);
    let mut busy_stable = TcpStream::connect(w.address).await.unwrap();
    let a = http1_get(&mut busy_stable, "/", false).await;
    assert!(a.text.ends_with("stable"), "{}", a.text);
    let mut canary_only = TcpStream::connect(w.address).await.unwrap();
    let a = http1_get(&mut canary_only, "/", true).await;
    assert!(a.text.ends_with("canary"), "{}", a.text);
    // HTTP/2: the same two cases.
    let (mut h2_stable, h2_stable_conn) = h2_connection(w.address).await;
    assert_eq!(h2_get(&mut h2_stable, w.address, false).await.1, "stable");
    let (mut h2_canary, h2_canary_conn) = h2_connection(w.address).await;
    assert_eq!(h2_get(&mut h2_canary, w.address, true).await.1, "canary");

    // The slow request is in flight on `busy_stable` (stable has it) when the promotion lands.
    let before = stable.hits();
    busy_stable
        .write_all(b"GET /slow?ms=1500 HTTP/1.1\r\nhost: app\r\n\r\n")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stable.hits() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stable never got /slow"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::fs::write(
        &w.path,
        promotion_config(stable.address, canary.address, 0, 100, ""),
    )
    .unwrap();
    reload(&w).await.unwrap();

    // The idle connection is not cut (a request the client writes meanwhile would be lost):
    // its next response, by the new weights, says it closes, and it does.
    let next = http1_get(&mut idle_stable, "/", false).await;
    assert!(next.text.ends_with("canary"), "{}", next.text);
    assert!(
        next.text.to_ascii_lowercase().contains("connection: close"),
        "{}",
        next.text
    );
    assert!(
        closes(&mut idle_stable).await,
        "an idle connection stable served closes after its next response"
    );
    let slow = read_response(&mut busy_stable).await;
    assert_eq!(slow.status, 200);
    assert!(
        slow.text.to_ascii_lowercase().contains("connection: close"),
        "the response in flight says it closes:\n{}",
        slow.text
    );
    assert!(closes(&mut busy_stable).await);
    // GOAWAY: the connection stable served ends by itself.
    tokio::time::timeout(Duration::from_secs(20), h2_stable_conn)
        .await
        .expect("the HTTP/2 connection stable served ends after GOAWAY")
        .unwrap();

    // The canary's connections carry on.
    let a = http1_get(&mut canary_only, "/", false).await;
    assert_eq!(a.status, 200);
    assert!(a.text.ends_with("canary"), "now by weight: {}", a.text);
    assert!(
        !a.text.to_ascii_lowercase().contains("connection: close"),
        "{}",
        a.text
    );
    assert_eq!(
        h2_get(&mut h2_canary, w.address, false).await,
        (StatusCode::OK, "canary".to_owned())
    );
    assert!(!h2_canary_conn.is_finished());
    assert_eq!(
        metric(
            &w,
            "weir_drained_connections_total",
            &[("listener", "main")]
        )
        .await,
        3.0,
        "two HTTP/1.1 connections and one HTTP/2 connection"
    );
}

#[tokio::test]
async fn with_drain_on_retire_off_a_promotion_closes_nothing() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let off = "limits: { drain_on_retire: false }\n";
    let w = weir(
        &promotion_config(stable.address, canary.address, 100, 0, "")
            .replace("routes:\n", &format!("{off}routes:\n")),
    )
    .await;
    let mut s = TcpStream::connect(w.address).await.unwrap();
    assert!(http1_get(&mut s, "/", false).await.text.ends_with("stable"));
    std::fs::write(
        &w.path,
        promotion_config(stable.address, canary.address, 0, 100, "")
            .replace("routes:\n", &format!("{off}routes:\n")),
    )
    .unwrap();
    reload(&w).await.unwrap();
    let a = http1_get(&mut s, "/", false).await;
    assert!(
        a.text.ends_with("canary"),
        "the same connection, now to the canary: {}",
        a.text
    );
    assert_eq!(
        metric(
            &w,
            "weir_drained_connections_total",
            &[("listener", "main")]
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn a_retired_upstream_s_idle_pooled_connections_close() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&promotion_config(
        stable.address,
        canary.address,
        100,
        0,
        "",
    ))
    .await;
    let client = http1_client();
    for _ in 0..3 {
        assert_eq!(get(&client, w.address, "/").await.text(), "stable");
    }
    assert_eq!(stable.connections(), 1, "one pooled connection, reused");
    std::fs::write(
        &w.path,
        promotion_config(stable.address, canary.address, 0, 100, ""),
    )
    .unwrap();
    reload(&w).await.unwrap();
    // Back to stable: its idle connection was closed, so weir opens a new one.
    std::fs::write(
        &w.path,
        promotion_config(stable.address, canary.address, 100, 0, ""),
    )
    .unwrap();
    reload(&w).await.unwrap();
    let client = http1_client();
    assert_eq!(get(&client, w.address, "/").await.text(), "stable");
    assert_eq!(stable.connections(), 2);
}

#[tokio::test]
async fn a_rollout_s_promotion_drains_the_connections_stable_served() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let yaml = config(
        &[("stable", &[stable.address]), ("canary", &[canary.address])],
        "  - name: app\n    rollout: { canary: canary, steps: [50, 100], interval: 300ms, min_requests: 5 }\n    backends:\n      - { upstream: stable, weight: 90 }\n      - { upstream: canary, weight: 10 }\n",
    );
    let w = weir(&yaml).await;
    // Keep-alive connections stable served while the rollout sends it half the requests.
    let (mut h2, h2_conn) = h2_connection(w.address).await;
    let mut h1 = TcpStream::connect(w.address).await.unwrap();
    let mut served = (false, false);
    for _ in 0..200 {
        if !served.0 {
            served.0 = h2_get(&mut h2, w.address, false).await.1 == "stable";
        }
        if !served.1 {
            served.1 = http1_get(&mut h1, "/", false)
                .await
                .text
                .ends_with("stable");
        }
        if served == (true, true) {
            break;
        }
    }
    assert_eq!(served, (true, true), "50/50 draws reached stable on both");

    // Traffic for the rollout's checks, on other connections.
    let client = http1_client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = get(&client, w.address, "/").await;
        assert_eq!(a.status, StatusCode::OK);
        let s = w.running.reloader.snapshots.load_full();
        if s.routes[0].backends[0].weight == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no promotion within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::timeout(Duration::from_secs(20), h2_conn)
        .await
        .expect("GOAWAY ends the HTTP/2 connection stable served")
        .unwrap();
    let next = http1_get(&mut h1, "/", false).await;
    assert!(next.text.ends_with("canary"), "{}", next.text);
    assert!(
        next.text.to_ascii_lowercase().contains("connection: close"),
        "{}",
        next.text
    );
    assert!(closes(&mut h1).await);
}
