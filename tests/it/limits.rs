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

/// Reads one response with a `Content-Length` body from a keep-alive connection.
async fn read_one_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a whole response");
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if out.len() >= end + 4 + length {
                    return text.into_owned();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no whole response within 10 s")
}

#[tokio::test]
async fn a_slow_second_request_head_is_cut_off_after_the_header_read_timeout() {
    let up = upstream("u").await;
    let yaml = split_config(up.address, up.address, 1, 0)
        + "limits:\n  header_read_timeout: 300ms\n  idle_timeout: 60s\n";
    let w = weir(&yaml).await;
    let mut s = TcpStream::connect(w.address).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_one_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    // The second head never completes: closed with no answer, long before the idle timeout.
    assert_eq!(read_to_close(&mut s).await, "");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn a_keep_alive_connection_waits_no_longer_than_the_header_read_timeout_for_its_next_head() {
    let up = upstream("u").await;
    let yaml = split_config(up.address, up.address, 1, 0)
        + "limits:\n  header_read_timeout: 300ms\n  idle_timeout: 60s\n";
    let w = weir(&yaml).await;
    let mut s = TcpStream::connect(w.address).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let a = read_one_response(&mut s).await;
        assert!(a.ends_with("\r\n\r\nu"), "{a}");
    }
    assert_eq!(read_to_close(&mut s).await, "");
}

#[tokio::test]
async fn a_response_slower_than_the_header_read_timeout_keeps_its_connection() {
    let up = upstream("u").await;
    let yaml = split_config(up.address, up.address, 1, 0)
        + "limits:\n  header_read_timeout: 300ms\n  idle_timeout: 60s\n";
    let w = weir(&yaml).await;
    let mut s = TcpStream::connect(w.address).await.unwrap();
    // Each answer takes longer than the head's deadline: a request in flight is not waiting for
    // a head, and the next head is due only from the end of the response.
    for _ in 0..2 {
        s.write_all(b"GET /slow?ms=700 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let a = read_one_response(&mut s).await;
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    }
    assert_eq!(up.hits(), 2);
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
