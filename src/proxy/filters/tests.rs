//! The Gateway API conformance cases for filters (conformance/tests/httproute-rewrite-*,
//! -redirect-*, -30x-redirect, -request-header-modifier*, -response-header-modifier,
//! -backend-*), with the same inputs and expected outputs, plus the prefix-replacement table of
//! `HTTPPathModifier` and the config errors.

use super::*;

// === building specs ===

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn modifier(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderModifierSpec {
    HeaderModifierSpec {
        set: pairs(set),
        add: pairs(add),
        remove: remove.iter().map(|r| r.to_string()).collect(),
    }
}

fn full(p: &str) -> Option<PathModifierSpec> {
    Some(PathModifierSpec::ReplaceFullPath(p.into()))
}

fn replace_prefix_with(p: &str) -> Option<PathModifierSpec> {
    Some(PathModifierSpec::ReplacePrefixMatch(p.into()))
}

fn redirect(r: RedirectSpec) -> FilterSpec {
    FilterSpec {
        redirect: Some(r),
        ..FilterSpec::default()
    }
}

fn rewrite(r: RewriteSpec) -> FilterSpec {
    FilterSpec {
        rewrite: Some(r),
        ..FilterSpec::default()
    }
}

fn request_headers(m: HeaderModifierSpec) -> FilterSpec {
    FilterSpec {
        request_headers: Some(m),
        ..FilterSpec::default()
    }
}

fn response_headers(m: HeaderModifierSpec) -> FilterSpec {
    FilterSpec {
        response_headers: Some(m),
        ..FilterSpec::default()
    }
}

/// A request as a case gives it.
struct Req<'a> {
    uri: &'a str,
    headers: &'a [(&'a str, &'a str)],
    /// The listener's scheme and port.
    listener: (&'a str, u16),
    /// The route's `PathPrefix` as written (`/prefix/one`, `/match/`), when it has one.
    prefix: Option<&'a str>,
}

fn req<'a>(uri: &'a str, prefix: &'a str) -> Req<'a> {
    Req {
        uri,
        headers: &[("host", "gateway.example")],
        listener: ("http", 80),
        prefix: Some(prefix),
    }
}

/// What a case observes: a redirect, or the request the upstream received and the response the
/// client got.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Redirect { status: u16, location: String },
    Forwarded { upstream: String, client: String },
}

/// Header lines as the conformance echo server shows them: `name: v1,v2`, sorted by name.
fn render(target: &str, headers: &HeaderMap) -> String {
    let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    names.sort();
    let mut out = target.to_string();
    for n in names {
        let values: Vec<&str> = headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        out.push_str(&format!("\n{n}: {}", values.join(",")));
    }
    out
}

/// The one helper every case goes through: the route's filters, the first backend's filters,
/// the request, and the headers the upstream answers with.
fn check(
    route: FilterSpec,
    backend: FilterSpec,
    r: &Req<'_>,
    upstream_response: &[(&str, &str)],
) -> Seen {
    let filters = RouteFilters {
        route: Filters::new(&route, "filters").unwrap(),
        backends: vec![Filters::new(&backend, "backends[0].filters").unwrap()].into(),
        backend_header: None,
    };
    let mut builder = http::Request::builder().uri(r.uri);
    for (n, v) in r.headers {
        builder = builder.header(*n, *v);
    }
    let (mut parts, ()) = builder.body(()).unwrap().into_parts();
    // What the route's match hands over: its prefix without the trailing slash.
    let prefix = r.prefix.map(|p| p.trim_end_matches('/'));
    let origin = Origin::of(&parts, r.listener.0, r.listener.1);
    for backend in [None, Some(0)] {
        if let Some(redirect) = filters.redirect(backend) {
            let response: http::Response<()> =
                redirect.response(&parts.uri, &origin, prefix).unwrap();
            assert_eq!(response.headers()["content-length"], "0");
            return Seen::Redirect {
                status: response.status().as_u16(),
                location: response.headers()["location"].to_str().unwrap().to_string(),
            };
        }
    }
    filters.apply_request(0, &mut parts, prefix).unwrap();
    let upstream = render(&parts.uri.to_string(), &parts.headers);
    let mut response = HeaderMap::new();
    for (n, v) in upstream_response {
        response.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    filters.apply_response(0, &mut response);
    Seen::Forwarded {
        upstream,
        client: render("", &response).trim_start().to_string(),
    }
}

fn redirected(status: u16, location: &str) -> Seen {
    Seen::Redirect {
        status,
        location: location.into(),
    }
}

fn forwarded(upstream: &str, client: &str) -> Seen {
    Seen::Forwarded {
        upstream: upstream.into(),
        client: client.into(),
    }
}

fn none() -> FilterSpec {
    FilterSpec::default()
}

// === URLRewrite ===

#[test]
fn prefix_and_full_path_rewrites_follow_httproute_rewrite_path() {
    let headers = modifier(
        &[("X-Header-Set", "set-overwrites-values")],
        &[
            ("X-Header-Add", "header-val-1"),
            ("X-Header-Add-Append", "header-val-2"),
        ],
        &["X-Header-Remove"],
    );
    let with_headers = |path| FilterSpec {
        rewrite: Some(RewriteSpec {
            hostname: None,
            path,
        }),
        request_headers: Some(headers.clone()),
        ..FilterSpec::default()
    };
    let sent = &[
        ("host", "gateway.example"),
        ("X-Header-Remove", "remove-val"),
        ("X-Header-Add-Append", "append-val-1"),
        ("X-Header-Set", "set-val"),
    ];
    let path_rewrite = |p| {
        rewrite(RewriteSpec {
            hostname: None,
            path: p,
        })
    };
    let cases = [
        (
            path_rewrite(replace_prefix_with("/one")),
            req("/prefix/one/two", "/prefix/one"),
            "/one/two",
        ),
        (
            path_rewrite(replace_prefix_with("/")),
            req("/strip-prefix/three", "/strip-prefix"),
            "/three",
        ),
        (
            path_rewrite(replace_prefix_with("/")),
            req("/strip-prefix", "/strip-prefix"),
            "/",
        ),
        (
            path_rewrite(full("/one")),
            req("/full/one/two", "/full/one"),
            "/one",
        ),
        // The query survives a rewrite.
        (
            path_rewrite(full("/one")),
            req("/full/one/two?a=1&b", "/full/one"),
            "/one?a=1&b",
        ),
        (
            path_rewrite(replace_prefix_with("/one")),
            req("/prefix/one/two?x=%20", "/prefix/one"),
            "/one/two?x=%20",
        ),
    ];
    for (spec, r, want) in cases {
        assert_eq!(
            check(spec, none(), &r, &[]),
            forwarded(&format!("{want}\nhost: gateway.example"), ""),
            "{}",
            r.uri
        );
    }
    let header_lines = "\nhost: gateway.example\nx-header-add: header-val-1\nx-header-add-append: append-val-1,header-val-2\nx-header-set: set-overwrites-values";
    let r = Req {
        headers: sent,
        ..req(
            "/full/rewrite-path-and-modify-headers/test",
            "/full/rewrite-path-and-modify-headers",
        )
    };
    assert_eq!(
        check(with_headers(full("/test")), none(), &r, &[]),
        forwarded(&format!("/test{header_lines}"), "")
    );
    let r = Req {
        headers: sent,
        ..req(
            "/prefix/rewrite-path-and-modify-headers/one",
            "/prefix/rewrite-path-and-modify-headers",
        )
    };
    assert_eq!(
        check(
            with_headers(replace_prefix_with("/prefix")),
            none(),
            &r,
            &[]
        ),
        forwarded(&format!("/prefix/one{header_lines}"), "")
    );
}

#[test]
fn prefix_replacement_follows_the_gateway_api_table() {
    // HTTPPathModifier.ReplacePrefixMatch: request path, prefix match, replacement, result.
    for (path, prefix, replacement, want) in [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
        // weir's additions: the root prefix, and a path that does not start with the prefix on
        // a segment boundary (cannot follow a match; left alone).
        ("/a/b", "/", "/x", "/x/a/b"),
        ("/foobar", "/foo", "/xyz", "/foobar"),
    ] {
        let spec = rewrite(RewriteSpec {
            hostname: None,
            path: replace_prefix_with(replacement),
        });
        assert_eq!(
            check(spec, none(), &req(path, prefix), &[]),
            forwarded(&format!("{want}\nhost: gateway.example"), ""),
            "{path} {prefix} {replacement}"
        );
    }
}

#[test]
fn a_host_rewrite_follows_httproute_rewrite_host_and_keeps_the_query() {
    let host = |h: &str| RewriteSpec {
        hostname: Some(h.into()),
        path: None,
    };
    let r = Req {
        headers: &[("host", "rewrite.example")],
        ..req("/one", "/one")
    };
    assert_eq!(
        check(rewrite(host("one.example.org")), none(), &r, &[]),
        forwarded("/one\nhost: one.example.org", "")
    );
    let r = Req {
        headers: &[("host", "rewrite.example")],
        prefix: None,
        ..req("/two?x=1", "")
    };
    assert_eq!(
        check(rewrite(host("example.org")), none(), &r, &[]),
        forwarded("/two?x=1\nhost: example.org", "")
    );
    let spec = FilterSpec {
        rewrite: Some(host("test.example.org")),
        request_headers: Some(modifier(
            &[("X-Header-Set", "set-overwrites-values")],
            &[
                ("X-Header-Add", "header-val-1"),
                ("X-Header-Add-Append", "header-val-2"),
            ],
            &["X-Header-Remove"],
        )),
        ..FilterSpec::default()
    };
    let r = Req {
        headers: &[
            ("host", "rewrite.example"),
            ("X-Header-Remove", "remove-val"),
            ("X-Header-Add-Append", "append-val-1"),
        ],
        ..req(
            "/rewrite-host-and-modify-headers",
            "/rewrite-host-and-modify-headers",
        )
    };
    assert_eq!(
        check(spec, none(), &r, &[]),
        forwarded(
            "/rewrite-host-and-modify-headers\nhost: test.example.org\nx-header-add: header-val-1\nx-header-add-append: append-val-1,header-val-2\nx-header-set: set-overwrites-values",
            ""
        )
    );
    // An HTTP/2 request names its host in the URI: the authority is rewritten too.
    let r = Req {
        headers: &[],
        ..req("http://rewrite.example:8080/a?b", "/a")
    };
    assert_eq!(
        check(rewrite(host("one.example.org")), none(), &r, &[]),
        forwarded("http://one.example.org/a?b\nhost: one.example.org", "")
    );
}

// === RequestRedirect ===

#[test]
fn path_redirects_follow_httproute_redirect_path() {
    let r = |path, hostname: Option<&str>, status_code| {
        redirect(RedirectSpec {
            path,
            hostname: hostname.map(Into::into),
            status_code,
            ..RedirectSpec::default()
        })
    };
    for (spec, request, want) in [
        (
            r(replace_prefix_with("/replacement-prefix"), None, None),
            req("/original-prefix/lemon", "/original-prefix"),
            redirected(302, "http://gateway.example/replacement-prefix/lemon"),
        ),
        (
            r(full("/full-path-replacement"), None, None),
            req("/full/path/original", "/full"),
            redirected(302, "http://gateway.example/full-path-replacement"),
        ),
        (
            r(
                replace_prefix_with("/replacement-prefix"),
                Some("example.org"),
                None,
            ),
            req("/path-and-host", "/path-and-host"),
            redirected(302, "http://example.org/replacement-prefix"),
        ),
        (
            r(replace_prefix_with("/replacement-prefix"), None, Some(301)),
            req("/path-and-status", "/path-and-status"),
            redirected(301, "http://gateway.example/replacement-prefix"),
        ),
        (
            r(full("/replacement-full"), Some("example.org"), None),
            req("/full-path-and-host", "/full-path-and-host"),
            redirected(302, "http://example.org/replacement-full"),
        ),
        (
            r(full("/replacement-full"), None, Some(301)),
            req("/full-path-and-status", "/full-path-and-status"),
            redirected(301, "http://gateway.example/replacement-full"),
        ),
        // The query is kept.
        (
            r(full("/new"), None, None),
            req("/old?a=1", "/old"),
            redirected(302, "http://gateway.example/new?a=1"),
        ),
    ] {
        assert_eq!(check(spec, none(), &request, &[]), want, "{}", request.uri);
    }
}

/// Gateway API's port rules: an explicit port; else the scheme's well-known port when the
/// redirect sets a scheme; else the port the client addressed. Ports 80 (http) and 443 (https)
/// are left out.
#[test]
fn schemes_and_ports_follow_httproute_redirect_port_and_scheme() {
    let r = |scheme: Option<&str>, port: Option<u16>| {
        redirect(RedirectSpec {
            scheme: scheme.map(Into::into),
            port,
            hostname: Some("example.org".into()),
            ..RedirectSpec::default()
        })
    };
    // (listener scheme and port, Host the client sent, scheme, port, expected Location)
    let cases = [
        (("http", 80), "gw", None, None, "http://example.org/p"),
        (("http", 80), "gw", None, Some(80), "http://example.org/p"),
        (
            ("http", 80),
            "gw",
            None,
            Some(8080),
            "http://example.org:8080/p",
        ),
        (
            ("http", 80),
            "gw",
            Some("https"),
            None,
            "https://example.org/p",
        ),
        (
            ("http", 80),
            "gw",
            Some("https"),
            Some(443),
            "https://example.org/p",
        ),
        (
            ("http", 80),
            "gw",
            Some("https"),
            Some(8443),
            "https://example.org:8443/p",
        ),
        (
            ("http", 8080),
            "gw:8080",
            None,
            None,
            "http://example.org:8080/p",
        ),
        (
            ("http", 8080),
            "gw:8080",
            None,
            Some(80),
            "http://example.org/p",
        ),
        (
            ("http", 8080),
            "gw:8080",
            Some("https"),
            None,
            "https://example.org/p",
        ),
        (
            ("https", 443),
            "example.org",
            None,
            None,
            "https://example.org/p",
        ),
        (
            ("https", 443),
            "example.org",
            None,
            Some(443),
            "https://example.org/p",
        ),
        (
            ("https", 443),
            "example.org",
            None,
            Some(8443),
            "https://example.org:8443/p",
        ),
        (
            ("https", 443),
            "example.org",
            Some("http"),
            None,
            "http://example.org/p",
        ),
        (
            ("https", 443),
            "example.org",
            Some("http"),
            Some(80),
            "http://example.org/p",
        ),
        (
            ("https", 443),
            "example.org",
            Some("http"),
            Some(8080),
            "http://example.org:8080/p",
        ),
        // Behind a port mapping (client on 80, listener on 8080) the client's port is used.
        (("http", 8080), "gw", None, None, "http://example.org/p"),
    ];
    for (listener, host, scheme, port, want) in cases {
        let headers = [("host", host)];
        let request = Req {
            headers: &headers,
            listener,
            ..req("/p", "/p")
        };
        assert_eq!(
            check(r(scheme, port), none(), &request, &[]),
            redirected(302, want),
            "{listener:?} {host} {scheme:?} {port:?}"
        );
    }
}

#[test]
fn port_scheme_host_and_status_follow_the_redirect_conformance_cases() {
    let r = |scheme: Option<&str>,
             hostname: Option<&str>,
             port: Option<u16>,
             status_code: Option<u16>| {
        redirect(RedirectSpec {
            scheme: scheme.map(Into::into),
            hostname: hostname.map(Into::into),
            port,
            status_code,
            path: None,
        })
    };
    let cases = [
        // httproute-redirect-port
        (
            r(None, None, Some(8083), None),
            "/port",
            redirected(302, "http://gateway.example:8083/port"),
        ),
        (
            r(None, Some("example.org"), Some(8083), None),
            "/port-and-host",
            redirected(302, "http://example.org:8083/port-and-host"),
        ),
        (
            r(None, None, Some(8083), Some(301)),
            "/port-and-status",
            redirected(301, "http://gateway.example:8083/port-and-status"),
        ),
        (
            r(None, Some("example.org"), Some(8083), Some(302)),
            "/port-and-host-and-status",
            redirected(302, "http://example.org:8083/port-and-host-and-status"),
        ),
        // httproute-redirect-scheme
        (
            r(Some("https"), None, None, None),
            "/scheme",
            redirected(302, "https://gateway.example/scheme"),
        ),
        (
            r(Some("https"), Some("example.org"), None, None),
            "/scheme-and-host",
            redirected(302, "https://example.org/scheme-and-host"),
        ),
        (
            r(Some("https"), None, None, Some(301)),
            "/scheme-and-status",
            redirected(301, "https://gateway.example/scheme-and-status"),
        ),
        (
            r(Some("https"), Some("example.org"), None, Some(302)),
            "/scheme-and-host-and-status",
            redirected(302, "https://example.org/scheme-and-host-and-status"),
        ),
        // httproute-redirect-host-and-status
        (
            r(None, Some("example.org"), None, None),
            "/hostname-redirect",
            redirected(302, "http://example.org/hostname-redirect"),
        ),
        (
            r(None, Some("example.org"), None, Some(301)),
            "/host-and-status",
            redirected(301, "http://example.org/host-and-status"),
        ),
        // httproute-303-, 307- and 308-redirect
        (
            r(None, None, None, Some(303)),
            "/see-other",
            redirected(303, "http://gateway.example/see-other"),
        ),
        (
            r(None, None, None, Some(307)),
            "/temporary",
            redirected(307, "http://gateway.example/temporary"),
        ),
        (
            r(None, None, None, Some(308)),
            "/permanent",
            redirected(308, "http://gateway.example/permanent"),
        ),
    ];
    for (spec, path, want) in cases {
        assert_eq!(check(spec, none(), &req(path, path), &[]), want, "{path}");
    }
}

#[test]
fn a_redirect_keeps_ipv6_hosts_and_refuses_a_crafted_host() {
    let spec = RedirectSpec {
        scheme: Some("https".into()),
        ..RedirectSpec::default()
    };
    let redirect = Redirect::new(&spec, "redirect").unwrap();
    let location = |host: Option<&str>, uri: &str| {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        let origin = Origin::of(&parts, "http", 8080);
        redirect
            .location(&parts.uri, &origin, None)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        location(Some("[::1]:8080"), "/a").unwrap(),
        "https://[::1]/a"
    );
    assert_eq!(
        location(Some("App.Example.com"), "/a").unwrap(),
        "https://App.Example.com/a"
    );
    // No host at all: a relative Location.
    assert_eq!(location(None, "/a?b").unwrap(), "/a?b");
    for bad in ["evil.com/x", "user@evil.com", "a b", "[zz]"] {
        assert_eq!(
            location(Some(bad), "/a"),
            Err(RedirectError::BadHost(split_port(bad).0.into())),
            "{bad}"
        );
    }
    // An HTTP/2 request names its host in the URI; the redirect's scheme brings its own port.
    assert_eq!(
        location(None, "http://h2.example:8443/x").unwrap(),
        "https://h2.example/x"
    );
}

// === header modifiers ===

/// A filter, the headers on the way in (request or upstream response), and what comes out.
type Case<'a> = (&'a FilterSpec, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn request_header_modifiers_follow_httproute_request_header_modifier() {
    let set = request_headers(modifier(
        &[("X-Header-Set", "set-overwrites-values")],
        &[],
        &[],
    ));
    let add = request_headers(modifier(
        &[],
        &[("X-Header-Add", "add-appends-values")],
        &[],
    ));
    let remove = request_headers(modifier(&[], &[], &["X-Header-Remove"]));
    let multiple = request_headers(modifier(
        &[
            ("X-Header-Set-1", "header-set-1"),
            ("X-Header-Set-2", "header-set-2"),
        ],
        &[
            ("X-Header-Add-1", "header-add-1"),
            ("X-Header-Add-2", "header-add-2"),
            ("X-Header-Add-3", "header-add-3"),
        ],
        &["X-Header-Remove-1", "X-Header-Remove-2"],
    ));
    let case = request_headers(modifier(
        &[("X-Header-Set", "header-set")],
        &[("X-Header-Add", "header-add")],
        &["X-Header-Remove"],
    ));
    let cases: [Case<'_>; 7] = [
        (
            &set,
            &[("Some-Other-Header", "val")],
            "some-other-header: val\nx-header-set: set-overwrites-values",
        ),
        (
            &set,
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "some-other-value"),
            ],
            "some-other-header: val\nx-header-set: set-overwrites-values",
        ),
        (
            &add,
            &[("Some-Other-Header", "val")],
            "some-other-header: val\nx-header-add: add-appends-values",
        ),
        (
            &add,
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "some-other-value"),
            ],
            "some-other-header: val\nx-header-add: some-other-value,add-appends-values",
        ),
        (&remove, &[("X-Header-Remove", "val")], ""),
        (
            &multiple,
            &[
                ("X-Header-Set-2", "set-val-2"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Remove-2", "remove-val-2"),
                ("Another-Header", "another-header-val"),
            ],
            "another-header: another-header-val\nx-header-add-1: header-add-1\nx-header-add-2: add-val-2,header-add-2\nx-header-add-3: header-add-3\nx-header-set-1: header-set-1\nx-header-set-2: header-set-2",
        ),
        (
            &case,
            &[
                ("x-header-set", "original-val-set"),
                ("x-header-add", "original-val-add"),
                ("x-header-remove", "original-val-remove"),
                ("Another-Header", "another-header-val"),
            ],
            "another-header: another-header-val\nx-header-add: original-val-add,header-add\nx-header-set: header-set",
        ),
    ];
    for (spec, sent, want) in cases {
        let r = Req {
            headers: sent,
            ..req("/p", "/p")
        };
        let want = if want.is_empty() {
            "/p".to_string()
        } else {
            format!("/p\n{want}")
        };
        assert_eq!(
            check(spec.clone(), none(), &r, &[]),
            forwarded(&want, ""),
            "{sent:?}"
        );
    }
}

#[test]
fn response_header_modifiers_follow_httproute_response_header_modifier() {
    let set = response_headers(modifier(
        &[("X-Header-Set", "set-overwrites-values")],
        &[],
        &[],
    ));
    let add = response_headers(modifier(
        &[],
        &[("X-Header-Add", "add-appends-values")],
        &[],
    ));
    let remove = response_headers(modifier(&[], &[], &["X-Header-Remove"]));
    let multiple = response_headers(modifier(
        &[
            ("X-Header-Set-1", "header-set-1"),
            ("X-Header-Set-2", "header-set-2"),
        ],
        &[
            ("X-Header-Add-1", "header-add-1"),
            ("X-Header-Add-2", "header-add-2"),
            ("X-Header-Add-3", "header-add-3"),
        ],
        &["X-Header-Remove-1", "X-Header-Remove-2"],
    ));
    let case = response_headers(modifier(
        &[("X-Header-Set", "header-set")],
        &[
            ("X-Header-Add", "header-add"),
            ("x-lowercase-add", "lowercase-add"),
            ("x-Mixedcase-ADD-1", "mixedcase-add-1"),
            ("X-mixeDcase-add-2", "mixedcase-add-2"),
            ("X-UPPERCASE-ADD", "uppercase-add"),
        ],
        &["X-Header-Remove"],
    ));
    let cases: [Case<'_>; 7] = [
        (
            &set,
            &[("Some-Other-Header", "val")],
            "some-other-header: val\nx-header-set: set-overwrites-values",
        ),
        (
            &set,
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "some-other-value"),
            ],
            "some-other-header: val\nx-header-set: set-overwrites-values",
        ),
        (
            &add,
            &[("Some-Other-Header", "val")],
            "some-other-header: val\nx-header-add: add-appends-values",
        ),
        (
            &add,
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "some-other-value"),
            ],
            "some-other-header: val\nx-header-add: some-other-value,add-appends-values",
        ),
        (&remove, &[("X-Header-Remove", "val")], ""),
        (
            &multiple,
            &[
                ("X-Header-Set-2", "set-val-2"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Remove-2", "remove-val-2"),
                ("Another-Header", "another-header-val"),
                ("X-Header-Remove-1", "val"),
            ],
            "another-header: another-header-val\nx-header-add-1: header-add-1\nx-header-add-2: add-val-2,header-add-2\nx-header-add-3: header-add-3\nx-header-set-1: header-set-1\nx-header-set-2: header-set-2",
        ),
        (
            &case,
            &[
                ("x-header-set", "original-val-set"),
                ("x-header-add", "original-val-add"),
                ("x-header-remove", "original-val-remove"),
                ("Another-Header", "another-header-val"),
            ],
            "another-header: another-header-val\nx-header-add: original-val-add,header-add\nx-header-set: header-set\nx-lowercase-add: lowercase-add\nx-mixedcase-add-1: mixedcase-add-1\nx-mixedcase-add-2: mixedcase-add-2\nx-uppercase-add: uppercase-add",
        ),
    ];
    for (spec, upstream_sets, want) in cases {
        assert_eq!(
            check(spec.clone(), none(), &req("/p", "/p"), upstream_sets),
            forwarded("/p\nhost: gateway.example", want),
            "{upstream_sets:?}"
        );
    }
}

#[test]
fn request_and_response_modifiers_together_follow_the_combined_conformance_case() {
    let spec = FilterSpec {
        response_headers: Some(modifier(
            &[
                ("X-Header-Set-1", "header-set-1"),
                ("X-Header-Set-2", "header-set-2"),
            ],
            &[
                ("X-Header-Add-1", "header-add-1"),
                ("X-Header-Add-2", "header-add-2"),
            ],
            &["X-Header-Remove-1", "X-Header-Remove-2"],
        )),
        request_headers: Some(modifier(
            &[("X-Header-Set", "set-overwrites-values")],
            &[
                ("X-Header-Add", "header-val-1"),
                ("X-Header-Add-Append", "header-val-2"),
            ],
            &["X-Header-Remove"],
        )),
        ..FilterSpec::default()
    };
    let r = Req {
        headers: &[
            ("X-Header-Remove", "remove-val"),
            ("X-Header-Add-Append", "append-val-1"),
            ("X-Header-Echo", "echo"),
        ],
        ..req(
            "/response-and-request-header-modifiers",
            "/response-and-request-header-modifiers",
        )
    };
    let upstream_sets = [
        ("X-Header-Set-2", "set-val-2"),
        ("X-Header-Add-2", "add-val-2"),
        ("X-Header-Remove-2", "remove-val-2"),
        ("Another-Header", "another-header-val"),
        ("X-Header-Remove-1", "remove-val-1"),
        ("X-Header-Echo", "echo"),
    ];
    assert_eq!(
        check(spec, none(), &r, &upstream_sets),
        forwarded(
            "/response-and-request-header-modifiers\nx-header-add: header-val-1\nx-header-add-append: append-val-1,header-val-2\nx-header-echo: echo\nx-header-set: set-overwrites-values",
            "another-header: another-header-val\nx-header-add-1: header-add-1\nx-header-add-2: add-val-2,header-add-2\nx-header-echo: echo\nx-header-set-1: header-set-1\nx-header-set-2: header-set-2"
        )
    );
}

// === per-backend filters and the backend header ===

#[test]
fn backend_filters_follow_httproute_backend_request_redirect_and_url_rewrite() {
    let r = |path| {
        redirect(RedirectSpec {
            path,
            ..RedirectSpec::default()
        })
    };
    let w = |path| {
        rewrite(RewriteSpec {
            hostname: None,
            path,
        })
    };
    assert_eq!(
        check(
            none(),
            r(full("/redirected-full")),
            &req("/full/original", "/full"),
            &[]
        ),
        redirected(302, "http://gateway.example/redirected-full")
    );
    assert_eq!(
        check(
            none(),
            r(replace_prefix_with("/redirected-prefix")),
            &req("/prefix/original", "/prefix"),
            &[]
        ),
        redirected(302, "http://gateway.example/redirected-prefix/original")
    );
    assert_eq!(
        check(
            none(),
            w(full("/rewritten-full")),
            &req("/full/original", "/full"),
            &[]
        ),
        forwarded("/rewritten-full\nhost: gateway.example", "")
    );
    assert_eq!(
        check(
            none(),
            w(replace_prefix_with("/rewritten-prefix")),
            &req("/prefix/original", "/prefix"),
            &[]
        ),
        forwarded("/rewritten-prefix/original\nhost: gateway.example", "")
    );
}

#[test]
fn each_backend_sets_its_own_header_and_names_itself_when_asked() {
    // httproute-request-header-modifier-backend-weights: each backend sets `Backend` to its name.
    let backend = |name: &str| {
        Filters::new(
            &request_headers(modifier(&[("Backend", name)], &[], &[])),
            "f",
        )
        .unwrap()
    };
    let filters = RouteFilters {
        route: Filters::new(
            &response_headers(modifier(&[("x-route", "r")], &[], &[])),
            "f",
        )
        .unwrap(),
        backends: vec![backend("infra-backend-v1"), backend("infra-backend-v2")].into(),
        backend_header: Some(BackendHeader::new(["app-stable", "app-canary"])),
    };
    for (i, name, version) in [
        (0, "infra-backend-v1", "app-stable"),
        (1, "infra-backend-v2", "app-canary"),
    ] {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts
            .headers
            .insert("backend", HeaderValue::from_static("client-said"));
        filters.apply_request(i, &mut parts, None).unwrap();
        assert_eq!(
            parts.headers.get_all("backend").iter().collect::<Vec<_>>(),
            [name]
        );
        let mut response = HeaderMap::new();
        response.insert(
            BACKEND_HEADER.clone(),
            HeaderValue::from_static("upstream-said"),
        );
        filters.apply_response(i, &mut response);
        assert_eq!(response[&BACKEND_HEADER], version);
        assert_eq!(response["x-route"], "r");
    }
    assert!(!filters.is_empty());
    assert!(RouteFilters::default().is_empty());
}

// === config errors ===

#[test]
fn bad_filters_are_refused_with_every_error_and_its_field() {
    let errors = |spec: FilterSpec| -> Vec<String> {
        Filters::new(&spec, "filters")
            .unwrap_err()
            .iter()
            .map(|e| format!("{}: {e}", e.field()))
            .collect()
    };
    let cases: Vec<(FilterSpec, Vec<&str>)> = vec![
        (
            request_headers(modifier(
                &[("bad name", "x"), ("X-A", "line\nbreak")],
                &[("Host", "h")],
                &["Connection", "x-a", "X-A"],
            )),
            vec![
                "filters.request_headers.remove[0]: header `Connection` is weir's to manage and cannot be modified (it describes the connection, not the message)",
                "filters.request_headers.remove[2]: header `X-A` is modified twice in one filter",
                "filters.request_headers.set[0].name: `bad name` is not a valid header name",
                "filters.request_headers.set[1].value: `line\nbreak` is not a valid header value (visible ASCII, spaces and tabs)",
                "filters.request_headers.add[0].name: header `Host` is weir's to manage and cannot be modified (use a rewrite's `hostname`)",
            ],
        ),
        (
            response_headers(modifier(&[], &[("x-weir-backend", "v")], &[])),
            vec![
                "filters.response_headers.add[0].name: header `x-weir-backend` is weir's to manage and cannot be modified (it describes the connection, not the message)",
            ],
        ),
        (
            FilterSpec {
                redirect: Some(RedirectSpec {
                    scheme: Some("ftp".into()),
                    hostname: Some("a.example.com:80".into()),
                    path: full("relative"),
                    port: Some(0),
                    status_code: Some(304),
                }),
                rewrite: Some(RewriteSpec {
                    hostname: Some("*.example.com".into()),
                    path: replace_prefix_with("/a b"),
                }),
                ..FilterSpec::default()
            },
            vec![
                "redirect.scheme: scheme must be `http` or `https`, found `ftp`",
                "filters.redirect.hostname: `a.example.com:80` is not a valid hostname (letters, digits, `-` and `.`, no port)",
                "redirect.port: port must be between 1 and 65535",
                "redirect.status_code: status code must be 301, 302, 303, 307 or 308, found 304",
                "filters.redirect.path.replace_full_path: `relative` is not a valid path: it must start with `/` and hold no `?`, `#` or spaces",
                "filters.rewrite.hostname: `*.example.com` is not a valid hostname (letters, digits, `-` and `.`, no port)",
                "filters.rewrite.path.replace_prefix_match: `/a b` is not a valid path: it must start with `/` and hold no `?`, `#` or spaces",
                "redirect: a redirect and a rewrite cannot be used together",
            ],
        ),
        (
            rewrite(RewriteSpec {
                hostname: None,
                path: full(""),
            }),
            vec![
                "filters.rewrite.path.replace_full_path: `` is not a valid path: it must start with `/` and hold no `?`, `#` or spaces",
            ],
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(errors(spec.clone()), want, "{spec:?}");
    }
    // `add` and `set` may name a header `remove` drops; an empty prefix replacement is fine.
    assert!(
        Filters::new(
            &request_headers(modifier(&[("x-a", "1")], &[("x-a", "2")], &["x-a"])),
            "f"
        )
        .is_ok()
    );
    assert!(
        Filters::new(
            &rewrite(RewriteSpec {
                hostname: None,
                path: replace_prefix_with("")
            }),
            "f"
        )
        .is_ok()
    );
    let needs = Filters::new(
        &rewrite(RewriteSpec {
            hostname: None,
            path: replace_prefix_with("/x"),
        }),
        "f",
    )
    .unwrap();
    assert!(needs.needs_prefix());
}
