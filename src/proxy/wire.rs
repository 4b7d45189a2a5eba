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

use std::mem::MaybeUninit;

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
    /// As sent, hop-by-hop fields included.
    pub fields: Fields,
    pub framing: Framing,
    /// The connection may carry another request once this response's body has ended.
    pub reusable: bool,
    /// The reason phrase, when it is not the status's canonical one (`200 All good`), for the
    /// client to get as sent (hyper's `ext::ReasonPhrase`).
    pub reason: Option<Bytes>,
}

/// Where one field lies in the head's bytes: name and value ranges (a section is at most
/// `MAX_HEAD` bytes, so `u32` offsets fit).
#[derive(Debug, Clone, Copy, Default)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// Whether the field name `name` (a token, as httparse takes it) is `lower` in any case; `lower`
/// is in lower case, of letters, digits and `-`. Setting bit 0x20 maps no byte a token may hold
/// onto such a byte but its own upper-case letter (the bytes it would map onto `-` and the digits
/// are control characters), so one OR per byte does what `eq_ignore_ascii_case` does.
pub fn name_is(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.iter().zip(lower).all(|(&a, &b)| a | 0x20 == b)
}

/// A response head's fields as the upstream sent them: the head's bytes and where each field
/// lies in them, in order, names in the case they came in.
///
/// httparse took them, so a name is a token and a value holds no control character but tab:
/// the rules `http`'s `HeaderName` and `HeaderValue` check, so [`Fields::to_map`] takes every
/// field (the `upstream_response` fuzz target holds it to that). Writing the fields out as they
/// came, rather than building a map to write it out again, is how weir's own HTTP/1.1 server
/// side passes an upstream's head on (`proxy::h1`).
#[derive(Debug, Clone)]
pub struct Fields {
    bytes: Bytes,
    at: Box<[Field]>,
}

impl Fields {
    /// (name, value) of each field, in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.at.iter().map(|f| {
            let part = |(start, end): (u32, u32)| &self.bytes[start as usize..end as usize];
            (part(f.name), part(f.value))
        })
    }

    /// The values of every field named `name` (lower case, see [`name_is`]).
    fn values<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        let part = |(start, end): (u32, u32)| &self.bytes[start as usize..end as usize];
        self.at
            .iter()
            .filter(move |f| {
                (f.name.1 - f.name.0) as usize == name.len() && name_is(part(f.name), name)
            })
            .map(move |f| part(f.value))
    }

    /// The fields as a header map, in order; the values are slices of the head's bytes, checked
    /// by `http`'s constructors.
    pub fn to_map(&self) -> Result<HeaderMap, WireError> {
        self.to_map_without(|_, _| false)
    }

    /// [`Fields::to_map`] less the fields `left_out` names, given a field's index (in the order
    /// sent) and its name in lower case.
    pub fn to_map_without(
        &self,
        left_out: impl Fn(usize, &[u8]) -> bool,
    ) -> Result<HeaderMap, WireError> {
        map_of(&self.bytes, &self.at, left_out)
    }
}

/// The header map of `fields` in `bytes` less those `left_out` names: values are slices of it,
/// checked by `http`'s constructors.
fn map_of(
    bytes: &Bytes,
    fields: &[Field],
    left_out: impl Fn(usize, &[u8]) -> bool,
) -> Result<HeaderMap, WireError> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        let name = HeaderName::from_bytes(&bytes[f.name.0 as usize..f.name.1 as usize])
            .map_err(|_| WireError::HeaderName)?;
        if left_out(i, name.as_str().as_bytes()) {
            continue;
        }
        let value =
            HeaderValue::from_maybe_shared(bytes.slice(f.value.0 as usize..f.value.1 as usize))
                .map_err(|_| WireError::HeaderValue)?;
        map.append(name, value);
    }
    Ok(map)
}

/// The offset range of `part` within `base` (both slices of one buffer; empty values may point
/// anywhere, so they get an empty range).
fn range_in(base: &[u8], part: &[u8]) -> (u32, u32) {
    if part.is_empty() {
        return (0, 0);
    }
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    (at(start), at(start + part.len()))
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
        let (len, count, code, version, reason) = {
            // Only the first MAX_HEAD bytes are ever looked at, so the verdict is the same
            // however the bytes arrived.
            let window = &buf[..buf.len().min(MAX_HEAD)];
            let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut response,
                window,
                &mut slots,
            );
            match parsed {
                Ok(httparse::Status::Complete(len)) => {
                    record(window, response.headers, &mut fields);
                    let code = response.code.unwrap_or(0);
                    let canonical = StatusCode::from_u16(code)
                        .ok()
                        .and_then(|s| s.canonical_reason());
                    let reason = response
                        .reason
                        .filter(|r| !r.is_empty() && Some(*r) != canonical)
                        .map(|r| range_in(window, r.as_bytes()));
                    (
                        len,
                        response.headers.len(),
                        code,
                        response.version.unwrap_or(0),
                        reason,
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
        if status.is_informational() {
            // An interim response (100 Continue, 103 Early Hints): the final one follows.
            continue;
        }
        let fields = Fields {
            bytes,
            at: fields[..count].into(),
        };
        let framing = framing(status, version, &fields, method)?;
        let reusable =
            version == Version::HTTP_11 && framing != Framing::Close && !has_close(&fields);
        let bytes = &fields.bytes;
        return Ok(Some(Head {
            status,
            version,
            framing,
            reusable,
            reason: reason.map(|(start, end)| bytes.slice(start as usize..end as usize)),
            fields,
        }));
    }
}

/// RFC 9112 6.3: how the body of a final response is delimited.
fn framing(
    status: StatusCode,
    version: Version,
    fields: &Fields,
    method: &Method,
) -> Result<Framing, WireError> {
    let chunked = fields.values(TRANSFER_ENCODING).next().is_some();
    let has_length = fields.values(CONTENT_LENGTH).next().is_some();
    if chunked && has_length {
        return Err(WireError::LengthAndChunked);
    }
    if chunked {
        if version == Version::HTTP_10 {
            // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            return Err(WireError::TransferEncodingHttp10);
        }
        single_chunked(fields)?;
    }
    let length = if has_length {
        Some(content_length(fields)?)
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

const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const CONTENT_LENGTH: &[u8] = b"content-length";

/// The elements of every `name` field, split at commas and trimmed of OWS.
fn elements<'a>(fields: &'a Fields, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    fields
        .values(name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|e| e.trim_ascii_start().trim_ascii_end())
}

/// Transfer-Encoding over all its fields must be exactly one coding, `chunked`.
fn single_chunked(fields: &Fields) -> Result<(), WireError> {
    let mut codings = elements(fields, TRANSFER_ENCODING);
    match (codings.next(), codings.next()) {
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(WireError::TransferEncoding),
    }
}

/// Every Content-Length field and comma-separated element must be the same decimal value.
fn content_length(fields: &Fields) -> Result<u64, WireError> {
    let mut found = None;
    for field in fields.values(CONTENT_LENGTH) {
        for e in field.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if e.is_empty() || e.len() > MAX_LENGTH_DIGITS || !e.iter().all(u8::is_ascii_digit) {
                return Err(WireError::ContentLength);
            }
            let value = e.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            match found {
                Some(v) if v != value => return Err(WireError::ContentLengths),
                _ => found = Some(value),
            }
        }
    }
    found.ok_or(WireError::ContentLength)
}

/// A `close` token in any Connection field.
fn has_close(fields: &Fields) -> bool {
    fields.values(b"connection").any(|field| {
        field
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
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
                    // The line states go byte by byte, up to the start of data or trailers.
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let mut used = 0;
                    let mut fault = None;
                    for &b in buf.iter() {
                        used += 1;
                        if let Err(e) = self.line_byte(b) {
                            fault = Some(e);
                            break;
                        }
                        if matches!(self.state, State::Data { .. } | State::Trailers) {
                            break;
                        }
                    }
                    buf.advance(used);
                    if let Some(e) = fault {
                        return Err(e);
                    }
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
            // httparse takes a bare LF as a line end; a chunked body may not. httparse reads
            // only up to the first bare LF, so the first fault in byte order is the one
            // reported, however the bytes arrived.
            let (limit, bare_lf) = match section_end(window) {
                Section::End(end) => (end, false),
                Section::BareLf(at) => (at, true),
                Section::Open => (window.len(), false),
            };
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(&window[..limit], &mut slots) {
                Ok(httparse::Status::Complete((len, parsed))) => {
                    record(window, parsed, &mut fields);
                    (len, parsed.len())
                }
                Ok(httparse::Status::Partial) if bare_lf => {
                    return Err(WireError::TrailerLineEnd);
                }
                Ok(httparse::Status::Partial) if window.len() >= MAX_HEAD => {
                    return Err(WireError::TrailersTooLarge);
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(WireError::TooManyHeaders),
                Err(e) => return Err(WireError::Trailers(e)),
            }
        };
        let bytes = buf.split_to(len).freeze();
        let map = map_of(&bytes, &fields[..count], |_, _| false)?;
        self.state = State::End;
        if map.is_empty() {
            Ok(Some(Chunk::End))
        } else {
            Ok(Some(Chunk::Trailers(map)))
        }
    }
}

/// What the lines at the front of a trailer section show.
enum Section {
    /// Its empty line ends here (the offset just past its CRLF).
    End(usize),
    /// A LF without its CR, at this offset, comes first.
    BareLf(usize),
    /// Neither yet.
    Open,
}

fn section_end(bytes: &[u8]) -> Section {
    let mut line = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        if i == 0 || bytes[i - 1] != b'\r' {
            return Section::BareLf(i);
        }
        if i == line + 1 {
            return Section::End(i + 1);
        }
        line = i + 1;
    }
    Section::Open
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], method: &Method) -> Result<Option<Head>, WireError> {
        parse_response(&mut BytesMut::from(bytes), method)
    }

    fn get(bytes: &[u8]) -> Result<Head, WireError> {
        parse(bytes, &Method::GET).map(|h| h.expect("a complete head"))
    }

    /// Feeds `bytes` to `parse_response` one byte at a time, as a slow upstream would.
    fn get_bytewise(bytes: &[u8]) -> (Result<Option<Head>, WireError>, BytesMut) {
        let mut buf = BytesMut::new();
        for &b in bytes {
            buf.extend_from_slice(&[b]);
            match parse_response(&mut buf, &Method::GET) {
                Ok(None) => {}
                done => return (done, buf),
            }
        }
        (Ok(None), buf)
    }

    /// A decoded body: its data joined, its trailers, and the bytes left after it.
    type Body = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    /// The whole body, or the first error.
    fn decode_all(bytes: &[u8], piece: usize) -> Result<Body, WireError> {
        let mut decoder = Chunked::new();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut rest = bytes;
        loop {
            match decoder.decode(&mut buf)? {
                Some(Chunk::Data(d)) => {
                    assert!(!d.is_empty(), "an empty Data piece");
                    data.extend_from_slice(&d);
                }
                Some(Chunk::Trailers(t)) => {
                    assert!(trailers.is_none(), "trailers twice");
                    trailers = Some(t);
                }
                Some(Chunk::End) => {
                    assert!(matches!(decoder.decode(&mut buf), Ok(Some(Chunk::End))));
                    let mut left = buf.to_vec();
                    left.extend_from_slice(rest);
                    return Ok((data, trailers, left));
                }
                None => {
                    assert!(
                        !rest.is_empty(),
                        "the decoder waits for bytes that never come"
                    );
                    let n = piece.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    fn chunked(bytes: &[u8]) -> Result<Body, WireError> {
        let whole = decode_all(bytes, usize::MAX);
        let bytewise = decode_all(bytes, 1);
        match (&whole, &bytewise) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "whole and byte-by-byte decoding differ"),
            (Err(a), Err(b)) => assert_eq!(a, b, "whole and byte-by-byte errors differ"),
            _ => panic!("whole {whole:?}, byte by byte {bytewise:?}"),
        }
        whole
    }

    #[test]
    fn a_response_with_content_length_is_framed_by_it_and_reusable() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..]);
        let head = parse_response(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.reusable);
        assert_eq!(head.fields.to_map().unwrap()["x-a"], "b");
        assert_eq!(&buf[..], b"hello", "the body stays in the buffer");
    }

    #[test]
    fn header_values_share_the_heads_bytes() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nX-Long: a-value-to-share\r\nContent-Length: 0\r\n\r\n"[..],
        );
        let start = buf.as_ptr() as usize;
        let end = start + buf.len();
        let head = parse_response(&mut buf, &Method::GET).unwrap().unwrap();
        let value = head.fields.to_map().unwrap()["x-long"].as_bytes().as_ptr() as usize;
        assert!((start..end).contains(&value), "the value was copied");
    }

    #[test]
    fn an_incomplete_head_asks_for_more_and_consumes_nothing() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Len"[..]);
        assert!(parse_response(&mut buf, &Method::GET).unwrap().is_none());
        assert_eq!(buf.len(), 28);
    }

    #[test]
    fn a_response_without_length_or_chunked_reads_until_close_and_is_not_reusable() {
        let head = get(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::Close);
        assert!(!head.reusable);
    }

    #[test]
    fn a_chunked_response_is_chunked() {
        let head = get(b"HTTP/1.1 200 OK\r\nTransfer-Encoding:  ChunKed \r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(head.reusable);
    }

    #[test]
    fn an_http_1_0_response_is_never_reusable() {
        let head =
            get(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert_eq!(head.version, Version::HTTP_10);
        assert_eq!(head.framing, Framing::Length(0));
        assert!(!head.reusable);
    }

    #[test]
    fn a_close_token_in_any_connection_field_makes_the_connection_not_reusable() {
        for conn in [
            "close",
            "CLOSE",
            "keep-alive, Close",
            "foo\r\nConnection: close",
        ] {
            let text =
                format!("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: {conn}\r\n\r\n");
            assert!(!get(text.as_bytes()).unwrap().reusable, "{conn}");
        }
        let head = get(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: closed\r\n\r\n");
        assert!(head.unwrap().reusable, "`closed` is not `close`");
    }

    #[test]
    fn content_length_and_transfer_encoding_together_are_refused() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(get(text).unwrap_err(), WireError::LengthAndChunked);
        assert_eq!(
            parse(text, &Method::HEAD).unwrap_err(),
            WireError::LengthAndChunked,
            "even when no body follows"
        );
        assert_eq!(
            WireError::LengthAndChunked.to_string(),
            "the upstream sent both Content-Length and Transfer-Encoding"
        );
    }

    #[test]
    fn two_different_content_lengths_are_refused() {
        let two_fields = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(get(two_fields).unwrap_err(), WireError::ContentLengths);
        let one_list = b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n";
        assert_eq!(get(one_list).unwrap_err(), WireError::ContentLengths);
    }

    #[test]
    fn repeated_equal_content_lengths_are_one_length() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 7 ,7\r\nContent-Length: 7\r\n\r\n";
        assert_eq!(get(text).unwrap().framing, Framing::Length(7));
    }

    #[test]
    fn a_content_length_that_is_not_plain_digits_is_refused() {
        for bad in [
            "+5",
            "-5",
            "5a",
            "0x5",
            "",
            "5,",
            " , 5",
            "5 5",
            "12345678901234567890",
        ] {
            let text = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                get(text.as_bytes()).unwrap_err(),
                WireError::ContentLength,
                "{bad:?}"
            );
        }
        let most = b"HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\n";
        assert_eq!(
            get(most).unwrap().framing,
            Framing::Length(9_999_999_999_999_999_999)
        );
    }

    #[test]
    fn a_transfer_encoding_other_than_one_chunked_is_refused() {
        for bad in [
            "chunked, chunked",
            "gzip, chunked",
            "chunked, gzip",
            "identity",
            "",
            "chunked,",
            "chunked\r\nTransfer-Encoding: chunked",
            "chunked\r\nTransfer-Encoding: gzip",
        ] {
            let text = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {bad}\r\n\r\n");
            assert_eq!(
                get(text.as_bytes()).unwrap_err(),
                WireError::TransferEncoding,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn transfer_encoding_in_an_http_1_0_response_is_refused() {
        let text = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(get(text).unwrap_err(), WireError::TransferEncodingHttp10);
    }

    #[test]
    fn a_head_request_204_and_304_have_no_body_whatever_their_length() {
        let with_length = b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n";
        let head = parse(with_length, &Method::HEAD).unwrap().unwrap();
        assert_eq!(head.framing, Framing::None);
        assert!(head.reusable);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = parse(chunked, &Method::HEAD).unwrap().unwrap();
        assert_eq!(head.framing, Framing::None);
        let not_modified = get(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\n\r\n").unwrap();
        assert_eq!(not_modified.framing, Framing::None);
        assert!(not_modified.reusable);
        let no_content = get(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(no_content.framing, Framing::None);
        let zero = get(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(zero.framing, Framing::None);
    }

    #[test]
    fn a_204_with_a_body_length_is_refused() {
        for field in ["Content-Length: 5", "Transfer-Encoding: chunked"] {
            let text = format!("HTTP/1.1 204 No Content\r\n{field}\r\n\r\n");
            assert_eq!(
                get(text.as_bytes()).unwrap_err(),
                WireError::NoContentWithLength
            );
            let head = parse(text.as_bytes(), &Method::HEAD);
            assert_eq!(
                head.unwrap_err(),
                WireError::NoContentWithLength,
                "after HEAD too"
            );
        }
    }

    #[test]
    fn an_interim_100_then_the_final_200_in_one_buffer_gives_the_200() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"[..],
        );
        let head = parse_response(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert!(
            !head
                .fields
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(b"link")),
            "the interim's fields are dropped"
        );
        assert_eq!(&buf[..], b"hi");
    }

    #[test]
    fn an_interim_response_stays_consumed_while_the_final_head_is_incomplete() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"[..]);
        assert!(parse_response(&mut buf, &Method::GET).unwrap().is_none());
        assert_eq!(&buf[..], b"HTTP/1.1 200 OK\r\n");
        buf.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let head = parse_response(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
    }

    #[test]
    fn a_101_is_refused_since_no_upgrade_was_asked() {
        let text = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(get(text).unwrap_err(), WireError::SwitchingProtocols);
    }

    #[test]
    fn http_2_bytes_and_garbage_are_refused_as_another_protocol() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(get(preface).unwrap_err(), WireError::Version);
        // An HTTP/2 SETTINGS frame, as an h2 server sends first.
        let settings = [0u8, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        assert_eq!(get(&settings).unwrap_err(), WireError::Version);
        assert_eq!(get(b"HTTP/2 200\r\n\r\n").unwrap_err(), WireError::Version);
        assert_eq!(
            get(b"HTTP/1.2 200 OK\r\n\r\n").unwrap_err(),
            WireError::Version
        );
        assert_eq!(get(b"SSH-2.0-OpenSSH\r\n").unwrap_err(), WireError::Version);
    }

    #[test]
    fn a_status_outside_100_to_999_or_not_three_digits_is_refused() {
        assert_eq!(
            get(b"HTTP/1.1 099 Low\r\n\r\n").unwrap_err(),
            WireError::Status
        );
        assert!(matches!(
            get(b"HTTP/1.1 20 OK\r\n\r\n"),
            Err(WireError::Head(_))
        ));
        assert!(matches!(
            get(b"HTTP/1.1 2000 OK\r\n\r\n"),
            Err(WireError::Head(_))
        ));
        let unusual = get(b"HTTP/1.1 599\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(unusual.status.as_u16(), 599, "no reason phrase is fine");
    }

    /// A 1 KiB field: 64 of them fill MAX_HEAD with fewer than MAX_HEADERS fields.
    fn filler() -> String {
        format!("X-Filler: {}\r\n", "f".repeat(1024 - 12))
    }

    #[test]
    fn a_head_over_max_head_is_refused_whole_or_in_pieces() {
        let mut text = b"HTTP/1.1 200 OK\r\n".to_vec();
        while text.len() < MAX_HEAD {
            text.extend_from_slice(filler().as_bytes());
        }
        text.extend_from_slice(b"\r\n");
        assert_eq!(get(&text).unwrap_err(), WireError::HeadTooLarge);
        let mut buf = BytesMut::from(&text[..MAX_HEAD]);
        let err = parse_response(&mut buf, &Method::GET).unwrap_err();
        assert_eq!(err, WireError::HeadTooLarge);
    }

    #[test]
    fn a_head_of_exactly_max_head_bytes_is_accepted() {
        let mut text = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Fill: ".to_vec();
        let fill = MAX_HEAD - text.len() - 4;
        text.resize(text.len() + fill, b'a');
        text.extend_from_slice(b"\r\n\r\n");
        assert_eq!(text.len(), MAX_HEAD);
        assert_eq!(get(&text).unwrap().framing, Framing::Length(0));
    }

    #[test]
    fn more_than_max_headers_fields_are_refused() {
        let mut text = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            text.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        text.extend_from_slice(b"\r\n");
        assert_eq!(get(&text).unwrap_err(), WireError::TooManyHeaders);
    }

    #[test]
    fn obsolete_line_folding_and_bad_field_bytes_are_refused() {
        let folded = b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(get(folded), Err(WireError::Head(_))));
        let space_before_colon = b"HTTP/1.1 200 OK\r\nX-A : one\r\n\r\n";
        assert!(matches!(get(space_before_colon), Err(WireError::Head(_))));
        let nul = b"HTTP/1.1 200 OK\r\nX-A: o\0ne\r\n\r\n";
        assert!(matches!(get(nul), Err(WireError::Head(_))));
    }

    #[test]
    fn feeding_a_head_one_byte_at_a_time_gives_what_feeding_it_whole_gives() {
        let cases: [&[u8]; 6] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.0 404 Not Found\r\n\r\nrest",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/3 200 OK\r\n\r\n",
        ];
        for text in cases {
            let mut whole_buf = BytesMut::from(text);
            let whole = parse_response(&mut whole_buf, &Method::GET);
            let (bytewise, bytewise_buf) = get_bytewise(text);
            match (whole, bytewise) {
                (Ok(Some(a)), Ok(Some(b))) => {
                    assert_eq!(
                        (
                            a.status,
                            a.version,
                            a.framing,
                            a.reusable,
                            a.fields.to_map()
                        ),
                        (
                            b.status,
                            b.version,
                            b.framing,
                            b.reusable,
                            b.fields.to_map()
                        )
                    );
                    // Byte by byte, the rest has not arrived yet when the head completes.
                    assert!(whole_buf.ends_with(&bytewise_buf));
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("whole {a:?}, byte by byte {b:?}"),
            }
        }
    }

    #[test]
    fn a_chunked_body_decodes_to_its_data_then_end() {
        let (data, trailers, left) =
            chunked(b"5\r\nhello\r\n7;name=value;x\r\n, world\r\n0\r\n\r\nNEXT").unwrap();
        assert_eq!(data, b"hello, world");
        assert!(trailers.is_none());
        assert_eq!(left, b"NEXT", "bytes after the body are left alone");
    }

    #[test]
    fn chunk_data_is_handed_out_without_copying() {
        let mut buf = BytesMut::from(&b"a\r\n0123456789\r\n"[..]);
        let start = buf.as_ptr() as usize;
        let mut decoder = Chunked::new();
        let Ok(Some(Chunk::Data(d))) = decoder.decode(&mut buf) else {
            panic!("no data");
        };
        assert_eq!(&d[..], b"0123456789");
        assert_eq!(d.as_ptr() as usize, start + 3);
    }

    #[test]
    fn chunk_data_comes_as_far_as_the_buffer_holds() {
        let mut decoder = Chunked::new();
        let mut buf = BytesMut::from(&b"A\r\n01234"[..]);
        assert!(matches!(decoder.decode(&mut buf), Ok(Some(Chunk::Data(d))) if d == "01234"));
        assert!(decoder.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"56789\r");
        assert!(matches!(decoder.decode(&mut buf), Ok(Some(Chunk::Data(d))) if d == "56789"));
        assert!(decoder.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.is_empty(),
            "the CR after the data is consumed and remembered"
        );
        buf.extend_from_slice(b"\n0\r\n\r\n");
        assert!(matches!(decoder.decode(&mut buf), Ok(Some(Chunk::End))));
    }

    #[test]
    fn trailers_come_once_after_the_last_chunk_then_end() {
        let (data, trailers, left) =
            chunked(b"3\r\nabc\r\n0\r\nGrpc-Status: 0\r\nX-Sum: 1, 2\r\n\r\n").unwrap();
        assert_eq!(data, b"abc");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["x-sum"], "1, 2");
        assert!(left.is_empty());
    }

    #[test]
    fn a_bare_lf_or_cr_in_a_chunk_line_is_refused() {
        assert_eq!(
            chunked(b"5\nhello\r\n0\r\n\r\n").unwrap_err(),
            WireError::ChunkLineEnd
        );
        assert_eq!(
            chunked(b"5\rhello\r\n0\r\n\r\n").unwrap_err(),
            WireError::ChunkLineEnd
        );
        assert_eq!(
            chunked(b"5;a\nhello\r\n0\r\n\r\n").unwrap_err(),
            WireError::ChunkLineEnd
        );
        assert_eq!(chunked(b"0\n\r\n").unwrap_err(), WireError::ChunkLineEnd);
    }

    #[test]
    fn a_bare_lf_in_the_trailer_section_is_refused() {
        assert_eq!(chunked(b"0\r\n\n").unwrap_err(), WireError::TrailerLineEnd);
        let lf_field = b"0\r\nX-A: b\n\r\n";
        assert_eq!(chunked(lf_field).unwrap_err(), WireError::TrailerLineEnd);
    }

    #[test]
    fn the_first_fault_of_a_trailer_section_is_reported_however_the_bytes_arrive() {
        let mut text = b"0\r\nX-A: b\n".to_vec();
        for i in 0..=MAX_HEADERS {
            text.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        text.extend_from_slice(b"\r\n");
        assert_eq!(chunked(&text).unwrap_err(), WireError::TrailerLineEnd);
    }

    #[test]
    fn chunk_data_not_followed_by_crlf_is_refused() {
        assert_eq!(
            chunked(b"5\r\nhelloX\r\n0\r\n\r\n").unwrap_err(),
            WireError::ChunkDataEnd
        );
        assert_eq!(
            chunked(b"5\r\nhello\n0\r\n\r\n").unwrap_err(),
            WireError::ChunkDataEnd
        );
        assert_eq!(
            chunked(b"5\r\nhello\r0\r\n\r\n").unwrap_err(),
            WireError::ChunkDataEnd
        );
    }

    #[test]
    fn a_chunk_size_with_0x_a_sign_or_leading_space_is_refused() {
        for bad in [
            &b"0x5\r\n"[..],
            b"+5\r\n",
            b"-5\r\n",
            b" 5\r\n",
            b"\r\n",
            b";x\r\n",
            b"g\r\n",
        ] {
            assert_eq!(
                decode_all(bad, usize::MAX).unwrap_err(),
                WireError::ChunkSize,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn whitespace_after_a_chunk_size_is_allowed_before_extensions_or_crlf() {
        let (data, _, _) = chunked(b"3 \t;ext=\"v\"\r\nabc\r\n0 \r\n\r\n").unwrap();
        assert_eq!(data, b"abc");
        assert_eq!(chunked(b"3 4\r\n").unwrap_err(), WireError::ChunkSize);
    }

    #[test]
    fn a_huge_chunk_size_is_refused_past_15_hex_digits() {
        let err = chunked(b"10000000000000000\r\n").unwrap_err();
        assert_eq!(err, WireError::ChunkSize);
        let err = chunked(b"0000000000000005\r\nhello\r\n").unwrap_err();
        assert_eq!(err, WireError::ChunkSize, "leading zeros count");
        let mut decoder = Chunked::new();
        let mut buf = BytesMut::from(&b"fffffffffffffff\r\nab"[..]);
        assert!(matches!(decoder.decode(&mut buf), Ok(Some(Chunk::Data(d))) if d == "ab"));
    }

    #[test]
    fn a_chunk_size_line_over_4096_bytes_is_refused() {
        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE + 10, b'x');
        assert_eq!(chunked(&line).unwrap_err(), WireError::ChunkLineTooLong);
        let mut fits = b"1;".to_vec();
        fits.resize(MAX_CHUNK_LINE - 2, b'x');
        fits.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(chunked(&fits).unwrap().0, b"a");
    }

    #[test]
    fn a_control_character_in_a_chunk_extension_is_refused() {
        assert_eq!(
            chunked(b"1;a\0b\r\nx\r\n").unwrap_err(),
            WireError::ChunkExtension
        );
    }

    #[test]
    fn a_trailer_section_over_max_head_or_with_too_many_fields_is_refused() {
        let mut big = b"0\r\n".to_vec();
        while big.len() < MAX_HEAD + 100 {
            big.extend_from_slice(filler().as_bytes());
        }
        big.extend_from_slice(b"\r\n");
        assert_eq!(
            decode_all(&big, usize::MAX).unwrap_err(),
            WireError::TrailersTooLarge
        );
        assert_eq!(
            decode_all(&big, 4096).unwrap_err(),
            WireError::TrailersTooLarge
        );
        let mut many = b"0\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(chunked(&many).unwrap_err(), WireError::TooManyHeaders);
    }

    #[test]
    fn a_decoder_error_is_returned_again_if_called_again() {
        let mut decoder = Chunked::new();
        let mut buf = BytesMut::from(&b"z\r\n"[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap_err(), WireError::ChunkSize);
        buf.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decoder.decode(&mut buf).unwrap_err(), WireError::ChunkSize);
    }

    #[test]
    fn encode_request_writes_the_exact_head_bytes() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("app.example.com"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        encode_request(&Method::GET, "/a?b=c", &headers, &mut out);
        assert_eq!(
            out,
            b"GET /a?b=c HTTP/1.1\r\nhost: app.example.com\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
    }

    #[test]
    fn encode_request_adds_a_zero_length_to_a_body_less_post_put_or_patch() {
        for method in [Method::POST, Method::PUT, Method::PATCH] {
            let mut out = b"kept".to_vec();
            encode_request(&method, "/", &HeaderMap::new(), &mut out);
            let expected = format!("kept{method} / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
            assert_eq!(out, expected.as_bytes());
        }
        let mut with_length = HeaderMap::new();
        with_length.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let mut out = Vec::new();
        encode_request(&Method::POST, "/", &with_length, &mut out);
        assert_eq!(out, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        let mut out = Vec::new();
        encode_request(&Method::DELETE, "*", &HeaderMap::new(), &mut out);
        assert_eq!(out, b"DELETE * HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_head_encoded_by_encode_request_parses_back_as_a_request() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("h"));
        let mut out = Vec::new();
        encode_request(&Method::OPTIONS, "/x", &headers, &mut out);
        let mut slots = [httparse::EMPTY_HEADER; 4];
        let mut request = httparse::Request::new(&mut slots);
        assert_eq!(
            request.parse(&out).unwrap(),
            httparse::Status::Complete(out.len())
        );
        assert_eq!(
            (request.method, request.path),
            (Some("OPTIONS"), Some("/x"))
        );
    }
}
