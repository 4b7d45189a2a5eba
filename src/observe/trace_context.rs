//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): read an incoming `traceparent`
//! and `tracestate`, make weir's span the child of the caller's (same trace ID, a new span ID,
//! the caller's sampling decision), or start a trace when there is none, sampled at the configured
//! ratio; then the `traceparent` sent upstream names weir's span as the parent.
//!
//! Pure: [`parse_traceparent`], [`tracestate_is_valid`], [`child_of`] and [`Sampler`] take bytes
//! and random numbers in and give values out. [`propagate`] applies them to a request's headers.
//!
//! What weir does with what it receives, following the specification's processing model:
//! - a valid `traceparent` (version `00`, or a higher version parsed by its `00` prefix): continue
//!   the trace; the caller's sampled flag decides (parent-based sampling);
//! - none, several, or an invalid one (bad length, upper-case or non-hex digits, version `ff`,
//!   an all-zero trace ID or parent ID, a version-`00` value with anything after the flags): start
//!   a new trace, sampled at the ratio, and drop `tracestate` (the specification forbids reading
//!   `tracestate` without a valid parent);
//! - `tracestate` is carried unchanged (weir adds no entry of its own) when it is valid: at most 32
//!   list members over all its headers, each `key=value` by the specification's grammar, no key
//!   twice; otherwise it is dropped, as the specification's test suite expects.

use std::fmt;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use super::random;

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The `sampled` bit of `trace-flags`.
pub const FLAG_SAMPLED: u8 = 0x01;
/// Trace Context Level 2's `random-trace-id` bit: the trace ID's right 7 bytes are random. Set on
/// the traces weir starts, and passed on as received otherwise.
pub const FLAG_RANDOM: u8 = 0x02;

/// A trace ID: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// A span ID: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// `None` for the all-zero ID, which the specification makes invalid.
    pub fn new(bytes: [u8; 16]) -> Option<TraceId> {
        (bytes != [0; 16]).then_some(TraceId(bytes))
    }

    pub fn random() -> TraceId {
        loop {
            if let Some(id) = TraceId::new(random::u128().to_be_bytes()) {
                return id;
            }
        }
    }

    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// `None` for the all-zero ID, which the specification makes invalid.
    pub fn new(bytes: [u8; 8]) -> Option<SpanId> {
        (bytes != [0; 8]).then_some(SpanId(bytes))
    }

    pub fn random() -> SpanId {
        loop {
            if let Some(id) = SpanId::new(random::u64().to_be_bytes()) {
                return id;
            }
        }
    }

    pub fn bytes(&self) -> [u8; 8] {
        self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 32];
        hex_into(&self.0, &mut out);
        f.write_str(std::str::from_utf8(&out).expect("hex is ASCII"))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 16];
        hex_into(&self.0, &mut out);
        f.write_str(std::str::from_utf8(&out).expect("hex is ASCII"))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A parsed `traceparent`: the caller's trace, its span (weir's parent) and its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub version: u8,
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: u8,
}

/// Why a `traceparent` was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    #[error("traceparent has the wrong length for its version")]
    Length,
    #[error("traceparent version ff is invalid")]
    Version,
    #[error("traceparent has a character that is not a lower-case hex digit")]
    Hex,
    #[error("traceparent fields are not separated by single dashes")]
    Separator,
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
}

/// Length of a version-`00` `traceparent`: `vv-` 32 hex `-` 16 hex `-ff`.
pub const TRACEPARENT_LEN: usize = 55;

/// Parses a `traceparent` value by the specification: version `00` is exactly 55 characters;
/// a higher version (not `ff`) is read by the same first 55 characters, which must be followed
/// by the end or a dash, and the rest is ignored.
pub fn parse_traceparent(value: &[u8]) -> Result<TraceParent, TraceParentError> {
    if value.len() < TRACEPARENT_LEN {
        return Err(TraceParentError::Length);
    }
    let mut version = [0u8; 1];
    hex_decode(&value[0..2], &mut version)?;
    let version = version[0];
    if version == 0xff {
        return Err(TraceParentError::Version);
    }
    if version == 0 && value.len() != TRACEPARENT_LEN {
        return Err(TraceParentError::Length);
    }
    if version != 0 && value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' {
        return Err(TraceParentError::Separator);
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return Err(TraceParentError::Separator);
    }
    let mut trace = [0u8; 16];
    hex_decode(&value[3..35], &mut trace)?;
    let mut parent = [0u8; 8];
    hex_decode(&value[36..52], &mut parent)?;
    let mut flags = [0u8; 1];
    hex_decode(&value[53..55], &mut flags)?;
    Ok(TraceParent {
        version,
        trace_id: TraceId::new(trace).ok_or(TraceParentError::ZeroTraceId)?,
        parent_id: SpanId::new(parent).ok_or(TraceParentError::ZeroParentId)?,
        flags: flags[0],
    })
}

/// The value of each lower-case hex digit, [`NOT_HEX`] for every other byte: one table load per
/// character instead of a chain of range checks.
const UNHEX: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};
const NOT_HEX: u8 = 0xFF;

/// Lower-case hex only: the specification's `HEXDIGLC`.
fn hex_decode(text: &[u8], out: &mut [u8]) -> Result<(), TraceParentError> {
    let mut bad = 0u8;
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        let (hi, lo) = (UNHEX[usize::from(pair[0])], UNHEX[usize::from(pair[1])]);
        // Both are below 16 for a digit; any NOT_HEX sets the high bits.
        bad |= hi | lo;
        *byte = (hi << 4) | (lo & 0xF);
    }
    if bad & 0xF0 != 0 {
        return Err(TraceParentError::Hex);
    }
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xF)];
    }
}

/// The most list members a `tracestate` may have, over all its headers.
pub const TRACESTATE_MAX_MEMBERS: usize = 32;

/// Whether the `tracestate` header values (in order) form one valid list: at most 32 members,
/// each `key=value` by the specification's grammar, no key twice. Empty members (`a=1,,b=2`) and
/// optional white space around commas are allowed.
pub fn tracestate_is_valid<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut keys: [&[u8]; TRACESTATE_MAX_MEMBERS] = [&[]; TRACESTATE_MAX_MEMBERS];
    let mut count = 0;
    for value in values {
        for member in value.split(|&b| b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() {
                continue;
            }
            let Some(eq) = member.iter().position(|&b| b == b'=') else {
                return false;
            };
            let (key, value) = (&member[..eq], &member[eq + 1..]);
            if !tracestate_key_is_valid(key) || !tracestate_value_is_valid(value) {
                return false;
            }
            if count == TRACESTATE_MAX_MEMBERS || keys[..count].contains(&key) {
                return false;
            }
            keys[count] = key;
            count += 1;
        }
    }
    true
}

/// `simple-key = lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/")`, or
/// `tenant-id "@" system-id` with a tenant of up to 241 such characters starting with a letter
/// or digit and a system of up to 14 starting with a letter.
fn tracestate_key_is_valid(key: &[u8]) -> bool {
    let rest_ok = |s: &[u8]| {
        s.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(&c))
    };
    match key.iter().position(|&b| b == b'@') {
        None => (1..=256).contains(&key.len()) && key[0].is_ascii_lowercase() && rest_ok(&key[1..]),
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            (1..=241).contains(&tenant.len())
                && (tenant[0].is_ascii_lowercase() || tenant[0].is_ascii_digit())
                && rest_ok(&tenant[1..])
                && (1..=14).contains(&system.len())
                && system[0].is_ascii_lowercase()
                && rest_ok(&system[1..])
        }
    }
}

/// `value = 0*255(chr) nblk-chr`: 1 to 256 printable ASCII characters other than `,` and `=`,
/// spaces allowed except at the end.
fn tracestate_value_is_valid(value: &[u8]) -> bool {
    (1..=256).contains(&value.len())
        && value
            .iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && value[value.len() - 1] != b' '
}

/// Which traces weir starts are sampled: those whose trace ID falls below a threshold, as
/// OpenTelemetry's `TraceIdRatioBased` sampler decides (the trace ID's last 8 bytes, shifted right
/// by one, below `ratio * 2^63`), so every component that samples by ratio agrees on a trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    threshold: u64,
}

impl Sampler {
    /// `ratio` is clamped to 0..=1 (NaN samples nothing).
    pub fn new(ratio: f64) -> Sampler {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        Sampler {
            threshold: (ratio * (1u64 << 63) as f64) as u64,
        }
    }

    pub fn sampled(&self, trace_id: TraceId) -> bool {
        let low = u64::from_be_bytes(trace_id.0[8..16].try_into().expect("8 bytes"));
        (low >> 1) < self.threshold
    }
}

/// weir's span: its IDs, its parent (the caller's span, when it sent one) and whether it is
/// sampled (recorded and exported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
    pub flags: u8,
}

impl SpanContext {
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The version-`00` `traceparent` that names this span as the parent: what weir sends
    /// upstream. One allocation (the value's bytes).
    pub fn traceparent(&self) -> HeaderValue {
        let mut out = [0u8; TRACEPARENT_LEN];
        self.write_traceparent(&mut out);
        HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid value")
    }

    pub fn write_traceparent(&self, out: &mut [u8; TRACEPARENT_LEN]) {
        out[0] = b'0';
        out[1] = b'0';
        out[2] = b'-';
        hex_into(&self.trace_id.0, &mut out[3..35]);
        out[35] = b'-';
        hex_into(&self.span_id.0, &mut out[36..52]);
        out[52] = b'-';
        hex_into(&[self.flags], &mut out[53..55]);
    }
}

/// weir's span as the child of `parent`, or the root of a new trace: the IDs come from `new_trace`
/// and `new_span` (random in production, fixed in tests). A child keeps the trace ID and the
/// caller's sampled and random-ID flags; a root is sampled by `sampler`, and its ID is random.
pub fn child_of(
    parent: Option<&TraceParent>,
    sampler: Sampler,
    new_trace: impl FnOnce() -> TraceId,
    new_span: impl FnOnce() -> SpanId,
) -> SpanContext {
    match parent {
        Some(p) => SpanContext {
            trace_id: p.trace_id,
            span_id: new_span(),
            parent_id: Some(p.parent_id),
            flags: p.flags & (FLAG_SAMPLED | FLAG_RANDOM),
        },
        None => {
            let trace_id = new_trace();
            let sampled = if sampler.sampled(trace_id) {
                FLAG_SAMPLED
            } else {
                0
            };
            SpanContext {
                trace_id,
                span_id: new_span(),
                parent_id: None,
                flags: sampled | FLAG_RANDOM,
            }
        }
    }
}

/// The one valid `traceparent` among `headers`, if any (several are invalid by the spec).
pub fn incoming(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => parse_traceparent(v.as_bytes()).ok(),
        _ => None,
    }
}

/// Reads the request's trace context, makes weir's span, and rewrites the headers the upstream
/// will get: `traceparent` names weir's span; `tracestate` stays when valid and the caller's
/// `traceparent` was, and goes otherwise.
pub fn propagate(headers: &mut HeaderMap, sampler: Sampler) -> SpanContext {
    let parent = incoming(headers);
    let span = child_of(parent.as_ref(), sampler, TraceId::random, SpanId::random);
    let keep_state = parent.is_some()
        && tracestate_is_valid(headers.get_all(&TRACESTATE).iter().map(|v| v.as_bytes()));
    if !keep_state {
        headers.remove(&TRACESTATE);
    }
    headers.insert(TRACEPARENT.clone(), span.traceparent());
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn trace(hex: &str) -> TraceId {
        let mut b = [0u8; 16];
        hex_decode(hex.as_bytes(), &mut b).unwrap();
        TraceId::new(b).unwrap()
    }

    fn span(hex: &str) -> SpanId {
        let mut b = [0u8; 8];
        hex_decode(hex.as_bytes(), &mut b).unwrap();
        SpanId::new(b).unwrap()
    }

    fn check(value: &str, expected: Result<(&str, &str, u8), TraceParentError>) {
        let got = parse_traceparent(value.as_bytes())
            .map(|p| (p.trace_id.to_string(), p.parent_id.to_string(), p.flags));
        let expected = expected.map(|(t, s, f)| (t.to_owned(), s.to_owned(), f));
        assert_eq!(got, expected, "{value:?}");
    }

    #[test]
    fn the_specifications_examples_parse() {
        check(
            EXAMPLE,
            Ok(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1)),
        );
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            Ok(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 0)),
        );
        // Unknown flag bits are read (and not passed on, see child_of).
        check(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-09",
            Ok(("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 9)),
        );
    }

    #[test]
    fn a_higher_version_is_read_by_its_version_00_prefix() {
        check(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Ok(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1)),
        );
        check(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
            Ok(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1)),
        );
        check(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what-the-future-will-not-be-like",
            Err(TraceParentError::Separator),
        );
    }

    #[test]
    fn invalid_traceparents_are_refused_with_their_reason() {
        use TraceParentError::*;
        let cases = [
            // version ff is forbidden
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Version,
            ),
            // all-zero IDs
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroParentId,
            ),
            // upper-case hex, anywhere
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                Hex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                Hex,
            ),
            (
                "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Hex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
                Hex,
            ),
            // bad lengths
            ("", Length),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                Length,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                Length,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                Length,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                Length,
            ),
            // a field one character too long shifts the separators
            (
                "00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01",
                Separator,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                Separator,
            ),
            // non-hex characters
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                Hex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b.-01",
                Hex,
            ),
            (
                " 0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Hex,
            ),
        ];
        for (value, reason) in cases {
            check(value, Err(reason));
        }
    }

    #[test]
    fn weirs_span_is_the_child_of_the_callers_span_in_the_same_trace() {
        let parent = parse_traceparent(EXAMPLE.as_bytes()).unwrap();
        let child = child_of(
            Some(&parent),
            Sampler::new(0.0),
            || unreachable!("a child keeps the trace"),
            || span("b7ad6b7169203331"),
        );
        assert_eq!(child.trace_id, parent.trace_id);
        assert_eq!(child.parent_id, Some(parent.parent_id));
        assert!(child.sampled(), "the caller's decision wins over the ratio");
        assert_eq!(
            child.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
        );
        let unsampled =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fc").unwrap();
        let child = child_of(Some(&unsampled), Sampler::new(1.0), TraceId::random, || {
            span("b7ad6b7169203331")
        });
        assert!(
            !child.sampled(),
            "the caller's decision wins over the ratio"
        );
        assert_eq!(
            child.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-00",
            "unknown flag bits are not passed on"
        );
    }

    #[test]
    fn a_new_trace_is_sampled_by_the_ratio_on_its_trace_id() {
        let new = |id: &str, ratio: f64| {
            child_of(
                None,
                Sampler::new(ratio),
                || trace(id),
                || span("00f067aa0ba902b7"),
            )
        };
        let low = "4bf92f3577b34da60000000000000001";
        let high = "4bf92f3577b34da6ffffffffffffffff";
        assert!(new(low, 0.5).sampled());
        assert!(!new(high, 0.5).sampled());
        assert!(new(high, 1.0).sampled());
        assert!(!new(low, 0.0).sampled());
        let root = new(low, 1.0);
        assert_eq!(root.parent_id, None);
        assert_eq!(
            root.traceparent(),
            "00-4bf92f3577b34da60000000000000001-00f067aa0ba902b7-03",
            "sampled, and the trace ID is random"
        );
    }

    #[test]
    fn the_sampled_share_of_random_traces_is_the_ratio() {
        // 20,000 seeded draws at p = 0.1: sd = sqrt(20000 * 0.1 * 0.9) = 42.4; allow 5 sd (212).
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        let sampler = Sampler::new(0.1);
        let n = 20_000;
        let sampled = (0..n)
            .filter(|_| {
                let mut b = [0u8; 16];
                rng.fill_bytes(&mut b);
                sampler.sampled(TraceId::new(b).unwrap())
            })
            .count();
        assert!((2_000usize.abs_diff(sampled)) <= 212, "{sampled}");
        assert_eq!(Sampler::new(f64::NAN), Sampler::new(0.0));
        assert_eq!(Sampler::new(7.0), Sampler::new(1.0));
    }

    #[test]
    fn tracestate_is_checked_against_the_grammar() {
        let check = |values: &[&str], valid: bool| {
            assert_eq!(
                tracestate_is_valid(values.iter().map(|v| v.as_bytes())),
                valid,
                "{values:?}"
            );
        };
        check(&["congo=t61rcWkgMzE"], true);
        check(&["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"], true);
        check(&["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"], true);
        check(&["foo=1 , ,bar=2", ""], true);
        check(&["tenant@vendor=x", "1tenant@v-2=y z"], true);
        check(&["foo=1,foo=2"], false);
        check(&["foo=1", "foo=2"], false);
        check(&["Foo=1"], false);
        check(&["foo"], false);
        check(&["foo="], false);
        check(&["foo=a,b"], false);
        // A space before a comma is optional white space, not part of the value.
        check(&["foo=trailing , bar=1"], true);
        check(&["foo=a\tb"], false);
        check(&["foo=x=y"], false);
        check(&["@vendor=x"], false);
        check(&["tenant@=x"], false);
        check(&["tenant@1vendor=x"], false);
        let members: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        check(&[&members.join(",")], true);
        let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        check(&[&members.join(",")], false);
        check(&[&format!("k={}", "v".repeat(256))], true);
        check(&[&format!("k={}", "v".repeat(257))], false);
        check(&[&format!("k{}=v", "k".repeat(255))], true);
        check(&[&format!("k{}=v", "k".repeat(256))], false);
    }

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn a_valid_caller_context_is_continued_and_its_tracestate_carried() {
        let mut h = headers(&[
            (&TRACEPARENT, EXAMPLE),
            (&TRACESTATE, "rojo=00f067aa0ba902b7"),
            (&TRACESTATE, "congo=t61rcWkgMzE"),
        ]);
        let span = propagate(&mut h, Sampler::new(0.0));
        assert_eq!(span.trace_id, trace("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(span.parent_id, Some(span_id_of(EXAMPLE)));
        assert_ne!(span.span_id, span_id_of(EXAMPLE));
        assert_eq!(h.get_all(&TRACEPARENT).iter().count(), 1);
        assert_eq!(h[&TRACEPARENT], span.traceparent());
        let states: Vec<_> = h.get_all(&TRACESTATE).iter().collect();
        assert_eq!(states, ["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]);
    }

    fn span_id_of(traceparent: &str) -> SpanId {
        parse_traceparent(traceparent.as_bytes()).unwrap().parent_id
    }

    #[test]
    fn an_invalid_or_repeated_traceparent_starts_a_new_trace_without_tracestate() {
        let bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        for mut h in [
            headers(&[(&TRACEPARENT, bad), (&TRACESTATE, "rojo=1")]),
            headers(&[
                (&TRACEPARENT, EXAMPLE),
                (&TRACEPARENT, EXAMPLE),
                (&TRACESTATE, "rojo=1"),
            ]),
            headers(&[(&TRACESTATE, "rojo=1")]),
        ] {
            let span = propagate(&mut h, Sampler::new(1.0));
            assert_eq!(span.parent_id, None);
            assert!(span.sampled());
            assert_ne!(span.trace_id, trace("4bf92f3577b34da6a3ce929d0e0e4736"));
            assert_eq!(h[&TRACEPARENT], span.traceparent());
            assert_eq!(h.get_all(&TRACEPARENT).iter().count(), 1);
            assert!(h.get(&TRACESTATE).is_none());
        }
    }

    #[test]
    fn an_invalid_tracestate_is_dropped_and_the_trace_continued() {
        let mut h = headers(&[(&TRACEPARENT, EXAMPLE), (&TRACESTATE, "foo=1,foo=1")]);
        let span = propagate(&mut h, Sampler::new(0.0));
        assert_eq!(span.trace_id, trace("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(h.get(&TRACESTATE).is_none());
    }

    #[test]
    fn ids_print_as_lower_case_hex() {
        assert_eq!(
            trace("0af7651916cd43dd8448eb211c80319c").to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(span("b7ad6b7169203331").to_string(), "b7ad6b7169203331");
        assert_eq!(TraceId::new([0; 16]), None);
        assert_eq!(SpanId::new([0; 8]), None);
    }
}
