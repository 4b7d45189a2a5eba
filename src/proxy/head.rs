//! What weir accepts of a request head, checked before routing: one authority to route on and
//! forward, framing that means one thing, and no tunnel weir does not make. Each refusal is the
//! client's fault (`weir_client_errors_total{kind="framing"}`) and nothing is forwarded.
//! Pure: no I/O, no clock, no allocation.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Version};

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "ambiguous framing: Transfer-Encoding with Content-Length, a repeated Content-Length or \
         Transfer-Encoding, or a transfer coding other than `chunked`"
    )]
    Framing,
    #[error("an HTTP/1.1 request needs exactly one non-empty Host, and any request at most one")]
    Host,
    #[error("the request target or :authority names another authority than Host")]
    Authority,
    #[error("CONNECT is not served: weir is a reverse proxy")]
    Connect,
    #[error("`Upgrade: h2c` is refused: the connection is HTTP/1.1 and stays so")]
    H2c,
    #[error("the request has more header fields than limits.max_headers")]
    TooManyHeaders,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Framing | Refusal::Host | Refusal::Authority | Refusal::H2c => {
                StatusCode::BAD_REQUEST
            }
            Refusal::Connect => StatusCode::NOT_IMPLEMENTED,
            Refusal::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// The body of weir's answer.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::Framing => "weir: the request's framing is ambiguous\n",
            Refusal::Host => "weir: the request needs exactly one Host\n",
            Refusal::Authority => "weir: the request names two different hosts\n",
            Refusal::Connect => "weir: CONNECT is not served\n",
            Refusal::H2c => "weir: Upgrade: h2c is not served\n",
            Refusal::TooManyHeaders => "weir: too many header fields\n",
        }
    }
}

/// Checks a request head before anything else reads it.
pub fn check<B>(req: &Request<B>, max_headers: usize) -> Result<(), Refusal> {
    if req.method() == Method::CONNECT {
        return Err(Refusal::Connect);
    }
    let headers = req.headers();
    if headers.len() > max_headers {
        return Err(Refusal::TooManyHeaders);
    }
    framing(headers)?;
    authority(req)?;
    if req.version() == Version::HTTP_11
        && headers
            .get_all(header::UPGRADE)
            .iter()
            .any(|v| protocols(v).any(|p| p.eq_ignore_ascii_case("h2c")))
    {
        return Err(Refusal::H2c);
    }
    Ok(())
}

/// At most one `Content-Length`; a `Transfer-Encoding` only alone, once, and exactly `chunked`.
/// (hyper already drops one of a TE/CL pair before weir sees the head; `framing::Scan` finds
/// those in the bytes. This is the same rule over what hyper hands on.)
fn framing(headers: &HeaderMap) -> Result<(), Refusal> {
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let ok = match (te.next(), te.next()) {
        (None, _) => lengths <= 1,
        (Some(v), None) => lengths == 0 && v.as_bytes().eq_ignore_ascii_case(b"chunked"),
        (Some(_), Some(_)) => false,
    };
    if ok { Ok(()) } else { Err(Refusal::Framing) }
}

/// One authority: at most one `Host` (exactly one, not empty, in HTTP/1.1), and a request target
/// in absolute form or an HTTP/2 `:authority` that names the same one as `Host`, if both are
/// there. Names compare without regard to case; ports must match as written.
fn authority<B>(req: &Request<B>) -> Result<(), Refusal> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(Refusal::Host),
        (Some(h), None) if h.is_empty() => return Err(Refusal::Host),
        (None, None) if req.version() == Version::HTTP_11 => return Err(Refusal::Host),
        (host, None) => host,
    };
    match (host, req.uri().authority()) {
        (Some(h), Some(a)) if !same_authority(h, a.as_str()) => Err(Refusal::Authority),
        _ => Ok(()),
    }
}

fn same_authority(host: &HeaderValue, authority: &str) -> bool {
    host.as_bytes().eq_ignore_ascii_case(authority.as_bytes())
}

/// The protocol names of an `Upgrade` value (`websocket`, `h2c`), without versions.
pub fn protocols(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(|p| p.split('/').next().unwrap_or("").trim())
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn h1(headers: &[(&str, &str)]) -> Result<(), Refusal> {
        check(&req(Version::HTTP_11, "/", headers), 100)
    }

    #[test]
    fn one_host_is_needed_in_http_1_1_and_at_most_one_anywhere() {
        assert_eq!(h1(&[("host", "a")]), Ok(()));
        assert_eq!(h1(&[]), Err(Refusal::Host));
        assert_eq!(h1(&[("host", "")]), Err(Refusal::Host));
        assert_eq!(h1(&[("host", "a"), ("host", "a")]), Err(Refusal::Host));
        assert_eq!(check(&req(Version::HTTP_10, "/", &[]), 100), Ok(()));
        let two = req(Version::HTTP_10, "/", &[("host", "a"), ("host", "b")]);
        assert_eq!(check(&two, 100), Err(Refusal::Host));
    }

    #[test]
    fn the_target_or_authority_must_name_the_host() {
        let absolute = |host| {
            check(
                &req(Version::HTTP_11, "http://a.com/x", &[("host", host)]),
                100,
            )
        };
        assert_eq!(absolute("A.com"), Ok(()));
        assert_eq!(absolute("b.com"), Err(Refusal::Authority));
        assert_eq!(absolute("a.com:80"), Err(Refusal::Authority));
        let h2 = |headers: &[(&str, &str)]| {
            check(&req(Version::HTTP_2, "http://a.com:8080/", headers), 100)
        };
        assert_eq!(h2(&[]), Ok(()));
        assert_eq!(h2(&[("host", "a.com:8080")]), Ok(()));
        assert_eq!(h2(&[("host", "b.com")]), Err(Refusal::Authority));
    }

    #[test]
    fn framing_must_mean_one_thing() {
        let te = ("transfer-encoding", "chunked");
        assert_eq!(h1(&[("host", "a"), te]), Ok(()));
        assert_eq!(
            h1(&[("host", "a"), ("transfer-encoding", "CHUNKED")]),
            Ok(())
        );
        assert_eq!(h1(&[("host", "a"), ("content-length", "3")]), Ok(()));
        for bad in [
            &[te, ("content-length", "3")][..],
            &[("content-length", "3"), ("content-length", "3")],
            &[te, te],
            &[("transfer-encoding", "identity, chunked")],
            &[("transfer-encoding", "gzip")],
        ] {
            let mut headers = vec![("host", "a")];
            headers.extend_from_slice(bad);
            assert_eq!(h1(&headers), Err(Refusal::Framing), "{bad:?}");
        }
    }

    #[test]
    fn connect_h2c_and_too_many_headers_are_refused() {
        let connect = Request::builder()
            .method(Method::CONNECT)
            .uri("a.com:443")
            .header("host", "a.com:443")
            .body(())
            .unwrap();
        assert_eq!(check(&connect, 100), Err(Refusal::Connect));
        assert_eq!(
            h1(&[
                ("host", "a"),
                ("upgrade", "foo, H2C"),
                ("connection", "upgrade")
            ]),
            Err(Refusal::H2c)
        );
        assert_eq!(h1(&[("host", "a"), ("upgrade", "websocket")]), Ok(()));
        let many: Vec<(String, &str)> = (0..5).map(|i| (format!("x-{i}"), "v")).collect();
        let mut b = Request::builder().uri("/").header("host", "a");
        for (k, v) in &many {
            b = b.header(k, *v);
        }
        let r = b.body(()).unwrap();
        assert_eq!(check(&r, 6), Ok(()));
        assert_eq!(check(&r, 5), Err(Refusal::TooManyHeaders));
    }
}
