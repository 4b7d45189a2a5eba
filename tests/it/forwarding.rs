//! What reaches the upstream and what comes back: bodies, trailers, headers, protocols.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn a_twenty_megabyte_body_is_echoed_intact() {
    let up = upstream("echo").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let body: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let req = Request::post(format!("http://{}/echo", w.address))
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let a = send(&http1_client(), req).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body.len(), body.len());
    assert!(a.body == body, "the echoed body differs");
}

#[tokio::test]
async fn trailers_pass_through_http1_and_h2c() {
    let up = upstream("t").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    for client in [http1_client(), h2c_client()] {
        let req = Request::get(format!("http://{}/trailers", w.address))
            .header("te", "trailers")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let a = send(&client, req).await;
        assert_eq!(a.text(), "with trailers");
        let trailers = a.trailers.expect("trailers arrive");
        assert_eq!(trailers["x-checksum"], "abc123", "{:?}", a.version);
    }
}

fn header_lines(text: &str) -> Vec<(&str, &str)> {
    text.lines().filter_map(|l| l.split_once(": ")).collect()
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_forwarded_headers_set() {
    let up = upstream("h").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let req = Request::get(format!("http://{}/headers", w.address))
        .header("host", "app.example.com")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9v")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = send(&http1_client(), req).await;
    let got = header_lines(a.text());
    let find = |name: &str| got.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    assert_eq!(find("host"), Some("app.example.com"));
    assert_eq!(find("x-end-to-end"), Some("kept"));
    assert_eq!(find("x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(find("x-forwarded-proto"), Some("http"));
    assert_eq!(find("x-forwarded-host"), Some("app.example.com"));
    for gone in ["x-private", "keep-alive", "proxy-authorization"] {
        assert_eq!(
            find(gone),
            None,
            "{gone} reached the upstream:\n{}",
            a.text()
        );
    }
}

#[tokio::test]
async fn an_upstreams_hop_by_hop_response_fields_never_reach_the_client_either_way() {
    // weir's own HTTP/1.1 path writes the upstream's fields as they came; an h2c client's
    // response goes through the map (`forward::with_fields_in_map`). Both drop the same fields.
    let address = answering_upstream(b"HTTP/1.1 200 OK\r\nServer: Raw\r\nConnection: keep-alive, X-Private\r\nSet-Cookie: a=1\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nX-Request-Id: upstream-id\r\nX-Kept: Yes\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok").await;
    let w = weir(&split_config(address, address, 1, 0)).await;

    // HTTP/1.1 on the wire, as a client reads it.
    let mut client = tokio::net::TcpStream::connect(w.address).await.unwrap();
    for _ in 0..2 {
        use tokio::io::AsyncWriteExt;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: app\r\nX-Request-Id: client-id\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut client).await.expect("a response head");
        let mut body = [0; 2];
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut body)
            .await
            .unwrap();
        assert_eq!(&body, b"ok");
        let lines: Vec<&str> = head.lines().skip(1).filter(|l| !l.is_empty()).collect();
        let names: Vec<&str> = lines.iter().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            names,
            [
                "server",
                "set-cookie",
                "x-kept",
                "set-cookie",
                "content-length",
                "x-request-id",
                "date"
            ],
            "{head}"
        );
        for line in [
            "server: Raw",
            "set-cookie: a=1",
            "x-kept: Yes",
            "set-cookie: b=2",
            "x-request-id: client-id",
        ] {
            assert!(lines.contains(&line), "{line} missing:\n{head}");
        }
    }

    // HTTP/2: the same fields from the map.
    let a = get(&h2c_client(), w.address, "/").await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "ok"));
    let h = &a.headers;
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the client: {h:?}");
    }
    assert_eq!(h["server"], "Raw");
    assert_eq!(h["x-kept"], "Yes");
    let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(h.get_all("x-request-id").iter().count(), 1);
    assert_ne!(h["x-request-id"], "upstream-id");
}

#[tokio::test]
async fn an_h2c_client_reaches_an_http1_upstream_with_its_host() {
    let up = upstream("h").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let a = get(&h2c_client(), w.address, "/headers").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.version, Version::HTTP_2);
    assert!(a.text().starts_with("version: HTTP/1.1\n"), "{}", a.text());
    let host = format!("host: {}\n", w.address);
    assert!(a.text().contains(&host), "{}", a.text());
}

#[tokio::test]
async fn an_http2_upstream_is_spoken_to_in_h2c() {
    let up = upstream("h2").await;
    let yaml = format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: h2\n    endpoints: [\"{}\"]\n    protocol: http2\nroutes:\n  - name: app\n    backends: [{{ upstream: h2, weight: 1 }}]\n",
        up.address
    );
    let w = weir(&yaml).await;
    for client in [http1_client(), h2c_client()] {
        let a = get(&client, w.address, "/headers").await;
        assert!(a.text().starts_with("version: HTTP/2.0\n"), "{}", a.text());
    }
}

#[tokio::test]
async fn a_websocket_upgrade_passes_through_and_echoes() {
    let up = upstream("ws").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", w.address))
        .await
        .expect("the handshake through weir succeeds");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "through", "weir"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn upstream_status_codes_and_bodies_pass_unchanged() {
    let up = upstream("s").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    for code in [200u16, 201, 404, 500, 503] {
        let a = get(&http1_client(), w.address, &format!("/status/{code}")).await;
        assert_eq!(a.status.as_u16(), code);
        assert_eq!(a.text(), "s");
    }
}

#[tokio::test]
async fn an_upstream_that_closes_a_kept_connection_as_a_request_arrives_costs_no_idempotent_request()
 {
    // Answers one request per connection without `Connection: close`, then closes the
    // connection when the next request's head arrives on it: the race of an upstream's
    // keep-alive timeout, made certain. weir has sent the next request on its pooled connection
    // and meets the connection's end; a GET must be sent again on a new connection, a POST must
    // not (the upstream may have acted on it), and the upstream sees each POST once.
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = posts.clone();
    let address = raw_upstream(move |mut stream| {
        let seen = seen.clone();
        async move {
            use tokio::io::AsyncWriteExt;
            let Some(head) = read_head(&mut stream).await else {
                return;
            };
            if head.contains("POST /") {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nonce")
                .await;
            // A POST's body comes before the next head on the connection: the head read here
            // starts with it.
            if let Some(head) = read_head(&mut stream).await
                && head.contains("POST /")
            {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .await;
    let w = weir(&split_config(address, address, 1, 0)).await;
    let client = http1_client();
    for i in 0..50 {
        let a = get(&client, w.address, "/").await;
        assert_eq!(
            (a.status, a.text()),
            (StatusCode::OK, "once"),
            "request {i}"
        );
    }
    // POSTs, each seen once by the upstream. One without a body goes on weir's own connection
    // (`conns::Wire`), kept by the GETs above: it meets the connection's end and is not sent
    // again. One with a body goes on a hyper connection: the first opens one and is answered,
    // the second meets that connection's end and is not sent again.
    let post = |body: &'static [u8]| {
        Request::post(format!("http://{}/", w.address))
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    };
    let a = send(&client, post(b"")).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    assert_eq!(posts.load(std::sync::atomic::Ordering::Relaxed), 1);
    let a = send(&client, post(b"pay once")).await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "once"));
    let a = send(&client, post(b"pay once")).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    assert_eq!(posts.load(std::sync::atomic::Ordering::Relaxed), 3);
    let a = get(&client, w.address, "/").await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "once"));
}

#[tokio::test]
async fn an_endpoint_given_by_name_is_resolved_and_each_address_tried() {
    // `localhost` may resolve to ::1 first; the upstream listens on 127.0.0.1 only.
    let up = upstream("named").await;
    let yaml = split_config(up.address, up.address, 1, 0).replace(
        &format!("\"{}\"", up.address),
        &format!("\"localhost:{}\"", up.address.port()),
    );
    assert!(yaml.contains("localhost:"));
    let w = weir(&yaml).await;
    let a = get(&http1_client(), w.address, "/").await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "named"));
}

/// Request trailers reach an HTTP/2 upstream behind small data frames, both when the body
/// streams through (small frames gathered, the trailers held for the next poll) and when a
/// route that retries reads it whole first (the replayed copy keeps them).
#[tokio::test]
async fn request_trailers_reach_the_upstream_streamed_and_replayed() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    let up = upstream("e").await;
    for retries in ["", "    retries: { attempts: 1, on: [reset] }\n"] {
        let yaml = format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: h2\n    endpoints: [\"{}\"]\n    protocol: http2\nroutes:\n  - name: app\n{retries}    backends: [{{ upstream: h2, weight: 1 }}]\n",
            up.address
        );
        let w = weir(&yaml).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", "c0ffee".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"one "))),
            Ok(Frame::data(Bytes::from_static(b"two "))),
            Ok(Frame::data(Bytes::from_static(b"three"))),
            Ok(Frame::trailers(trailers)),
        ];
        // PUT with a length: idempotent and small, so the route that retries reads it ahead.
        let req = Request::put(format!("http://{}/echo", w.address))
            .header("content-length", "13")
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .unwrap();
        let answer = client.request(req).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "retries: {retries:?}");
        let body = answer.into_body().collect().await.unwrap();
        let echoed = body.trailers().cloned().expect("the trailers came back");
        assert_eq!(echoed["x-checksum"], "c0ffee", "retries: {retries:?}");
        assert_eq!(
            &body.to_bytes()[..],
            b"one two three",
            "retries: {retries:?}"
        );
    }
}
