//! A body-less request to a plain HTTP/1.1 upstream goes on weir's own connection (`proxy::wire`
//! and `conns::Wire`): what an upstream's bytes may do there, against raw upstreams that write
//! exactly the bytes of each case.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tokio::io::AsyncWriteExt;

use crate::support::*;

/// What a scripted upstream writes for its `n`th request head: the bytes, and whether it closes
/// the connection after them.
type Script = fn(usize, &str) -> (Vec<u8>, bool);

/// A raw upstream that answers the `n`th request head it reads (over all its connections, from
/// 0; the head is given too) with `answer(n, head)`: the bytes to write, and whether to close the
/// connection after them. It counts its connections.
async fn scripted(answer: Script) -> (SocketAddr, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let address = raw_upstream(move |mut stream| {
        counted.fetch_add(1, Ordering::Relaxed);
        let requests = requests.clone();
        async move {
            while let Some(head) = read_head(&mut stream).await {
                let n = requests.fetch_add(1, Ordering::Relaxed);
                let (bytes, close) = answer(n, &head);
                if stream.write_all(&bytes).await.is_err() || close {
                    return;
                }
            }
        }
    })
    .await;
    (address, connections)
}

fn protocol_errors() -> [(&'static str, &'static str); 2] {
    [("backend", "stable"), ("kind", "protocol")]
}

#[tokio::test]
async fn a_chunked_answer_with_trailers_arrives_whole_and_its_connection_is_used_again() {
    let (address, connections) = scripted(|_, _| {
        let body = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
            5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nx-sum: 11\r\n\r\n";
        (body.to_vec(), false)
    })
    .await;
    let w = weir(&split_config(address, address, 1, 0)).await;
    let client = http1_client();
    for _ in 0..3 {
        let req = Request::get(format!("http://{}/", w.address))
            .header("te", "trailers")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let a = send(&client, req).await;
        assert_eq!((a.status, a.text()), (StatusCode::OK, "hello world"));
        assert_eq!(a.trailers.expect("trailers arrive")["x-sum"], "11");
    }
    assert_eq!(connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn interim_answers_before_the_final_one_are_skipped() {
    let (address, _) = scripted(|_, _| {
        let bytes =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
            HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok";
        (bytes.to_vec(), false)
    })
    .await;
    let w = weir(&split_config(address, address, 1, 0)).await;
    let a = get(&http1_client(), w.address, "/").await;
    assert_eq!((a.status, a.text()), (StatusCode::CREATED, "ok"));
}

#[tokio::test]
async fn a_body_that_ends_with_the_connection_arrives_whole_and_the_next_request_gets_a_new_one() {
    let (address, connections) = scripted(|_, _| {
        let mut bytes = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 100_000));
        (bytes, true)
    })
    .await;
    let w = weir(&split_config(address, address, 1, 0)).await;
    let client = http1_client();
    for _ in 0..2 {
        let a = get(&client, w.address, "/").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body.len(), 100_000);
    }
    assert_eq!(connections.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_connection_the_upstream_says_it_closes_or_that_speaks_http_1_0_is_not_used_again() {
    // Each answer says the connection ends, yet the upstream keeps it open: weir must not send
    // the next request on it.
    let (address, connections) = scripted(|n, _| {
        let bytes: &[u8] = if n % 2 == 0 {
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
        } else {
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        (bytes.to_vec(), false)
    })
    .await;
    let w = weir(&split_config(address, address, 1, 0)).await;
    let client = http1_client();
    for _ in 0..4 {
        let a = get(&client, w.address, "/").await;
        assert_eq!((a.status, a.text()), (StatusCode::OK, "ok"));
    }
    assert_eq!(connections.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn bytes_after_the_end_of_a_body_are_never_taken_as_the_next_answer() {
    // A response splitting attempt: a second answer glued to the first one's body. The first
    // request gets its own body only; the second gets a real answer on a new connection.
    let (address, connections) = scripted(|n, _| {
        let bytes: &[u8] = if n == 0 {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal"
        };
        (bytes.to_vec(), false)
    })
    .await;
    let w = weir(&split_config(address, address, 1, 0)).await;
    let client = http1_client();
    let a = get(&client, w.address, "/").await;
    assert_eq!(a.text(), "ok");
    let a = get(&client, w.address, "/").await;
    assert_eq!(a.text(), "real");
    assert_eq!(connections.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn the_answer_to_a_head_request_has_no_body_whatever_its_length_says() {
    let (address, connections) = scripted(|_, head| {
        let bytes: &[u8] = if head.starts_with("HEAD") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
        };
        (bytes.to_vec(), false)
    })
    .await;
    let w = weir(&split_config(address, address, 1, 0)).await;
    let client = http1_client();
    for method in [Method::HEAD, Method::GET, Method::HEAD, Method::GET] {
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}/", w.address))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let a = send(&client, req).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.headers["content-length"], "5");
        let body = if method == Method::HEAD { "" } else { "hello" };
        assert_eq!(a.text(), body, "{method}");
    }
    assert_eq!(connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_head_with_broken_framing_is_a_502_counted_as_a_protocol_error() {
    let cases: [(&str, Script); 8] = [
        ("length and chunked", |_, _| {
            let b = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
            (b.to_vec(), false)
        }),
        ("two lengths", |_, _| {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc".to_vec(),
                false,
            )
        }),
        ("a signed length", |_, _| {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nab".to_vec(),
                false,
            )
        }),
        ("a coding before chunked", |_, _| {
            let b = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
            (b.to_vec(), false)
        }),
        ("a 204 with a length", |_, _| {
            (
                b"HTTP/1.1 204 No Content\r\ncontent-length: 2\r\n\r\nab".to_vec(),
                false,
            )
        }),
        ("a 101 nobody asked for", |_, _| {
            (
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n".to_vec(),
                false,
            )
        }),
        ("HTTP/2 bytes", |_, _| {
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), false)
        }),
        ("a head over 64 KiB", |_, _| {
            let mut b = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
            b.extend(std::iter::repeat_n(b'a', 70 * 1024));
            b.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
            (b, false)
        }),
    ];
    for (case, answer) in cases {
        let (address, _) = scripted(answer).await;
        let w = weir(&split_config(address, address, 1, 0)).await;
        let a = get(&http1_client(), w.address, "/").await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{case}: {}", a.text());
        assert_eq!(
            metric(&w, "weir_upstream_errors_total", &protocol_errors()).await,
            1.0,
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_broken_chunk_cuts_the_response_and_counts_as_a_protocol_error() {
    let cases: [(&str, Script); 3] = [
        ("a size in 0x form", |_, _| {
            let b =
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n";
            (b.to_vec(), false)
        }),
        ("a bare LF", |_, _| {
            let b = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n";
            (b.to_vec(), false)
        }),
        ("data longer than its size", |_, _| {
            let b = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n";
            (b.to_vec(), false)
        }),
    ];
    for (case, answer) in cases {
        let (address, _) = scripted(answer).await;
        let w = weir(&split_config(address, address, 1, 0)).await;
        // The upstream's head was good and the client may get it, but never a clean end: the
        // connection closes before the last chunk.
        let a = raw(w.address, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(matches!(a.status, 0 | 200), "{case}: {}", a.text);
        assert!(!a.text.ends_with("0\r\n\r\n"), "{case}: {}", a.text);
        assert_eq!(
            metric(&w, "weir_upstream_errors_total", &protocol_errors()).await,
            1.0,
            "{case}"
        );
    }
}

#[tokio::test]
async fn bytes_an_upstream_sends_on_an_idle_connection_make_it_unusable() {
    // The forged answer comes on its own, after the first response was read whole: only the
    // check of the idle connection can see it.
    let address = raw_upstream(|mut stream| async move {
        let Some(head) = read_head(&mut stream).await else {
            return;
        };
        let first: &[u8] = if head.contains("/first") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal"
        };
        if stream.write_all(first).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged")
            .await;
        // Answers what comes next with the forged bytes already sent; keeps the connection.
        while read_head(&mut stream).await.is_some() {}
    })
    .await;
    let w = weir(&split_config(address, address, 1, 0)).await;
    let client = http1_client();
    assert_eq!(get(&client, w.address, "/first").await.text(), "first");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = get(&client, w.address, "/second").await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "real"));
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_passed_over_and_a_post_without_body_is_answered()
{
    // The upstream closes each connection right after its answer (without saying so): the
    // idle wire is found closed before the next request goes, so even a request weir must not
    // send twice gets a new connection rather than a 502.
    let (address, connections) = scripted(|_, head| {
        let body: &[u8] = if head.starts_with("POST") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npost"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nget"
        };
        (body.to_vec(), true)
    })
    .await;
    let w = weir(&split_config(address, address, 1, 0)).await;
    let client = http1_client();
    assert_eq!(get(&client, w.address, "/").await.text(), "get");
    // Long enough for the upstream's close to reach weir's socket.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let post = Request::post(format!("http://{}/", w.address))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = send(&client, post).await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "post"));
    assert_eq!(connections.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_post_without_a_body_goes_with_a_zero_length_and_an_unusual_reason_phrase_comes_back() {
    let (address, _) = scripted(|_, head| {
        let zero = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("content-length: 0"));
        let bytes: &[u8] = if zero {
            b"HTTP/1.1 299 Zero Length Seen\r\ncontent-length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
        };
        (bytes.to_vec(), false)
    })
    .await;
    let w = weir(&split_config(address, address, 1, 0)).await;
    let a = raw(
        w.address,
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert!(
        a.text.starts_with("HTTP/1.1 299 Zero Length Seen\r\n"),
        "{}",
        a.text
    );
    let a = raw(w.address, b"POST / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(
        a.text.starts_with("HTTP/1.1 299 Zero Length Seen\r\n"),
        "{}",
        a.text
    );
}
