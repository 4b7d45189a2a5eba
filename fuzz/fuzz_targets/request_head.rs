//! A request head from the network, two ways:
//!
//! - as the raw bytes of an HTTP/1.1 client connection, through the framing scan
//!   (`proxy::framing`): never a panic, and the same verdict whether the bytes come in one
//!   read or in many small ones;
//! - as a parsed head (first line `METHOD TARGET VERSION`, then `name: value` lines), through
//!   the head check (`proxy::head::check`), routing (`router::request_host`, `router::matches`)
//!   and the forwarding rules (`forward::prepare`): never a panic, and what is forwarded keeps
//!   the rules (one Host, the one the client sent; no hop-by-hop header; `x-forwarded-*` set).
#![no_main]

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Version};
use libfuzzer_sys::fuzz_target;
use weir::config::{HostMatch, PathPrefix, RouteMatch};
use weir::proxy::framing::{Scanner, Verdict};
use weir::proxy::{forward, head, router};

fuzz_target!(|data: &[u8]| {
    scan(data);
    parsed(data);
});

fn scan(data: &[u8]) {
    let whole = Arc::new(Verdict::default());
    let mut one = Scanner::new(whole.clone(), 4096);
    one.feed(data);
    // Pieces of 1 to 16 bytes, their sizes taken from the data itself.
    let pieces = Arc::new(Verdict::default());
    let mut many = Scanner::new(pieces.clone(), 4096);
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(data[i % data.len()]) % 16 + 1).min(rest.len());
        many.feed(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    assert_eq!(whole.refused(), pieces.refused(), "the verdict depends on how bytes arrive");
    assert_eq!(one.following(), many.following());
}

fn parsed(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target)) = (first.next(), first.next()) else {
        return;
    };
    let version = match first.next().map(str::trim_end) {
        Some("HTTP/1.0") => Version::HTTP_10,
        Some("HTTP/2") => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(mut req) = Request::builder()
        .method(method)
        .uri(target)
        .version(version)
        .body(())
    else {
        return;
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.trim().as_bytes()),
        ) else {
            continue;
        };
        req.headers_mut().append(name, value);
    }
    let sent_host = req.headers().get(header::HOST).cloned();
    if head::check(&req, 64).is_err() {
        return;
    }
    // What the check promises.
    let hosts = req.headers().get_all(header::HOST).iter().count();
    assert!(hosts <= 1);
    if version == Version::HTTP_11 {
        assert!(hosts == 1 && !sent_host.as_ref().unwrap().is_empty());
    }
    let te = req.headers().contains_key(header::TRANSFER_ENCODING);
    assert!(!(te && req.headers().contains_key(header::CONTENT_LENGTH)));
    assert_ne!(req.method(), Method::CONNECT);

    let host = router::request_host(&req);
    let path = req.uri().path();
    for m in matchers() {
        router::matches(&m, host, path);
    }

    let (mut parts, ()) = req.into_parts();
    let upgrade = forward::is_upgrade(&parts)
        && forward::upgrade_allowed(&parts, &["websocket".into()]);
    let client_errors = weir::metrics::Metrics::new().listener("fuzz").client_errors;
    let client = "192.0.2.1:5000".parse().unwrap();
    let conn = forward::ConnInfo {
        client,
        forwarded_for: forward::forwarded_for(client),
        listener: "fuzz".into(),
        scheme: "http",
        delivery: std::sync::Arc::new(weir::proxy::body::Delivery::new(client_errors.clone())),
        client_errors,
        served: weir::proxy::drain::Served::new(0),
        route_timer: Default::default(),
    };
    if forward::prepare(&mut parts, &conn, upgrade).is_err() {
        return;
    }
    let h = &parts.headers;
    let forwarded: Vec<_> = h.get_all(header::HOST).iter().collect();
    assert!(forwarded.len() <= 1, "{h:?}");
    if let Some(sent) = &sent_host {
        assert_eq!(forwarded, [sent], "Host must be forwarded as the client sent it");
    }
    for gone in ["transfer-encoding", "keep-alive", "proxy-connection", "proxy-authorization"] {
        assert!(!h.contains_key(gone), "{gone} was forwarded");
    }
    if !upgrade {
        assert!(!h.contains_key(header::UPGRADE) && !h.contains_key(header::CONNECTION));
    }
    assert!(h.contains_key("x-forwarded-for"));
    assert_eq!(h["x-forwarded-proto"], "http");
}

fn matchers() -> [RouteMatch; 3] {
    [
        RouteMatch {
            host: HostMatch::Exact("app.example.com".into()),
            path_prefix: PathPrefix(Some("/api".into())),
        },
        RouteMatch {
            host: HostMatch::Suffix(".example.com".into()),
            path_prefix: PathPrefix(None),
        },
        RouteMatch {
            host: HostMatch::Any,
            path_prefix: PathPrefix(Some("/".into())),
        },
    ]
}
