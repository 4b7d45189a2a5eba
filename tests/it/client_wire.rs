//! A body-less HTTP/1.1 request is read and answered by weir's own code (`proxy::h1`) until a
//! head needs hyper, which then serves the rest of the connection: raw client bytes, so that
//! what goes over the wire is what is checked.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Writes `bytes` on a new connection and reads until weir closes it (at most 10 s).
async fn exchange(address: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(address).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_to_end(&mut s).await
}

async fn read_to_end(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status codes of the responses in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text[i + 9..].get(..3)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn pipelined_heads_are_answered_in_order_and_a_head_with_a_body_hands_over_to_hyper() {
    let up = upstream("app").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let text = exchange(
        w.address,
        b"GET /status/201 HTTP/1.1\r\nhost: a\r\n\r\n\
          GET /headers HTTP/1.1\r\nhost: a\r\nconnection: keep-alive\r\n\r\n\
          POST /record-a HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc\
          GET /status/202 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), [201, 200, 200, 202], "{text}");
    // Every response has a date; the last one, after hyper took over, says close.
    assert_eq!(text.matches("\r\ndate: ").count(), 4, "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(text.contains("version: HTTP/1.1\n"), "{text}");
    let recorded = up.recorded.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].2, "abc");
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn a_smuggling_head_after_fast_requests_is_still_refused_and_never_forwarded() {
    let up = upstream("app").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let cases = [
        "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: identity, chunked\r\n\r\n0\r\n\r\n",
    ];
    for case in cases {
        let bytes =
            format!("GET / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n{case}");
        let text = exchange(w.address, bytes.as_bytes()).await;
        assert_eq!(statuses(&text), [200, 200, 400], "{case}: {text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
    }
    assert_eq!(up.hits(), 2 * cases.len() as u64);
}

#[tokio::test]
async fn head_204_and_304_answers_carry_no_body_and_the_connection_goes_on() {
    let up = upstream("app").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let text = exchange(
        w.address,
        b"HEAD / HTTP/1.1\r\nhost: a\r\n\r\n\
          GET /status/204 HTTP/1.1\r\nhost: a\r\n\r\n\
          GET /status/304 HTTP/1.1\r\nhost: a\r\n\r\n\
          GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), [200, 204, 304, 200], "{text}");
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    // HEAD keeps the length of what GET would get, and has no body.
    assert!(answers[0].contains("content-length: 3\r\n"), "{text}");
    assert!(answers[0].ends_with("\r\n\r\n"), "{text}");
    for a in &answers[1..3] {
        assert!(!a.contains("content-length"), "{text}");
        assert!(!a.contains("transfer-encoding"), "{text}");
        assert!(a.ends_with("\r\n\r\n"), "{text}");
    }
    assert!(answers[3].ends_with("\r\n\r\napp"), "{text}");
}

#[tokio::test]
async fn an_answer_of_unknown_length_is_chunked_and_trailers_go_only_to_who_asked() {
    let up = upstream("app").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    // Without `TE: trailers` (weir's own code): the body chunked, the trailers left out.
    let text = exchange(
        w.address,
        b"GET /trailers HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    let first = text.split("HTTP/1.1 ").nth(1).unwrap();
    assert!(first.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(first.contains("trailer: x-checksum\r\n"), "{text}");
    assert!(
        first.ends_with("\r\n\r\nD\r\nwith trailers\r\n0\r\n\r\n"),
        "{text}"
    );
    // With it (hyper): the trailers too.
    let text = exchange(
        w.address,
        b"GET /trailers HTTP/1.1\r\nhost: a\r\nte: trailers\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        text.ends_with("\r\n\r\nD\r\nwith trailers\r\n0\r\nx-checksum: abc123\r\n\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn a_large_answer_arrives_whole_and_the_connection_is_used_again() {
    const SIZE: usize = 1 << 20;
    let up = raw_upstream(|mut s| async move {
        while read_head(&mut s).await.is_some() {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n");
            let body: Vec<u8> = (0..SIZE).map(|i| b'a' + (i % 26) as u8).collect();
            if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&body).await.is_err() {
                return;
            }
        }
    })
    .await;
    let w = weir(&split_config(up, up, 1, 0)).await;
    let text = exchange(
        w.address,
        b"GET / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), [200, 200]);
    let bodies: Vec<&str> = text
        .split("HTTP/1.1 200 OK")
        .skip(1)
        .map(|a| a.split_once("\r\n\r\n").unwrap().1)
        .collect();
    for body in bodies {
        assert_eq!(body.len(), SIZE);
        assert!(
            body.bytes()
                .enumerate()
                .all(|(i, b)| b == b'a' + (i % 26) as u8)
        );
    }
}

#[tokio::test]
async fn a_head_in_many_small_writes_is_read_whole_and_the_connection_kept() {
    let up = upstream("app").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let mut s = TcpStream::connect(w.address).await.unwrap();
    for _ in 0..2 {
        for piece in b"GET / HTTP/1.1\r\nhost: a\r\n\r\n".chunks(3) {
            s.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let answer = read_response(&mut s).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert!(answer.text.ends_with("\r\n\r\napp"), "{}", answer.text);
    }
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn pipelined_heads_then_the_clients_end_are_all_answered() {
    let up = upstream("app").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let mut s = TcpStream::connect(w.address).await.unwrap();
    s.write_all(
        b"GET /slow?ms=200 HTTP/1.1\r\nhost: a\r\n\r\nGET /status/201 HTTP/1.1\r\nhost: a\r\n\r\n",
    )
    .await
    .unwrap();
    // The client is done sending (a half close, as `nc -N` does) and waits for both answers.
    s.shutdown().await.unwrap();
    let text = read_to_end(&mut s).await;
    assert_eq!(statuses(&text), [200, 201], "{text}");
}

#[tokio::test]
async fn http2s_preface_after_a_request_is_refused_as_http1() {
    let up = upstream("app").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let text = exchange(
        w.address,
        b"GET / HTTP/1.1\r\nhost: a\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    )
    .await;
    // The first answered, then hyper's HTTP/1 server refuses the preface and closes.
    assert_eq!(statuses(&text)[0], 200, "{text}");
    assert!(!text.contains("\0\0"), "no HTTP/2 frame: {text}");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn a_client_gone_while_its_answer_is_awaited_abandons_the_request() {
    let up = upstream("app").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let mut s = TcpStream::connect(w.address).await.unwrap();
    s.write_all(b"GET /slow?ms=300 HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    // The request is in flight once the upstream has it.
    for _ in 0..500 {
        if up.hits() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.hits(), 1);
    drop(s);
    let closed = [("listener", "main"), ("kind", "closed")];
    for _ in 0..100 {
        if metric(&w, "weir_client_errors_total", &closed).await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&w, "weir_client_errors_total", &closed).await, 1.0);
    // Until well past the upstream's answer (300 ms): the abandoned request records none.
    for _ in 0..60 {
        for outcome in ["success", "failure"] {
            let labels = [
                ("route", "app"),
                ("backend", "stable"),
                ("outcome", outcome),
            ];
            assert_eq!(metric(&w, "weir_responses_total", &labels).await, 0.0);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
