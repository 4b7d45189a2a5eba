//! Request IDs: keep a valid incoming `x-request-id`, or make a UUID version 4 for the request.
//!
//! **Valid** means what every log format and every upstream can carry unchanged: exactly one
//! `x-request-id` header whose value is 1 to [`MAX_LEN`] (200) bytes, each a visible ASCII
//! character (`!` 0x21 to `~` 0x7E: letters, digits, punctuation; no space, no control character,
//! nothing outside ASCII). UUIDs, ULIDs, Heroku's and nginx's `$request_id` all fit. Anything else
//! (empty, too long, spaces, non-ASCII, two headers) is replaced by a generated ID, so a client
//! cannot inject a line break or a megabyte into the access log, and a request is never forwarded
//! with two IDs.
//!
//! A generated ID is a UUID version 4 (RFC 9562): 122 random bits from the thread's generator
//! ([`super::random`]), formatted in lower-case hex into a 36-byte stack buffer. It costs no lock,
//! no clock read and no system call, and one allocation (the `HeaderValue`'s bytes, shared by
//! its clones). Version 7
//! would sort by time but needs a wall-clock read per request; the access log has the time
//! already.
//!
//! Over HTTP/2 the ID goes out as an HPACK literal that is never indexed (the value is marked
//! sensitive). An ID is new on every request, so a copy in the peer's dynamic table would never
//! be referred to again. Each insertion would also evict entries that do repeat (`server`,
//! `content-type`), and h2's encoder would walk the chain of earlier IDs comparing values first:
//! about 2,000 instructions per h2c response in `loadtest/instructions.sh`.

use http::HeaderMap;
use http::header::{Entry, HeaderName, HeaderValue};

use super::random;

/// The header weir reads, forwards upstream and returns to the client.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest incoming ID weir keeps, in bytes (Heroku's router uses the same bound).
pub const MAX_LEN: usize = 200;

/// Whether `value` is an ID weir keeps: 1 to [`MAX_LEN`] visible ASCII bytes.
pub fn is_valid(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_LEN && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A request's ID: valid by construction (kept from the client, or generated). Its value is
/// marked sensitive, so HTTP/2 never indexes it (see the module's notes).
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A new random UUID version 4.
    pub fn generate() -> RequestId {
        RequestId::from_uuid(uuid_v4(random::u128()))
    }

    /// The ID whose text is the UUID `bits` in its hyphenated lower-case form.
    pub fn from_uuid(bits: u128) -> RequestId {
        let mut text = [0u8; 36];
        format_uuid(bits, &mut text);
        // One allocation (the owner's box, with its reference count), and every clone after it
        // (the upstream's header, the client's, the access record) shares it: bytes from a
        // `Vec` would allocate again at the first clone.
        RequestId::unindexed(
            HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
                .expect("hex digits and hyphens are a valid value"),
        )
    }

    /// The client's ID, when it is valid.
    pub fn parse(value: &HeaderValue) -> Option<RequestId> {
        is_valid(value.as_bytes()).then(|| RequestId::unindexed(value.clone()))
    }

    fn unindexed(mut value: HeaderValue) -> RequestId {
        value.set_sensitive(true);
        RequestId(value)
    }

    pub fn as_str(&self) -> &str {
        // Validated or generated: visible ASCII only, which is UTF-8.
        std::str::from_utf8(self.0.as_bytes()).expect("a request ID is ASCII")
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

// By hand: a sensitive `HeaderValue` prints as `Sensitive`, and an ID is no secret.
impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request's ID: the one valid `x-request-id` in `headers`, or a generated one, which then
/// replaces whatever `x-request-id` headers there were (so the upstream sees exactly one, never
/// indexed over HTTP/2 either way).
///
/// One look-up of the name in the map, whichever way it goes.
pub fn ensure(headers: &mut HeaderMap) -> RequestId {
    let mut entry = headers.entry(&HEADER);
    if let Entry::Occupied(kept) = &mut entry {
        let mut values = kept.iter();
        if let (Some(first), None) = (values.next(), values.next())
            && let Some(id) = RequestId::parse(first)
        {
            kept.get_mut().set_sensitive(true);
            return id;
        }
    }
    let id = RequestId::generate();
    match entry {
        // Replaces every value the client sent.
        Entry::Occupied(mut others) => {
            others.insert(id.0.clone());
        }
        Entry::Vacant(none) => {
            none.insert(id.0.clone());
        }
    }
    id
}

/// Sets the version (4) and variant (RFC 9562, `10`) bits of 128 random bits.
pub fn uuid_v4(random: u128) -> u128 {
    (random & !(0xF << 76) & !(0b11 << 62)) | (0x4 << 76) | (0b10 << 62)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bits` as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lower-case hex) into `out`.
///
/// A byte (two digits) per step, most significant first, with the hyphens before bytes 4, 6, 8
/// and 10: 16 steps of a table look-up each, where a digit per step shifted the whole `u128`
/// 32 times (about 500 instructions per request in `loadtest/instructions.sh`, now about 150).
pub fn format_uuid(bits: u128, out: &mut [u8; 36]) {
    let mut at = 0;
    for (i, byte) in bits.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xF)];
        at += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &[u8], valid: bool) {
        assert_eq!(
            is_valid(value),
            valid,
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }

    #[test]
    fn ids_of_visible_ascii_up_to_200_bytes_are_valid() {
        check(b"0f8fad5b-d9cb-469f-a165-70867728950e", true);
        check(b"01ARZ3NDEKTSV4RRFFQ69G5FAV", true);
        check(b"a", true);
        check(b"req:42/abc=+@~!", true);
        check(&[b'x'; MAX_LEN], true);
    }

    #[test]
    fn empty_long_spaced_control_and_non_ascii_ids_are_invalid() {
        check(b"", false);
        check(&[b'x'; MAX_LEN + 1], false);
        check(b"two words", false);
        check(b"tab\there", false);
        check(b"line\nbreak", false);
        check(b"del\x7f", false);
        check("caf\u{e9}".as_bytes(), false);
    }

    #[test]
    fn a_uuid_is_formatted_as_rfc_9562_shows_it() {
        // RFC 9562 appendix A.4's example UUIDv4 is 919108f7-52d1-4320-9bac-f847db4148a8.
        let bits = 0x919108f7_52d1_4320_9bac_f847db4148a8_u128;
        let mut out = [0u8; 36];
        format_uuid(bits, &mut out);
        assert_eq!(&out, b"919108f7-52d1-4320-9bac-f847db4148a8");
        // Every digit in its place: the 32-digit hex of a few patterns, cut where RFC 9562 cuts.
        for bits in [
            0,
            u128::MAX,
            1,
            1 << 127,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            let hex = format!("{bits:032x}");
            let want = [
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..],
            ]
            .join("-");
            format_uuid(bits, &mut out);
            assert_eq!(std::str::from_utf8(&out).unwrap(), want);
        }
        assert_eq!(
            uuid_v4(bits),
            bits,
            "already has the version and variant bits"
        );
    }

    #[test]
    fn generated_ids_are_version_4_with_the_rfc_variant_and_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        for id in [&a, &b] {
            let s = id.as_str();
            assert_eq!(s.len(), 36);
            assert_eq!(&s[14..15], "4", "{s}");
            assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
            assert!(is_valid(s.as_bytes()));
        }
        assert_eq!(uuid_v4(0), 0x0000_0000_0000_4000_8000_0000_0000_0000);
        assert_eq!(
            uuid_v4(u128::MAX),
            0xffff_ffff_ffff_4fff_bfff_ffff_ffff_ffff
        );
    }

    #[test]
    fn a_valid_incoming_id_is_kept_as_it_came_but_never_indexed() {
        let mut h = HeaderMap::new();
        h.insert(&HEADER, HeaderValue::from_static("abc-123"));
        let id = ensure(&mut h);
        assert_eq!(id.as_str(), "abc-123");
        assert_eq!(h.get_all(&HEADER).iter().count(), 1);
        assert_eq!(h[&HEADER], "abc-123");
        assert!(h[&HEADER].is_sensitive(), "the upstream's copy");
        assert!(id.header_value().is_sensitive(), "the client's copy");
        assert_eq!(format!("{id:?}"), r#"RequestId("abc-123")"#);
    }

    #[test]
    fn a_missing_invalid_or_repeated_id_is_replaced_by_one_generated_id() {
        let cases: [&[&str]; 4] = [&[], &["has space"], &[""], &["one", "two"]];
        for values in cases {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(&HEADER, HeaderValue::from_str(v).unwrap());
            }
            let id = ensure(&mut h);
            assert_eq!(id.as_str().len(), 36, "{values:?}");
            let sent: Vec<_> = h.get_all(&HEADER).iter().collect();
            assert_eq!(sent, [id.header_value()], "{values:?}");
            assert!(sent[0].is_sensitive(), "{values:?}");
        }
    }
}
