//! Forwarding one request to a backend: rewrite the URI to an endpoint, drop hop-by-hop headers,
//! set the `x-forwarded-*` headers, stream both bodies (and trailers) without buffering, pass
//! WebSocket upgrades through, and turn every failure into a response in one place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use super::body::{RequestBody, UpstreamBody};
use super::conns::{BoxError, SendError};
use super::pool::{Outcome, UpstreamPool};
use crate::metrics::UpstreamErrorKind;

use super::body::Inner as ProxyBody;

/// What a request knows about the connection it came on.
pub struct ConnInfo {
    pub client: SocketAddr,
    pub listener: Arc<str>,
    /// `http` or `https`, for `x-forwarded-proto`.
    pub scheme: &'static str,
    /// The listener's `weir_client_errors_total` counters.
    pub client_errors: crate::metrics::ClientErrors,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Why weir answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("the request URI cannot be forwarded")]
    BadRequest,
    #[error("cannot connect to upstream `{upstream}`: {source}")]
    Connect {
        upstream: Arc<str>,
        source: BoxError,
    },
    #[error("upstream `{upstream}` failed before answering: {source}")]
    Reset {
        upstream: Arc<str>,
        source: BoxError,
    },
    #[error("upstream `{upstream}` did not answer within the route timeout of {timeout:?}")]
    Timeout {
        upstream: Arc<str>,
        timeout: Duration,
    },
    #[error("every endpoint of upstream `{upstream}` is ejected")]
    NoHealthyEndpoint { upstream: Arc<str> },
    #[error("the client's request body failed: {0}")]
    ClientBody(hyper::Error),
    #[error("the client did not send its request body within the route timeout")]
    ClientTimeout,
}

/// Who failed, in the words of `weir_upstream_errors_total{kind}` and the logs.
impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoHealthyEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Reset { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The client error kind when the client is the cause, else `None`.
    pub fn client_kind(&self) -> Option<crate::metrics::ClientErrorKind> {
        use crate::metrics::ClientErrorKind;
        match self {
            ProxyError::BadRequest => Some(ClientErrorKind::Framing),
            ProxyError::ClientBody(_) => Some(ClientErrorKind::Body),
            ProxyError::ClientTimeout => Some(ClientErrorKind::Timeout),
            _ => None,
        }
    }

    /// The upstream error kind, or `None` when the client or the config is the cause.
    pub fn upstream_kind(&self) -> Option<UpstreamErrorKind> {
        match self {
            ProxyError::NoRoute
            | ProxyError::BadRequest
            | ProxyError::ClientBody(_)
            | ProxyError::ClientTimeout
            | ProxyError::NoHealthyEndpoint { .. } => None,
            ProxyError::Connect { .. } => Some(UpstreamErrorKind::Connect),
            ProxyError::Reset { .. } => Some(UpstreamErrorKind::Reset),
            ProxyError::Timeout { .. } => Some(UpstreamErrorKind::Timeout),
        }
    }
}

/// Whether a request is gRPC (`content-type: application/grpc` or `application/grpc+...`).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The client's deadline from a `grpc-timeout` header (`<1-8 digits><H|M|S|m|u|n>`).
pub fn grpc_timeout<B>(req: &Request<B>) -> Option<Duration> {
    let v = req.headers().get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The one place where weir makes a response of its own. gRPC callers get what gRPC clients
/// understand: HTTP 200 with `grpc-status` and `grpc-message` in a trailers-only response.
pub fn error_response(err: &ProxyError, grpc: bool) -> Response<ProxyBody> {
    if grpc {
        let (code, message) = match err {
            ProxyError::NoRoute => ("12", "weir: no route matches this request"),
            ProxyError::BadRequest => ("13", "weir: the request cannot be forwarded"),
            ProxyError::ClientBody(_) | ProxyError::ClientTimeout => {
                ("13", "weir: the request body could not be read")
            }
            ProxyError::NoHealthyEndpoint { .. } => {
                ("14", "weir: no healthy endpoint in the upstream")
            }
            ProxyError::Connect { .. } => ("14", "weir: cannot connect to the upstream"),
            ProxyError::Reset { .. } => ("14", "weir: the upstream closed the connection"),
            ProxyError::Timeout { .. } => ("4", "weir: the upstream did not answer in time"),
        };
        let mut response = Response::new(ProxyBody::Local(Full::new(Bytes::new())));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static(code));
        h.insert("grpc-message", HeaderValue::from_static(message));
        return response;
    }
    let body: &'static str = match err {
        ProxyError::NoRoute => "weir: no route matches this request\n",
        ProxyError::BadRequest => "weir: the request URI cannot be forwarded\n",
        ProxyError::ClientBody(_) | ProxyError::ClientTimeout => {
            "weir: the request body could not be read\n"
        }
        ProxyError::NoHealthyEndpoint { .. } => "weir: no healthy endpoint in the upstream\n",
        ProxyError::Connect { .. } => "weir: cannot connect to the upstream\n",
        ProxyError::Reset { .. } => "weir: the upstream closed the connection\n",
        ProxyError::Timeout { .. } => "weir: the upstream did not answer in time\n",
    };
    let mut response = Response::new(ProxyBody::Local(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *response.status_mut() = err.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Sends `req` to endpoint `endpoint` of `pool` and returns the upstream's response head; the
/// body streams on. `downstream` is the client's side of a WebSocket upgrade, tunnelled to the
/// upstream's when it switches protocols. The caller bounds the wait with the route deadline.
pub async fn send(
    pool: &UpstreamPool,
    endpoint: usize,
    mut req: Request<RequestBody>,
    downstream: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<UpstreamBody>, ProxyError> {
    if pool.origin_form() {
        set_origin_form(&mut req, pool.endpoint(endpoint))?;
    } else {
        set_target(
            &mut req,
            pool.scheme.clone(),
            pool.endpoint(endpoint).clone(),
            pool.version,
        )?;
    }
    let (mut response, lease) = match pool.send(endpoint, req).await {
        Err(SendError::Connect(source)) => {
            return Err(ProxyError::Connect {
                upstream: pool.name.clone(),
                source,
            });
        }
        Err(SendError::Reset(source)) => {
            return Err(ProxyError::Reset {
                upstream: pool.name.clone(),
                source,
            });
        }
        Ok(r) => r,
    };
    match downstream {
        Some(downstream) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            tunnel(
                downstream,
                hyper::upgrade::on(&mut response),
                pool.name.clone(),
            );
            // The connection now carries the tunnel; it never goes back to the pool.
            return Ok(response.map(|b| UpstreamBody::new(b, None)));
        }
        _ => strip_hop_by_hop(response.headers_mut(), false),
    }
    Ok(response.map(|b| UpstreamBody::new(b, lease)))
}

/// [`send`] within the route's `deadline` (past it: [`ProxyError::Timeout`] of `timeout`), with
/// the try's outcome reported to the endpoint's outlier count. Real requests and shadow copies
/// both go through here.
pub async fn try_endpoint(
    pool: &UpstreamPool,
    endpoint: usize,
    req: Request<RequestBody>,
    downstream: Option<hyper::upgrade::OnUpgrade>,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let result = tokio::time::timeout_at(deadline, send(pool, endpoint, req, downstream))
        .await
        .unwrap_or_else(|_| {
            Err(ProxyError::Timeout {
                upstream: pool.name.clone(),
                timeout,
            })
        });
    let outcome = match &result {
        Ok(r) if !r.status().is_server_error() => Outcome::Success,
        _ => Outcome::Failure,
    };
    pool.report(endpoint, outcome);
    result
}

/// A copy of a prepared request head, for a second try or a shadow copy. Extensions (hyper's
/// upgrade handle among them) stay with the original.
pub fn copy_head(parts: &Parts) -> Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

/// Copies bytes both ways between an upgraded client connection and an upgraded upstream one
/// (WebSocket). Runs on its own task; ends when either side closes.
fn tunnel(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    name: Arc<str>,
) {
    tokio::spawn(async move {
        match tokio::try_join!(downstream, upstream) {
            Ok((d, u)) => {
                let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                if let Err(e) = tokio::io::copy_bidirectional(&mut d, &mut u).await {
                    tracing::debug!(upstream = &*name, error = %e, "upgraded connection ended");
                }
            }
            Err(e) => tracing::debug!(upstream = &*name, error = %e, "upgrade failed"),
        }
    });
}

/// Whether the request asks for a protocol upgrade (WebSocket), which HTTP/1.1 upstreams get.
pub fn is_upgrade(parts: &Parts) -> bool {
    parts.version == Version::HTTP_11
        && parts.headers.contains_key(header::UPGRADE)
        && connection_has_token(&parts.headers, "upgrade")
}

fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Drops hop-by-hop headers, those named in `Connection` included. `TE: trailers` is end to end
/// in practice (gRPC needs it) and stays; `keep_upgrade` keeps `Upgrade` and `Connection:
/// upgrade` for a WebSocket handshake.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        for value in &named {
            for name in value.to_str().unwrap_or("").split(',') {
                let name = name.trim();
                let kept = keep_upgrade && name.eq_ignore_ascii_case("upgrade");
                if !name.is_empty() && !kept {
                    headers.remove(name);
                }
            }
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    } else {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Some(te) = headers.get(header::TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(header::TE);
    }
}

/// Applies the forwarding rules to the request head; `upgrade` keeps a WebSocket handshake's
/// `Upgrade` and `Connection` headers.
pub fn prepare(parts: &mut Parts, conn: &ConnInfo, upgrade: bool) -> Result<(), ProxyError> {
    // An HTTP/2 request names its host in the URI; an HTTP/1 upstream needs it in `Host`.
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
    {
        let value =
            HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::BadRequest)?;
        parts.headers.insert(header::HOST, value);
    }
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    append_forwarded_for(headers, conn.client);
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(conn.scheme));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(&X_FORWARDED_HOST, host);
    }
    Ok(())
}

fn append_forwarded_for(headers: &mut HeaderMap, client: SocketAddr) {
    use std::io::Write;
    // Formatted on the stack and copied once into the header value: one allocation, not two.
    let mut buf = [0u8; 256];
    let mut w = &mut buf[..];
    let written = match headers.get(&X_FORWARDED_FOR) {
        Some(prior) => w
            .write_all(prior.as_bytes())
            .and_then(|()| write!(w, ", {}", client.ip())),
        None => write!(w, "{}", client.ip()),
    };
    let len = 256 - w.len();
    let value = match written {
        Ok(()) => HeaderValue::from_bytes(&buf[..len]).ok(),
        // A prior chain longer than the buffer: rare enough to format on the heap.
        Err(_) => headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .and_then(|prior| HeaderValue::from_str(&format!("{prior}, {}", client.ip())).ok()),
    };
    if let Some(v) = value {
        headers.insert(&X_FORWARDED_FOR, v);
    }
}

/// For weir's own HTTP/1.1 pool: the request line carries only path and query, and `Host` names
/// the client's host (or, when the client sent none, the endpoint).
fn set_origin_form(
    req: &mut Request<RequestBody>,
    endpoint: &http::uri::Authority,
) -> Result<(), ProxyError> {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    *req.version_mut() = Version::HTTP_11;
    if !req.headers().contains_key(header::HOST) {
        let host = HeaderValue::from_str(endpoint.as_str()).map_err(|_| ProxyError::BadRequest)?;
        req.headers_mut().insert(header::HOST, host);
    }
    Ok(())
}

/// Points the request at `endpoint`, keeping path and query, in the upstream's HTTP version.
fn set_target(
    req: &mut Request<RequestBody>,
    scheme: Scheme,
    endpoint: http::uri::Authority,
    version: Version,
) -> Result<(), ProxyError> {
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(endpoint);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest)?;
    *req.version_mut() = version;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_dropped() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic x"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
            ("trailer", "grpc-status"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "trailer"]);
    }

    #[test]
    fn te_trailers_and_a_websocket_upgrade_survive() {
        let mut h = headers(&[
            ("te", "trailers"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let mut h = headers(&[("x-forwarded-for", "10.0.0.1")]);
        append_forwarded_for(&mut h, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "[::1]:5000".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "::1");
        // A chain longer than the stack buffer still gets the client appended.
        let long = vec!["10.0.0.1"; 40].join(", ");
        let mut h = headers(&[("x-forwarded-for", &long)]);
        append_forwarded_for(&mut h, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], format!("{long}, 127.0.0.1").as_str());
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let with = |v: &str| {
            let req = Request::builder()
                .header("grpc-timeout", v)
                .body(())
                .unwrap();
            grpc_timeout(&req)
        };
        assert_eq!(with("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(with("2M"), Some(Duration::from_secs(120)));
        assert_eq!(with("3S"), Some(Duration::from_secs(3)));
        assert_eq!(with("250m"), Some(Duration::from_millis(250)));
        assert_eq!(with("7u"), Some(Duration::from_micros(7)));
        assert_eq!(with("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(with(bad), None, "{bad}");
        }
    }
}
