//! Compiled request matches beyond a route's host: method, path (exact, whole-segment prefix,
//! regular expression), headers, query parameters and a gRPC service and method, as Gateway
//! API's HTTPRoute and GRPCRoute define them. A [`Matcher`] is built once per snapshot from plain
//! data ([`MatchSpec`], which the config schema maps to); evaluating it reads the request head and
//! allocates nothing (one exception, written on [`QueryMatch`]).
//!
//! Semantics, where Gateway API leaves a choice to the implementation:
//! - Every condition of one [`MatchSpec`] must hold (AND); a [`RouteMatcher`] holds when any of
//!   its specs does (OR), as the `matches` list of a Gateway API rule.
//! - Paths are compared as the client sent them: no percent-decoding, no dot-segment or
//!   duplicate-slash normalization, exactly as weir's `path_prefix` does today.
//! - Regular expressions use the `regex` crate's syntax (RE2-like: no backreferences or
//!   look-around, linear time) and must match the whole value: `/v[0-9]+` matches `/v2`, not
//!   `/v2/users`. weir anchors them itself, as Envoy's `safe_regex` does.
//! - Header names are case-insensitive, values case-sensitive. A header sent on several lines
//!   matches when any one line matches (no line joining, so no allocation).
//! - Query parameter names and values are percent-decoded (`%XX`, and `+` as a space, as HTML
//!   forms send it) before they are compared; an invalid escape stays as it is. Only the first
//!   occurrence of a name counts, as Gateway API recommends.
//! - A gRPC match reads the request path `/package.Service/Method`; it does not look at the
//!   `content-type` (add a header match on it to require gRPC).
//!
//! Precedence: weir takes the first route in file order whose match holds (SPEC.md). Gateway API
//! instead ranks matches (exact path, then the longest prefix, then method, then the most header
//! and query matches); [`gateway_api_order`] computes that ranking so `weir check` can point out
//! routes whose file order differs from it. See docs/GATEWAY.md.

use std::cmp::Ordering;

use http::{HeaderMap, HeaderName, Method};
use regex::bytes::Regex as BytesRegex;
use regex::{Regex, RegexBuilder};

// === specs: plain data, mapped from the config schema ===

/// One match: every field that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchSpec {
    /// Exact and case-sensitive: `GET`, `POST`, or an extension method.
    pub method: Option<String>,
    pub path: Option<PathSpec>,
    pub headers: Vec<ValueSpec>,
    pub query_params: Vec<ValueSpec>,
    /// GRPCRoute's method match; excludes `path`.
    pub grpc: Option<GrpcSpec>,
}

/// Gateway API's `HTTPPathMatch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSpec {
    /// `/one` matches `/one` only (not `/one/`, `/One`).
    Exact(String),
    /// Whole segments, a trailing `/` ignored: `/api` matches `/api`, `/api/`, `/api/v1`, not
    /// `/apix`.
    Prefix(String),
    /// The whole path must match.
    Regex(String),
}

/// A header or query parameter condition (Gateway API's `HTTPHeaderMatch` and
/// `HTTPQueryParamMatch`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueSpec {
    pub name: String,
    pub value: String,
    /// `false`: `value` is compared exactly; `true`: it is a regular expression that must match
    /// the whole value.
    pub regex: bool,
}

impl ValueSpec {
    pub fn exact(name: &str, value: &str) -> ValueSpec {
        ValueSpec {
            name: name.into(),
            value: value.into(),
            regex: false,
        }
    }

    pub fn regex(name: &str, value: &str) -> ValueSpec {
        ValueSpec {
            regex: true,
            ..ValueSpec::exact(name, value)
        }
    }
}

/// GRPCRoute's `GRPCMethodMatch`: at least one of `service` and `method`; a missing one matches
/// any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcSpec {
    /// `package.Service`.
    pub service: Option<String>,
    pub method: Option<String>,
    /// `true`: `service` and `method` are regular expressions, each matching its whole part.
    pub regex: bool,
}

// === errors ===

/// What is wrong with a [`MatchSpec`]; [`MatchError::field`] names the field relative to the
/// match (`headers[1].value`), for the config error's field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    #[error("`{found}` is not a valid regular expression: {reason}")]
    Regex {
        field: String,
        found: String,
        reason: String,
    },
    #[error("`{found}` is not a valid header name")]
    HeaderName { index: usize, found: String },
    #[error("header `{name}` is matched twice; put both conditions in one regular expression")]
    DuplicateHeader { index: usize, name: String },
    #[error("query parameter `{name}` is matched twice")]
    DuplicateQuery { index: usize, name: String },
    #[error("a query parameter name must not be empty")]
    EmptyQueryName { index: usize },
    #[error("`{found}` is not an HTTP method")]
    Method { found: String },
    #[error("methods are case-sensitive: `{found}` is not `{upper}`")]
    MethodCase { found: String, upper: String },
    #[error("a path must start with `/`, found `{found}`")]
    Path { found: String },
    #[error("a match has either a path or a gRPC method, not both")]
    GrpcAndPath,
    #[error("a gRPC match needs a service, a method, or both")]
    GrpcEmpty,
    #[error("`{found}` is not a gRPC {what} name (expected {expected})")]
    GrpcName {
        what: &'static str,
        found: String,
        expected: &'static str,
    },
}

impl MatchError {
    /// The field the error is about, relative to the match.
    pub fn field(&self) -> String {
        match self {
            MatchError::Regex { field, .. } => field.clone(),
            MatchError::HeaderName { index, .. } | MatchError::DuplicateHeader { index, .. } => {
                format!("headers[{index}].name")
            }
            MatchError::DuplicateQuery { index, .. } | MatchError::EmptyQueryName { index } => {
                format!("query_params[{index}].name")
            }
            MatchError::Method { .. } | MatchError::MethodCase { .. } => "method".into(),
            MatchError::Path { .. } => "path.value".into(),
            MatchError::GrpcAndPath => "grpc".into(),
            MatchError::GrpcEmpty => "grpc".into(),
            MatchError::GrpcName { what, .. } => format!("grpc.{what}"),
        }
    }
}

/// Compiled programs larger than this are refused: a config should not be able to make weir
/// build a multi-megabyte automaton per route.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

fn compile(field: String, pattern: &str) -> Result<Regex, MatchError> {
    RegexBuilder::new(&anchored(pattern))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| MatchError::Regex {
            field,
            found: pattern.into(),
            reason: first_line(&e.to_string()),
        })
}

fn compile_bytes(field: String, pattern: &str) -> Result<BytesRegex, MatchError> {
    regex::bytes::RegexBuilder::new(&anchored(pattern))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| MatchError::Regex {
            field,
            found: pattern.into(),
            reason: first_line(&e.to_string()),
        })
}

/// The regex crate's messages draw the pattern over several lines; a config error has one, so
/// keep its last line, which says what is wrong.
fn first_line(message: &str) -> String {
    message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

// === compiled ===

/// A compiled [`MatchSpec`].
#[derive(Debug)]
pub struct Matcher {
    method: Option<Method>,
    path: PathMatch,
    headers: Box<[HeaderMatch]>,
    query: Box<[QueryMatch]>,
}

#[derive(Debug)]
enum PathMatch {
    Any,
    Exact(Box<str>),
    /// Without its trailing `/`; empty for `/`, which matches every path.
    Prefix(Box<str>),
    Regex(Regex),
    /// `/package.Service/Method`, both given exactly.
    GrpcExact(Box<str>),
    /// `/package.Service/` followed by one segment.
    GrpcService(Box<str>),
    /// One segment, then `/Method`, compared without the leading `/`.
    GrpcMethod(Box<str>),
    /// Two segments, the service and the method, each meeting its expression (a missing one
    /// matches any segment).
    GrpcRegex {
        service: Option<Regex>,
        method: Option<Regex>,
    },
}

#[derive(Debug)]
enum ValueMatch {
    Exact(Box<[u8]>),
    Regex(BytesRegex),
}

impl ValueMatch {
    fn new(field: String, spec: &ValueSpec) -> Result<ValueMatch, MatchError> {
        Ok(if spec.regex {
            ValueMatch::Regex(compile_bytes(field, &spec.value)?)
        } else {
            ValueMatch::Exact(spec.value.as_bytes().into())
        })
    }
}

#[derive(Debug)]
struct HeaderMatch {
    name: HeaderName,
    value: ValueMatch,
}

/// A query parameter condition. Names and values are compared percent-decoded. Decoding an exact
/// comparison happens byte by byte on the fly; a regular expression needs the decoded value in
/// one piece, which is decoded on the stack up to [`QUERY_STACK_BYTES`] bytes. A longer value that
/// contains an escape and meets a regular expression is the one case that allocates.
#[derive(Debug)]
struct QueryMatch {
    name: Box<[u8]>,
    value: ValueMatch,
}

/// Decoded query values up to this many bytes are matched against a regular expression without
/// allocating.
pub const QUERY_STACK_BYTES: usize = 512;

impl Matcher {
    /// Compiles `spec`, reporting every problem at once.
    pub fn new(spec: &MatchSpec) -> Result<Matcher, Vec<MatchError>> {
        let mut errors = Vec::new();
        let method = spec.method.as_deref().and_then(|m| match parse_method(m) {
            Ok(m) => Some(m),
            Err(e) => {
                errors.push(e);
                None
            }
        });
        let path = match (&spec.path, &spec.grpc) {
            (Some(_), Some(_)) => {
                errors.push(MatchError::GrpcAndPath);
                PathMatch::Any
            }
            (None, None) => PathMatch::Any,
            (Some(p), None) => path_match(p).unwrap_or_else(|e| {
                errors.push(e);
                PathMatch::Any
            }),
            (None, Some(g)) => grpc_match(g).unwrap_or_else(|e| {
                errors.extend(e);
                PathMatch::Any
            }),
        };
        let mut headers: Vec<HeaderMatch> = Vec::new();
        for (i, h) in spec.headers.iter().enumerate() {
            let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
                errors.push(MatchError::HeaderName {
                    index: i,
                    found: h.name.clone(),
                });
                continue;
            };
            if headers.iter().any(|m| m.name == name) {
                errors.push(MatchError::DuplicateHeader {
                    index: i,
                    name: h.name.clone(),
                });
                continue;
            }
            match ValueMatch::new(format!("headers[{i}].value"), h) {
                Ok(value) => headers.push(HeaderMatch { name, value }),
                Err(e) => errors.push(e),
            }
        }
        let mut query: Vec<QueryMatch> = Vec::new();
        for (i, q) in spec.query_params.iter().enumerate() {
            if q.name.is_empty() {
                errors.push(MatchError::EmptyQueryName { index: i });
                continue;
            }
            if query.iter().any(|m| *m.name == *q.name.as_bytes()) {
                errors.push(MatchError::DuplicateQuery {
                    index: i,
                    name: q.name.clone(),
                });
                continue;
            }
            match ValueMatch::new(format!("query_params[{i}].value"), q) {
                Ok(value) => query.push(QueryMatch {
                    name: q.name.as_bytes().into(),
                    value,
                }),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Matcher {
            method,
            path,
            headers: headers.into(),
            query: query.into(),
        })
    }

    /// Whether the request meets every condition. Cheapest checks first: method, path, then
    /// headers, then the query.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if self.method.as_ref().is_some_and(|m| m != req.method) {
            return false;
        }
        path_matches(&self.path, req.path)
            && self.headers.iter().all(|h| {
                req.headers
                    .get_all(&h.name)
                    .iter()
                    .any(|v| value_matches(&h.value, v.as_bytes()))
            })
            && self.query.iter().all(|q| query_matches(q, req.query))
    }

    /// A matcher with no condition (a route with none of the new matches).
    pub fn is_empty(&self) -> bool {
        self.method.is_none()
            && matches!(self.path, PathMatch::Any)
            && self.headers.is_empty()
            && self.query.is_empty()
    }

    /// The prefix this match replaces in a `ReplacePrefixMatch` rewrite or redirect: its
    /// `PathPrefix` without the trailing `/` (`""` for `/`).
    pub fn path_prefix(&self) -> Option<&str> {
        match &self.path {
            PathMatch::Prefix(p) => Some(p),
            _ => None,
        }
    }
}

fn parse_method(m: &str) -> Result<Method, MatchError> {
    let upper = m.to_ascii_uppercase();
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    if upper != m && STANDARD.contains(&upper.as_str()) {
        return Err(MatchError::MethodCase {
            found: m.into(),
            upper,
        });
    }
    Method::from_bytes(m.as_bytes()).map_err(|_| MatchError::Method { found: m.into() })
}

fn path_match(p: &PathSpec) -> Result<PathMatch, MatchError> {
    let check = |v: &str| {
        if v.starts_with('/') {
            Ok(())
        } else {
            Err(MatchError::Path { found: v.into() })
        }
    };
    Ok(match p {
        PathSpec::Exact(v) => {
            check(v)?;
            PathMatch::Exact(v.as_str().into())
        }
        PathSpec::Prefix(v) => {
            check(v)?;
            PathMatch::Prefix(v.trim_end_matches('/').into())
        }
        PathSpec::Regex(v) => PathMatch::Regex(compile("path.value".into(), v)?),
    })
}

/// Gateway API's character rules for exact service and method names.
fn grpc_name_ok(what: &'static str, s: &str) -> bool {
    let ident = |part: &str| {
        let mut b = part.bytes();
        b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
    };
    match what {
        "service" => s.strip_prefix('.').unwrap_or(s).split('.').all(ident),
        _ => ident(s),
    }
}

fn grpc_match(g: &GrpcSpec) -> Result<PathMatch, Vec<MatchError>> {
    let service = g.service.as_deref().filter(|s| !s.is_empty());
    let method = g.method.as_deref().filter(|s| !s.is_empty());
    if service.is_none() && method.is_none() {
        return Err(vec![MatchError::GrpcEmpty]);
    }
    if g.regex {
        // Each part is matched on its own segment, so `Get.*` cannot reach past the method into
        // a longer path, and an error names the part that has it.
        let mut errors = Vec::new();
        let mut part = |what: &'static str, p: Option<&str>| {
            p.and_then(|p| {
                compile(format!("grpc.{what}"), p)
                    .map_err(|e| errors.push(e))
                    .ok()
            })
        };
        let service = part("service", service);
        let method = part("method", method);
        if !errors.is_empty() {
            return Err(errors);
        }
        return Ok(PathMatch::GrpcRegex { service, method });
    }
    let errors: Vec<MatchError> = [
        (
            "service",
            service,
            "letters, digits and `_` in dot-separated parts",
        ),
        ("method", method, "letters, digits and `_`"),
    ]
    .into_iter()
    .filter_map(|(what, v, expected)| {
        let v = v?;
        (!grpc_name_ok(what, v)).then(|| MatchError::GrpcName {
            what,
            found: v.into(),
            expected,
        })
    })
    .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(match (service, method) {
        (Some(s), Some(m)) => PathMatch::GrpcExact(format!("/{s}/{m}").into()),
        (Some(s), None) => PathMatch::GrpcService(format!("/{s}/").into()),
        (None, Some(m)) => PathMatch::GrpcMethod(format!("/{m}").into()),
        (None, None) => unreachable!("checked above"),
    })
}

fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Any => true,
        PathMatch::Exact(p) => path == &**p,
        PathMatch::Prefix(p) => match path.strip_prefix(&**p) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        },
        PathMatch::Regex(r) => r.is_match(path),
        PathMatch::GrpcExact(p) => path == &**p,
        PathMatch::GrpcService(p) => path
            .strip_prefix(&**p)
            .is_some_and(|m| !m.is_empty() && !m.contains('/')),
        PathMatch::GrpcMethod(m) => path
            .strip_prefix('/')
            .and_then(|rest| rest.strip_suffix(&**m))
            .is_some_and(|s| !s.is_empty() && !s.contains('/')),
        PathMatch::GrpcRegex { service, method } => {
            let Some((s, m)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
                return false;
            };
            !s.is_empty()
                && !m.is_empty()
                && !m.contains('/')
                && service.as_ref().is_none_or(|r| r.is_match(s))
                && method.as_ref().is_none_or(|r| r.is_match(m))
        }
    }
}

fn value_matches(m: &ValueMatch, value: &[u8]) -> bool {
    match m {
        ValueMatch::Exact(want) => value == &**want,
        ValueMatch::Regex(r) => r.is_match(value),
    }
}

fn query_matches(q: &QueryMatch, query: Option<&str>) -> bool {
    let Some(raw) = query_value(query, &q.name) else {
        return false;
    };
    match &q.value {
        ValueMatch::Exact(want) => Decoded::new(raw).eq(want.iter().copied()),
        ValueMatch::Regex(r) => {
            if !needs_decoding(raw) {
                return r.is_match(raw);
            }
            let mut stack = [0u8; QUERY_STACK_BYTES];
            let mut len = 0;
            for b in Decoded::new(raw) {
                if len == stack.len() {
                    let heap: Vec<u8> = Decoded::new(raw).collect();
                    return r.is_match(&heap);
                }
                stack[len] = b;
                len += 1;
            }
            r.is_match(&stack[..len])
        }
    }
}

/// The raw value of the first query parameter whose decoded name is `name`; `""` for a bare
/// `name` or `name=`.
pub fn query_value<'a>(query: Option<&'a str>, name: &[u8]) -> Option<&'a [u8]> {
    query?.as_bytes().split(|&b| b == b'&').find_map(|pair| {
        let (n, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        Decoded::new(n).eq(name.iter().copied()).then_some(v)
    })
}

fn needs_decoding(raw: &[u8]) -> bool {
    raw.iter().any(|&b| b == b'%' || b == b'+')
}

/// Percent-decoding of a query component, one byte at a time: `%XX` is the byte XX, `+` a space;
/// a `%` not followed by two hex digits stays a `%`.
pub struct Decoded<'a> {
    raw: &'a [u8],
}

impl<'a> Decoded<'a> {
    pub fn new(raw: &'a [u8]) -> Decoded<'a> {
        Decoded { raw }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl Iterator for Decoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.raw.split_first()?;
        match first {
            b'+' => {
                self.raw = rest;
                Some(b' ')
            }
            b'%' => match (
                rest.first().copied().and_then(hex),
                rest.get(1).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    self.raw = &rest[2..];
                    Some(h << 4 | l)
                }
                _ => {
                    self.raw = rest;
                    Some(b'%')
                }
            },
            b => {
                self.raw = rest;
                Some(b)
            }
        }
    }
}

// === a request, as matches see it ===

/// The parts of a request head a match reads.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    pub fn from_parts(parts: &'a http::request::Parts) -> RequestView<'a> {
        RequestView {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
        }
    }
}

// === any of several matches ===

/// Gateway API's `matches` list: holds when any of its matchers does; with none, it holds for
/// every request (the rule's default `PathPrefix /`).
#[derive(Debug, Default)]
pub struct RouteMatcher {
    any: Box<[Matcher]>,
}

impl RouteMatcher {
    /// Compiles each spec; errors are paired with the index of the spec that has them.
    pub fn new(specs: &[MatchSpec]) -> Result<RouteMatcher, Vec<(usize, MatchError)>> {
        let mut errors = Vec::new();
        let mut any = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            match Matcher::new(s) {
                Ok(m) => any.push(m),
                Err(e) => errors.extend(e.into_iter().map(|e| (i, e))),
            }
        }
        if errors.is_empty() {
            Ok(RouteMatcher { any: any.into() })
        } else {
            Err(errors)
        }
    }

    /// The index of the first matcher that holds (0 for a matcher list that is empty), or `None`.
    /// The index tells which match's `PathPrefix` a prefix rewrite replaces.
    pub fn find(&self, req: &RequestView<'_>) -> Option<usize> {
        if self.any.is_empty() {
            return Some(0);
        }
        self.any.iter().position(|m| m.matches(req))
    }

    pub fn matchers(&self) -> &[Matcher] {
        &self.any
    }
}

// === Gateway API precedence ===

/// How Gateway API ranks one match against another (HTTPRoute: exact path, then the longest
/// prefix, then a method, then the most header matches, then the most query matches; GRPCRoute:
/// the longest service, then the longest method, then the most header matches), plus the
/// route's host (an exact host before a wildcard, a longer wildcard first). Regular-expression
/// paths are implementation-specific; weir ranks them between exact and prefix paths, longer
/// patterns first, as Envoy Gateway does. Greater is tried first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    host: (u8, usize),
    path: (u8, usize),
    grpc: (usize, usize),
    method: bool,
    headers: usize,
    query: usize,
}

impl Precedence {
    pub fn of(host: Option<&str>, spec: &MatchSpec) -> Precedence {
        let host = match host {
            None => (0, 0),
            Some(h) if h.starts_with('*') => (1, h.len()),
            Some(h) => (2, h.len()),
        };
        let path = match &spec.path {
            Some(PathSpec::Exact(p)) => (3, p.len()),
            Some(PathSpec::Regex(p)) => (2, p.len()),
            // Gateway API counts characters of the prefix as written; `/api/` and `/api` are the
            // same prefix, so count it without the trailing slash.
            Some(PathSpec::Prefix(p)) => (1, p.trim_end_matches('/').len()),
            None => (1, 0),
        };
        let grpc = spec.grpc.as_ref().map_or((0, 0), |g| {
            (
                g.service.as_ref().map_or(0, String::len),
                g.method.as_ref().map_or(0, String::len),
            )
        });
        Precedence {
            host,
            path,
            grpc,
            method: spec.method.is_some(),
            headers: spec.headers.len(),
            query: spec.query_params.len(),
        }
    }
}

/// The order in which Gateway API would try these matches (indexes into `matches`, each a
/// route's host and one of its match specs); ties keep file order, standing in for Gateway API's
/// creation time and name.
pub fn gateway_api_order(matches: &[(Option<&str>, &MatchSpec)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..matches.len()).collect();
    order.sort_by(|&a, &b| {
        let (pa, pb) = (
            Precedence::of(matches[a].0, matches[a].1),
            Precedence::of(matches[b].0, matches[b].1),
        );
        pb.cmp(&pa).then(a.cmp(&b))
    });
    order
}

/// Pairs `(earlier, later)` of matches that some request can meet both of, where Gateway API
/// would try `later` first although the file has it after `earlier`: weir sends such a request
/// to `earlier`, a Gateway API implementation to `later`. `weir check` can show these as hints.
/// Overlap is judged conservatively: two matches are taken to overlap unless their hosts, paths,
/// methods or an exact header value clearly tell them apart.
pub fn precedence_inversions(matches: &[(Option<&str>, &MatchSpec)]) -> Vec<(usize, usize)> {
    let ranks: Vec<Precedence> = matches.iter().map(|(h, s)| Precedence::of(*h, s)).collect();
    let mut out = Vec::new();
    for later in 0..ranks.len() {
        for earlier in 0..later {
            if ranks[later].cmp(&ranks[earlier]) == Ordering::Greater
                && may_overlap(matches[earlier], matches[later])
            {
                out.push((earlier, later));
            }
        }
    }
    out
}

fn may_overlap(a: (Option<&str>, &MatchSpec), b: (Option<&str>, &MatchSpec)) -> bool {
    hosts_overlap(a.0, b.0)
        && paths_overlap(a.1.path.as_ref(), b.1.path.as_ref())
        && match (&a.1.method, &b.1.method) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
        && !exact_values_conflict(&a.1.headers, &b.1.headers, true)
        && !exact_values_conflict(&a.1.query_params, &b.1.query_params, false)
        && match (&a.1.grpc, &b.1.grpc) {
            (Some(x), Some(y)) if !x.regex && !y.regex => {
                let same = |p: &Option<String>, q: &Option<String>| match (p, q) {
                    (Some(p), Some(q)) => p == q,
                    _ => true,
                };
                same(&x.service, &y.service) && same(&x.method, &y.method)
            }
            _ => true,
        }
}

fn hosts_overlap(a: Option<&str>, b: Option<&str>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return true;
    };
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => a == b,
        (Some(sa), None) => b.len() > sa.len() && b.ends_with(sa),
        (None, Some(sb)) => a.len() > sb.len() && a.ends_with(sb),
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
    }
}

fn paths_overlap(a: Option<&PathSpec>, b: Option<&PathSpec>) -> bool {
    let segment_prefix = |prefix: &str, path: &str| {
        let p = prefix.trim_end_matches('/');
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(PathSpec::Regex(_)), _) | (_, Some(PathSpec::Regex(_))) => true,
        (Some(PathSpec::Exact(x)), Some(PathSpec::Exact(y))) => x == y,
        (Some(PathSpec::Exact(e)), Some(PathSpec::Prefix(p)))
        | (Some(PathSpec::Prefix(p)), Some(PathSpec::Exact(e))) => segment_prefix(p, e),
        (Some(PathSpec::Prefix(x)), Some(PathSpec::Prefix(y))) => {
            segment_prefix(x, y) || segment_prefix(y, x)
        }
    }
}

/// Both list an exact value for the same name, and the values differ: no request meets both.
fn exact_values_conflict(a: &[ValueSpec], b: &[ValueSpec], ignore_case: bool) -> bool {
    a.iter().filter(|x| !x.regex).any(|x| {
        b.iter().filter(|y| !y.regex).any(|y| {
            let same_name = if ignore_case {
                x.name.eq_ignore_ascii_case(&y.name)
            } else {
                x.name == y.name
            };
            same_name && x.value != y.value
        })
    })
}

#[cfg(test)]
mod tests;
