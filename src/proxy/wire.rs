//! A strict sans-I/O HTTP/1.1 codec for weir's upstream exchanges: the request head as bytes
//! (`encode_request`), the response head (`parse_response`, which decides the body's
//! `Framing`) and a chunked body (`Chunked`). No sockets, no clock, no tokio: bytes in, bytes out.
//!
//! It reads what an upstream sends, so any framing that could be read two ways is an error
//! (response smuggling): Content-Length with Transfer-Encoding, differing lengths, a transfer
//! coding other than one `chunked`, a chunk line not ended by CRLF. The rules follow RFC 9112
//! 6.3 and 7.1, as strictly as hyper and, where it is stricter, nginx's upstream module. Every
//! buffer is bounded (`MAX_HEAD`, `MAX_HEADERS`, `MAX_CHUNK_LINE`) and the results do not depend
//! on how the bytes are split into reads. A leaf: it imports nothing of weir.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Version};

/// The largest response head, and the largest trailer section, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most fields in a response head or a trailer section.
pub const MAX_HEADERS: usize = 100;
/// The longest chunk size line (size, extensions and its CRLF), in bytes.
pub const MAX_CHUNK_LINE: usize = 4096;
/// The most hex digits of a chunk size: 15 digits always fit in a `u64`.
const MAX_SIZE_DIGITS: u8 = 15;
/// The most digits of a Content-Length: 19 digits always fit in a `u64`.
const MAX_LENGTH_DIGITS: usize = 19;

/// An upstream broke HTTP/1.1's framing or syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the upstream answered with a protocol other than HTTP/1.0 or HTTP/1.1")]
    Version,
    #[error("the upstream sent a malformed response head: {0}")]
    Head(httparse::Error),
    #[error("the upstream sent a status code outside 100..=999")]
    Status,
    #[error("the upstream sent more than {MAX_HEADERS} fields in a head or trailer section")]
    TooManyHeaders,
    #[error("the upstream's response head exceeds {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the upstream switched protocols (101) though no upgrade was asked")]
    SwitchingProtocols,
    #[error("the upstream sent an invalid header field name")]
    HeaderName,
    #[error("the upstream sent an invalid header field value")]
    HeaderValue,
    #[error("the upstream sent both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    #[error("the upstream sent a Transfer-Encoding other than a single `chunked`")]
    TransferEncoding,
    #[error("the upstream sent Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncodingHttp10,
    #[error("the upstream sent an invalid Content-Length")]
    ContentLength,
    #[error("the upstream sent Content-Length values that differ")]
    ContentLengths,
    #[error("the upstream sent a body length with a 204")]
    NoContentWithLength,
    #[error("the upstream sent a chunk size that is not 1 to 15 hex digits")]
    ChunkSize,
    #[error("the upstream sent a chunk extension with a control character")]
    ChunkExtension,
    #[error("the upstream sent a chunk size line over {MAX_CHUNK_LINE} bytes")]
    ChunkLineTooLong,
    #[error("the upstream ended a chunk size line with something other than CRLF")]
    ChunkLineEnd,
    #[error("the upstream did not follow chunk data with CRLF")]
    ChunkDataEnd,
    #[error("the upstream sent a malformed trailer section: {0}")]
    Trailers(httparse::Error),
    #[error("the upstream ended a trailer line with something other than CRLF")]
    TrailerLineEnd,
    #[error("the upstream's trailer section exceeds {MAX_HEAD} bytes")]
    TrailersTooLarge,
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: the request was HEAD, or the status is 1xx, 204 or 304.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding: decode with [`Chunked`].
    Chunked,
    /// Until the connection ends.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    /// `HTTP_10` or `HTTP_11`.
    pub version: Version,
    /// As sent, hop-by-hop fields included; values share the head's bytes.
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once this response's body has ended.
    pub reusable: bool,
}

/// Where one field lies in the head's bytes: name and value ranges.
#[derive(Clone, Copy, Default)]
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

/// The offset range of `part` within `base` (both slices of one buffer; empty values may point
/// anywhere, so they get an empty range).
fn range_in(base: &[u8], part: &[u8]) -> (usize, usize) {
    if part.is_empty() {
        return (0, 0);
    }
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start, start + part.len())
}

/// Records the fields httparse found in `base` as offset ranges, so the borrow of the buffer
/// can end before its bytes are split off and frozen.
fn record(base: &[u8], parsed: &[httparse::Header<'_>], fields: &mut [Field; MAX_HEADERS]) {
    for (slot, h) in fields.iter_mut().zip(parsed) {
        *slot = Field {
            name: range_in(base, h.name.as_bytes()),
            value: range_in(base, h.value),
        };
    }
}

/// Builds the header map from the recorded ranges into the frozen `bytes`: values are slices of
/// it, checked by `http`'s constructors.
fn build_map(bytes: &Bytes, fields: &[Field]) -> Result<HeaderMap, WireError> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(&bytes[f.name.0..f.name.1])
            .map_err(|_| WireError::HeaderName)?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(f.value.0..f.value.1))
            .map_err(|_| WireError::HeaderValue)?;
        map.append(name, value);
    }
    Ok(map)
}

/// Parses the response head at the front of `buf` (the answer to a `method` request).
///
/// `Ok(None)`: incomplete, read more (an error once `buf` holds `MAX_HEAD` bytes and no complete
/// head). `Ok(Some)`: the head's bytes are taken off `buf` and the header values are slices of
/// them; what follows stays in `buf`. Interim responses (1xx other than 101) are taken off and
/// skipped, then the next head is parsed; if that one is incomplete, `Ok(None)` (the interim
/// stays consumed). 101 is an error: no upgrade is ever asked on this path.
pub fn parse_response(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, WireError> {
    loop {
        let mut fields = [Field::default(); MAX_HEADERS];
        let (len, count, code, version) = {
            // Only the first MAX_HEAD bytes are ever looked at, so the verdict is the same
            // however the bytes arrived.
            let window = &buf[..buf.len().min(MAX_HEAD)];
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut slots);
            match response.parse(window) {
                Ok(httparse::Status::Complete(len)) => {
                    record(window, response.headers, &mut fields);
                    (
                        len,
                        response.headers.len(),
                        response.code.unwrap_or(0),
                        response.version.unwrap_or(0),
                    )
                }
                Ok(httparse::Status::Partial) if window.len() >= MAX_HEAD => {
                    return Err(WireError::HeadTooLarge);
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::Version) => return Err(WireError::Version),
                Err(httparse::Error::TooManyHeaders) => return Err(WireError::TooManyHeaders),
                Err(e) => return Err(WireError::Head(e)),
            }
        };
        let status = StatusCode::from_u16(code).map_err(|_| WireError::Status)?;
        let version = match version {
            0 => Version::HTTP_10,
            1 => Version::HTTP_11,
            _ => return Err(WireError::Version),
        };
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(WireError::SwitchingProtocols);
        }
        let bytes = buf.split_to(len).freeze();
        let headers = build_map(&bytes, &fields[..count])?;
        if status.is_informational() {
            // An interim response (100 Continue, 103 Early Hints): the final one follows.
            continue;
        }
        let framing = framing(status, version, &headers, method)?;
        let reusable =
            version == Version::HTTP_11 && framing != Framing::Close && !has_close(&headers);
        return Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            reusable,
        }));
    }
}

/// RFC 9112 6.3: how the body of a final response is delimited.
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Framing, WireError> {
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let has_length = headers.contains_key(header::CONTENT_LENGTH);
    if chunked && has_length {
        return Err(WireError::LengthAndChunked);
    }
    if chunked {
        if version == Version::HTTP_10 {
            // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            return Err(WireError::TransferEncodingHttp10);
        }
        single_chunked(headers)?;
    }
    let length = if has_length {
        Some(content_length(headers)?)
    } else {
        None
    };
    if status == StatusCode::NO_CONTENT && (chunked || length.is_some_and(|l| l != 0)) {
        return Err(WireError::NoContentWithLength);
    }
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::None);
    }
    Ok(match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(length)) => Framing::Length(length),
        (false, None) => Framing::Close,
    })
}

/// The elements of every `name` field, split at commas and trimmed of OWS.
fn elements<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|e| e.trim_ascii_start().trim_ascii_end())
}

/// Transfer-Encoding over all its fields must be exactly one coding, `chunked`.
fn single_chunked(headers: &HeaderMap) -> Result<(), WireError> {
    let mut codings = elements(headers, &header::TRANSFER_ENCODING);
    match (codings.next(), codings.next()) {
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(WireError::TransferEncoding),
    }
}

/// Every Content-Length field and comma-separated element must be the same decimal value.
fn content_length(headers: &HeaderMap) -> Result<u64, WireError> {
    let mut found = None;
    for e in elements(headers, &header::CONTENT_LENGTH) {
        if e.is_empty() || e.len() > MAX_LENGTH_DIGITS || !e.iter().all(u8::is_ascii_digit) {
            return Err(WireError::ContentLength);
        }
        let value = e.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        match found {
            Some(v) if v != value => return Err(WireError::ContentLengths),
            _ => found = Some(value),
        }
    }
    found.ok_or(WireError::ContentLength)
}

/// A `close` token in any Connection field.
fn has_close(headers: &HeaderMap) -> bool {
    elements(headers, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case(b"close"))
}

/// What [`Chunked::decode`] found.
#[derive(Debug)]
pub enum Chunk {
    /// A non-empty piece of chunk data.
    Data(Bytes),
    /// The trailer fields after the last chunk (only when there were some).
    Trailers(HeaderMap),
    /// The body has ended.
    End,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// In a chunk size's hex digits.
    Size { size: u64, digits: u8 },
    /// After the size, in optional whitespace before `;` or CR.
    SizeSpace { size: u64 },
    /// In chunk extensions, skipped up to CR.
    Extension { size: u64 },
    /// After the size line's CR.
    SizeLf { size: u64 },
    /// In chunk data.
    Data { left: u64 },
    /// After chunk data, expecting CR.
    DataCr,
    /// After chunk data's CR.
    DataLf,
    /// After the last chunk: the trailer section.
    Trailers,
    /// The body has ended.
    End,
    /// An error was returned: returned again.
    Failed(WireError),
}

/// A chunked body decoder (RFC 9112 7.1).
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// Bytes of the current chunk size line so far.
    line: usize,
}

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked::new()
    }
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked {
            state: State::Size { size: 0, digits: 0 },
            line: 0,
        }
    }

    /// Decodes from the front of `buf`. `Ok(Some(Data(b)))`: a non-empty piece of chunk data, as
    /// much as `buf` holds up to the chunk's end, taken off without copying. After the last
    /// chunk: `Ok(Some(Trailers(map)))` once if it had trailer fields, then `Ok(Some(End))` (and
    /// `End` again if called again). `Ok(None)`: needs more bytes (what it could consume, such as
    /// a complete size line or the CRLF after data, it consumed and remembers). Bytes left in
    /// `buf` after `End` belong to no response of ours. An error is returned again if called
    /// again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, WireError> {
        match self.step(buf) {
            Err(e) => {
                self.state = State::Failed(e);
                Err(e)
            }
            ok => ok,
        }
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, WireError> {
        loop {
            match self.state {
                State::Failed(e) => return Err(e),
                State::End => return Ok(Some(Chunk::End)),
                State::Data { left } => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let rest = left - n as u64;
                    self.state = if rest == 0 {
                        State::DataCr
                    } else {
                        State::Data { left: rest }
                    };
                    return Ok(Some(Chunk::Data(buf.split_to(n).freeze())));
                }
                State::Trailers => return self.trailers(buf),
                _ => {
                    // The line states go byte by byte.
                    let Some(&b) = buf.first() else {
                        return Ok(None);
                    };
                    buf.advance(1);
                    self.line_byte(b)?;
                }
            }
        }
    }

    /// One byte of a size line or of the CRLF after chunk data.
    fn line_byte(&mut self, b: u8) -> Result<(), WireError> {
        if matches!(
            self.state,
            State::Size { .. }
                | State::SizeSpace { .. }
                | State::Extension { .. }
                | State::SizeLf { .. }
        ) {
            self.line += 1;
            if self.line > MAX_CHUNK_LINE {
                return Err(WireError::ChunkLineTooLong);
            }
        }
        self.state = match (self.state, b) {
            (State::Size { size, digits }, _) if b.is_ascii_hexdigit() => {
                if digits == MAX_SIZE_DIGITS {
                    return Err(WireError::ChunkSize);
                }
                let d = (b as char).to_digit(16).unwrap_or(0);
                State::Size {
                    size: (size << 4) | u64::from(d),
                    digits: digits + 1,
                }
            }
            (State::Size { digits: 0, .. }, _) => return Err(WireError::ChunkSize),
            (State::Size { size, .. } | State::SizeSpace { size }, b' ' | b'\t') => {
                State::SizeSpace { size }
            }
            (State::Size { size, .. } | State::SizeSpace { size }, b';') => {
                State::Extension { size }
            }
            (
                State::Size { size, .. } | State::SizeSpace { size } | State::Extension { size },
                b'\r',
            ) => State::SizeLf { size },
            (State::Size { .. } | State::SizeSpace { .. } | State::Extension { .. }, b'\n') => {
                return Err(WireError::ChunkLineEnd);
            }
            (State::Size { .. } | State::SizeSpace { .. }, _) => return Err(WireError::ChunkSize),
            (State::Extension { size }, _) => {
                if b != b'\t' && (b < 0x20 || b == 0x7f) {
                    return Err(WireError::ChunkExtension);
                }
                State::Extension { size }
            }
            (State::SizeLf { size }, b'\n') => {
                self.line = 0;
                if size == 0 {
                    State::Trailers
                } else {
                    State::Data { left: size }
                }
            }
            (State::SizeLf { .. }, _) => return Err(WireError::ChunkLineEnd),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size { size: 0, digits: 0 },
            (State::DataCr | State::DataLf, _) => return Err(WireError::ChunkDataEnd),
            (State::Data { .. } | State::Trailers | State::End | State::Failed(_), _) => {
                unreachable!("not a line state")
            }
        };
        Ok(())
    }

    /// The trailer section: fields, then an empty line, every line ended by CRLF.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, WireError> {
        let mut fields = [Field::default(); MAX_HEADERS];
        let (len, count) = {
            let window = &buf[..buf.len().min(MAX_HEAD)];
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(window, &mut slots) {
                Ok(httparse::Status::Complete((len, parsed))) => {
                    // httparse takes a bare LF as a line end; a chunked body may not.
                    if has_bare_lf(&window[..len]) {
                        return Err(WireError::TrailerLineEnd);
                    }
                    record(window, parsed, &mut fields);
                    (len, parsed.len())
                }
                Ok(httparse::Status::Partial) if window.len() >= MAX_HEAD => {
                    return Err(WireError::TrailersTooLarge);
                }
                Ok(httparse::Status::Partial) => {
                    // A bare LF in the part seen so far is already an error.
                    if has_bare_lf(window) {
                        return Err(WireError::TrailerLineEnd);
                    }
                    return Ok(None);
                }
                Err(httparse::Error::TooManyHeaders) => return Err(WireError::TooManyHeaders),
                Err(e) => return Err(WireError::Trailers(e)),
            }
        };
        let bytes = buf.split_to(len).freeze();
        let map = build_map(&bytes, &fields[..count])?;
        self.state = State::End;
        if map.is_empty() {
            Ok(Some(Chunk::End))
        } else {
            Ok(Some(Chunk::Trailers(map)))
        }
    }
}

/// A LF not preceded by CR.
fn has_bare_lf(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

/// Appends the request head: `METHOD target HTTP/1.1\r\n`, each field `name: value\r\n` in the
/// map's iteration order, then `\r\n`. Adds `content-length: 0` when the method is POST, PUT or
/// PATCH and the map has neither Content-Length nor Transfer-Encoding (the request has no body).
pub fn encode_request(method: &Method, target: &str, headers: &HeaderMap, out: &mut Vec<u8>) {
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(method.as_str().len() + target.len() + fields + 40);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let needs_length = matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        && !headers.contains_key(header::CONTENT_LENGTH)
        && !headers.contains_key(header::TRANSFER_ENCODING);
    if needs_length {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
