//! The per-request cost of the edge-gateway features (issue 23): each match kind, each filter,
//! the affinity cookie, the health-aware endpoint pick, `live_pick` and the drain mark, beside
//! what a route that uses none of them costs (today's host + path prefix match, an empty
//! `Matcher`, empty filters). Before criterion runs, every case is run 10,000 times with a
//! counting allocator on, and the allocations per call are printed.
//!
//! Run with `cargo bench --bench gateway`.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group};
use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;

use weir::config::{HostMatch, PathPrefix, RouteMatch};
use weir::proxy::affinity::{Affinity, AffinitySpec};
use weir::proxy::drain::{Served, backend_bit};
use weir::proxy::filters::{
    BackendHeader, FilterSpec, Filters, HeaderModifierSpec, Origin, PathModifierSpec, RedirectSpec,
    RewriteSpec, RouteFilters,
};
use weir::proxy::health::{EndpointHealth, live_pick};
use weir::proxy::matching::{GrpcSpec, MatchSpec, Matcher, PathSpec, RequestView, ValueSpec};

#[path = "support/counting.rs"]
mod counting;
use counting::{ALLOCATIONS, COUNTED};

/// Allocations per call of `f`, after a warm-up (regex caches, shared `Bytes`).
fn allocations<T>(mut setup: impl FnMut() -> T, mut f: impl FnMut(&mut T)) -> f64 {
    const RUNS: u64 = 10_000;
    let mut inputs: Vec<T> = (0..RUNS + 100).map(|_| setup()).collect();
    for input in inputs.iter_mut().take(100) {
        f(input);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTED.with(|c| c.set(true));
    for input in inputs.iter_mut().skip(100) {
        f(input);
    }
    COUNTED.with(|c| c.set(false));
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / RUNS as f64
}

// === inputs ===

/// A browser-like request head: 10 headers, a query, cookies.
fn request() -> Parts {
    let (parts, ()) = http::Request::get("/api/v1/users/42?animal=wh%61le&page=2&id=123")
        .header("host", "app.example.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        )
        .header("accept", "text/html,application/xhtml+xml")
        .header("accept-language", "en-US,en;q=0.5")
        .header("accept-encoding", "gzip, deflate, br")
        .header(
            "cookie",
            "theme=dark; weir-affinity=0123456789abcdef01234567; lang=en",
        )
        .header("x-version", "two")
        .header("x-color", "orange")
        .header("x-request-id", "2b8f4d1e-6f0a-4c61-9a7f-3f6f0d8c2e11")
        .header("content-type", "application/json")
        .body(())
        .unwrap()
        .into_parts();
    parts
}

fn grpc_request() -> Parts {
    let (parts, ()) = http::Request::post("/pkg.v2.Users/GetUser")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
        .into_parts();
    parts
}

fn spec(f: impl FnOnce(&mut MatchSpec)) -> MatchSpec {
    let mut s = MatchSpec::default();
    f(&mut s);
    s
}

fn matches(c: &mut Criterion, table: &mut Vec<(String, f64)>) {
    let parts = request();
    let grpc = grpc_request();
    let today = RouteMatch {
        host: HostMatch::Exact("app.example.com".into()),
        path_prefix: PathPrefix(Some("/api".into())),
    };
    {
        // What every route pays today: host and whole-segment path prefix, on strings.
        let name = "match_today_host_and_path_prefix";
        let host = Some("app.example.com");
        assert!(weir::proxy::router::matches(&today, host, parts.uri.path()));
        table.push((
            name.into(),
            allocations(
                || (),
                |_| {
                    black_box(weir::proxy::router::matches(&today, host, parts.uri.path()));
                },
            ),
        ));
        c.bench_function(name, |b| {
            b.iter(|| {
                weir::proxy::router::matches(
                    black_box(&today),
                    black_box(host),
                    black_box(parts.uri.path()),
                )
            })
        });
    }
    let cases: Vec<(&str, MatchSpec, &Parts)> = vec![
        ("match_none", MatchSpec::default(), &parts),
        (
            "match_method",
            spec(|s| s.method = Some("GET".into())),
            &parts,
        ),
        (
            "match_path_exact",
            spec(|s| s.path = Some(PathSpec::Exact("/api/v1/users/42".into()))),
            &parts,
        ),
        (
            "match_path_prefix",
            spec(|s| s.path = Some(PathSpec::Prefix("/api/v1".into()))),
            &parts,
        ),
        (
            "match_path_regex",
            spec(|s| s.path = Some(PathSpec::Regex("/api/v[0-9]+/users/[0-9]+".into()))),
            &parts,
        ),
        (
            "match_headers_2_exact",
            spec(|s| {
                s.headers = vec![
                    ValueSpec::exact("x-version", "two"),
                    ValueSpec::exact("x-color", "orange"),
                ]
            }),
            &parts,
        ),
        (
            "match_header_regex",
            spec(|s| s.headers = vec![ValueSpec::regex("user-agent", ".*Firefox/1[0-9]{2}.*")]),
            &parts,
        ),
        (
            "match_query_exact_decoded",
            spec(|s| s.query_params = vec![ValueSpec::exact("animal", "whale")]),
            &parts,
        ),
        (
            "match_query_regex",
            spec(|s| s.query_params = vec![ValueSpec::regex("id", "[0-9]+")]),
            &parts,
        ),
        (
            "match_grpc_exact",
            spec(|s| {
                s.grpc = Some(GrpcSpec {
                    service: Some("pkg.v2.Users".into()),
                    method: Some("GetUser".into()),
                    regex: false,
                })
            }),
            &grpc,
        ),
        (
            "match_grpc_regex",
            spec(|s| {
                s.grpc = Some(GrpcSpec {
                    service: Some(r"pkg\.v[0-9]+\.Users".into()),
                    method: Some("Get.*".into()),
                    regex: true,
                })
            }),
            &grpc,
        ),
        (
            "match_all_kinds_together",
            spec(|s| {
                s.method = Some("GET".into());
                s.path = Some(PathSpec::Prefix("/api".into()));
                s.headers = vec![
                    ValueSpec::exact("x-version", "two"),
                    ValueSpec::exact("x-color", "orange"),
                ];
                s.query_params = vec![ValueSpec::exact("page", "2")];
            }),
            &parts,
        ),
    ];
    for (name, spec, p) in cases {
        let m = Matcher::new(&spec).unwrap();
        let view = RequestView::from_parts(p);
        assert!(m.matches(&view), "{name} must match its request");
        table.push((
            name.into(),
            allocations(
                || (),
                |_| {
                    black_box(m.matches(&view));
                },
            ),
        ));
        c.bench_function(name, |b| b.iter(|| black_box(&m).matches(black_box(&view))));
    }
}

fn modifier() -> HeaderModifierSpec {
    HeaderModifierSpec {
        set: vec![("x-env".into(), "prod".into())],
        add: vec![("x-trace".into(), "weir".into())],
        remove: vec!["x-color".into()],
    }
}

fn route_filters(route: FilterSpec, backend: FilterSpec) -> RouteFilters {
    RouteFilters {
        route: Filters::new(&route, "filters").unwrap(),
        backends: vec![Filters::new(&backend, "f").unwrap()].into(),
        backend_header: None,
    }
}

fn filters(c: &mut Criterion, table: &mut Vec<(String, f64)>) {
    let parts = request();
    let response = {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("content-type", "text/html"),
            ("cache-control", "no-store"),
            ("x-color", "blue"),
            ("date", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ] {
            h.insert(n, HeaderValue::from_static(v));
        }
        h
    };
    let request_cases: Vec<(&str, RouteFilters)> = vec![
        ("filters_none_request", RouteFilters::default()),
        (
            "filter_request_headers_set_add_remove",
            route_filters(
                FilterSpec {
                    request_headers: Some(modifier()),
                    ..FilterSpec::default()
                },
                FilterSpec::default(),
            ),
        ),
        (
            "filter_rewrite_prefix",
            route_filters(
                FilterSpec {
                    rewrite: Some(RewriteSpec {
                        hostname: None,
                        path: Some(PathModifierSpec::ReplacePrefixMatch("/v1".into())),
                    }),
                    ..FilterSpec::default()
                },
                FilterSpec::default(),
            ),
        ),
        (
            "filter_rewrite_host",
            route_filters(
                FilterSpec {
                    rewrite: Some(RewriteSpec {
                        hostname: Some("internal.example".into()),
                        path: None,
                    }),
                    ..FilterSpec::default()
                },
                FilterSpec::default(),
            ),
        ),
        (
            "filter_backend_request_headers",
            route_filters(
                FilterSpec::default(),
                FilterSpec {
                    request_headers: Some(modifier()),
                    ..FilterSpec::default()
                },
            ),
        ),
    ];
    for (name, f) in request_cases {
        table.push((
            name.into(),
            allocations(
                || parts.clone(),
                |p| {
                    f.apply_request(0, p, Some("/api")).unwrap();
                },
            ),
        ));
        c.bench_function(name, |b| {
            b.iter_batched_ref(
                || parts.clone(),
                |p| f.apply_request(0, p, Some("/api")).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    let response_cases: Vec<(&str, RouteFilters)> = vec![
        ("filters_none_response", RouteFilters::default()),
        (
            "filter_response_headers_set_add_remove",
            route_filters(
                FilterSpec {
                    response_headers: Some(modifier()),
                    ..FilterSpec::default()
                },
                FilterSpec::default(),
            ),
        ),
        (
            "filter_backend_header",
            RouteFilters {
                backend_header: Some(BackendHeader::new(["app-stable", "app-canary"])),
                ..RouteFilters::default()
            },
        ),
    ];
    for (name, f) in response_cases {
        table.push((
            name.into(),
            allocations(|| response.clone(), |h| f.apply_response(0, h)),
        ));
        c.bench_function(name, |b| {
            b.iter_batched_ref(
                || response.clone(),
                |h| f.apply_response(0, h),
                BatchSize::SmallInput,
            )
        });
    }
    let redirect = Filters::new(
        &FilterSpec {
            redirect: Some(RedirectSpec {
                scheme: Some("https".into()),
                path: Some(PathModifierSpec::ReplacePrefixMatch("/v2".into())),
                ..RedirectSpec::default()
            }),
            ..FilterSpec::default()
        },
        "f",
    )
    .unwrap()
    .redirect
    .unwrap();
    let name = "filter_redirect_location";
    let origin = Origin::of(&parts, "http", 80);
    table.push((
        name.into(),
        allocations(
            || (),
            |_| {
                black_box(
                    redirect
                        .location(&parts.uri, &origin, Some("/api"))
                        .unwrap(),
                );
            },
        ),
    ));
    c.bench_function(name, |b| {
        b.iter(|| {
            redirect
                .location(black_box(&parts.uri), black_box(&origin), Some("/api"))
                .unwrap()
        })
    });
}

fn affinity(c: &mut Criterion, table: &mut Vec<(String, f64)>) {
    let a = Affinity::new(
        &AffinitySpec::default(),
        "app",
        b"rollout-1",
        &["app-stable", "app-canary"],
        Some(1),
    )
    .unwrap();
    let value = weir::proxy::affinity::cookie_value("app", b"rollout-1", "app-canary");
    let with_cookie = |cookie: &str| {
        let mut h = request().headers;
        h.insert("cookie", HeaderValue::from_str(cookie).unwrap());
        h
    };
    let pinned = with_cookie(&format!(
        "theme=dark; weir-affinity={}; lang=en",
        std::str::from_utf8(&value).unwrap()
    ));
    let stale = with_cookie("theme=dark; weir-affinity=0123456789abcdef01234567; lang=en");
    let none = with_cookie("theme=dark; lang=en");
    for (name, headers) in [
        ("affinity_decide_pinned", &pinned),
        ("affinity_decide_stale", &stale),
        ("affinity_decide_no_cookie", &none),
    ] {
        table.push((
            name.into(),
            allocations(
                || (),
                |_| {
                    black_box(a.decide(headers, |_| true));
                },
            ),
        ));
        c.bench_function(name, |b| b.iter(|| a.decide(black_box(headers), |_| true)));
    }
    let name = "affinity_set_cookie_on_response";
    let decision = a.decide(&none, |_| true);
    table.push((
        name.into(),
        allocations(HeaderMap::new, |h| {
            if let Some(v) = a.set_cookie(decision, 1) {
                h.append(http::header::SET_COOKIE, v.clone());
            }
        }),
    ));
    c.bench_function(name, |b| {
        b.iter_batched_ref(
            HeaderMap::new,
            |h| {
                if let Some(v) = a.set_cookie(decision, 1) {
                    h.append(http::header::SET_COOKIE, v.clone());
                }
            },
            BatchSize::SmallInput,
        )
    });
}

fn health(c: &mut Criterion, table: &mut Vec<(String, f64)>) {
    let steady = EndpointHealth::new(3);
    let ramping = EndpointHealth::new(3);
    ramping.begin_ramp(2, 300);
    let n = Cell::new(0u64);
    let draw = |total: u64| {
        n.set(n.get().wrapping_add(0x9e37_79b9_7f4a_7c15));
        n.get() % total
    };
    for (name, h) in [
        ("endpoint_pick_health_steady", &steady),
        ("endpoint_pick_health_ramping", &ramping),
    ] {
        let mut k = 0usize;
        table.push((
            name.into(),
            allocations(
                || (),
                |_| {
                    k += 1;
                    black_box(h.pick(k, |_| true, draw));
                },
            ),
        ));
        c.bench_function(name, |b| {
            b.iter(|| {
                k += 1;
                h.pick(black_box(k), |_| true, draw)
            })
        });
    }
    let name = "live_pick_fallback_3_backends";
    let mut d = 0u64;
    table.push((
        name.into(),
        allocations(
            || (),
            |_| {
                d = (d + 37) % 100;
                black_box(live_pick([50, 30, 20].into_iter(), d, |b| b != 1));
            },
        ),
    ));
    c.bench_function(name, |b| {
        b.iter(|| {
            d = (d + 37) % 100;
            live_pick(black_box([50, 30, 20]).into_iter(), black_box(d), |b| {
                b != 1
            })
        })
    });
}

fn drain(c: &mut Criterion, table: &mut Vec<(String, f64)>) {
    let served = Served::new(0);
    let bit = backend_bit("app", "app-stable");
    served.mark(bit);
    let name = "drain_mark_served";
    table.push((
        name.into(),
        allocations(|| (), |_| served.mark(black_box(bit))),
    ));
    c.bench_function(name, |b| b.iter(|| served.mark(black_box(bit))));
}

fn all(c: &mut Criterion) {
    let mut table = Vec::new();
    matches(c, &mut table);
    filters(c, &mut table);
    affinity(c, &mut table);
    health(c, &mut table);
    drain(c, &mut table);
    println!("\nallocations per call (10,000 calls after 100 to warm up):");
    for (name, a) in &table {
        println!("  {name:<42} {a:.2}");
    }
}

criterion_group! {
    name = gateway;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = all
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--test`: nothing to check here then.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    gateway();
    Criterion::default().configure_from_args().final_summary();
}
