//! Retries, the retry budget and passive outlier ejection, against endpoints that refuse
//! connections, answer 503, or come back after being ejected.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

fn route(extra: &str) -> String {
    format!("  - name: app\n{extra}    backends:\n      - {{ upstream: app, weight: 1 }}\n")
}

fn retried(labels_result: &str) -> [(&str, &str); 2] {
    [("backend", "app"), ("result", labels_result)]
}

#[tokio::test]
async fn a_connect_failure_is_retried_on_another_endpoint_but_a_post_is_not() {
    let (dead, live) = (closed_port().await, upstream("live").await);
    let yaml = config(
        &[("app", &[dead, live.address])],
        &route("    retries: { attempts: 2, on: [connect, reset, \"503\"] }\n"),
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    for _ in 0..20 {
        let a = get(&client, w.address, "/").await;
        assert_eq!((a.status, a.text()), (StatusCode::OK, "live"));
    }
    // Round robin sends every other first try to the dead endpoint: 10 retries.
    assert_eq!(
        metric(&w, "weir_upstream_retries_total", &retried("retried")).await,
        10.0
    );
    assert_eq!(live.hits(), 20);

    let mut failed = 0;
    for _ in 0..10 {
        let req = Request::post(format!("http://{}/", w.address))
            .body(Full::new(Bytes::from_static(b"not twice")))
            .unwrap();
        let a = send(&client, req).await;
        match a.status {
            StatusCode::OK => {}
            StatusCode::BAD_GATEWAY => failed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(failed, 5, "every POST that met the dead endpoint failed");
    assert_eq!(
        metric(&w, "weir_upstream_retries_total", &retried("retried")).await,
        10.0,
        "a POST is never retried"
    );
}

#[tokio::test]
async fn a_put_is_retried_with_its_body_and_the_retry_budget_stops_a_storm() {
    // Two endpoints of one upstream; the dead one makes half the first tries fail.
    let (dead, live) = (closed_port().await, upstream("live").await);
    let yaml = config(
        &[("app", &[dead, live.address])],
        &route("    retries: { attempts: 1, on: [connect] }\n"),
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    // A PUT with a body is idempotent: its body is kept and sent again on the retry.
    let req = Request::put(format!("http://{}/record/put", w.address))
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    assert_eq!(send(&client, req).await.status, StatusCode::OK);
    let recorded = live.recorded.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    assert_eq!(&recorded[0].2[..], b"payload");

    // 400 more requests, half of which want a retry: the budget (a reserve of 10, then 1 per 5
    // requests) allows at most 10 + 401 / 5 = 90 retries in all; the rest answer 502.
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..400 {
        *statuses
            .entry(get(&client, w.address, "/").await.status.as_u16())
            .or_insert(0) += 1;
    }
    let retries = metric(&w, "weir_upstream_retries_total", &retried("retried")).await;
    let refused = metric(
        &w,
        "weir_upstream_retries_total",
        &retried("budget_exhausted"),
    )
    .await;
    assert!(retries <= 90.0, "{retries} retries");
    assert!(refused >= 100.0, "{refused} refused, {statuses:?}");
    assert_eq!(
        retries + refused,
        201.0,
        "every failed first try asked once"
    );
    assert_eq!(statuses.get(&502).copied().unwrap_or(0) as f64, refused);
}

#[tokio::test]
async fn an_upstream_503_is_retried_when_listed() {
    // `/status/503` answers 503 on both endpoints: each request is tried 1 + 2 times.
    let (a, b) = (upstream("a").await, upstream("b").await);
    let yaml = config(
        &[("app", &[a.address, b.address])],
        &route("    retries: { attempts: 2, on: [\"503\"] }\n"),
    );
    let w = weir(&yaml).await;
    let answer = get(&http1_client(), w.address, "/status/503").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.hits() + b.hits(), 3);
    assert!(a.hits() >= 1 && b.hits() >= 1, "the retry moved endpoints");
    // A 500 is not in the list: one try.
    let answer = get(&http1_client(), w.address, "/status/500").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.hits() + b.hits(), 4);
}

#[tokio::test]
async fn a_dead_endpoint_is_ejected_and_returns_after_the_ejection() {
    let (dead, live) = (closed_port().await, upstream("live").await);
    let yaml = config(&[("app", &[dead, live.address])], &route("")).replace(
        "    endpoints: [",
        "    outlier: { consecutive_failures: 3, ejection: 1s }\n    endpoints: [",
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    let mut failures = 0;
    for _ in 0..40 {
        if get(&client, w.address, "/").await.status == StatusCode::BAD_GATEWAY {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "three failures in a row eject the endpoint");
    let endpoint = dead.to_string();
    let labels = [("backend", "app"), ("endpoint", endpoint.as_str())];
    assert_eq!(
        metric(&w, "weir_outlier_ejections_total", &labels).await,
        1.0
    );
    assert_eq!(metric(&w, "weir_outlier_ejected", &labels).await, 1.0);

    // The endpoint comes to life; after the ejection it gets traffic again.
    let revived = upstream_at("revived", dead).await;
    // Wait out the 1 s ejection (on the real clock the pool reads), in short steps.
    let ejected = std::time::Instant::now();
    while ejected.elapsed() < std::time::Duration::from_millis(1200) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let counts = tally(w.address, 40).await;
    assert_eq!(counts.get("revived"), Some(&20), "{counts:?}");
    assert_eq!(revived.hits(), 20);
    assert_eq!(metric(&w, "weir_outlier_ejected", &labels).await, 0.0);
}

#[tokio::test]
async fn an_upstream_with_every_endpoint_ejected_answers_503() {
    let dead = closed_port().await;
    let yaml = config(&[("app", &[dead])], &route("")).replace(
        "    endpoints: [",
        "    outlier: { consecutive_failures: 2, ejection: 30s }\n    endpoints: [",
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(get(&client, w.address, "/").await.status.as_u16());
    }
    assert_eq!(seen, [502, 502, 503, 503, 503, 503]);
    let failures = metric(
        &w,
        "weir_requests_total",
        &[("route", "app"), ("backend", "app"), ("code", "503")],
    )
    .await;
    assert_eq!(
        failures, 4.0,
        "a 503 for no healthy endpoint counts for the backend"
    );
}
