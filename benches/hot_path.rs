//! The pure parts of the request path: weighted pick, route lookup, and config parse+validate.
//! Run with `cargo bench --bench hot_path`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use weir::proxy::split::WeightTable;

fn big_config(routes: usize) -> String {
    let mut y = String::from(
        "listeners: [{ name: main, address: 127.0.0.1:8080 }]\nupstreams:\n  - { name: stable, endpoints: [127.0.0.1:9001] }\n  - { name: canary, endpoints: [127.0.0.1:9002] }\nroutes:\n",
    );
    for i in 0..routes {
        y.push_str(&format!(
            "  - name: r{i}\n    match: {{ host: h{i}.example.com, path_prefix: /api/{i} }}\n    backends:\n      - {{ upstream: stable, weight: 90 }}\n      - {{ upstream: canary, weight: 10 }}\n"
        ));
    }
    y
}

fn benches(c: &mut Criterion) {
    let table = WeightTable::new([90, 10]).unwrap();
    let mut draw = 0u64;
    c.bench_function("weighted_pick_2_backends", |b| {
        b.iter(|| {
            draw = (draw + 37) % 100;
            black_box(table.pick(black_box(draw)))
        })
    });

    let text = big_config(1_000);
    c.bench_function("config_parse_validate_1000_routes", |b| {
        b.iter(|| weir::config::load_str(black_box(&text), "bench.yaml", Path::new(".")).unwrap())
    });

    let config = weir::config::load_str(&big_config(100), "bench.yaml", Path::new(".")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let snapshot = rt.block_on(async {
        weir::snapshot::Snapshot::build(
            config.into(),
            None,
            &Default::default(),
            &Default::default(),
        )
    });
    let headers = http::HeaderMap::new();
    c.bench_function("route_find_last_of_100", |b| {
        b.iter(|| {
            weir::proxy::router::find(
                black_box(&snapshot.routes),
                black_box(Some("h99.example.com")),
                &weir::proxy::matching::RequestView {
                    method: &http::Method::GET,
                    path: black_box("/api/99/users"),
                    query: None,
                    headers: &headers,
                },
            )
            .unwrap()
        })
    });
}

fn metrics(c: &mut Criterion) {
    use std::time::Duration;
    let m = weir::metrics::Metrics::new();
    let b = m.backend("app", "stable");
    let mut i = 0u64;
    let t0 = std::time::Instant::now();
    // What a response's end records: status counter, both histograms, window, outcome counter;
    // the clock moves a second every 100,000 records.
    let ended = |i: u64, grpc: Option<usize>| weir::metrics::Ended {
        status: http::StatusCode::OK,
        head: Duration::from_micros(300 + i % 200),
        total: Duration::from_micros(700 + i % 500),
        at: t0 + Duration::from_micros(i * 10),
        success: true,
        grpc,
    };
    c.bench_function("metrics_record_request", |bench| {
        bench.iter(|| {
            i += 1;
            b.record(black_box(&ended(i, None)))
        })
    });
    c.bench_function("metrics_record_grpc_request", |bench| {
        bench.iter(|| {
            i += 1;
            b.record(black_box(&ended(i, Some(0))))
        })
    });
    let now = m.second(t0 + Duration::from_micros(i * 10));
    c.bench_function("metrics_window_p50_p90_p99", |bench| {
        bench.iter(|| {
            let s = b.stats(black_box(now));
            (
                s.percentile_ms(0.5),
                s.percentile_ms(0.9),
                s.percentile_ms(0.99),
            )
        })
    });
}

fn picks(c: &mut Criterion) {
    use weir::proxy::split;
    let yaml = |extra: &str| {
        format!(
            "listeners: [{{ name: main, address: 127.0.0.1:8080 }}]\nupstreams:\n  - {{ name: stable, endpoints: [127.0.0.1:9001] }}\n  - {{ name: canary, endpoints: [127.0.0.1:9002] }}\nroutes:\n  - name: app\n{extra}    backends: [{{ upstream: stable, weight: 90 }}, {{ upstream: canary, weight: 10 }}]\n"
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let snapshot = |extra: &str| {
        let config = weir::config::load_str(&yaml(extra), "bench.yaml", Path::new(".")).unwrap();
        rt.block_on(async {
            weir::snapshot::Snapshot::build(
                config.into(),
                None,
                &Default::default(),
                &Default::default(),
            )
        })
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("x-user-id", "user-12345".parse().unwrap());
    headers.insert("cookie", "theme=dark; session=abc".parse().unwrap());
    let n = std::cell::Cell::new(0u64);
    let random = |total: u64| {
        n.set(n.get().wrapping_add(37));
        n.get() % total
    };
    for (name, extra) in [
        ("pick_random", ""),
        ("pick_round_robin", "    pick: round_robin\n"),
        ("pick_sticky_header", "    sticky: { header: x-user-id }\n"),
        (
            "pick_three_overrides_none_matching",
            "    overrides:\n      - { match: { header: { x-canary: always } }, upstream: canary }\n      - { match: { cookie: { beta: \"1\" } }, upstream: canary }\n      - { match: { query: { v: canary } }, upstream: canary }\n",
        ),
    ] {
        let s = snapshot(extra);
        let route = &s.routes[0];
        c.bench_function(name, |b| {
            b.iter(|| {
                split::choose(
                    &route.split,
                    black_box(&headers),
                    black_box(Some("a=1&b=2")),
                    random,
                )
            })
        });
    }
}

/// The endpoint pick inside an upstream: plain round robin, and with outlier ejection (a clock
/// read and one atomic load per endpoint looked at), plus reporting a try's outcome.
fn endpoints(c: &mut Criterion) {
    let yaml = |outlier: &str| {
        format!(
            "listeners: [{{ name: main, address: 127.0.0.1:8080 }}]\nupstreams:\n  - {{ name: app, endpoints: [127.0.0.1:9001, 127.0.0.1:9002, 127.0.0.1:9003]{outlier} }}\nroutes:\n  - {{ name: app, backends: [{{ upstream: app, weight: 1 }}] }}\n"
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, outlier) in [
        ("endpoint_pick", ""),
        (
            "endpoint_pick_with_outlier_and_report",
            ", outlier: { consecutive_failures: 5, ejection: 30s }",
        ),
    ] {
        let config = weir::config::load_str(&yaml(outlier), "bench.yaml", Path::new(".")).unwrap();
        let s = rt.block_on(async {
            weir::snapshot::Snapshot::build(
                config.into(),
                None,
                &Default::default(),
                &Default::default(),
            )
        });
        let pool = &s.pools[0];
        c.bench_function(name, |b| {
            b.iter(|| {
                let i = pool.pick(None).unwrap();
                pool.report(i, weir::proxy::pool::Outcome::Success);
                black_box(i)
            })
        });
    }
}

/// The five shipped policies on a 100-route config against its previous version: what a reload
/// or `weir check` spends in Rego.
fn policies(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| format!("\"{}\"", e.unwrap().path().display()))
        .collect();
    names.sort();
    let text = format!("{}policies: [{}]\n", big_config(100), names.join(", "));
    let new = weir::config::load_str(&text, "bench.yaml", Path::new(".")).unwrap();
    let old = weir::config::load_str(
        &text.replace("weight: 10 }", "weight: 5 }"),
        "bench.yaml",
        Path::new("."),
    )
    .unwrap();
    // The sandbox is the weir binary (this bench's own executable is not weir).
    weir::config::policy::use_sandbox_program(Path::new(env!("CARGO_BIN_EXE_weir")));
    assert!(new.check_policies(Some(&old.spec)).is_ok());
    c.bench_function("policies_5_files_100_routes", |b| {
        b.iter(|| new.check_policies(black_box(Some(&old.spec))).unwrap())
    });
    // The same work without the sandbox: the difference is the child process's cost.
    let policies = new.policies.as_ref().unwrap();
    c.bench_function("policies_5_files_100_routes_in_process", |b| {
        b.iter(|| policies.in_process(&new.spec, black_box(Some(&old.spec))))
    });
}

criterion_group!(hot_path, benches, metrics, picks, endpoints, policies);
criterion_main!(hot_path);
