//! An upstream's bytes after weir's request, through `proxy::wire`: the first byte's low bit
//! says whether the request was HEAD (else GET), the rest is what the upstream sent. The head is
//! parsed, then the body decoded by its framing (Length: that many bytes; Chunked: to the end;
//! Close: the rest). Never a panic, and feeding the bytes in pieces (1 to 16 bytes, sizes taken
//! from the data) gives the same head, body, trailers and verdict as feeding them whole. A head
//! taken has fields `http`'s map takes, and weir's HTTP/1.1 server side writes the same head from
//! them as they came as from that map less its hop-by-hop fields (`h1::written_both_ways`).
#![no_main]

use bytes::BytesMut;
use http::{HeaderMap, Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use weir::proxy::h1::written_both_ways;
use weir::proxy::wire::{self, Chunk, Chunked, Framing, WireError};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let method = if flags & 1 == 1 { Method::HEAD } else { Method::GET };
    let whole = exchange(bytes, &method, |_| usize::MAX);
    let pieces = exchange(bytes, &method, |i| {
        usize::from(bytes.get(i % bytes.len().max(1)).copied().unwrap_or(0)) % 16 + 1
    });
    assert_eq!(whole.head, pieces.head, "the head depends on how bytes arrive");
    assert_eq!(whole.body, pieces.body, "the body depends on how bytes arrive");
    assert_eq!(whole.trailers, pieces.trailers);
    assert_eq!(whole.end, pieces.end, "the verdict depends on how bytes arrive");
});

#[derive(Debug, PartialEq)]
enum End {
    /// The body ended as its framing says.
    Complete,
    /// The bytes ran out first.
    Short,
    Failed(WireError),
}

#[derive(Debug)]
struct Outcome {
    head: Option<(StatusCode, Framing, bool, HeaderMap)>,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
    end: End,
}

/// Reads a response from `input`, handed over in pieces of `size(i)` bytes.
fn exchange(input: &[u8], method: &Method, mut size: impl FnMut(usize) -> usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut rest = input;
    let mut reads = 0;
    // One more piece into `buf`; false when the upstream has nothing more.
    let mut feed = |buf: &mut BytesMut| {
        if rest.is_empty() {
            return false;
        }
        let n = size(reads).min(rest.len());
        reads += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        true
    };
    let mut out = Outcome {
        head: None,
        body: Vec::new(),
        trailers: None,
        end: End::Short,
    };
    let head = loop {
        match wire::parse_response(&mut buf, method) {
            Ok(Some(head)) => break head,
            Ok(None) => {
                assert!(buf.len() < wire::MAX_HEAD, "a full buffer must be an error");
                if !feed(&mut buf) {
                    return out;
                }
            }
            Err(e) => {
                out.end = End::Failed(e);
                return out;
            }
        }
    };
    assert!(!head.status.is_informational());
    if head.framing == Framing::Close {
        assert!(!head.reusable);
    }
    if *method == Method::HEAD {
        assert_eq!(head.framing, Framing::None);
    }
    let map = head.fields.to_map().expect("httparse took a field http refuses");
    // The map weir hands on is built without the hop-by-hop fields; it must be the whole map
    // with them stripped.
    let mut stripped = map.clone();
    weir::proxy::forward::strip_hop_by_hop(&mut stripped, false);
    let built = weir::proxy::forward::fields_to_map(&head.fields).expect("as to_map");
    assert_eq!(built, stripped, "the map built without hop-by-hop fields differs");
    let length = match head.framing {
        Framing::None | Framing::Length(0) => None,
        Framing::Length(n) => Some(Some(n)),
        Framing::Chunked | Framing::Close => Some(None),
    };
    // The connection closing or not, as the number of fields says.
    let closing = head.fields.iter().count() % 2 == 1;
    let (as_sent, mapped) =
        written_both_ways(head.status, &head.fields, length, *method == Method::HEAD, closing);
    assert_eq!(as_sent, mapped, "the head written from the fields as they came differs");
    out.head = Some((head.status, head.framing, head.reusable, map));
    match head.framing {
        Framing::None => out.end = End::Complete,
        Framing::Length(mut left) => loop {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            out.body.extend_from_slice(&buf.split_to(n));
            left -= n as u64;
            if left == 0 {
                out.end = End::Complete;
                break;
            }
            if !feed(&mut buf) {
                break;
            }
        },
        Framing::Chunked => {
            let mut decoder = Chunked::new();
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(Chunk::Data(d))) => {
                        assert!(!d.is_empty(), "an empty Data piece");
                        out.body.extend_from_slice(&d);
                    }
                    Ok(Some(Chunk::Trailers(t))) => {
                        assert!(out.trailers.is_none() && !t.is_empty());
                        out.trailers = Some(t);
                    }
                    Ok(Some(Chunk::End)) => {
                        assert!(matches!(decoder.decode(&mut buf), Ok(Some(Chunk::End))));
                        out.end = End::Complete;
                        break;
                    }
                    Ok(None) => {
                        if !feed(&mut buf) {
                            break;
                        }
                    }
                    Err(e) => {
                        assert_eq!(decoder.decode(&mut buf).err(), Some(e), "errors stick");
                        out.end = End::Failed(e);
                        break;
                    }
                }
            }
        }
        Framing::Close => {
            while feed(&mut buf) {}
            out.body.extend_from_slice(&buf);
            out.end = End::Complete;
        }
    }
    out
}
