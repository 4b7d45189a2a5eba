//! Request IDs through weir (SPEC.md, Forwarding rules): a valid incoming `x-request-id` is kept,
//! otherwise weir makes one; the upstream gets exactly one, the client gets the same one back,
//! over HTTP/1.1 and HTTP/2, and weir's own answers (404, 502, 503, and their gRPC form) carry it
//! in the header and in their text. The upstream is the support module's, whose `/headers` path
//! answers with the headers it received.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// The `x-request-id` values the upstream received, from its `/headers` answer.
fn received_ids(answer: &Answer) -> Vec<String> {
    answer
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("x-request-id: "))
        .map(str::to_owned)
        .collect()
}

/// The one `x-request-id` the client got back.
fn returned_id(answer: &Answer) -> String {
    let values: Vec<_> = answer.headers.get_all("x-request-id").iter().collect();
    assert_eq!(values.len(), 1, "{:?}", answer.headers);
    values[0].to_str().unwrap().to_owned()
}

fn is_uuid_v4(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

async fn headers_request(client: &TestClient, address: SocketAddr, ids: &[&[u8]]) -> Answer {
    let mut req = Request::get(format!("http://{address}/headers"));
    for id in ids {
        req = req.header("x-request-id", http::HeaderValue::from_bytes(id).unwrap());
    }
    send(client, req.body(Full::new(Bytes::new())).unwrap()).await
}

async fn one_upstream() -> (Weir, Upstream) {
    let up = upstream("app").await;
    let yaml = config(
        &[("app", &[up.address])],
        "  - name: app\n    backends: [{ upstream: app, weight: 1 }]\n",
    );
    (weir(&yaml).await, up)
}

#[tokio::test]
async fn a_request_without_an_id_gets_a_uuid_that_the_upstream_and_the_client_both_see() {
    let (w, _up) = one_upstream().await;
    for client in [http1_client(), h2c_client()] {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let a = headers_request(&client, w.address, &[]).await;
            assert_eq!(a.status, StatusCode::OK);
            let sent = received_ids(&a);
            assert_eq!(sent.len(), 1, "{}", a.text());
            assert!(is_uuid_v4(&sent[0]), "{}", sent[0]);
            assert_eq!(returned_id(&a), sent[0]);
            seen.push(sent[0].clone());
        }
        seen.dedup();
        assert_eq!(seen.len(), 3, "every request gets its own ID: {seen:?}");
    }
}

#[tokio::test]
async fn a_valid_incoming_id_is_kept_upstream_and_returned_unchanged() {
    let (w, _up) = one_upstream().await;
    let long = "x".repeat(200);
    for client in [http1_client(), h2c_client()] {
        for id in [
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "req:42/abc=+@~!%",
            long.as_str(),
        ] {
            let a = headers_request(&client, w.address, &[id.as_bytes()]).await;
            assert_eq!(received_ids(&a), [id]);
            assert_eq!(returned_id(&a), id);
        }
    }
}

#[tokio::test]
async fn an_invalid_or_repeated_incoming_id_is_replaced_by_one_generated_id() {
    let (w, _up) = one_upstream().await;
    let long = "x".repeat(201);
    let cases: [&[&[u8]]; 5] = [
        &[b"two words"],
        &[b""],
        &[long.as_bytes()],
        &["caf\u{e9}".as_bytes()],
        &[b"first", b"second"],
    ];
    for client in [http1_client(), h2c_client()] {
        for ids in cases {
            let a = headers_request(&client, w.address, ids).await;
            let sent = received_ids(&a);
            assert_eq!(sent.len(), 1, "{ids:?}: {}", a.text());
            assert!(is_uuid_v4(&sent[0]), "{ids:?}: {}", sent[0]);
            assert_eq!(returned_id(&a), sent[0]);
        }
    }
}

/// Checks weir's own text answer: the status, the ID in the header and in the body.
fn check_own_answer(a: &Answer, status: StatusCode, sent: Option<&str>) {
    assert_eq!(a.status, status, "{}", a.text());
    let id = returned_id(a);
    match sent {
        Some(s) => assert_eq!(id, s),
        None => assert!(is_uuid_v4(&id), "{id}"),
    }
    assert!(
        a.text().ends_with(&format!(" (request ID {id})\n")),
        "{:?}",
        a.text()
    );
}

#[tokio::test]
async fn weirs_own_404_502_and_503_carry_the_request_id() {
    let dead = closed_port().await;
    let yaml = config(
        &[("dead", &[dead])],
        "  - name: app\n    match: { path_prefix: /app }\n    backends: [{ upstream: dead, weight: 1 }]\n",
    )
    .replace(
        "    endpoints: [",
        "    outlier: { consecutive_failures: 1, ejection: 60s }\n    endpoints: [",
    );
    let w = weir(&yaml).await;
    for client in [http1_client(), h2c_client()] {
        let get_with = |path: &str, id: Option<&str>| {
            let mut req = Request::get(format!("http://{}{path}", w.address));
            if let Some(id) = id {
                req = req.header("x-request-id", id);
            }
            send(&client, req.body(Full::new(Bytes::new())).unwrap())
        };
        check_own_answer(&get_with("/other", None).await, StatusCode::NOT_FOUND, None);
        check_own_answer(
            &get_with("/other", Some("abc-404")).await,
            StatusCode::NOT_FOUND,
            Some("abc-404"),
        );
        check_own_answer(
            &get_with("/other", Some("bad id")).await,
            StatusCode::NOT_FOUND,
            None,
        );
    }
    // The first failure ejects the only endpoint (502), then it has none (503).
    let client = http1_client();
    let first = send(
        &client,
        Request::get(format!("http://{}/app", w.address))
            .header("x-request-id", "abc-502")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    check_own_answer(&first, StatusCode::BAD_GATEWAY, Some("abc-502"));
    for client in [http1_client(), h2c_client()] {
        let a = get(&client, w.address, "/app").await;
        check_own_answer(&a, StatusCode::SERVICE_UNAVAILABLE, None);
    }
}

#[tokio::test]
async fn a_grpc_caller_gets_the_request_id_in_the_header_and_the_grpc_message() {
    let (dead, up) = (closed_port().await, upstream("app").await);
    let yaml = config(
        &[("dead", &[dead]), ("app", &[up.address])],
        "  - name: rpc\n    match: { path_prefix: /rpc.Service }\n    backends: [{ upstream: dead, weight: 1 }]\n",
    );
    let w = weir(&yaml).await;
    let client = h2c_client();
    let call = |path: &str, id: &str| {
        let req = Request::post(format!("http://{}{path}", w.address))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-request-id", id)
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        send(&client, req)
    };
    for (path, id, code, encoded) in [
        ("/other.Service/Call", "grpc-1", "12", "grpc-1"),
        ("/rpc.Service/Call", "50%-off", "14", "50%25-off"),
    ] {
        let a = call(path, id).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.headers["grpc-status"], code);
        assert_eq!(returned_id(&a), id);
        let message = a.headers["grpc-message"].to_str().unwrap();
        assert!(
            message.starts_with("weir: ") && message.ends_with(&format!("(request ID {encoded})")),
            "{message}"
        );
    }
}

/// The response HEADERS blocks of `requests` GETs sent at once on one raw HTTP/2 connection,
/// each with `id` as its `x-request-id`.
async fn h2_response_blocks(address: SocketAddr, id: &[u8], requests: u32) -> Vec<Vec<u8>> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, &[]));
    for n in 0..requests {
        // :method GET, :scheme http, :path / (static table), then `x-request-id` as a literal
        // without indexing, new name, no Huffman coding. The value's length is an HPACK integer
        // with a 7-bit prefix (one byte up to 126, two up to 254).
        let mut block = vec![0x82, 0x86, 0x84, 0x00, 12];
        block.extend_from_slice(b"x-request-id");
        match u8::try_from(id.len()).unwrap() {
            len @ 0..127 => block.push(len),
            len @ 127..=254 => block.extend([0x7f, len - 127]),
            len => panic!("a {len}-byte value needs a longer HPACK integer"),
        }
        block.extend_from_slice(id);
        // HEADERS with END_STREAM and END_HEADERS.
        out.extend(h2_frame(1, 0x5, 2 * n + 1, &block));
    }
    let mut s = TcpStream::connect(address).await.unwrap();
    s.write_all(&out).await.unwrap();
    let mut blocks = Vec::new();
    let read = async {
        while blocks.len() < requests as usize {
            let mut head = [0u8; 9];
            s.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.unwrap();
            match (head[3], head[4]) {
                // SETTINGS, not an ack: acknowledge it.
                (4, flags) if flags & 1 == 0 => s.write_all(&h2_frame(4, 1, 0, &[])).await.unwrap(),
                // HEADERS: weir sets no padding or priority, so the payload is the block.
                (1, flags) => {
                    assert_ne!(flags & 0x4, 0, "a header block this small fits one frame");
                    blocks.push(payload);
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("two responses in 10 s");
    blocks
}

#[tokio::test]
async fn over_http2_the_id_is_never_put_in_the_hpack_table() {
    // An ID is new on every request: a copy in the client's HPACK table would only evict the
    // fields that do repeat. So weir sends it as a literal every time, never by index, even
    // when the client repeats one. 200 `0`s take 125 bytes Huffman-coded (a 5-bit code each),
    // so a response block shorter than that names the ID by its index in the table.
    let (w, up) = one_upstream().await;
    let id = [b'0'; 200];
    let blocks = h2_response_blocks(w.address, &id, 2).await;
    assert_eq!(up.hits(), 2);
    for (n, block) in blocks.iter().enumerate() {
        assert!(
            block.len() >= 125,
            "response {n}: a {}-byte header block cannot hold the ID as a literal",
            block.len()
        );
    }
}
