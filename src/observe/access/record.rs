//! The records and settings of the access log: what one line says ([`AccessRecord`]), why weir
//! answered ([`ResponseFlags`]), where lines go ([`AccessLogSettings`]) and what is counted. The
//! queue and its writer ([`super::AccessLog`], [`super::writer`]) and the line formats
//! ([`super::format`]) build on these; nothing here depends on them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::uri::{Authority, PathAndQuery};
use http::{Method, Version};
use prometheus::IntCounter;

use crate::observe::request_id::RequestId;
use crate::observe::trace_context::TraceId;

/// What the access log says about one request. Built at the end of the response (or when the
/// client went away); every field is a cheap clone of what the request path holds already
/// (`Arc<str>` names, `Bytes`-backed header values), so a record costs no allocation of its own.
#[derive(Clone, Debug)]
pub struct AccessRecord {
    /// When the request arrived; the writer turns it into wall-clock time.
    pub started: Instant,
    pub listener: Arc<str>,
    pub client: SocketAddr,
    pub protocol: Version,
    pub method: Method,
    /// `:authority`, or the `Host` header.
    pub authority: Option<HeaderValue>,
    pub path: PathAndQuery,
    pub user_agent: Option<HeaderValue>,
    pub request_id: Option<RequestId>,
    /// The trace the request belongs to, when tracing is on.
    pub trace_id: Option<TraceId>,
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    /// The endpoint whose answer the client got (the last try's).
    pub endpoint: Option<Authority>,
    /// The status the client got; 0 when no response head was sent (the client left first).
    pub status: u16,
    /// The `grpc-status` of a gRPC response (trailers or trailers-only), when there was one.
    pub grpc_status: Option<u16>,
    pub flags: ResponseFlags,
    /// Tries after the first.
    pub retries: u32,
    /// From sending the request on the last try to the upstream's response head; `None` when no
    /// upstream answered.
    pub upstream: Option<Duration>,
    /// From the request's arrival to the end of the response body (or the client's leaving).
    pub duration: Duration,
    /// Request body bytes read from the client.
    pub bytes_received: u64,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
}

/// Why weir answered a request itself, or what cut it short: Envoy's response flags, the subset
/// that weir can produce. Several may be set (`URX` with the last try's `UF`, for example).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    pub const NONE: ResponseFlags = ResponseFlags(0);
    /// `NR`: no route matches the request (404).
    pub const NO_ROUTE: ResponseFlags = ResponseFlags(1 << 0);
    /// `UH`: every endpoint of the chosen upstream is ejected (503).
    pub const NO_HEALTHY_ENDPOINT: ResponseFlags = ResponseFlags(1 << 1);
    /// `UF`: the connection (or its TLS handshake) to the endpoint failed (502).
    pub const UPSTREAM_CONNECT_FAILURE: ResponseFlags = ResponseFlags(1 << 2);
    /// `UT`: the route's timeout (or the gRPC caller's deadline) passed before the upstream
    /// answered (504), or while its body streamed.
    pub const UPSTREAM_TIMEOUT: ResponseFlags = ResponseFlags(1 << 3);
    /// `UR`: the upstream closed or reset the connection before or while answering (502, or a
    /// response cut mid-body).
    pub const UPSTREAM_RESET: ResponseFlags = ResponseFlags(1 << 4);
    /// `UPE`: the upstream's response was malformed (502).
    pub const UPSTREAM_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 5);
    /// `URX`: the route retries, and the last allowed try (or the retry budget) was used up.
    pub const RETRY_LIMIT_EXCEEDED: ResponseFlags = ResponseFlags(1 << 6);
    /// `DC`: the client closed its connection before the response ended.
    pub const CLIENT_CLOSED: ResponseFlags = ResponseFlags(1 << 7);
    /// `DR`: the client reset its HTTP/2 stream before the response ended.
    pub const CLIENT_RESET: ResponseFlags = ResponseFlags(1 << 8);
    /// `DPE`: the client's request was malformed or ambiguous (framing, `Host`, broken body): 400.
    pub const CLIENT_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 9);
    /// `SI`: the client stalled: its request body did not arrive in time (408), or it stopped
    /// reading the response (the write-stall limit).
    pub const CLIENT_STALLED: ResponseFlags = ResponseFlags(1 << 10);

    /// Every flag with its short code, in the order they are printed.
    pub const TABLE: [(ResponseFlags, &'static str); 11] = [
        (ResponseFlags::NO_ROUTE, "NR"),
        (ResponseFlags::NO_HEALTHY_ENDPOINT, "UH"),
        (ResponseFlags::UPSTREAM_CONNECT_FAILURE, "UF"),
        (ResponseFlags::UPSTREAM_TIMEOUT, "UT"),
        (ResponseFlags::UPSTREAM_RESET, "UR"),
        (ResponseFlags::UPSTREAM_PROTOCOL_ERROR, "UPE"),
        (ResponseFlags::RETRY_LIMIT_EXCEEDED, "URX"),
        (ResponseFlags::CLIENT_CLOSED, "DC"),
        (ResponseFlags::CLIENT_RESET, "DR"),
        (ResponseFlags::CLIENT_PROTOCOL_ERROR, "DPE"),
        (ResponseFlags::CLIENT_STALLED, "SI"),
    ];

    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = ResponseFlags;
    fn bitor(self, rhs: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | rhs.0)
    }
}

/// Short codes joined by commas (`UF,URX`), or `-` when there are none, as Envoy prints them.
impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, code) in ResponseFlags::TABLE {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(code)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// One flat JSON object per line.
    #[default]
    Json,
    /// Envoy's default text line, with weir's fields after it.
    Text,
}

/// Where lines go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Stderr,
    Stdout,
    /// Appended to; reopened when the file at the path is replaced (log rotation).
    File(PathBuf),
}

/// The `access_log` section of the config, once validated (`enabled: false` is no settings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessLogSettings {
    pub format: Format,
    pub output: Output,
}

/// Records waiting for the writer, at most. A burst beyond it is dropped and counted, rather
/// than making requests wait on a disk.
pub const QUEUE: usize = 8_192;

/// The counters the access log keeps (`weir_access_log_*`, registered in `metrics::telemetry`).
#[derive(Clone)]
pub struct AccessLogCounters {
    pub written: IntCounter,
    /// Records dropped because the queue was full.
    pub dropped_full: IntCounter,
    /// Records lost because the write failed (disk full, file gone read-only).
    pub dropped_write_error: IntCounter,
}

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("cannot open access log file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the access log writer thread: {0}")]
    Thread(std::io::Error),
}
