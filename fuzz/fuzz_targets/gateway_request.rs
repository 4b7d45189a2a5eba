//! A request head (first line the method, second the request target, then `name: value` header
//! lines) -> every kind of match, the request filters, a redirect's `Location` and the affinity
//! decision (issue 23's modules): never a panic; a rewritten target and a `Location` are always
//! valid, and the path they keep or replace is the request's.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weir::proxy::affinity::{Affinity, AffinitySpec, Decision, Pin};
use weir::proxy::filters::{
    FilterSpec, Filters, HeaderModifierSpec, Origin, PathModifierSpec, RedirectSpec, RewriteSpec,
};
use weir::proxy::matching::{GrpcSpec, MatchSpec, PathSpec, RequestView, RouteMatcher, ValueSpec};

struct Compiled {
    matcher: RouteMatcher,
    rewrites: Vec<Filters>,
    redirects: Vec<Filters>,
    affinity: Affinity,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let spec = |f: &dyn Fn(&mut MatchSpec)| {
            let mut s = MatchSpec::default();
            f(&mut s);
            s
        };
        let matcher = RouteMatcher::new(&[
            spec(&|s| s.method = Some("POST".into())),
            spec(&|s| s.path = Some(PathSpec::Exact("/a".into()))),
            spec(&|s| s.path = Some(PathSpec::Prefix("/api/".into()))),
            spec(&|s| s.path = Some(PathSpec::Regex("/v[0-9]+/.*".into()))),
            spec(&|s| {
                s.headers = vec![
                    ValueSpec::exact("x-a", "1"),
                    ValueSpec::regex("x-b", "[a-z]+"),
                ]
            }),
            spec(&|s| {
                s.query_params = vec![ValueSpec::exact("q", "a b"), ValueSpec::regex("r", ".*%.*")]
            }),
            spec(&|s| {
                s.grpc = Some(GrpcSpec {
                    service: Some("pkg.Svc".into()),
                    method: None,
                    regex: false,
                })
            }),
            spec(&|s| {
                s.grpc = Some(GrpcSpec {
                    service: None,
                    method: Some("Get.*".into()),
                    regex: true,
                })
            }),
        ])
        .expect("valid matches");
        let path = |p: Option<PathModifierSpec>| p;
        let rewrites = [
            RewriteSpec {
                hostname: Some("internal.example".into()),
                path: path(Some(PathModifierSpec::ReplacePrefixMatch("".into()))),
            },
            RewriteSpec {
                hostname: None,
                path: path(Some(PathModifierSpec::ReplacePrefixMatch("/x/".into()))),
            },
            RewriteSpec {
                hostname: None,
                path: path(Some(PathModifierSpec::ReplaceFullPath("/full".into()))),
            },
        ]
        .iter()
        .map(|r| {
            let spec = FilterSpec {
                rewrite: Some(r.clone()),
                request_headers: Some(HeaderModifierSpec {
                    set: vec![("x-a".into(), "2".into())],
                    add: vec![("x-b".into(), "c".into())],
                    remove: vec!["x-c".into()],
                }),
                ..FilterSpec::default()
            };
            Filters::new(&spec, "f").expect("valid filters")
        })
        .collect();
        let redirects = [
            RedirectSpec::default(),
            RedirectSpec {
                scheme: Some("https".into()),
                port: Some(8443),
                path: Some(PathModifierSpec::ReplacePrefixMatch("/".into())),
                ..RedirectSpec::default()
            },
            RedirectSpec {
                hostname: Some("example.org".into()),
                path: Some(PathModifierSpec::ReplaceFullPath("/new".into())),
                status_code: Some(308),
                ..RedirectSpec::default()
            },
        ]
        .iter()
        .map(|r| {
            Filters::new(
                &FilterSpec {
                    redirect: Some(r.clone()),
                    ..FilterSpec::default()
                },
                "f",
            )
            .expect("valid redirect")
        })
        .collect();
        let affinity = Affinity::new(
            &AffinitySpec {
                pin: Pin::All,
                ..AffinitySpec::default()
            },
            "app",
            b"generation",
            &["stable", "canary"],
            Some(1),
        )
        .expect("valid affinity");
        Compiled {
            matcher,
            rewrites,
            redirects,
            affinity,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let (Some(method), Some(target)) = (lines.next(), lines.next()) else {
        return;
    };
    let mut builder = http::Request::builder().method(method).uri(target);
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            builder = builder.header(n.trim(), v.trim());
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let c = compiled();
    let view = RequestView::from_parts(&parts);
    let matched = c.matcher.find(&view);
    let prefix = matched
        .and_then(|i| c.matcher.matchers()[i].path_prefix())
        .or(Some("/api"));

    for f in &c.rewrites {
        let mut p = parts.clone();
        if f.rewrite.as_ref().unwrap().apply(&mut p, prefix).is_ok() {
            assert!(
                p.uri.path().starts_with('/') || p.uri.path() == "*",
                "{}",
                p.uri
            );
            assert_eq!(
                p.uri.query(),
                parts.uri.query(),
                "a rewrite keeps the query"
            );
            f.request_headers.as_ref().unwrap().apply(&mut p.headers);
            assert_eq!(p.headers["x-a"], "2");
        }
    }
    for scheme in ["http", "https"] {
        let origin = Origin::of(&parts, scheme, 8080);
        for f in &c.redirects {
            let r = f.redirect.as_ref().unwrap();
            if let Ok(location) = r.location(&parts.uri, &origin, prefix) {
                // The path and query are copied as the client sent them, which `http` lets hold
                // non-ASCII bytes (UTF-8): not `to_str`, but still a URI.
                let uri = http::Uri::try_from(location.as_bytes())
                    .unwrap_or_else(|e| panic!("{location:?}: {e}"));
                assert_eq!(uri.query(), parts.uri.query(), "{location:?}");
            }
        }
    }
    match c.affinity.decide(&parts.headers, |_| true) {
        Decision::Pinned(b) => assert!(b < 2),
        Decision::Unpinned { .. } => {}
    }
});
