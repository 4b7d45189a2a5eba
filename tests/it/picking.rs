//! How a backend is picked beyond plain weights: smooth round robin, sticky keys, overrides.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::Full;

use crate::support::*;

fn route_with(extra: &str, ws: u32, wc: u32) -> String {
    format!(
        "  - name: app\n{extra}    backends:\n      - {{ upstream: stable, weight: {ws} }}\n      - {{ upstream: canary, weight: {wc} }}\n"
    )
}

/// Sends one GET per (header, value) set and returns the upstream that answered each.
async fn answers(
    address: std::net::SocketAddr,
    requests: Vec<(String, Vec<(&'static str, String)>)>,
) -> Vec<String> {
    let client = http1_client();
    futures_util::stream::iter(requests)
        .map(|(path, headers)| {
            let client = client.clone();
            async move {
                let mut req = Request::get(format!("http://{address}{path}"));
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                send(&client, req.body(Full::new(Bytes::new())).unwrap())
                    .await
                    .text()
                    .to_owned()
            }
        })
        .buffered(16)
        .collect()
        .await
}

#[tokio::test]
async fn round_robin_gives_exact_shares() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let yaml = config(
        &[("stable", &[stable.address]), ("canary", &[canary.address])],
        &route_with("    pick: round_robin\n", 90, 10),
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    let mut counts = BTreeMap::new();
    for _ in 0..1_000 {
        *counts
            .entry(get(&client, w.address, "/").await.text().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([("canary".to_owned(), 100), ("stable".to_owned(), 900)])
    );
}

fn user_requests(keys: usize, repeats: usize) -> Vec<(String, Vec<(&'static str, String)>)> {
    (0..repeats)
        .flat_map(|_| (0..keys).map(|k| ("/".to_owned(), vec![("x-user-id", format!("user-{k}"))])))
        .collect()
}

#[tokio::test]
async fn sticky_keys_never_flip_move_only_to_the_canary_and_agree_across_instances() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let ups: &[(&str, &[std::net::SocketAddr])] =
        &[("stable", &[stable.address]), ("canary", &[canary.address])];
    let sticky = "    sticky: { header: x-user-id }\n";
    let w = weir(&config(ups, &route_with(sticky, 90, 10))).await;
    let other = weir(&config(ups, &route_with(sticky, 90, 10))).await;

    // 1,000 keys, each sent three times.
    let first = answers(w.address, user_requests(1_000, 3)).await;
    for k in 0..1_000 {
        assert_eq!(first[k], first[k + 1_000], "user-{k} flipped");
        assert_eq!(first[k], first[k + 2_000], "user-{k} flipped");
    }
    let on_canary = first[..1_000].iter().filter(|a| *a == "canary").count();
    // p = 0.1 over 1,000 keys: sd = 9.5; allow 5 sd.
    assert!((on_canary as i64 - 100).abs() <= 48, "{on_canary}");
    assert_eq!(
        answers(other.address, user_requests(1_000, 1)).await,
        first[..1_000],
        "the instances disagree"
    );

    std::fs::write(&w.path, config(ups, &route_with(sticky, 50, 50))).unwrap();
    reload(&w).await.unwrap();
    let after = answers(w.address, user_requests(1_000, 1)).await;
    let mut moved = 0;
    for k in 0..1_000 {
        if first[k] == "canary" {
            assert_eq!(after[k], "canary", "user-{k} moved back to stable");
        } else if after[k] == "canary" {
            moved += 1;
        }
    }
    assert!(moved > 300, "raising the canary to 50 moved {moved} keys");
    // Requests without the key are still split by weight, now 50/50: p = 0.5 over 200 requests
    // has sd = 7.1; allow 5 sd (35) either way.
    let counts = tally(w.address, 200).await;
    for version in ["stable", "canary"] {
        let n = counts.get(version).copied().unwrap_or(0) as i64;
        assert!((n - 100).abs() <= 35, "{counts:?}");
    }
}

#[tokio::test]
async fn a_sticky_cookie_keeps_a_user_on_one_backend() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let ups: &[(&str, &[std::net::SocketAddr])] =
        &[("stable", &[stable.address]), ("canary", &[canary.address])];
    let w = weir(&config(
        ups,
        &route_with("    sticky: { cookie: session }\n", 50, 50),
    ))
    .await;
    let requests = (0..3)
        .flat_map(|_| {
            (0..100).map(|k| {
                (
                    "/".to_owned(),
                    vec![("cookie", format!("theme=dark; session=s{k}"))],
                )
            })
        })
        .collect();
    let got = answers(w.address, requests).await;
    for k in 0..100 {
        assert_eq!(got[k], got[k + 100]);
        assert_eq!(got[k], got[k + 200]);
    }
}

#[tokio::test]
async fn overrides_match_header_cookie_query_and_presence_in_order() {
    let (stable, canary, debug) = (
        upstream("stable").await,
        upstream("canary").await,
        upstream("debug").await,
    );
    let ups: &[(&str, &[std::net::SocketAddr])] = &[
        ("stable", &[stable.address]),
        ("canary", &[canary.address]),
        ("debug", &[debug.address]),
    ];
    let overrides = "    overrides:\n\
        \x20     - { match: { header: { x-canary: always } }, upstream: canary }\n\
        \x20     - { match: { cookie: { beta: \"1\" } }, upstream: canary }\n\
        \x20     - { match: { query: { version: canary } }, upstream: canary }\n\
        \x20     - { match: { header: { x-debug: { present: true } } }, upstream: debug }\n\
        \x20     - { match: { header: { x-canary: never } }, upstream: debug }\n";
    let w = weir(&config(ups, &route_with(overrides, 100, 0))).await;
    let h = |k: &'static str, v: &str| vec![(k, v.to_owned())];
    type Case = (String, Vec<(&'static str, String)>, &'static str);
    let cases: Vec<Case> = vec![
        ("/".into(), vec![], "stable"),
        ("/".into(), h("x-canary", "always"), "canary"),
        ("/".into(), h("x-canary", "sometimes"), "stable"),
        ("/".into(), h("cookie", "a=b; beta=1"), "canary"),
        ("/".into(), h("cookie", "beta=2"), "stable"),
        ("/?version=canary".into(), vec![], "canary"),
        ("/?x=1&version=canary".into(), vec![], "canary"),
        ("/?version=canaryx".into(), vec![], "stable"),
        ("/".into(), h("x-debug", ""), "debug"),
        // The first matching override wins.
        (
            "/".into(),
            vec![("x-canary", "always".into()), ("x-debug", "1".into())],
            "canary",
        ),
        ("/".into(), h("x-canary", "never"), "debug"),
    ];
    let requests = cases
        .iter()
        .map(|(p, hs, _)| (p.clone(), hs.clone()))
        .collect();
    let got = answers(w.address, requests).await;
    for ((path, headers, want), got) in cases.iter().zip(&got) {
        assert_eq!(got, want, "{path} {headers:?}");
    }
    // The override-only upstream is a backend of weight 0 in /stats, with its own counts.
    let stats: serde_json::Value =
        serde_json::from_slice(&get(&http1_client(), w.admin, "/stats").await.body).unwrap();
    let debug_row = &stats["routes"][0]["backends"][2];
    assert_eq!(
        (debug_row["name"].as_str(), debug_row["weight"].as_u64()),
        (Some("debug"), Some(0))
    );
    assert_eq!(debug_row["requests"], 2);
}
