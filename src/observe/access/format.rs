//! Access log lines: flat JSON (one object per line) or Envoy's default text line with weir's
//! fields after it. Durations are milliseconds with at most three decimals (`12.345`, `0.8`, `3`);
//! absent values are `null` in JSON and `-` in text, as Envoy prints them.
//!
//! JSON keys, in order: `time`, `request_id`, `trace_id`, `listener`, `client`, `protocol`,
//! `method`, `authority`, `path`, `user_agent`, `route`, `backend`, `endpoint`, `status`,
//! `grpc_status`, `flags`, `retries`, `upstream_ms`, `duration_ms`, `bytes_received`,
//! `bytes_sent`.
//!
//! Text: `[TIME] "METHOD PATH PROTOCOL" STATUS FLAGS BYTES_RECEIVED BYTES_SENT DURATION_MS
//! UPSTREAM_MS "CLIENT" "USER_AGENT" "REQUEST_ID" "AUTHORITY" "ENDPOINT" route=R backend=B
//! retries=N grpc_status=G listener=L trace_id=T`. Inside quotes, `"`, `\` and bytes outside
//! printable ASCII are escaped (`\"`, `\\`, `\xNN`), so a line is always one line.
//!
//! Runs on the writer thread, never on the request path: it may allocate.

use std::io::Write;
use std::time::{Duration, SystemTime};

use http::Version;

use super::record::{AccessRecord, Format};

/// Appends one line (with its `\n`) for `record` to `out`; `time` is when the request arrived.
pub fn write_line(format: Format, record: &AccessRecord, time: SystemTime, out: &mut Vec<u8>) {
    match format {
        Format::Json => json(record, time, out),
        Format::Text => text(record, time, out),
    }
    out.push(b'\n');
}

/// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3`: the names Envoy and nginx log.
pub fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// Milliseconds with at most three decimals, rounded to the microsecond, trailing zeros dropped:
/// `0.864`, `12.5`, `3`.
pub fn write_millis(d: Duration, out: &mut Vec<u8>) {
    let micros = (d.as_nanos() + 500) / 1_000;
    let (ms, frac) = (micros / 1_000, micros % 1_000);
    let _ = write!(out, "{ms}");
    if frac != 0 {
        let digits = [
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let mut len = 3;
        while digits[len - 1] == b'0' {
            len -= 1;
        }
        out.push(b'.');
        out.extend_from_slice(&digits[..len]);
    }
}

fn rfc3339(time: SystemTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(time)
}

// === JSON ===

fn json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn json_bytes(out: &mut Vec<u8>, b: &[u8]) {
    json_str(out, &String::from_utf8_lossy(b));
}

fn json_opt(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => json_bytes(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn json(r: &AccessRecord, time: SystemTime, out: &mut Vec<u8>) {
    let _ = write!(out, "{{\"time\":\"{}\",\"request_id\":", rfc3339(time));
    json_opt(out, r.request_id.as_ref().map(|id| id.as_str().as_bytes()));
    out.extend_from_slice(b",\"trace_id\":");
    match &r.trace_id {
        Some(t) => {
            let _ = write!(out, "\"{t}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"listener\":");
    json_str(out, &r.listener);
    let _ = write!(
        out,
        ",\"client\":\"{}\",\"protocol\":\"{}\",\"method\":",
        r.client,
        protocol(r.protocol)
    );
    json_str(out, r.method.as_str());
    out.extend_from_slice(b",\"authority\":");
    json_opt(out, r.authority.as_ref().map(|v| v.as_bytes()));
    out.extend_from_slice(b",\"path\":");
    json_str(out, r.path.as_str());
    out.extend_from_slice(b",\"user_agent\":");
    json_opt(out, r.user_agent.as_ref().map(|v| v.as_bytes()));
    out.extend_from_slice(b",\"route\":");
    json_opt(out, r.route.as_deref().map(str::as_bytes));
    out.extend_from_slice(b",\"backend\":");
    json_opt(out, r.backend.as_deref().map(str::as_bytes));
    out.extend_from_slice(b",\"endpoint\":");
    json_opt(out, r.endpoint.as_ref().map(|a| a.as_str().as_bytes()));
    let _ = write!(out, ",\"status\":{},\"grpc_status\":", r.status);
    match r.grpc_status {
        Some(g) => {
            let _ = write!(out, "{g}");
        }
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(
        out,
        ",\"flags\":\"{}\",\"retries\":{},\"upstream_ms\":",
        r.flags, r.retries
    );
    match r.upstream {
        Some(d) => write_millis(d, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"duration_ms\":");
    write_millis(r.duration, out);
    let _ = write!(
        out,
        ",\"bytes_received\":{},\"bytes_sent\":{}}}",
        r.bytes_received, r.bytes_sent
    );
}

// === text ===

/// `"value"` with `"`, `\` and anything outside printable ASCII escaped; `"-"` when absent.
fn quoted(out: &mut Vec<u8>, value: Option<&[u8]>) {
    out.push(b'"');
    match value {
        None => out.push(b'-'),
        Some(v) => escaped(out, v),
    }
    out.push(b'"');
}

fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

/// `key=value`, the value quoted only when it holds a space, a quote or a byte outside
/// printable ASCII; `key=-` when absent.
fn pair(out: &mut Vec<u8>, key: &str, value: Option<&[u8]>) {
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    match value {
        None => out.push(b'-'),
        Some(v) if !v.is_empty() && v.iter().all(|b| (0x21..=0x7e).contains(b) && *b != b'"') => {
            out.extend_from_slice(v)
        }
        Some(v) => quoted(out, Some(v)),
    }
}

fn text(r: &AccessRecord, time: SystemTime, out: &mut Vec<u8>) {
    let _ = write!(out, "[{}] \"{} ", rfc3339(time), r.method);
    escaped(out, r.path.as_str().as_bytes());
    let _ = write!(
        out,
        " {}\" {} {} {} {} ",
        protocol(r.protocol),
        r.status,
        r.flags,
        r.bytes_received,
        r.bytes_sent
    );
    write_millis(r.duration, out);
    out.push(b' ');
    match r.upstream {
        Some(d) => write_millis(d, out),
        None => out.push(b'-'),
    }
    out.push(b' ');
    quoted(out, Some(r.client.to_string().as_bytes()));
    out.push(b' ');
    quoted(out, r.user_agent.as_ref().map(|v| v.as_bytes()));
    out.push(b' ');
    quoted(out, r.request_id.as_ref().map(|id| id.as_str().as_bytes()));
    out.push(b' ');
    quoted(out, r.authority.as_ref().map(|v| v.as_bytes()));
    out.push(b' ');
    quoted(out, r.endpoint.as_ref().map(|a| a.as_str().as_bytes()));
    pair(out, "route", r.route.as_deref().map(str::as_bytes));
    pair(out, "backend", r.backend.as_deref().map(str::as_bytes));
    pair(out, "retries", Some(r.retries.to_string().as_bytes()));
    pair(
        out,
        "grpc_status",
        r.grpc_status
            .map(|g| g.to_string())
            .as_deref()
            .map(str::as_bytes),
    );
    pair(out, "listener", Some(r.listener.as_bytes()));
    pair(
        out,
        "trace_id",
        r.trace_id
            .map(|t| t.to_string())
            .as_deref()
            .map(str::as_bytes),
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use http::header::HeaderValue;
    use http::{Method, Version};

    use super::*;
    use crate::observe::access::ResponseFlags;
    use crate::observe::request_id::RequestId;
    use crate::observe::trace_context::TraceId;

    fn millis(d: Duration) -> String {
        let mut out = Vec::new();
        write_millis(d, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn durations_are_milliseconds_with_at_most_three_decimals() {
        let cases = [
            (Duration::from_nanos(863_888), "0.864"),
            (Duration::from_nanos(863_388), "0.863"),
            (Duration::from_micros(12_500), "12.5"),
            (Duration::from_micros(12_340), "12.34"),
            (Duration::from_millis(3), "3"),
            (Duration::ZERO, "0"),
            (Duration::from_nanos(499), "0"),
            (Duration::from_nanos(500), "0.001"),
            (Duration::from_nanos(999_999_600), "1000"),
            (Duration::from_secs(90), "90000"),
        ];
        for (d, text) in cases {
            assert_eq!(millis(d), text, "{d:?}");
        }
    }

    pub(crate) fn record() -> AccessRecord {
        AccessRecord {
            started: Instant::now(),
            listener: Arc::from("public"),
            client: "10.0.0.7:51234".parse().unwrap(),
            protocol: Version::HTTP_11,
            method: Method::GET,
            authority: Some(HeaderValue::from_static("app.example.com")),
            path: "/api/users?id=7".parse().unwrap(),
            user_agent: Some(HeaderValue::from_static("curl/8.5.0")),
            request_id: Some(RequestId::from_uuid(0x919108f7_52d1_4320_9bac_f847db4148a8)),
            trace_id: TraceId::new(*b"0123456789abcdef"),
            route: Some(Arc::from("app")),
            backend: Some(Arc::from("app-canary")),
            endpoint: Some("127.0.0.1:9101".parse().unwrap()),
            status: 200,
            grpc_status: None,
            flags: ResponseFlags::NONE,
            retries: 1,
            upstream: Some(Duration::from_micros(11_900)),
            duration: Duration::from_nanos(12_500_400),
            bytes_received: 0,
            bytes_sent: 512,
        }
    }

    fn line(format: Format, r: &AccessRecord) -> String {
        let mut out = Vec::new();
        write_line(
            format,
            r,
            UNIX_EPOCH + Duration::from_millis(1_795_892_137_123),
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_json_line_is_one_flat_object_with_every_field() {
        let text = line(Format::Json, &record());
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let expected = serde_json::json!({
            "time": "2026-11-28T18:55:37.123Z",
            "request_id": "919108f7-52d1-4320-9bac-f847db4148a8",
            "trace_id": "30313233343536373839616263646566",
            "listener": "public",
            "client": "10.0.0.7:51234",
            "protocol": "HTTP/1.1",
            "method": "GET",
            "authority": "app.example.com",
            "path": "/api/users?id=7",
            "user_agent": "curl/8.5.0",
            "route": "app",
            "backend": "app-canary",
            "endpoint": "127.0.0.1:9101",
            "status": 200,
            "grpc_status": null,
            "flags": "-",
            "retries": 1,
            "upstream_ms": 11.9,
            "duration_ms": 12.5,
            "bytes_received": 0,
            "bytes_sent": 512,
        });
        assert_eq!(v, expected);
        // Key order is part of the format (people read these lines too).
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 21);
        assert!(text.starts_with("{\"time\":"));
    }

    #[test]
    fn a_request_weir_answered_itself_has_nulls_and_its_flags() {
        let mut r = record();
        r.route = None;
        r.backend = None;
        r.endpoint = None;
        r.upstream = None;
        r.user_agent = None;
        r.request_id = None;
        r.trace_id = None;
        r.authority = None;
        r.status = 502;
        r.grpc_status = Some(14);
        r.flags = ResponseFlags::UPSTREAM_CONNECT_FAILURE | ResponseFlags::RETRY_LIMIT_EXCEEDED;
        let v: serde_json::Value = serde_json::from_str(&line(Format::Json, &r)).unwrap();
        for key in [
            "route",
            "backend",
            "endpoint",
            "upstream_ms",
            "user_agent",
            "request_id",
            "trace_id",
            "authority",
        ] {
            assert!(v[key].is_null(), "{key}");
        }
        assert_eq!(v["flags"], "UF,URX");
        assert_eq!(v["grpc_status"], 14);
        let text = line(Format::Text, &r);
        assert!(
            text.contains("\"GET /api/users?id=7 HTTP/1.1\" 502 UF,URX 0 512 12.5 - "),
            "{text}"
        );
        assert!(
            text.contains(" route=- backend=- retries=1 grpc_status=14 "),
            "{text}"
        );
    }

    #[test]
    fn a_text_line_follows_envoys_default_order() {
        let text = line(Format::Text, &record());
        assert_eq!(
            text,
            "[2026-11-28T18:55:37.123Z] \"GET /api/users?id=7 HTTP/1.1\" 200 - 0 512 12.5 11.9 \
             \"10.0.0.7:51234\" \"curl/8.5.0\" \"919108f7-52d1-4320-9bac-f847db4148a8\" \
             \"app.example.com\" \"127.0.0.1:9101\" route=app backend=app-canary retries=1 \
             grpc_status=- listener=public trace_id=30313233343536373839616263646566\n"
        );
    }

    #[test]
    fn hostile_values_cannot_break_a_line_in_either_format() {
        let mut r = record();
        r.user_agent = Some(HeaderValue::from_bytes(b"evil\" \\ \xff\tagent").unwrap());
        r.authority = Some(HeaderValue::from_bytes(b"a\"b").unwrap());
        r.route = Some(Arc::from("two words"));
        r.protocol = Version::HTTP_2;
        let json = line(Format::Json, &r);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["user_agent"], "evil\" \\ \u{fffd}\tagent");
        assert_eq!(v["protocol"], "HTTP/2");
        let text = line(Format::Text, &r);
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.contains(r#""evil\" \\ \xff\x09agent""#), "{text}");
        assert!(text.contains(r#""a\"b""#), "{text}");
        assert!(text.contains(r#" route="two words" "#), "{text}");
    }
}
