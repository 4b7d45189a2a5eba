//! Which backend a request reaches: weights, host and path matching, no match.

use http::StatusCode;

use crate::support::*;

#[tokio::test]
async fn ninety_ten_split_is_within_five_standard_deviations() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&split_config(stable.address, canary.address, 90, 10)).await;
    let counts = tally(w.address, 2_000).await;
    // Binomial: n = 2000, p = 0.1, sd = sqrt(2000 * 0.1 * 0.9) = 13.4; 5 sd = 67.
    let c = counts.get("canary").copied().unwrap_or(0) as i64;
    assert!((c - 200).abs() <= 67, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 2_000);
    assert_eq!(stable.hits() + canary.hits(), 2_000);
}

#[tokio::test]
async fn canary_weight_zero_sends_no_traffic() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&split_config(stable.address, canary.address, 100, 0)).await;
    let counts = tally(w.address, 300).await;
    assert_eq!(counts.get("stable"), Some(&300), "{counts:?}");
    assert_eq!(canary.hits(), 0);
}

#[tokio::test]
async fn stable_weight_zero_sends_everything_to_the_canary() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&split_config(stable.address, canary.address, 0, 100)).await;
    let counts = tally(w.address, 300).await;
    assert_eq!(counts.get("canary"), Some(&300), "{counts:?}");
    assert_eq!(stable.hits(), 0);
}

#[tokio::test]
async fn three_way_split_follows_the_weights() {
    let (w, _upstreams) = three_way([50, 30, 20]).await;
    let counts = tally(w.address, 3_000).await;
    // n = 3000; sd <= sqrt(3000 * 0.25) = 27.4 for every share; allow 5 sd = 137.
    for (name, want) in [("a", 1_500i64), ("b", 900), ("c", 600)] {
        let got = counts.get(name).copied().unwrap_or(0) as i64;
        assert!((got - want).abs() <= 137, "{name}: {counts:?}");
    }
}

#[tokio::test]
async fn endpoints_of_an_upstream_share_its_traffic() {
    let (e1, e2) = (upstream("one").await, upstream("two").await);
    let yaml = config(
        &[("app", &[e1.address, e2.address])],
        "  - name: app\n    backends:\n      - { upstream: app, weight: 1 }\n",
    );
    let w = weir(&yaml).await;
    let counts = tally(w.address, 200).await;
    // Round robin: each endpoint gets half, give or take the requests in flight.
    for name in ["one", "two"] {
        let got = counts.get(name).copied().unwrap_or(0);
        assert!((80..=120).contains(&got), "{counts:?}");
    }
}

#[tokio::test]
async fn routes_match_by_host_and_path_in_file_order() {
    let exact = upstream("exact").await;
    let wildcard = upstream("wildcard").await;
    let api = upstream("api").await;
    let yaml = config(
        &[
            ("exact", &[exact.address]),
            ("wildcard", &[wildcard.address]),
            ("api", &[api.address]),
        ],
        "  - name: exact\n    match: { host: app.example.com }\n    backends: [{ upstream: exact, weight: 1 }]\n\
         \x20 - name: wildcard\n    match: { host: \"*.example.com\", path_prefix: /api }\n    backends: [{ upstream: wildcard, weight: 1 }]\n\
         \x20 - name: api\n    match: { path_prefix: /api }\n    backends: [{ upstream: api, weight: 1 }]\n",
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    for (host, path, want) in [
        ("app.example.com", "/api/x", Some("exact")),
        ("APP.example.com:8080", "/", Some("exact")),
        ("b.example.com", "/api", Some("wildcard")),
        ("b.example.com", "/api/v1", Some("wildcard")),
        ("b.example.com", "/apix", None),
        ("example.com", "/api/v1", Some("api")),
        ("other.org", "/api/", Some("api")),
        ("other.org", "/", None),
    ] {
        let req = http::Request::get(format!("http://{}{path}", w.address))
            .header("host", host)
            .body(Default::default())
            .unwrap();
        let a = send(&client, req).await;
        match want {
            Some(name) => {
                assert_eq!(a.status, StatusCode::OK, "{host}{path}");
                assert_eq!(a.text(), name, "{host}{path}");
            }
            None => assert_eq!(a.status, StatusCode::NOT_FOUND, "{host}{path}"),
        }
    }
}
