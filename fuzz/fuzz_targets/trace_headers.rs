//! Request headers from the network -> request ID and trace context: never a panic, and what
//! weir sends upstream is always well formed: exactly one valid `x-request-id`, exactly one
//! version-00 `traceparent` naming weir's span in the same trace as a valid caller's, and a
//! `tracestate` only when it is valid and the caller's `traceparent` was.
//!
//! Input: header lines `name: value` separated by `\n` (a line without `: ` is skipped).
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use weir::observe::request_id;
use weir::observe::trace_context::{self, Sampler, TRACEPARENT, TRACESTATE};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(at) = line.windows(2).position(|w| w == b": ") else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..at]),
            HeaderValue::from_bytes(&line[at + 2..]),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    // Every traceparent value alone: parsing never panics, and a version-00 value that parses
    // prints back as itself.
    for v in headers.get_all(&TRACEPARENT) {
        if let Ok(p) = trace_context::parse_traceparent(v.as_bytes())
            && p.version == 0
        {
            let text = format!(
                "00-{}-{}-{:02x}",
                p.trace_id, p.parent_id, p.flags
            );
            assert_eq!(text.as_bytes(), v.as_bytes());
        }
    }
    let caller = trace_context::incoming(&headers);
    let state_was_valid = trace_context::tracestate_is_valid(
        headers.get_all(&TRACESTATE).iter().map(|v| v.as_bytes()),
    );
    let states_before: Vec<HeaderValue> = headers.get_all(&TRACESTATE).iter().cloned().collect();
    let id = request_id::ensure(&mut headers);
    let span = trace_context::propagate(&mut headers, Sampler::new(0.5));

    let ids: Vec<_> = headers.get_all(&request_id::HEADER).iter().collect();
    assert_eq!(ids, [id.header_value()]);
    assert!(request_id::is_valid(id.as_str().as_bytes()));

    let sent: Vec<_> = headers.get_all(&TRACEPARENT).iter().collect();
    assert_eq!(sent.len(), 1);
    let ours = trace_context::parse_traceparent(sent[0].as_bytes()).expect("weir's own is valid");
    assert_eq!(ours.trace_id, span.trace_id);
    assert_eq!(ours.parent_id, span.span_id);
    match caller {
        Some(c) => {
            assert_eq!(span.trace_id, c.trace_id);
            assert_eq!(span.parent_id, Some(c.parent_id));
            assert_eq!(span.sampled(), c.flags & 1 == 1);
            let states_after: Vec<HeaderValue> =
                headers.get_all(&TRACESTATE).iter().cloned().collect();
            if state_was_valid {
                assert_eq!(states_after, states_before, "a valid tracestate is carried unchanged");
            } else {
                assert!(states_after.is_empty(), "an invalid tracestate is dropped");
            }
        }
        None => {
            assert_eq!(span.parent_id, None);
            assert!(headers.get(&TRACESTATE).is_none());
        }
    }
});
