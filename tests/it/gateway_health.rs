//! Active health checks, slow start and a backend with no endpoint (issue 23, docs/GATEWAY.md),
//! against real hyper upstreams whose health answer the test flips.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::gateway::{Jar, affinity_config};
use crate::support::*;

/// An upstream that answers `/healthz` with the status in `health` (200 at first) and every
/// other path with its name, counting those requests (not the checks) in `hits`.
struct Checked {
    address: SocketAddr,
    health: Arc<AtomicU16>,
    hits: Arc<AtomicU64>,
}

impl Checked {
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }
}

async fn checked(name: &'static str) -> Checked {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let health = Arc::new(AtomicU16::new(200));
    let hits = Arc::new(AtomicU64::new(0));
    let (h, n) = (health.clone(), hits.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (h, n) = (h.clone(), n.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (h, n) = (h.clone(), n.clone());
                    async move {
                        let mut r = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                        if req.uri().path() == "/healthz" {
                            *r.status_mut() =
                                StatusCode::from_u16(h.load(Ordering::SeqCst)).unwrap();
                        } else {
                            n.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Checked {
        address,
        health,
        hits,
    }
}

/// The YAML of a health check every `interval_ms`, after an upstream's `endpoints:` line.
fn health_check(interval_ms: u64, healthy: u32, unhealthy: u32) -> String {
    format!(
        "    health_check: {{ path: /healthz, interval: {interval_ms}ms, timeout: {interval_ms}ms, healthy_threshold: {healthy}, unhealthy_threshold: {unhealthy} }}\n"
    )
}

/// Inserts `extra` (indented YAML lines) after the `endpoints:` line of upstream `name`.
fn with_upstream_lines(yaml: &str, name: &str, extra: &str) -> String {
    let marker = format!("  - name: {name}\n    endpoints: ");
    let at = yaml.find(&marker).expect("the upstream is in the config");
    let end = at + yaml[at..].find('\n').unwrap() + 1;
    let end = end + yaml[end..].find('\n').unwrap() + 1;
    format!("{}{}{}", &yaml[..end], extra, &yaml[end..])
}

/// Waits (up to a generous 20 s on a shared machine) until `name{labels}` reads `value`;
/// returns the `/metrics` text in which it did, so other samples can be read from the same
/// scrape.
async fn until_metric(w: &Weir, name: &str, labels: &[(&str, &str)], value: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let client = http1_client();
    loop {
        let text = get(&client, w.admin, "/metrics").await.text().to_owned();
        if sample(&text, name, labels) == Some(value) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{labels:?} never reached {value}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_endpoint_failing_its_health_check_gets_no_traffic_and_comes_back_after_the_healthy_threshold()
 {
    let (a, b) = (checked("a").await, checked("b").await);
    // Interval 250 ms (its timeout too: generous for a loopback GET on a loaded machine); out
    // after 2 failed checks in a row, back after 3 passes in a row.
    let yaml = with_upstream_lines(
        &config(
            &[("app", &[a.address, b.address])],
            "  - name: app\n    backends:\n      - { upstream: app, weight: 1 }\n",
        ),
        "app",
        &health_check(250, 3, 2),
    );
    let w = weir(&yaml).await;
    let b_endpoint = b.address.to_string();
    let b_labels = [("upstream", "app"), ("endpoint", b_endpoint.as_str())];
    let client = http1_client();
    for _ in 0..20 {
        assert_eq!(get(&client, w.address, "/").await.status, StatusCode::OK);
    }
    assert_eq!(
        (a.hits(), b.hits()),
        (10, 10),
        "round robin over two healthy endpoints"
    );
    assert_eq!(metric(&w, "weir_endpoint_healthy", &b_labels).await, 1.0);

    b.set_health(503);
    let failed = [
        ("upstream", "app"),
        ("endpoint", b_endpoint.as_str()),
        ("result", "failed"),
    ];
    let passed = [
        ("upstream", "app"),
        ("endpoint", b_endpoint.as_str()),
        ("result", "passed"),
    ];
    let scrape = until_metric(&w, "weir_endpoint_healthy", &b_labels, 0.0).await;
    // Taken out by its 2nd failing check, that is within 2 intervals of failing. Read from the
    // scrape that first showed it out, polled every few ms against a 250 ms interval: a third
    // check can only have landed in between on a badly stalled machine.
    let failed_checks = sample(&scrape, "weir_health_checks_total", &failed).unwrap();
    assert!(
        (2.0..=3.0).contains(&failed_checks),
        "out after {failed_checks} failed checks"
    );
    let before = b.hits();
    for _ in 0..40 {
        let answer = get(&client, w.address, "/").await;
        assert_eq!((answer.status, answer.text()), (StatusCode::OK, "a"));
    }
    assert_eq!(b.hits(), before, "no request reaches the failing endpoint");

    let passed_before = metric(&w, "weir_health_checks_total", &passed).await;
    b.set_health(200);
    let scrape = until_metric(&w, "weir_endpoint_healthy", &b_labels, 1.0).await;
    let passes = sample(&scrape, "weir_health_checks_total", &passed).unwrap() - passed_before;
    assert!(
        (3.0..=4.0).contains(&passes),
        "back after {passes} passing checks, the healthy threshold being 3"
    );
    let before = b.hits();
    for _ in 0..40 {
        assert_eq!(get(&client, w.address, "/").await.status, StatusCode::OK);
    }
    assert_eq!(
        b.hits() - before,
        20,
        "round robin again over both endpoints"
    );
}

#[tokio::test]
async fn a_dead_canary_s_share_goes_to_stable_and_is_counted() {
    let (stable, canary) = (checked("stable").await, checked("canary").await);
    let yaml = with_upstream_lines(
        &split_config(stable.address, canary.address, 50, 50),
        "canary",
        &health_check(100, 1, 1),
    );
    let w = weir(&yaml).await;
    let canary_endpoint = canary.address.to_string();
    let endpoint = [
        ("upstream", "canary"),
        ("endpoint", canary_endpoint.as_str()),
    ];
    let client = http1_client();

    canary.set_health(500);
    until_metric(&w, "weir_endpoint_healthy", &endpoint, 0.0).await;
    let before = canary.hits();
    for _ in 0..200 {
        let answer = get(&client, w.address, "/").await;
        assert_eq!((answer.status, answer.text()), (StatusCode::OK, "stable"));
    }
    assert_eq!(canary.hits(), before);
    // About half the 200 draws named the canary: binomial(200, 0.5) has a standard deviation
    // of about 7, so 60..=140 is more than 5 deviations either side.
    let unavailable = metric(
        &w,
        "weir_backend_unavailable_total",
        &[("route", "app"), ("backend", "canary")],
    )
    .await;
    assert!(
        (60.0..=140.0).contains(&unavailable),
        "{unavailable} requests counted as unavailable"
    );
    assert_eq!(
        metric(
            &w,
            "weir_backend_unavailable_total",
            &[("route", "app"), ("backend", "stable")],
        )
        .await,
        0.0
    );

    // Stable gone as well: nothing to fall back to, weir's own 503.
    stable.set_health(500);
    let stable_endpoint = stable.address.to_string();
    let sc = with_upstream_lines(&yaml, "stable", &health_check(100, 1, 1));
    std::fs::write(&w.path, &sc).unwrap();
    reload(&w).await.unwrap();
    until_metric(
        &w,
        "weir_endpoint_healthy",
        &[
            ("upstream", "stable"),
            ("endpoint", stable_endpoint.as_str()),
        ],
        0.0,
    )
    .await;
    assert_eq!(
        get(&client, w.address, "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // And back: the canary passes once (healthy threshold 1) and takes stable's share too.
    canary.set_health(200);
    until_metric(&w, "weir_endpoint_healthy", &endpoint, 1.0).await;
    let answer = get(&client, w.address, "/").await;
    assert_eq!((answer.status, answer.text()), (StatusCode::OK, "canary"));
}

#[tokio::test]
async fn a_client_pinned_to_a_canary_that_fails_its_health_check_goes_to_stable_and_loses_its_pin()
{
    let (stable, canary) = (checked("stable").await, checked("canary").await);
    let yaml = with_upstream_lines(
        &affinity_config(stable.address, canary.address, 50, 50),
        "canary",
        &health_check(100, 1, 1),
    );
    let w = weir(&yaml).await;
    let mut jar = Jar::default();
    // Until the weights send this client to the canary (1/2 per request), which pins it.
    let mut tries = 0;
    while jar.get(w.address).await.0 != "canary" {
        tries += 1;
        assert!(tries < 60, "never drawn to the canary at 50 %");
    }
    assert!(jar.cookies.contains_key("weir-affinity"));
    for _ in 0..20 {
        assert_eq!(jar.get(w.address).await, ("canary".to_owned(), 0));
    }

    canary.set_health(500);
    let canary_endpoint = canary.address.to_string();
    let endpoint = [
        ("upstream", "canary"),
        ("endpoint", canary_endpoint.as_str()),
    ];
    until_metric(&w, "weir_endpoint_healthy", &endpoint, 0.0).await;
    // The pin no longer holds: stable answers and the cookie is expired on that answer.
    assert_eq!(jar.get(w.address).await, ("stable".to_owned(), 1));
    assert!(!jar.cookies.contains_key("weir-affinity"));
    // Half the draws still name the canary; each goes to stable and pins nothing.
    for _ in 0..20 {
        assert_eq!(jar.get(w.address).await, ("stable".to_owned(), 0));
    }
}

#[tokio::test]
async fn an_endpoint_that_cannot_be_reached_is_out_after_its_first_check() {
    let (live, dead) = (checked("live").await, closed_port().await);
    let yaml = with_upstream_lines(
        &config(
            &[("app", &[dead, live.address])],
            "  - name: app\n    backends:\n      - { upstream: app, weight: 1 }\n",
        ),
        "app",
        &health_check(250, 2, 3),
    );
    let w = weir(&yaml).await;
    let dead_endpoint = dead.to_string();
    until_metric(
        &w,
        "weir_endpoint_healthy",
        &[("upstream", "app"), ("endpoint", dead_endpoint.as_str())],
        0.0,
    )
    .await;
    let client = http1_client();
    for _ in 0..20 {
        let answer = get(&client, w.address, "/").await;
        assert_eq!((answer.status, answer.text()), (StatusCode::OK, "live"));
    }
}

#[tokio::test]
async fn slow_start_ramps_a_new_endpoint_s_share_up_over_its_window() {
    let (a, b) = (checked("a").await, checked("b").await);
    let slow = "    slow_start: { window: 4s, min_weight_percent: 10 }\n";
    let route = "  - name: app\n    backends:\n      - { upstream: app, weight: 1 }\n";
    let one = with_upstream_lines(&config(&[("app", &[a.address])], route), "app", slow);
    let w = weir(&one).await;
    let client = http1_client();
    assert_eq!(get(&client, w.address, "/").await.status, StatusCode::OK);

    // A reload adds endpoint b: it starts at 10 % of a full endpoint and reaches it after 4 s.
    let two = with_upstream_lines(
        &config(&[("app", &[a.address, b.address])], route),
        "app",
        slow,
    );
    std::fs::write(&w.path, &two).unwrap();
    reload(&w).await.unwrap();
    let mut shares = Vec::new();
    for _ in 0..6 {
        let (a0, b0) = (a.hits(), b.hits());
        let second = tokio::time::Instant::now() + Duration::from_secs(1);
        while tokio::time::Instant::now() < second {
            assert_eq!(get(&client, w.address, "/").await.status, StatusCode::OK);
        }
        let (da, db) = (a.hits() - a0, b.hits() - b0);
        shares.push((db as f64 / (da + db) as f64, da + db));
    }
    println!("the new endpoint's share per second (share, requests): {shares:?}");
    // Linear ramp from 0.1 to 1 over 4 s: b's expected share f / (1 + f) goes about 0.13,
    // 0.28, 0.37, 0.45, then 0.5. A second's share over n requests has a standard deviation of
    // at most sqrt(0.25 / n) (binomial); the tolerances are 4 of those (for a difference, of the
    // difference), so noise fails the test about once in 10^4 runs whatever the machine's rate,
    // while a ramp that goes the wrong way, or no ramp, does not pass.
    let sd = |n: u64| (0.25 / n as f64).sqrt();
    for &(_, n) in &shares {
        assert!(
            n >= 50,
            "too few requests in a second to measure: {shares:?}"
        );
    }
    for pair in shares.windows(2) {
        let tolerance = 4.0 * (sd(pair[0].1).powi(2) + sd(pair[1].1).powi(2)).sqrt();
        assert!(
            pair[1].0 >= pair[0].0 - tolerance,
            "the share fell from {} to {} (tolerance {tolerance:.3}): {shares:?}",
            pair[0].0,
            pair[1].0
        );
    }
    let (first, last) = (shares[0], shares[5]);
    assert!(
        first.0 < 0.5 - 4.0 * sd(first.1),
        "the first second is well below an even split: {shares:?}"
    );
    assert!(
        (last.0 - 0.5).abs() <= 4.0 * sd(last.1),
        "after the window, an even split: {shares:?}"
    );
    assert!(
        last.0 - first.0 > 4.0 * (sd(first.1).powi(2) + sd(last.1).powi(2)).sqrt(),
        "the share grew: {shares:?}"
    );
}

#[tokio::test]
async fn a_rollout_s_canary_with_no_healthy_endpoint_is_rolled_back_while_stable_serves_its_share()
{
    let (stable, canary) = (checked("stable").await, checked("canary").await);
    canary.set_health(503);
    let yaml = with_upstream_lines(
        &config(
            &[("stable", &[stable.address]), ("canary", &[canary.address])],
            "  - name: app\n    rollout: { canary: canary, steps: [50, 100], interval: 300ms, min_requests: 5 }\n    backends:\n      - { upstream: stable, weight: 90 }\n      - { upstream: canary, weight: 10 }\n",
        ),
        "canary",
        &health_check(100, 1, 1),
    );
    let w = weir(&yaml).await;
    let canary_endpoint = canary.address.to_string();
    until_metric(
        &w,
        "weir_endpoint_healthy",
        &[
            ("upstream", "canary"),
            ("endpoint", canary_endpoint.as_str()),
        ],
        0.0,
    )
    .await;
    let client = http1_client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let state = loop {
        // Every client is served, by stable.
        let answer = get(&client, w.address, "/").await;
        assert_eq!((answer.status, answer.text()), (StatusCode::OK, "stable"));
        let stats = get(&client, w.admin, "/stats").await;
        let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
        let state = stats["routes"][0]["rollout"]["state"].clone();
        if state != "progressing" {
            break state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still progressing after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(state, "rolled_back");
    assert_eq!(canary.hits(), 0, "the canary never got a request");
}
