//! Bytes an HTTP/1.1 client sends, through weir's own server side (`proxy::h1::Reader`), whole
//! and in small pieces:
//!
//! - never a panic; the heads taken and the bytes left add up to the input, and a hand-off
//!   leaves the buffer as it was (hyper must get every byte);
//! - a head taken has no framing, tunnel or interim-response field, is HTTP/1.1 and not
//!   `CONNECT`, and is never one that the framing scan (`proxy::framing`) finds ambiguous;
//! - the same heads come out whether the bytes arrive in one read or in many.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use http::{Method, Request, Version};
use libfuzzer_sys::fuzz_target;
use weir::proxy::framing::{Scanner, Verdict};
use weir::proxy::h1::{Parsed, Reader};

const MAX_HEAD: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let whole = heads(data, &[data.len().max(1)]);
    let sizes: Vec<usize> = data.iter().map(|b| usize::from(b % 16) + 1).collect();
    let pieces = heads(data, &sizes);
    assert_eq!(whole, pieces, "heads differ between one read and many");
    let verdict = Arc::new(Verdict::default());
    let mut scan = Scanner::new(verdict.clone(), MAX_HEAD);
    scan.feed(data);
    if let Some(n) = verdict.refused() {
        assert!(n as usize > whole.len(), "fast head {n} is ambiguous");
    }
});

/// The heads the reader takes from `data` fed in pieces of `sizes` (cycled), as text.
fn heads(data: &[u8], sizes: &[usize]) -> Vec<String> {
    let mut reader = Reader::new(MAX_HEAD, 100);
    let mut buf = BytesMut::new();
    let (mut fed, mut taken, mut out) = (0, 0, Vec::new());
    let mut i = 0;
    loop {
        let before = buf.clone();
        match reader.parse(&mut buf) {
            Parsed::Request(req) => {
                taken += before.len() - buf.len();
                assert_eq!(&before[before.len() - buf.len()..], &buf[..]);
                check(&req);
                out.push(format!("{req:?}"));
                continue;
            }
            Parsed::HandOff => {
                assert_eq!(before, buf, "a hand-off changed the buffer");
                return out;
            }
            Parsed::Partial => assert_eq!(before, buf),
        }
        if fed == data.len() {
            assert_eq!(taken + buf.len(), data.len());
            return out;
        }
        let n = sizes[i % sizes.len()].min(data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        i += 1;
    }
}

fn check(req: &Request<()>) {
    assert_eq!(req.version(), Version::HTTP_11);
    assert_ne!(req.method(), Method::CONNECT);
    for name in ["content-length", "transfer-encoding", "upgrade", "expect", "te", "http2-settings"] {
        assert!(!req.headers().contains_key(name), "{name} taken");
    }
    for v in req.headers().get_all("connection") {
        assert!(v.as_bytes().eq_ignore_ascii_case(b"keep-alive"));
    }
}
