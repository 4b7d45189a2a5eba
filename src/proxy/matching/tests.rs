//! The Gateway API conformance cases for matches (conformance/tests/httproute-*-matching and
//! grpcroute-*-matching), each rule of theirs a weir route, plus weir's own choices (anchoring,
//! decoding, repeated headers) and the config errors.

use super::*;

// === building specs and requests ===

fn prefix(p: &str) -> MatchSpec {
    MatchSpec {
        path: Some(PathSpec::Prefix(p.into())),
        ..MatchSpec::default()
    }
}

fn exact(p: &str) -> MatchSpec {
    MatchSpec {
        path: Some(PathSpec::Exact(p.into())),
        ..MatchSpec::default()
    }
}

fn regex_path(p: &str) -> MatchSpec {
    MatchSpec {
        path: Some(PathSpec::Regex(p.into())),
        ..MatchSpec::default()
    }
}

fn any() -> MatchSpec {
    MatchSpec::default()
}

impl MatchSpec {
    fn header(mut self, name: &str, value: &str) -> MatchSpec {
        self.headers.push(ValueSpec::exact(name, value));
        self
    }
    fn header_regex(mut self, name: &str, value: &str) -> MatchSpec {
        self.headers.push(ValueSpec::regex(name, value));
        self
    }
    fn query(mut self, name: &str, value: &str) -> MatchSpec {
        self.query_params.push(ValueSpec::exact(name, value));
        self
    }
    fn query_regex(mut self, name: &str, value: &str) -> MatchSpec {
        self.query_params.push(ValueSpec::regex(name, value));
        self
    }
    fn method(mut self, m: &str) -> MatchSpec {
        self.method = Some(m.into());
        self
    }
}

fn grpc(service: Option<&str>, method: Option<&str>, regex: bool) -> MatchSpec {
    MatchSpec {
        grpc: Some(GrpcSpec {
            service: service.map(Into::into),
            method: method.map(Into::into),
            regex,
        }),
        ..MatchSpec::default()
    }
}

struct Req<'a> {
    method: &'a str,
    uri: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

fn get(uri: &str) -> Req<'_> {
    Req {
        method: "GET",
        uri,
        headers: &[],
    }
}

fn with<'a>(uri: &'a str, headers: &'a [(&'a str, &'a str)]) -> Req<'a> {
    Req {
        method: "GET",
        uri,
        headers,
    }
}

fn verb<'a>(method: &'a str, uri: &'a str, headers: &'a [(&'a str, &'a str)]) -> Req<'a> {
    Req {
        method,
        uri,
        headers,
    }
}

/// The one helper every case goes through: routes (each a list of OR-ed matches and the backend
/// it sends to) in file order, and a request; the backend of the first route that matches, or
/// `None` (weir's 404).
fn check(routes: &[(Vec<MatchSpec>, &'static str)], req: &Req<'_>) -> Option<&'static str> {
    let mut builder = http::Request::builder().method(req.method).uri(req.uri);
    for (n, v) in req.headers {
        builder = builder.header(*n, *v);
    }
    let (parts, ()) = builder.body(()).unwrap().into_parts();
    let view = RequestView::from_parts(&parts);
    routes
        .iter()
        .map(|(specs, backend)| (RouteMatcher::new(specs).unwrap(), *backend))
        .find(|(m, _)| m.find(&view).is_some())
        .map(|(_, b)| b)
}

/// Gateway API rules flattened to one weir route per match and put in Gateway API's order with
/// [`gateway_api_order`]: what a user does to get Gateway API precedence out of weir's file order.
fn in_gateway_api_order(
    rules: Vec<(Vec<MatchSpec>, &'static str)>,
) -> Vec<(Vec<MatchSpec>, &'static str)> {
    let flat: Vec<(MatchSpec, &'static str)> = rules
        .into_iter()
        .flat_map(|(specs, b)| {
            let specs = if specs.is_empty() { vec![any()] } else { specs };
            specs.into_iter().map(move |s| (s, b))
        })
        .collect();
    let keyed: Vec<(Option<&str>, &MatchSpec)> = flat.iter().map(|(s, _)| (None, s)).collect();
    gateway_api_order(&keyed)
        .into_iter()
        .map(|i| (vec![flat[i].0.clone()], flat[i].1))
        .collect()
}

fn expect_all(routes: &[(Vec<MatchSpec>, &'static str)], cases: &[(Req<'_>, Option<&str>)]) {
    for (i, (req, want)) in cases.iter().enumerate() {
        assert_eq!(
            check(routes, req),
            *want,
            "case {i}: {} {} {:?}",
            req.method,
            req.uri,
            req.headers
        );
    }
}

const V1: Option<&str> = Some("v1");
const V2: Option<&str> = Some("v2");
const V3: Option<&str> = Some("v3");

// === Gateway API conformance, ported ===

#[test]
fn or_ed_matches_and_segment_prefixes_follow_httproute_matching() {
    let rules = vec![
        (vec![prefix("/"), any().header("version", "one")], "v1"),
        (vec![prefix("/v2"), any().header("version", "two")], "v2"),
    ];
    expect_all(
        &in_gateway_api_order(rules),
        &[
            (get("/"), V1),
            (get("/example"), V1),
            (with("/", &[("Version", "one")]), V1),
            (get("/v2"), V2),
            (get("/v2/example"), V2),
            (with("/", &[("Version", "two")]), V2),
            (get("/v2/"), V2),
            (get("/v2example"), V1),
            (get("/foo/v2/example"), V1),
        ],
    );
}

#[test]
fn header_matches_follow_httproute_header_matching() {
    let rules = vec![
        (vec![any().header("version", "one")], "v1"),
        (vec![any().header("version", "two")], "v2"),
        (
            vec![any().header("version", "two").header("color", "orange")],
            "v1",
        ),
        (
            vec![
                any().header("color", "blue"),
                any().header("color", "green"),
            ],
            "v1",
        ),
        (
            vec![
                any().header("color", "red"),
                any().header("color", "yellow"),
            ],
            "v2",
        ),
    ];
    expect_all(
        &in_gateway_api_order(rules),
        &[
            (with("/", &[("Version", "one")]), V1),
            (with("/", &[("Version", "two")]), V2),
            (with("/", &[("Version", "two"), ("Color", "orange")]), V1),
            (with("/", &[("Version", "two"), ("Color", "blue")]), V2),
            (with("/", &[("Color", "orange")]), None),
            (with("/", &[("Some-Other-Header", "one")]), None),
            (with("/", &[("Color", "blue")]), V1),
            (with("/", &[("Color", "green")]), V1),
            (with("/", &[("Color", "red")]), V2),
            (with("/", &[("Color", "yellow")]), V2),
            (with("/", &[("Color", "purple")]), None),
        ],
    );
}

#[test]
fn query_matches_follow_httproute_query_param_matching() {
    let rules = vec![
        (vec![any().query("animal", "whale")], "v1"),
        (vec![any().query("animal", "dolphin")], "v2"),
        (
            vec![
                any().query("animal", "dolphin").query("color", "blue"),
                any().query("ANIMAL", "Whale"),
            ],
            "v3",
        ),
        (vec![prefix("/path1").query("animal", "whale")], "v1"),
        (
            vec![any().header("version", "one").query("animal", "whale")],
            "v2",
        ),
        (
            vec![
                prefix("/path2")
                    .header("version", "two")
                    .query("animal", "whale"),
            ],
            "v3",
        ),
        (
            vec![
                prefix("/path3").query("animal", "shark"),
                prefix("/path4")
                    .header("version", "three")
                    .query("animal", "kraken"),
            ],
            "v1",
        ),
        (vec![prefix("/path5")], "v1"),
        (vec![any().query("animal", "hydra")], "v2"),
        (vec![any().header("version", "four")], "v3"),
    ];
    expect_all(
        &in_gateway_api_order(rules),
        &[
            (get("/?animal=whale"), V1),
            (get("/?animal=dolphin"), V2),
            (get("/?animal=dolphin&color=blue"), V3),
            (get("/?ANIMAL=Whale"), V3),
            (get("/?animal=whale&otherparam=irrelevant"), V1),
            (get("/?animal=dolphin&color=yellow"), V2),
            (get("/?color=blue"), None),
            (get("/?animal=dog"), None),
            (get("/?animal=whaledolphin"), None),
            (get("/"), None),
            (get("/path1?animal=whale"), V1),
            (with("/?animal=whale", &[("version", "one")]), V2),
            (with("/path2?animal=whale", &[("version", "two")]), V3),
            (get("/path3?animal=shark"), V1),
            (with("/path4?animal=kraken", &[("version", "three")]), V1),
            (get("/?animal=shark"), None),
            (get("/path4?animal=kraken"), None),
            (get("/path5?animal=hydra"), V1),
            (with("/?animal=hydra", &[("version", "four")]), V3),
        ],
    );
}

#[test]
fn method_matches_follow_httproute_method_matching() {
    let rules = vec![
        (vec![any().method("POST")], "v1"),
        (vec![any().method("GET")], "v2"),
        (vec![prefix("/path1").method("GET")], "v1"),
        (vec![any().header("version", "one").method("PUT")], "v2"),
        (
            vec![prefix("/path2").header("version", "two").method("POST")],
            "v3",
        ),
        (
            vec![
                prefix("/path3").method("PATCH"),
                prefix("/path4").header("version", "three").method("DELETE"),
            ],
            "v1",
        ),
        (vec![prefix("/path5")], "v1"),
        (vec![any().method("PATCH")], "v2"),
        (vec![any().header("version", "four")], "v3"),
    ];
    expect_all(
        &in_gateway_api_order(rules),
        &[
            (verb("POST", "/", &[]), V1),
            (verb("GET", "/", &[]), V2),
            (verb("HEAD", "/", &[]), None),
            (verb("GET", "/path1", &[]), V1),
            (verb("PUT", "/", &[("version", "one")]), V2),
            (verb("POST", "/path2", &[("version", "two")]), V3),
            (verb("PATCH", "/path3", &[]), V1),
            (verb("DELETE", "/path4", &[("version", "three")]), V1),
            (verb("PUT", "/", &[]), None),
            (verb("DELETE", "/path4", &[]), None),
            (verb("PATCH", "/path5", &[]), V1),
            (verb("PATCH", "/", &[("version", "four")]), V2),
        ],
    );
}

#[test]
fn exact_paths_follow_httproute_exact_path_matching() {
    let routes = vec![(vec![exact("/one")], "v1"), (vec![exact("/two")], "v2")];
    expect_all(
        &routes,
        &[
            (get("/one"), V1),
            (get("/two"), V2),
            (get("/"), None),
            (get("/one/example"), None),
            (get("/two/"), None),
            (get("/Two"), None),
            // The query is not part of the path.
            (get("/one?x=1"), V1),
        ],
    );
}

#[test]
fn exact_before_longer_prefix_follows_httproute_path_match_order() {
    let rules = vec![
        (vec![exact("/match")], "v1"),
        (vec![exact("/match/exact")], "v2"),
        (vec![exact("/match/exact/one")], "v3"),
        (vec![prefix("/match/")], "v3"),
        (vec![prefix("/match/prefix/")], "v1"),
        (vec![prefix("/match/prefix/one")], "v2"),
    ];
    expect_all(
        &in_gateway_api_order(rules),
        &[
            (get("/match/exact/one"), V3),
            (get("/match/exact"), V2),
            (get("/match"), V1),
            (get("/match/prefix/one/any"), V2),
            (get("/match/prefix/any"), V1),
            (get("/match/any"), V3),
        ],
    );
}

const ECHO: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

#[test]
fn grpc_methods_follow_grpcroute_exact_method_matching() {
    let routes = vec![
        (vec![grpc(Some(ECHO), Some("Echo"), false)], "v1"),
        (vec![grpc(Some(ECHO), Some("EchoTwo"), false)], "v2"),
    ];
    let path = |m: &str| format!("/{ECHO}/{m}");
    let (echo, two, three) = (path("Echo"), path("EchoTwo"), path("EchoThree"));
    expect_all(
        &routes,
        &[
            (verb("POST", &echo, &[]), V1),
            (verb("POST", &two, &[]), V2),
            (verb("POST", &three, &[]), None),
        ],
    );
}

#[test]
fn grpc_header_matches_follow_grpcroute_header_matching() {
    let rules = vec![
        (vec![any().header("version", "one")], "v1"),
        (vec![any().header("version", "two")], "v2"),
        (
            vec![any().header("version", "two").header("color", "orange")],
            "v1",
        ),
        (
            vec![
                any().header("color", "blue"),
                any().header("color", "green"),
            ],
            "v1",
        ),
        (
            vec![
                any().header("color", "red"),
                any().header("color", "yellow"),
            ],
            "v2",
        ),
    ];
    let echo = format!("/{ECHO}/Echo");
    let call = |h: &'static [(&'static str, &'static str)]| verb("POST", &echo, h);
    expect_all(
        &in_gateway_api_order(rules),
        &[
            (call(&[("version", "one")]), V1),
            (call(&[("version", "two")]), V2),
            (call(&[("version", "two"), ("color", "orange")]), V1),
            (call(&[("version", "two"), ("color", "blue")]), V2),
            (call(&[("color", "orange")]), None),
            (call(&[("some-other-header", "one")]), None),
            (call(&[("color", "blue")]), V1),
            (call(&[("color", "green")]), V1),
            (call(&[("color", "red")]), V2),
            (call(&[("color", "yellow")]), V2),
            (call(&[("color", "purple")]), None),
        ],
    );
}

// === weir's own choices ===

#[test]
fn grpc_service_only_method_only_and_regex_matches_read_the_path() {
    let svc = vec![(vec![grpc(Some("pkg.Svc"), None, false)], "v1")];
    let method = vec![(vec![grpc(None, Some("Get"), false)], "v1")];
    let re = vec![(
        vec![grpc(Some(r"pkg\.v[0-9]+\.Svc"), Some("Get.*"), true)],
        "v1",
    )];
    for (routes, path, want) in [
        (&svc, "/pkg.Svc/Get", V1),
        (&svc, "/pkg.Svc/", None),
        (&svc, "/pkg.Svc/Get/x", None),
        (&svc, "/pkg.SvcX/Get", None),
        (&method, "/pkg.Svc/Get", V1),
        (&method, "/other.Svc/Get", V1),
        (&method, "//Get", None),
        (&method, "/a/b/Get", None),
        (&method, "/pkg.Svc/GetX", None),
        (&re, "/pkg.v2.Svc/GetUser", V1),
        (&re, "/pkg.v2.Svc/Put", None),
        (&re, "/pkg.vX.Svc/Get", None),
        (&re, "/pkg.v2.Svc/Get/extra", None),
    ] {
        assert_eq!(check(routes, &verb("POST", path, &[])), want, "{path}");
    }
}

#[test]
fn regular_expressions_must_match_the_whole_value() {
    let routes = vec![
        (vec![regex_path("/v[0-9]+")], "v1"),
        (
            vec![any().header_regex("user-agent", "Mobile|Tablet")],
            "v2",
        ),
        (vec![any().query_regex("id", "[0-9]{3}")], "v3"),
    ];
    expect_all(
        &routes,
        &[
            (get("/v2"), V1),
            (get("/v2/users"), None),
            (get("/api/v2"), None),
            (with("/x", &[("user-agent", "Mobile")]), V2),
            (with("/x", &[("user-agent", "Tablet")]), V2),
            (with("/x", &[("user-agent", "Some Mobile browser")]), None),
            (get("/x?id=123"), V3),
            (get("/x?id=1234"), None),
            (get("/x?id=12"), None),
        ],
    );
}

#[test]
fn query_names_and_values_are_percent_decoded_and_the_first_occurrence_counts() {
    let routes = vec![
        (vec![any().query("name", "Jörg")], "v1"),
        (vec![any().query("q", "hello world")], "v2"),
        (vec![any().query("animal", "whale")], "v3"),
        (vec![any().query("flag", "")], "v1"),
        (vec![any().query("pct", "100%")], "v2"),
        (vec![any().query_regex("path", "/a/[a-z]+")], "v3"),
    ];
    expect_all(
        &routes,
        &[
            (get("/?name=J%C3%B6rg"), V1),
            (get("/?name=J%c3%b6rg"), V1),
            (get("/?q=hello+world"), V2),
            (get("/?q=hello%20world"), V2),
            (get("/?anim%61l=whale"), V3),
            (get("/?animal=wh%61le"), V3),
            // Only the first `animal` counts.
            (get("/?animal=dolphin&animal=whale"), None),
            (get("/?animal=whale&animal=dolphin"), V3),
            (get("/?flag"), V1),
            (get("/?flag="), V1),
            (get("/?flag=1"), None),
            // An invalid escape stays as it is.
            (get("/?pct=100%"), V2),
            (get("/?pct=100%25"), V2),
            (get("/?path=%2Fa%2Fbc"), V3),
            (get("/?path=/a/bc"), V3),
            (get("/?path=%2Fa%2FBC"), None),
        ],
    );
}

#[test]
fn a_long_escaped_query_value_meets_a_regular_expression_all_the_same() {
    let long = "x%41".repeat(QUERY_STACK_BYTES);
    let uri = format!("/?v={long}");
    let routes = vec![(vec![any().query_regex("v", "(xA)+")], "v1")];
    assert_eq!(check(&routes, &get(&uri)), V1);
    let routes = vec![(vec![any().query_regex("v", "(xA)+B")], "v1")];
    assert_eq!(check(&routes, &get(&uri)), None);
}

#[test]
fn a_repeated_header_matches_when_any_line_does_and_names_ignore_case() {
    let routes = vec![(vec![any().header("X-Canary", "always")], "v1")];
    expect_all(
        &routes,
        &[
            (
                with("/", &[("x-canary", "never"), ("x-canary", "always")]),
                V1,
            ),
            (with("/", &[("X-CANARY", "always")]), V1),
            (with("/", &[("x-canary", "Always")]), None),
            (with("/", &[("x-canary", "never, always")]), None),
        ],
    );
}

#[test]
fn an_empty_match_list_matches_everything_and_reports_index_zero() {
    let m = RouteMatcher::new(&[]).unwrap();
    let (parts, ()) = http::Request::new(()).into_parts();
    assert_eq!(m.find(&RequestView::from_parts(&parts)), Some(0));
    assert!(Matcher::new(&any()).unwrap().is_empty());
    assert!(!Matcher::new(&any().method("GET")).unwrap().is_empty());
}

#[test]
fn find_names_the_match_that_held_and_its_prefix() {
    let m = RouteMatcher::new(&[prefix("/a/"), prefix("/b"), exact("/c")]).unwrap();
    let (parts, ()) = http::Request::get("/b/x").body(()).unwrap().into_parts();
    let i = m.find(&RequestView::from_parts(&parts)).unwrap();
    assert_eq!(i, 1);
    assert_eq!(m.matchers()[i].path_prefix(), Some("/b"));
    assert_eq!(m.matchers()[0].path_prefix(), Some("/a"));
    assert_eq!(m.matchers()[2].path_prefix(), None);
    let root = Matcher::new(&prefix("/")).unwrap();
    assert_eq!(root.path_prefix(), Some(""));
}

// === config errors ===

fn errors(spec: MatchSpec) -> Vec<String> {
    Matcher::new(&spec)
        .unwrap_err()
        .iter()
        .map(|e| format!("{}: {e}", e.field()))
        .collect()
}

#[test]
fn bad_matches_are_refused_with_every_error_and_its_field() {
    let cases: Vec<(MatchSpec, Vec<&str>)> = vec![
        (
            regex_path("/v[0-9"),
            vec![
                "path.value: `/v[0-9` is not a valid regular expression: unclosed character class",
            ],
        ),
        (
            prefix("api"),
            vec!["path.value: a path must start with `/`, found `api`"],
        ),
        (
            exact(""),
            vec!["path.value: a path must start with `/`, found ``"],
        ),
        (
            any()
                .header("bad name", "x")
                .header("Version", "1")
                .header("version", "2"),
            vec![
                "headers[0].name: `bad name` is not a valid header name",
                "headers[2].name: header `version` is matched twice; put both conditions in one regular expression",
            ],
        ),
        (
            any()
                .header_regex("x", "(")
                .query("", "1")
                .query("a", "1")
                .query("a", "2"),
            vec![
                "headers[0].value: `(` is not a valid regular expression: unclosed group",
                "query_params[0].name: a query parameter name must not be empty",
                "query_params[2].name: query parameter `a` is matched twice",
            ],
        ),
        (
            any().method("get"),
            vec!["method: methods are case-sensitive: `get` is not `GET`"],
        ),
        (
            any().method("GE T"),
            vec!["method: `GE T` is not an HTTP method"],
        ),
        (
            MatchSpec {
                grpc: Some(GrpcSpec::default()),
                ..prefix("/")
            },
            vec!["grpc: a match has either a path or a gRPC method, not both"],
        ),
        (
            grpc(None, None, false),
            vec!["grpc: a gRPC match needs a service, a method, or both"],
        ),
        (
            grpc(Some("pkg/Svc"), Some("Get-It"), false),
            vec![
                "grpc.service: `pkg/Svc` is not a gRPC service name (expected letters, digits and `_` in dot-separated parts)",
                "grpc.method: `Get-It` is not a gRPC method name (expected letters, digits and `_`)",
            ],
        ),
        (
            grpc(Some("pkg.("), None, true),
            vec!["grpc.service: `pkg.(` is not a valid regular expression: unclosed group"],
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(errors(spec.clone()), want, "{spec:?}");
    }
    // Extension methods and leading-dot services are fine.
    assert!(Matcher::new(&any().method("PURGE")).is_ok());
    assert!(Matcher::new(&grpc(Some(".pkg.Svc"), None, false)).is_ok());
}

// === precedence ===

#[test]
fn gateway_api_order_ranks_exact_then_longest_prefix_then_method_headers_query() {
    let specs = [
        prefix("/"),
        prefix("/api").header("a", "1"),
        prefix("/api/v1"),
        exact("/api"),
        regex_path("/api/.*"),
        prefix("/api").method("GET"),
        prefix("/api").query("q", "1"),
        prefix("/api").header("a", "1").header("b", "2"),
        prefix("/api/"),
    ];
    let keyed: Vec<(Option<&str>, &MatchSpec)> = specs.iter().map(|s| (None, s)).collect();
    assert_eq!(gateway_api_order(&keyed), vec![3, 4, 2, 5, 7, 1, 6, 8, 0]);
    // Hosts first: exact, then the longer wildcard, then none.
    let hosts = [
        None,
        Some("*.example.com"),
        Some("a.example.com"),
        Some("*.b.example.com"),
    ];
    let any_spec = any();
    let keyed: Vec<(Option<&str>, &MatchSpec)> = hosts.iter().map(|h| (*h, &any_spec)).collect();
    assert_eq!(gateway_api_order(&keyed), vec![2, 3, 1, 0]);
}

#[test]
fn inversions_are_reported_only_for_matches_that_overlap() {
    let check_inversions = |specs: &[(Option<&str>, MatchSpec)]| {
        let keyed: Vec<(Option<&str>, &MatchSpec)> = specs.iter().map(|(h, s)| (*h, s)).collect();
        precedence_inversions(&keyed)
    };
    // `/` first shadows the longer prefix: reported.
    assert_eq!(
        check_inversions(&[(None, prefix("/")), (None, prefix("/api"))]),
        vec![(0, 1)]
    );
    // Already in Gateway API order: nothing.
    assert!(check_inversions(&[(None, prefix("/api")), (None, prefix("/"))]).is_empty());
    // Disjoint: different hosts, sibling prefixes, different exact paths, methods, header values.
    for (a, b) in [
        (
            (Some("a.com"), prefix("/")),
            (Some("b.com"), prefix("/api")),
        ),
        ((None, prefix("/web")), (None, prefix("/api/v1"))),
        ((None, exact("/a")), (None, exact("/b").method("GET"))),
        (
            (None, any().method("POST")),
            (None, any().method("GET").header("x", "1")),
        ),
        (
            (None, any().header("v", "1")),
            (None, any().header("V", "2").header("c", "x")),
        ),
        (
            (None, any().query("v", "1")),
            (None, any().query("v", "2").query("c", "x")),
        ),
        (
            (Some("*.a.com"), prefix("/")),
            (Some("b.com"), prefix("/x")),
        ),
    ] {
        assert!(
            check_inversions(&[a.clone(), b.clone()]).is_empty(),
            "{a:?} {b:?}"
        );
    }
    // Overlapping: a wildcard host and a name under it, a prefix and an exact path under it.
    assert_eq!(
        check_inversions(&[
            (Some("*.a.com"), prefix("/")),
            (Some("x.a.com"), prefix("/"))
        ]),
        vec![(0, 1)]
    );
    assert_eq!(
        check_inversions(&[(None, prefix("/a")), (None, exact("/a/b"))]),
        vec![(0, 1)]
    );
}
