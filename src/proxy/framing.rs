//! A second reading of the bytes an HTTP/1.1 client sends, beside hyper's own.
//!
//! hyper settles a request head that carries both `Transfer-Encoding` and `Content-Length`, or
//! the same `Content-Length` twice, by itself: it keeps one of them and hands weir a head in
//! which the other is gone, so weir could not refuse what it never sees. RFC 9112 (section 6.3)
//! lets a server refuse such a request, and nginx and HAProxy do. [`Scan`] wraps a client
//! connection and follows its byte stream (each request head, then its body by its framing, to
//! find the next head); the first head whose framing is ambiguous is noted in the connection's
//! [`Verdict`] by its number, and the listener answers that request 400 and closes. The scan
//! stops (and hyper alone decides) on HTTP/2, after a head that asks for a tunnel (`Upgrade`,
//! `CONNECT`), and on anything it cannot follow, which hyper then refuses itself.
//!
//! What is ambiguous: `Transfer-Encoding` together with `Content-Length`, more than one
//! `Content-Length` or `Transfer-Encoding` field, and a `Transfer-Encoding` other than exactly
//! `chunked` (`identity, chunked` included).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which request of a connection (counted from 1, in the order hyper serves them) has an
/// ambiguous framing; 0 for none. It also tells the listener's head deadline where the stream is
/// (see `listener::HeadClock`): whether a request body is still being received, and whether the
/// last write to the client could not go through.
#[derive(Debug, Default)]
pub struct Verdict {
    refused: AtomicU64,
    in_body: AtomicBool,
    write_blocked: AtomicBool,
}

impl Verdict {
    /// Whether request number `n` (from 1) of the connection must be refused.
    pub fn refuses(&self, n: u64) -> bool {
        self.refused.load(Ordering::Relaxed) == n
    }

    /// The number of the refused request, if one was.
    pub fn refused(&self) -> Option<u64> {
        Some(self.refused.load(Ordering::Relaxed)).filter(|&n| n != 0)
    }

    /// Whether the bytes read so far end inside a request body (more of it is expected).
    pub fn in_body(&self) -> bool {
        self.in_body.load(Ordering::Relaxed)
    }

    /// Whether the last write to the client returned `Pending` (its receive window is full).
    pub fn write_blocked(&self) -> bool {
        self.write_blocked.load(Ordering::Relaxed)
    }
}

/// A client connection whose incoming bytes are followed by a [`Scanner`].
pub struct Scan<I> {
    io: I,
    scanner: Scanner,
}

impl<I> Scan<I> {
    /// Follows `io`; lines longer than `max_line` (the head limit) end the scan.
    pub fn new(io: I, verdict: Arc<Verdict>, max_line: usize) -> Scan<I> {
        Scan {
            io,
            scanner: Scanner::new(verdict, max_line),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Scan<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.scanner.feed(&buf.filled()[before..]);
            let in_body = this.scanner.in_body();
            this.scanner
                .verdict
                .in_body
                .store(in_body, Ordering::Relaxed);
        }
        polled
    }
}

impl<I> Scan<I> {
    /// Notes whether a write went through, for [`Verdict::write_blocked`].
    fn wrote<T>(&self, polled: Poll<T>) -> Poll<T> {
        let blocked = polled.is_pending();
        self.scanner
            .verdict
            .write_blocked
            .store(blocked, Ordering::Relaxed);
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Scan<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.wrote(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head, line by line.
    Head,
    /// Skipping this many bytes of a `Content-Length` body.
    Length(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping this many bytes of chunk data.
    ChunkData(u64),
    /// Reading the empty line after a chunk's data.
    ChunkEnd,
    /// Reading trailer lines until the empty one.
    Trailers,
    /// Following no more: HTTP/2, a tunnel, or bytes hyper refuses itself.
    Off,
}

/// What one head said about its framing so far.
#[derive(Debug, Default)]
struct Head {
    started: bool,
    content_lengths: u32,
    length: Option<u64>,
    transfer_encodings: u32,
    chunked: bool,
    tunnel: bool,
}

/// Follows an HTTP/1.1 client's byte stream; see the module's documentation.
pub struct Scanner {
    state: State,
    /// The start of a line that did not end in the bytes read so far.
    partial: Vec<u8>,
    head: Head,
    /// Heads read so far.
    heads: u64,
    verdict: Arc<Verdict>,
    max_line: usize,
}

impl Scanner {
    pub fn new(verdict: Arc<Verdict>, max_line: usize) -> Scanner {
        Scanner {
            state: State::Head,
            partial: Vec::new(),
            head: Head::default(),
            heads: 0,
            verdict,
            max_line,
        }
    }

    /// Whether the bytes fed so far end inside a request body: a `Content-Length` body, chunks
    /// or trailers still to come.
    pub fn in_body(&self) -> bool {
        !matches!(self.state, State::Head | State::Off)
    }

    /// Whether the scanner still follows the stream (for tests and the fuzz target).
    pub fn following(&self) -> bool {
        self.state != State::Off
    }

    /// Reads the next bytes the client sent.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Length(n) | State::ChunkData(n) => {
                    let skip = n.min(data.len() as u64);
                    data = &data[skip as usize..];
                    let left = n - skip;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Head,
                        (State::Length(_), _) => State::Length(left),
                        (_, 0) => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                }
                State::Head | State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(end) = data.iter().position(|&b| b == b'\n') else {
                        self.keep_partial(data);
                        return;
                    };
                    let (line, rest) = (&data[..end], &data[end + 1..]);
                    data = rest;
                    if self.partial.is_empty() {
                        self.line(line);
                    } else {
                        self.keep_partial(line);
                        let whole = std::mem::take(&mut self.partial);
                        if self.state != State::Off {
                            self.line(&whole);
                        }
                        self.partial = whole;
                        self.partial.clear();
                    }
                }
            }
        }
    }

    fn keep_partial(&mut self, bytes: &[u8]) {
        if self.partial.len() + bytes.len() > self.max_line {
            self.stop();
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn stop(&mut self) {
        self.state = State::Off;
        self.partial = Vec::new();
    }

    /// One line, without its `\n` (a `\r` before it is dropped here).
    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.state {
            State::Head => self.head_line(line),
            State::ChunkSize => match chunk_size(line) {
                Some(0) => self.state = State::Trailers,
                Some(n) => self.state = State::ChunkData(n),
                None => self.stop(),
            },
            State::ChunkEnd if line.is_empty() => self.state = State::ChunkSize,
            State::ChunkEnd => self.stop(),
            State::Trailers if line.is_empty() => self.state = State::Head,
            State::Trailers => {}
            State::Length(_) | State::ChunkData(_) | State::Off => {}
        }
    }

    fn head_line(&mut self, line: &[u8]) {
        let head = &mut self.head;
        if !head.started {
            // Empty lines before a request line are allowed (RFC 9112, section 2.2).
            if line.is_empty() {
                return;
            }
            if line.starts_with(b"PRI * HTTP/2.0") {
                return self.stop();
            }
            head.started = true;
            head.tunnel = starts_with_ignore_case(line, b"CONNECT ");
            return;
        }
        if line.is_empty() {
            return self.head_end();
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return self.stop();
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            head.content_lengths += 1;
            head.length = parse_decimal(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.transfer_encodings += 1;
            head.chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            head.tunnel = true;
        }
    }

    fn head_end(&mut self) {
        self.heads += 1;
        let head = std::mem::take(&mut self.head);
        let ambiguous = head.content_lengths > 1
            || head.transfer_encodings > 1
            || (head.transfer_encodings == 1 && (head.content_lengths > 0 || !head.chunked));
        if ambiguous {
            self.verdict.refused.store(self.heads, Ordering::Relaxed);
            return self.stop();
        }
        self.state = match (head.tunnel, head.transfer_encodings, head.length) {
            (true, _, _) => State::Off,
            (false, 1, _) => State::ChunkSize,
            (false, _, Some(0)) => State::Head,
            (false, _, Some(n)) => State::Length(n),
            (false, _, None) if head.content_lengths > 0 => State::Off,
            (false, _, None) => State::Head,
        };
        if self.state == State::Off {
            self.partial = Vec::new();
        }
    }
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The size of a chunk-size line (`1a;ext=1`); `None` when it is not one.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    match line.get(digits) {
        None | Some(b';' | b' ' | b'\t') => {}
        Some(_) => return None,
    }
    line[..digits].iter().try_fold(0u64, |n, d| {
        let v = (*d as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request numbers the scanner refuses after `bytes`, fed in pieces of `step` bytes.
    fn refused(bytes: &[u8], step: usize) -> (u64, bool) {
        let verdict = Arc::new(Verdict::default());
        let mut s = Scanner::new(verdict.clone(), 65536);
        for piece in bytes.chunks(step) {
            s.feed(piece);
        }
        (verdict.refused.load(Ordering::Relaxed), s.following())
    }

    #[test]
    fn ambiguous_framing_is_found_in_the_request_that_has_it() {
        let ok = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n".as_slice();
        let post = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 27\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n"
            .as_slice();
        let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n0\r\nx-t: 1\r\n\r\n"
            .as_slice();
        for (bad, why) in [
            (
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
                "CL before TE",
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                "TE before CL",
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",
                "the same CL twice",
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: identity, chunked\r\n\r\n",
                "a coding before chunked",
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
                "TE twice",
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\n\r\n",
                "not chunked",
            ),
        ] {
            let mut stream = Vec::new();
            stream.extend_from_slice(ok);
            stream.extend_from_slice(post);
            stream.extend_from_slice(chunked);
            stream.extend_from_slice(bad.as_bytes());
            for step in [1, 2, 7, 64, 4096] {
                // Requests 1 to 3 are fine (the body of the second holds a head that is data).
                assert_eq!(refused(&stream, step), (4, false), "{why}, step {step}");
            }
        }
        let mut fine = Vec::new();
        for _ in 0..3 {
            fine.extend_from_slice(chunked);
            fine.extend_from_slice(post);
            fine.extend_from_slice(b"\r\n");
            fine.extend_from_slice(
                b"GET / HTTP/1.1\r\nTransfer-Encoding:\tCHUNKED \r\n\r\n0\r\n\r\n",
            );
        }
        for step in [1, 3, 4096] {
            assert_eq!(refused(&fine, step), (0, true), "step {step}");
        }
    }

    #[test]
    fn tunnels_http2_and_broken_bytes_end_the_scan() {
        for (bytes, why) in [
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "the HTTP/2 preface"),
            (
                "GET /ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
                "an upgrade",
            ),
            ("CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n", "CONNECT"),
            (
                "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                "a bad chunk size",
            ),
            (
                "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcd\r\n",
                "data longer than its size",
            ),
            (
                "POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
                "a bad length",
            ),
        ] {
            let mut stream = bytes.as_bytes().to_vec();
            stream.extend_from_slice(
                b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx",
            );
            assert_eq!(refused(&stream, 5), (0, false), "{why}");
        }
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(70_000));
        assert_eq!(refused(long.as_bytes(), 1000), (0, false));
    }

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"0;name=value"), Some(0));
        assert_eq!(chunk_size(b"ffffffffffffffff"), Some(u64::MAX));
        for bad in [&b""[..], b"zz", b"0x5", b"-1", b"1g", b"10000000000000000"] {
            assert_eq!(chunk_size(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
