//! Values from the network -> an access log line: whatever the client sent as its path,
//! authority, user agent or request ID, a JSON line is one line that parses back to the same
//! values, and a text line is one line of printable ASCII.
//!
//! Input: four fields separated by `\n`: path, authority, user agent, request ID.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use weir::observe::access::{AccessRecord, Format, ResponseFlags, format};
use weir::observe::request_id::RequestId;

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(4, |&b| b == b'\n');
    let mut next = || fields.next().unwrap_or_default();
    let (path, authority, agent, id) = (next(), next(), next(), next());
    let Ok(path) = http::uri::PathAndQuery::try_from(path) else {
        return;
    };
    let header = |b: &[u8]| HeaderValue::from_bytes(b).ok();
    let record = AccessRecord {
        started: Instant::now(),
        listener: Arc::from("public"),
        client: "127.0.0.1:1".parse().unwrap(),
        protocol: http::Version::HTTP_2,
        method: http::Method::GET,
        authority: header(authority),
        path,
        user_agent: header(agent),
        request_id: header(id).as_ref().and_then(RequestId::parse),
        trace_id: None,
        route: None,
        backend: None,
        endpoint: None,
        status: 200,
        grpc_status: None,
        flags: ResponseFlags::NONE,
        retries: 0,
        upstream: None,
        duration: Duration::from_nanos(u64::from(data.len() as u32) * 7_919),
        bytes_received: 0,
        bytes_sent: 0,
    };
    let time = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut line = Vec::new();
    format::write_line(Format::Json, &record, time, &mut line);
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    let v: serde_json::Value = serde_json::from_slice(&line).expect("a JSON line parses");
    assert_eq!(v["path"], record.path.as_str());
    if let Some(a) = &record.user_agent {
        assert_eq!(v["user_agent"], String::from_utf8_lossy(a.as_bytes()).as_ref());
    }
    let mut text = Vec::new();
    format::write_line(Format::Text, &record, time, &mut text);
    let (last, body) = text.split_last().unwrap();
    assert_eq!(*last, b'\n');
    assert!(body.iter().all(|b| (0x20..=0x7e).contains(b)), "{:?}", String::from_utf8_lossy(&text));
});
