//! Finding the route for a request: routes in file order, the first whose match holds wins
//! (host and path prefix, and for a route with gateway matches its method, path, headers, query
//! parameters or gRPC method, any element of its match list). Pure string work on pre-parsed
//! matchers; no allocation.

use crate::config::{HostMatch, Matches, PathPrefix, RouteMatch};
use crate::proxy::matching::RequestView;
use crate::snapshot::Route;

/// The route for a request with host `host` (without its port), and the index of the element
/// of its match list that held (0 for a route with a single match).
pub fn find<'a>(
    routes: &'a [Route],
    host: Option<&str>,
    req: &RequestView<'_>,
) -> Option<(&'a Route, usize)> {
    routes.iter().find_map(|r| match &r.gateway {
        None => matches(&r.matcher, host, req.path).then_some((r, 0)),
        Some(g) => find_match(&g.config.matches, host, req).map(|i| (r, i)),
    })
}

/// The first element of a gateway match list that holds for the request.
pub fn find_match(m: &Matches, host: Option<&str>, req: &RequestView<'_>) -> Option<usize> {
    m.bounds
        .iter()
        .zip(m.matcher.matchers())
        .position(|(bound, rest)| matches(bound, host, req.path) && rest.matches(req))
}

pub fn matches(m: &RouteMatch, host: Option<&str>, path: &str) -> bool {
    host_matches(&m.host, host) && path_matches(&m.path_prefix, path)
}

fn host_matches(m: &HostMatch, host: Option<&str>) -> bool {
    let name = |h: &str| h.strip_suffix('.').unwrap_or(h).len();
    match (m, host) {
        (HostMatch::Any, _) => true,
        (_, None) => false,
        (HostMatch::Exact(want), Some(h)) => {
            let h = &h[..name(h)];
            h.eq_ignore_ascii_case(want)
        }
        (HostMatch::Suffix(suffix), Some(h)) => {
            // `*.example.com` matches `a.example.com`, not `example.com` itself.
            let h = &h[..name(h)];
            h.len() > suffix.len()
                && h.is_char_boundary(h.len() - suffix.len())
                && h[h.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    }
}

/// Whole path segments: `/api` matches `/api`, `/api/` and `/api/v1`, not `/apix`.
fn path_matches(prefix: &PathPrefix, path: &str) -> bool {
    match &prefix.0 {
        None => true,
        Some(p) => match path.strip_prefix(&**p) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        },
    }
}

/// The host a request is for, without its port: the `Host` header, or the authority of an
/// HTTP/2 request.
pub fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    let raw = match req.headers().get(http::header::HOST) {
        Some(v) => v.to_str().ok()?,
        None => req.uri().authority()?.as_str(),
    };
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        host_pattern: Option<&str>,
        prefix: Option<&str>,
        host: Option<&str>,
        path: &str,
    ) -> bool {
        let host = host.map(strip_port);
        let m = RouteMatch {
            host: match host_pattern {
                None => HostMatch::Any,
                Some(p) => match p.strip_prefix('*') {
                    Some(s) => HostMatch::Suffix(s.into()),
                    None => HostMatch::Exact(p.into()),
                },
            },
            path_prefix: PathPrefix(
                prefix
                    .map(|p| p.trim_end_matches('/'))
                    .filter(|p| !p.is_empty())
                    .map(Into::into),
            ),
        };
        matches(&m, host, path)
    }

    #[test]
    fn host_matching_ignores_port_and_case() {
        let app = Some("app.example.com");
        assert!(check(app, None, Some("app.example.com"), "/"));
        assert!(check(app, None, Some("APP.Example.com:8080"), "/"));
        assert!(check(app, None, Some("app.example.com."), "/"));
        assert!(!check(app, None, Some("other.example.com"), "/"));
        assert!(!check(app, None, None, "/"));
        assert!(check(None, None, None, "/"));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let w = Some("*.example.com");
        assert!(check(w, None, Some("a.example.com"), "/"));
        assert!(check(w, None, Some("a.b.example.com:443"), "/"));
        assert!(!check(w, None, Some("example.com"), "/"));
        assert!(!check(w, None, Some("aexample.com"), "/"));
    }

    #[test]
    fn path_prefix_matches_whole_segments() {
        for (prefix, path, want) in [
            ("/api", "/api", true),
            ("/api", "/api/", true),
            ("/api", "/api/v1", true),
            ("/api", "/apix", false),
            ("/api/", "/api", true),
            ("/api/", "/api/v1", true),
            ("/", "/anything", true),
            ("/a/b", "/a", false),
        ] {
            assert_eq!(
                check(None, Some(prefix), None, path),
                want,
                "{prefix} {path}"
            );
        }
    }

    #[test]
    fn ports_are_stripped_from_names_and_ipv6_literals() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
