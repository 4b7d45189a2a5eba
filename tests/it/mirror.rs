//! Shadow traffic: the mirror upstream gets its share of copies, bodies included, and a slow,
//! dead or saturated mirror never changes what the real client gets.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

fn mirrored(stable: std::net::SocketAddr, shadow: std::net::SocketAddr, percent: f64) -> String {
    config(
        &[("stable", &[stable]), ("shadow", &[shadow])],
        &format!(
            "  - name: app\n    mirror: {{ upstream: shadow, percent: {percent} }}\n    backends:\n      - {{ upstream: stable, weight: 1 }}\n"
        ),
    )
}

/// Waits until `count` stops changing for 300 ms (copies are sent on tasks of their own).
async fn settled(count: impl Fn() -> u64) -> u64 {
    let mut last = count();
    let mut unchanged = 0;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = count();
        if now == last {
            unchanged += 1;
            if unchanged == 6 {
                return now;
            }
        } else {
            (last, unchanged) = (now, 0);
        }
    }
    last
}

#[tokio::test]
async fn the_mirror_gets_its_percent_of_copies_and_answers_are_discarded() {
    let (stable, shadow) = (upstream("stable").await, upstream("shadow").await);
    let w = weir(&mirrored(stable.address, shadow.address, 20.0)).await;
    let counts = tally(w.address, 2_000).await;
    assert_eq!(
        counts.get("stable"),
        Some(&2_000),
        "clients only see the primary"
    );
    let copies = settled(|| shadow.hits()).await;
    // Binomial(2000, 0.2): mean 400, standard deviation 17.9; 5 deviations is +-90.
    assert!((310..=490).contains(&copies), "{copies} copies");
    let counted = metric(
        &w,
        "weir_mirror_requests_total",
        &[("route", "app"), ("backend", "shadow"), ("code", "200")],
    )
    .await;
    assert_eq!(counted, copies as f64);
    // Shadow traffic stays out of the real traffic's series.
    let real = metric(
        &w,
        "weir_requests_total",
        &[("route", "app"), ("backend", "shadow"), ("code", "200")],
    )
    .await;
    assert_eq!(real, 0.0);
}

#[tokio::test]
async fn a_copy_carries_method_path_and_body() {
    let (stable, shadow) = (upstream("stable").await, upstream("shadow").await);
    let w = weir(&mirrored(stable.address, shadow.address, 100.0)).await;
    let req = Request::post(format!("http://{}/record/order?id=7", w.address))
        .body(Full::new(Bytes::from_static(b"{\"qty\": 3}")))
        .unwrap();
    let a = send(&http1_client(), req).await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "stable"));
    settled(|| shadow.hits()).await;
    let primary = stable.recorded.lock().unwrap().clone();
    let copy = shadow.recorded.lock().unwrap().clone();
    assert_eq!(copy, primary);
    assert_eq!(&copy[0].2[..], b"{\"qty\": 3}");
}

#[tokio::test]
async fn a_body_over_the_limit_goes_to_the_primary_only() {
    let (stable, shadow) = (upstream("stable").await, upstream("shadow").await);
    let w = weir(&mirrored(stable.address, shadow.address, 100.0)).await;
    let big = Bytes::from(vec![b'x'; 100 * 1024]);
    let req = Request::post(format!("http://{}/echo", w.address))
        .body(Full::new(big.clone()))
        .unwrap();
    let a = send(&http1_client(), req).await;
    assert_eq!(a.body, big);
    let skipped = metric(
        &w,
        "weir_mirror_dropped_total",
        &[
            ("route", "app"),
            ("backend", "shadow"),
            ("reason", "body_too_large"),
        ],
    )
    .await;
    assert_eq!(skipped, 1.0);
    assert_eq!(shadow.hits(), 0);
}

#[tokio::test]
async fn a_dead_mirror_changes_nothing_for_the_client() {
    let (stable, dead) = (upstream("stable").await, closed_port().await);
    let w = weir(&mirrored(stable.address, dead, 100.0)).await;
    let counts = tally(w.address, 200).await;
    assert_eq!(counts.get("stable"), Some(&200));
    assert_eq!(mirror_count(&w, "502", 200.0).await, 200.0);
}

/// The shadow backend's count for `code` once it reaches `want`, or after 10 s whatever it is.
async fn mirror_count(w: &Weir, code: &str, want: f64) -> f64 {
    let labels = [("route", "app"), ("backend", "shadow"), ("code", code)];
    let mut v = 0.0;
    for _ in 0..500 {
        v = metric(w, "weir_mirror_requests_total", &labels).await;
        if v >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    v
}

#[tokio::test]
async fn a_mirror_that_never_answers_is_bounded_and_never_delays_the_client() {
    let (stable, hole) = (upstream("stable").await, blackhole().await);
    let w = weir(&mirrored(stable.address, hole, 100.0)).await;
    // Each copy waits for the route timeout (30 s), so copies pile up: past 256 in flight the
    // rest are dropped. Every client answer arrives while its copy is still waiting.
    let client = http1_client();
    let answers: Vec<StatusCode> = futures_util::stream::iter(0..400)
        .map(|_| {
            let client = client.clone();
            async move { get(&client, w.address, "/").await.status }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK));
    let dropped = metric(
        &w,
        "weir_mirror_dropped_total",
        &[("route", "app"), ("backend", "shadow"), ("reason", "full")],
    )
    .await;
    assert_eq!(
        dropped,
        (400 - weir::proxy::pool::MAX_MIRRORS_IN_FLIGHT) as f64
    );
    let answered = metric(
        &w,
        "weir_mirror_requests_total",
        &[("route", "app"), ("backend", "shadow")],
    )
    .await;
    assert_eq!(answered, 0.0, "no copy has had an answer yet");
}
