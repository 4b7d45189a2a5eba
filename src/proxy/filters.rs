//! Gateway API's HTTPRoute filters, compiled once per snapshot and applied to a request or
//! response head: request and response header modifiers (set, add, remove), `RequestRedirect`
//! (scheme, hostname, path, port, status), `URLRewrite` (hostname, full path or prefix), the
//! same filters per backend, and the opt-in `x-weir-backend` response header naming the backend
//! that served. Pure functions over `http` types: no I/O, no clock.
//!
//! Costs on the request path: a header modifier clones pre-parsed names and values (reference
//! counts, no copy); a rewrite or a redirect builds one new path or `Location` value, the one
//! allocation such a route adds. A route with no filter pays a check of four `None`s.
//!
//! Order, where Gateway API leaves it open: on the request, the route's filters run before the
//! chosen backend's; on the response, the backend's run first, then the route's (the backend's
//! filters nest inside the route's, as middleware does). Within one header modifier: remove,
//! then set, then add. A route-level redirect answers before any backend is picked.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{StatusCode, Uri};

/// The response header naming the backend that served, when a route asks for it.
pub static BACKEND_HEADER: HeaderName = HeaderName::from_static("x-weir-backend");

// === specs: plain data, mapped from the config schema ===

/// Gateway API's `HTTPHeaderFilter`: `set` replaces every value of a header, `add` appends a
/// value (a header sent twice reaches the upstream as two lines, which HTTP reads as
/// `old,new`), `remove` drops a header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifierSpec {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// Gateway API's `HTTPPathModifier`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifierSpec {
    ReplaceFullPath(String),
    /// Replaces the route's `PathPrefix` (whole segments); only with a prefix match.
    ReplacePrefixMatch(String),
}

/// Gateway API's `HTTPRequestRedirectFilter`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedirectSpec {
    /// `http` or `https`; default: the request's.
    pub scheme: Option<String>,
    /// Default: the request's host.
    pub hostname: Option<String>,
    pub path: Option<PathModifierSpec>,
    /// Default: the well-known port of `scheme` when it is given, else the port the client
    /// addressed.
    pub port: Option<u16>,
    /// 301, 302 (default), 303, 307 or 308.
    pub status_code: Option<u16>,
}

/// Gateway API's `HTTPURLRewriteFilter`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewriteSpec {
    /// The `Host` the upstream sees (`x-forwarded-host` keeps the client's).
    pub hostname: Option<String>,
    pub path: Option<PathModifierSpec>,
}

/// The filters of a route or of one of its backends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSpec {
    pub request_headers: Option<HeaderModifierSpec>,
    pub response_headers: Option<HeaderModifierSpec>,
    pub redirect: Option<RedirectSpec>,
    pub rewrite: Option<RewriteSpec>,
}

// === errors ===

/// What is wrong with a filter; [`FilterError::field`] names the field relative to the filters
/// block (`request_headers.set[1].name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("`{found}` is not a valid header name")]
    HeaderName { field: String, found: String },
    #[error("`{found}` is not a valid header value (visible ASCII, spaces and tabs)")]
    HeaderValue { field: String, found: String },
    #[error("header `{name}` is modified twice in one filter")]
    Duplicate { field: String, name: String },
    #[error(
        "header `{name}` is weir's to manage and cannot be modified{hint}",
        hint = reserved_hint(name)
    )]
    Reserved { field: String, name: String },
    #[error("a redirect and a rewrite cannot be used together")]
    RedirectAndRewrite,
    #[error("scheme must be `http` or `https`, found `{found}`")]
    Scheme { found: String },
    #[error("`{found}` is not a valid hostname (letters, digits, `-` and `.`, no port)")]
    Hostname { field: String, found: String },
    #[error("port must be between 1 and 65535")]
    Port,
    #[error("status code must be 301, 302, 303, 307 or 308, found {found}")]
    Status { found: u16 },
    #[error("`{found}` is not a valid path: it must start with `/` and hold no `?`, `#` or spaces")]
    Path { field: String, found: String },
}

fn reserved_hint(name: &str) -> &'static str {
    if name.eq_ignore_ascii_case("host") {
        " (use a rewrite's `hostname`)"
    } else {
        " (it describes the connection, not the message)"
    }
}

impl FilterError {
    pub fn field(&self) -> String {
        match self {
            FilterError::HeaderName { field, .. }
            | FilterError::HeaderValue { field, .. }
            | FilterError::Duplicate { field, .. }
            | FilterError::Reserved { field, .. }
            | FilterError::Hostname { field, .. }
            | FilterError::Path { field, .. } => field.clone(),
            FilterError::RedirectAndRewrite => "redirect".into(),
            FilterError::Scheme { .. } => "redirect.scheme".into(),
            FilterError::Port => "redirect.port".into(),
            FilterError::Status { .. } => "redirect.status_code".into(),
        }
    }
}

/// Headers a filter may not touch: hop-by-hop ones (weir strips and sets them per connection)
/// and the message framing, which weir derives from the body; `Host` goes through a rewrite.
const RESERVED: [&str; 10] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "x-weir-backend",
];

// === header modifiers ===

/// A compiled [`HeaderModifierSpec`].
#[derive(Clone, Debug)]
pub struct HeaderModifier {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

impl HeaderModifier {
    /// `field` is the modifier's own field (`request_headers`), prefixed to error fields.
    pub fn new(spec: &HeaderModifierSpec, field: &str) -> Result<HeaderModifier, Vec<FilterError>> {
        let mut errors = Vec::new();
        // Each list names a header at most once, as Gateway API's lists keyed by name; across
        // lists a name may come back (remove runs first, then set, then add).
        let names =
            |list: &str, raw: &mut dyn Iterator<Item = &String>, errors: &mut Vec<FilterError>| {
                let mut seen: Vec<HeaderName> = Vec::new();
                raw.enumerate()
                    .map(|(i, raw)| {
                        let suffix = if list == "remove" { "" } else { ".name" };
                        let field = format!("{field}.{list}[{i}]{suffix}");
                        let Ok(n) = HeaderName::from_bytes(raw.as_bytes()) else {
                            errors.push(FilterError::HeaderName {
                                field,
                                found: raw.clone(),
                            });
                            return None;
                        };
                        if RESERVED.contains(&n.as_str()) {
                            errors.push(FilterError::Reserved {
                                field,
                                name: raw.clone(),
                            });
                            return None;
                        }
                        if seen.contains(&n) {
                            errors.push(FilterError::Duplicate {
                                field,
                                name: raw.clone(),
                            });
                            return None;
                        }
                        seen.push(n.clone());
                        Some(n)
                    })
                    .collect::<Vec<_>>()
            };
        let values = |list: &str, items: &[(String, String)], errors: &mut Vec<FilterError>| {
            items
                .iter()
                .enumerate()
                .map(|(i, (_, raw))| {
                    let v = HeaderValue::from_str(raw)
                        .ok()
                        .filter(|_| !raw.bytes().any(|b| b.is_ascii_control() && b != b'\t'));
                    if v.is_none() {
                        errors.push(FilterError::HeaderValue {
                            field: format!("{field}.{list}[{i}].value"),
                            found: raw.clone(),
                        });
                    }
                    v
                })
                .collect::<Vec<_>>()
        };
        let remove = names("remove", &mut spec.remove.iter(), &mut errors);
        let set_names = names("set", &mut spec.set.iter().map(|(n, _)| n), &mut errors);
        let set_values = values("set", &spec.set, &mut errors);
        let add_names = names("add", &mut spec.add.iter().map(|(n, _)| n), &mut errors);
        let add_values = values("add", &spec.add, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let pairs = |n: Vec<Option<HeaderName>>, v: Vec<Option<HeaderValue>>| {
            n.into_iter()
                .zip(v)
                .filter_map(|(n, v)| Some((n?, v?)))
                .collect()
        };
        Ok(HeaderModifier {
            remove: remove.into_iter().flatten().collect(),
            set: pairs(set_names, set_values),
            add: pairs(add_names, add_values),
        })
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in self.remove.iter() {
            headers.remove(n);
        }
        for (n, v) in self.set.iter() {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in self.add.iter() {
            headers.append(n.clone(), v.clone());
        }
    }
}

// === paths ===

#[derive(Clone, Debug)]
enum PathModifier {
    Full(Box<str>),
    /// The replacement without its trailing `/`.
    Prefix(Box<str>),
}

/// Characters a configured path may hold: those of a URI path (RFC 3986 `pchar` and `/`), with
/// `%` for escapes.
fn valid_path(p: &str, allow_empty: bool) -> bool {
    (p.is_empty() && allow_empty)
        || (p.starts_with('/')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)))
}

impl PathModifier {
    fn new(spec: &PathModifierSpec, field: &str) -> Result<PathModifier, FilterError> {
        let (p, full) = match spec {
            PathModifierSpec::ReplaceFullPath(p) => (p, true),
            PathModifierSpec::ReplacePrefixMatch(p) => (p, false),
        };
        // Gateway API's table replaces a prefix with an empty string too.
        if !valid_path(p, !full) {
            return Err(FilterError::Path {
                field: format!(
                    "{field}.path.{}",
                    if full {
                        "replace_full_path"
                    } else {
                        "replace_prefix_match"
                    }
                ),
                found: p.clone(),
            });
        }
        Ok(if full {
            PathModifier::Full(p.as_str().into())
        } else {
            PathModifier::Prefix(p.trim_end_matches('/').into())
        })
    }

    fn needs_prefix(&self) -> bool {
        matches!(self, PathModifier::Prefix(_))
    }

    /// The new path for `path`, in two pieces. `prefix` is the matched `PathPrefix` without its
    /// trailing `/` (`""` for `/`); without one, or when `path` does not start with it on a
    /// segment boundary, a prefix replacement leaves the path as it is.
    fn pieces<'a>(&'a self, path: &'a str, prefix: Option<&str>) -> PathPieces<'a> {
        match self {
            PathModifier::Full(p) => PathPieces(p, ""),
            PathModifier::Prefix(replacement) => replace_prefix(path, prefix, replacement),
        }
    }
}

/// Gateway API's `ReplacePrefixMatch` on whole segments; `prefix` and `replacement` come without
/// their trailing `/`. Borrowed pieces only: the caller copies them once into its buffer.
fn replace_prefix<'a>(path: &'a str, prefix: Option<&str>, replacement: &'a str) -> PathPieces<'a> {
    let rest = prefix
        .and_then(|p| path.strip_prefix(p))
        .filter(|rest| rest.is_empty() || rest.starts_with('/'));
    match rest {
        None => PathPieces(path, ""),
        // `/foo` with `/foo` replaced by `` is `/`, never an empty path.
        Some("") if replacement.is_empty() => PathPieces("/", ""),
        Some(rest) => PathPieces(replacement, rest),
    }
}

/// A path made of two borrowed pieces.
struct PathPieces<'a>(&'a str, &'a str);

impl PathPieces<'_> {
    fn len(&self) -> usize {
        self.0.len() + self.1.len()
    }
}

/// A buffer of exactly `len` bytes: turned into `Bytes` without a second allocation (`Bytes`
/// takes a `Vec` whose length is its capacity as it is, and allocates a header otherwise).
fn exact(len: usize, fill: impl FnOnce(&mut String)) -> Bytes {
    let mut out = String::with_capacity(len);
    fill(&mut out);
    debug_assert_eq!(out.len(), len, "the length was computed before");
    Bytes::from(out)
}

fn digits(n: u16) -> usize {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    }
}

// === redirects ===

/// What a redirect needs to know about the request besides its head: the scheme it came in on
/// and the port the client addressed.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The request's host without its port (`Host`, or an HTTP/2 request's authority); `None`
    /// when the request named none.
    pub host: Option<&'a str>,
    /// The port the client addressed: the one in `Host` (or the authority), else the scheme's
    /// well-known port when `Host` has none, else (no `Host` at all) the listener's port.
    pub port: u16,
}

impl<'a> Origin<'a> {
    /// Reads host and port from the request head; `scheme` is the listener's (`http`/`https`),
    /// `listener_port` its bound port.
    pub fn of(parts: &'a http::request::Parts, scheme: &'a str, listener_port: u16) -> Origin<'a> {
        let raw = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        let Some(raw) = raw else {
            return Origin {
                scheme,
                host: None,
                port: listener_port,
            };
        };
        let (host, port) = split_port(raw);
        Origin {
            scheme,
            host: Some(host),
            port: port.unwrap_or_else(|| default_port(scheme).unwrap_or(listener_port)),
        }
    }
}

fn split_port(authority: &str) -> (&str, Option<u16>) {
    let colon = if authority.starts_with('[') {
        authority
            .find(']')
            .and_then(|end| authority[end..].find(':').map(|c| end + c))
    } else {
        authority.rfind(':')
    };
    match colon {
        Some(i) => match authority[i + 1..].parse() {
            Ok(port) => (&authority[..i], Some(port)),
            Err(_) => (authority, None),
        },
        None => (authority, None),
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// A host weir writes into a `Location`: a DNS name or IPv4 address (letters, digits, `-`, `.`,
/// `_`), or a bracketed IPv6 literal. Anything else in a client's `Host` gets a 400, so a
/// crafted `Host` cannot smuggle a path or credentials into the redirect.
fn valid_host(h: &str) -> bool {
    if let Some(inner) = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// Why a redirect could not be answered for this request: the client's fault (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("the request's host `{0}` cannot go into a Location header")]
    BadHost(String),
}

/// A compiled [`RedirectSpec`].
#[derive(Clone, Debug)]
pub struct Redirect {
    scheme: Option<&'static str>,
    hostname: Option<Box<str>>,
    path: Option<PathModifier>,
    port: Option<u16>,
    status: StatusCode,
}

impl Redirect {
    pub fn new(spec: &RedirectSpec, field: &str) -> Result<Redirect, Vec<FilterError>> {
        let mut errors = Vec::new();
        let scheme = match spec.scheme.as_deref() {
            None => None,
            Some("http") => Some("http"),
            Some("https") => Some("https"),
            Some(other) => {
                errors.push(FilterError::Scheme {
                    found: other.into(),
                });
                None
            }
        };
        if let Some(h) = spec.hostname.as_ref().filter(|h| !valid_hostname(h)) {
            errors.push(FilterError::Hostname {
                field: format!("{field}.hostname"),
                found: h.clone(),
            });
        }
        if spec.port == Some(0) {
            errors.push(FilterError::Port);
        }
        let status = match spec.status_code.unwrap_or(302) {
            s @ (301 | 302 | 303 | 307 | 308) => {
                StatusCode::from_u16(s).expect("a listed redirect status")
            }
            found => {
                errors.push(FilterError::Status { found });
                StatusCode::FOUND
            }
        };
        let path = spec
            .path
            .as_ref()
            .and_then(|p| PathModifier::new(p, field).map_err(|e| errors.push(e)).ok());
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Redirect {
            scheme,
            hostname: spec.hostname.as_deref().map(Into::into),
            path,
            port: spec.port,
            status,
        })
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Whether the path replacement needs the matched `PathPrefix` (validation refuses a
    /// `replace_prefix_match` on a route that has none).
    pub fn needs_prefix(&self) -> bool {
        self.path.as_ref().is_some_and(PathModifier::needs_prefix)
    }

    /// The `Location` for this request: `scheme://host[:port]/path[?query]`, the port left out
    /// when it is the scheme's well-known one (Gateway API's rules). The query is kept. `prefix`
    /// is the matched `PathPrefix` without its trailing `/`.
    pub fn location(
        &self,
        uri: &Uri,
        origin: &Origin<'_>,
        prefix: Option<&str>,
    ) -> Result<HeaderValue, RedirectError> {
        let scheme = self.scheme.unwrap_or(origin.scheme);
        let port = match (self.port, self.scheme) {
            (Some(p), _) => p,
            (None, Some(s)) => default_port(s).unwrap_or(origin.port),
            (None, None) => origin.port,
        };
        let host = match (&self.hostname, origin.host) {
            (Some(h), _) => Some(&**h),
            (None, Some(h)) if valid_host(h) => Some(h),
            (None, Some(h)) => return Err(RedirectError::BadHost(h.into())),
            (None, None) => None,
        };
        let path = match &self.path {
            None => PathPieces(uri.path(), ""),
            Some(m) => m.pieces(uri.path(), prefix),
        };
        let query = uri.query();
        let show_port = default_port(scheme) != Some(port);
        let len = host.map_or(0, |h| {
            scheme.len() + 3 + h.len() + if show_port { 1 + digits(port) } else { 0 }
        }) + path.len()
            + query.map_or(0, |q| 1 + q.len());
        let out = exact(len, |out| {
            // Without any host (an HTTP/1.0 request with no Host), the Location is relative.
            if let Some(host) = host {
                out.push_str(scheme);
                out.push_str("://");
                out.push_str(host);
                if show_port {
                    out.push(':');
                    push_u16(out, port);
                }
            }
            out.push_str(path.0);
            out.push_str(path.1);
            if let Some(q) = query {
                out.push('?');
                out.push_str(q);
            }
        });
        HeaderValue::from_maybe_shared(out)
            .map_err(|_| RedirectError::BadHost(host.unwrap_or_default().into()))
    }

    /// The whole answer: the status and the `Location`, with an empty body of type `B`.
    pub fn response<B: Default>(
        &self,
        uri: &Uri,
        origin: &Origin<'_>,
        prefix: Option<&str>,
    ) -> Result<http::Response<B>, RedirectError> {
        let location = self.location(uri, origin, prefix)?;
        let mut r = http::Response::new(B::default());
        *r.status_mut() = self.status;
        r.headers_mut().insert(header::LOCATION, location);
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        Ok(r)
    }
}

fn push_u16(out: &mut String, n: u16) {
    let mut buf = [0u8; 5];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
}

/// Gateway API's `PreciseHostname`: DNS labels, no wildcard, no port.
fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

// === rewrites ===

/// Why a rewrite could not be applied to this request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("the rewritten path is not a valid request target")]
    Path,
}

/// A compiled [`RewriteSpec`].
#[derive(Clone, Debug)]
pub struct UrlRewrite {
    hostname: Option<HeaderValue>,
    path: Option<PathModifier>,
}

impl UrlRewrite {
    pub fn new(spec: &RewriteSpec, field: &str) -> Result<UrlRewrite, Vec<FilterError>> {
        let mut errors = Vec::new();
        let hostname = spec.hostname.as_ref().and_then(|h| {
            if valid_hostname(h) {
                HeaderValue::from_str(h).ok()
            } else {
                errors.push(FilterError::Hostname {
                    field: format!("{field}.hostname"),
                    found: h.clone(),
                });
                None
            }
        });
        let path = spec
            .path
            .as_ref()
            .and_then(|p| PathModifier::new(p, field).map_err(|e| errors.push(e)).ok());
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(UrlRewrite { hostname, path })
    }

    pub fn needs_prefix(&self) -> bool {
        self.path.as_ref().is_some_and(PathModifier::needs_prefix)
    }

    /// Rewrites the request head: `Host` (and the URI's authority, when it has one) and the path,
    /// keeping the query. Run it after `forward::prepare`, so `x-forwarded-host` keeps the
    /// client's host.
    pub fn apply(
        &self,
        parts: &mut http::request::Parts,
        prefix: Option<&str>,
    ) -> Result<(), RewriteError> {
        if let Some(host) = &self.hostname {
            parts.headers.insert(header::HOST, host.clone());
        }
        let Some(path) = &self.path else {
            return self.rewrite_authority(parts);
        };
        let old = parts.uri.path();
        let query = parts.uri.query();
        let pieces = path.pieces(old, prefix);
        let out = exact(pieces.len() + query.map_or(0, |q| q.len() + 1), |out| {
            out.push_str(pieces.0);
            out.push_str(pieces.1);
            if let Some(q) = query {
                out.push('?');
                out.push_str(q);
            }
        });
        let pq = PathAndQuery::from_maybe_shared(out).map_err(|_| RewriteError::Path)?;
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(pq);
        if let (Some(host), Some(_)) = (&self.hostname, &uri.authority) {
            uri.authority = host.to_str().ok().and_then(|h| h.parse().ok());
        }
        parts.uri = Uri::from_parts(uri).map_err(|_| RewriteError::Path)?;
        Ok(())
    }

    fn rewrite_authority(&self, parts: &mut http::request::Parts) -> Result<(), RewriteError> {
        let (Some(host), Some(_)) = (&self.hostname, parts.uri.authority()) else {
            return Ok(());
        };
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.authority = host.to_str().ok().and_then(|h| h.parse().ok());
        parts.uri = Uri::from_parts(uri).map_err(|_| RewriteError::Path)?;
        Ok(())
    }
}

// === a route's filters ===

/// The compiled filters of one level (the route, or one backend).
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<UrlRewrite>,
}

impl Filters {
    /// `field` names the block (`filters`, `backends[1].filters`) in error fields.
    pub fn new(spec: &FilterSpec, field: &str) -> Result<Filters, Vec<FilterError>> {
        fn take<T>(errors: &mut Vec<FilterError>, r: Result<T, Vec<FilterError>>) -> Option<T> {
            r.map_err(|e| errors.extend(e)).ok()
        }
        let mut errors = Vec::new();
        let request_headers = spec.request_headers.as_ref().and_then(|s| {
            take(
                &mut errors,
                HeaderModifier::new(s, &format!("{field}.request_headers")),
            )
        });
        let response_headers = spec.response_headers.as_ref().and_then(|s| {
            take(
                &mut errors,
                HeaderModifier::new(s, &format!("{field}.response_headers")),
            )
        });
        let redirect = spec
            .redirect
            .as_ref()
            .and_then(|s| take(&mut errors, Redirect::new(s, &format!("{field}.redirect"))));
        let rewrite = spec
            .rewrite
            .as_ref()
            .and_then(|s| take(&mut errors, UrlRewrite::new(s, &format!("{field}.rewrite"))));
        if spec.redirect.is_some() && spec.rewrite.is_some() {
            errors.push(FilterError::RedirectAndRewrite);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Filters {
            request_headers,
            response_headers,
            redirect,
            rewrite,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.request_headers.is_none()
            && self.response_headers.is_none()
            && self.redirect.is_none()
            && self.rewrite.is_none()
    }

    /// Whether a path replacement here needs the route's `PathPrefix`.
    pub fn needs_prefix(&self) -> bool {
        self.redirect.as_ref().is_some_and(Redirect::needs_prefix)
            || self.rewrite.as_ref().is_some_and(UrlRewrite::needs_prefix)
    }

    fn apply_request(
        &self,
        parts: &mut http::request::Parts,
        prefix: Option<&str>,
    ) -> Result<(), RewriteError> {
        if let Some(m) = &self.request_headers {
            m.apply(&mut parts.headers);
        }
        if let Some(r) = &self.rewrite {
            r.apply(parts, prefix)?;
        }
        Ok(())
    }
}

/// The x-weir-backend values of a route's backends, built once per snapshot.
#[derive(Clone, Debug)]
pub struct BackendHeader {
    values: Box<[HeaderValue]>,
}

impl BackendHeader {
    /// One value per backend, in the route's backend order; a name that is not a valid header
    /// value (validation keeps names to visible ASCII) is left out of the response.
    pub fn new<'a>(backends: impl IntoIterator<Item = &'a str>) -> BackendHeader {
        BackendHeader {
            values: backends
                .into_iter()
                .map(|n| HeaderValue::from_str(n).unwrap_or(HeaderValue::from_static("")))
                .collect(),
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap, backend: usize) {
        if let Some(v) = self.values.get(backend).filter(|v| !v.is_empty()) {
            headers.insert(BACKEND_HEADER.clone(), v.clone());
        }
    }
}

/// Everything a route filters: its own filters, each backend's, and the optional backend header.
#[derive(Clone, Debug, Default)]
pub struct RouteFilters {
    pub route: Filters,
    /// Indexed like the route's backends; may be shorter (the rest have none).
    pub backends: Box<[Filters]>,
    pub backend_header: Option<BackendHeader>,
}

impl RouteFilters {
    /// A route with no filter at all: the request path can skip this whole step.
    pub fn is_empty(&self) -> bool {
        self.route.is_empty()
            && self.backends.iter().all(Filters::is_empty)
            && self.backend_header.is_none()
    }

    /// The redirect that answers this request: the route's (checked before the pick, with
    /// `backend` `None`), or the chosen backend's.
    pub fn redirect(&self, backend: Option<usize>) -> Option<&Redirect> {
        match backend {
            None => self.route.redirect.as_ref(),
            Some(b) => self.backends.get(b).and_then(|f| f.redirect.as_ref()),
        }
    }

    /// The request filters for `backend`: the route's, then the backend's.
    pub fn apply_request(
        &self,
        backend: usize,
        parts: &mut http::request::Parts,
        prefix: Option<&str>,
    ) -> Result<(), RewriteError> {
        self.route.apply_request(parts, prefix)?;
        if let Some(f) = self.backends.get(backend) {
            f.apply_request(parts, prefix)?;
        }
        Ok(())
    }

    /// The response filters for `backend`: the backend's, then the route's, then the backend
    /// header.
    pub fn apply_response(&self, backend: usize, headers: &mut HeaderMap) {
        if let Some(m) = self
            .backends
            .get(backend)
            .and_then(|f| f.response_headers.as_ref())
        {
            m.apply(headers);
        }
        if let Some(m) = &self.route.response_headers {
            m.apply(headers);
        }
        if let Some(h) = &self.backend_header {
            h.apply(headers, backend);
        }
    }
}

#[cfg(test)]
mod tests;
