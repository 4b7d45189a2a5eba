//! Failures and limits: a dead or slow upstream, oversized or slow request heads, idle
//! connections. weir answers or closes, and keeps serving.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn a_closed_upstream_port_gets_502_and_weir_keeps_serving() {
    let dead = closed_port().await;
    let alive = upstream("alive").await;
    let yaml = config(
        &[("dead", &[dead]), ("alive", &[alive.address])],
        "  - name: dead\n    match: { path_prefix: /dead }\n    backends: [{ upstream: dead, weight: 1 }]\n\
         \x20 - name: alive\n    backends: [{ upstream: alive, weight: 1 }]\n",
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    for _ in 0..3 {
        assert_eq!(
            get(&client, w.address, "/dead").await.status,
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(get(&client, w.address, "/").await.text(), "alive");
    }
}

#[tokio::test]
async fn a_slow_upstream_gets_504_after_the_route_timeout() {
    let slow = upstream("slow").await;
    let yaml = config(
        &[("slow", &[slow.address])],
        "  - name: app\n    timeout: 200ms\n    backends: [{ upstream: slow, weight: 1 }]\n",
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    let a = get(&client, w.address, "/slow?ms=3000").await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    // A request that is fast enough on the same route still succeeds.
    assert_eq!(
        get(&client, w.address, "/slow?ms=10").await.status,
        StatusCode::OK
    );
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "weir did not close the connection within 10 s"
    );
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_request_head_over_the_limit_gets_431() {
    let up = upstream("u").await;
    let yaml = split_config(up.address, up.address, 1, 0) + "limits:\n  max_header_bytes: 16384\n";
    let w = weir(&yaml).await;
    let mut s = TcpStream::connect(w.address).await.unwrap();
    let big = "a".repeat(32 * 1024);
    s.write_all(format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(up.hits(), 0);
    assert_eq!(
        get(&http1_client(), w.address, "/").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_after_the_header_read_timeout() {
    let up = upstream("u").await;
    let yaml =
        split_config(up.address, up.address, 1, 0) + "limits:\n  header_read_timeout: 300ms\n";
    let w = weir(&yaml).await;
    let mut s = TcpStream::connect(w.address).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    // The head never completes: weir closes the connection instead of waiting forever.
    read_to_close(&mut s).await;
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let up = upstream("u").await;
    let yaml = split_config(up.address, up.address, 1, 0) + "limits:\n  idle_timeout: 400ms\n";
    let w = weir(&yaml).await;
    let mut s = TcpStream::connect(w.address).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nu"), "{answer}");
}
