//! The admin API and metrics, read the way Prometheus, Flagger and an operator read them.

use std::process::Command;

use http::StatusCode;
use serde_json::Value;

use crate::support::*;

async fn admin_get(w: &Weir, path: &str) -> Answer {
    get(&http1_client(), w.admin, path).await
}

async fn admin_json(w: &Weir, path: &str) -> Value {
    let a = admin_get(w, path).await;
    assert_eq!(a.status, StatusCode::OK, "{path}");
    serde_json::from_slice(&a.body).unwrap()
}

#[tokio::test]
async fn request_counts_in_metrics_equal_what_each_backend_served() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&split_config(stable.address, canary.address, 90, 10)).await;
    tally(w.address, 500).await;
    let text = admin_get(&w, "/metrics").await.text().to_owned();
    promtool_accepts(&text);
    for (name, up) in [("stable", &stable), ("canary", &canary)] {
        let labels = [("route", "app"), ("backend", name)];
        let with_code = [("route", "app"), ("backend", name), ("code", "200")];
        let served = up.hits() as f64;
        assert_eq!(
            sample(&text, "weir_requests_total", &with_code),
            Some(served),
            "{text}"
        );
        assert_eq!(
            sample(&text, "weir_request_duration_seconds_count", &labels),
            Some(served)
        );
        assert_eq!(
            sample(&text, "weir_backend_success_ratio", &labels),
            Some(1.0)
        );
    }
    assert_eq!(stable.hits() + canary.hits(), 500);
    let weight = |b| {
        sample(
            &text,
            "weir_backend_weight",
            &[("route", "app"), ("backend", b)],
        )
    };
    assert_eq!(
        (weight("stable"), weight("canary")),
        (Some(90.0), Some(10.0))
    );
    assert_eq!(
        sample(&text, "weir_config_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
    assert!(
        sample(
            &text,
            "weir_config_last_reload_success_timestamp_seconds",
            &[]
        )
        .unwrap()
            > 1.7e9
    );
    assert!(sample(&text, "weir_active_connections", &[("listener", "main")]).is_some());
    let buckets = text
        .lines()
        .filter(|l| {
            l.starts_with("weir_request_duration_seconds_bucket{")
                && l.contains("backend=\"stable\"")
        })
        .count();
    assert_eq!(buckets, 33, "32 bounds from 0.5 ms to 30 s, and +Inf");
}

#[tokio::test]
async fn a_backend_failing_half_its_requests_has_success_ratio_one_half() {
    let (flaky, healthy) = (upstream("flaky").await, upstream("healthy").await);
    let yaml = config(
        &[("flaky", &[flaky.address]), ("healthy", &[healthy.address])],
        "  - name: flaky\n    match: { path_prefix: /status }\n    backends: [{ upstream: flaky, weight: 1 }]\n\
         \x20 - name: healthy\n    backends: [{ upstream: healthy, weight: 1 }]\n",
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    for i in 0..40 {
        let path = if i % 2 == 0 {
            "/status/500"
        } else {
            "/status/200"
        };
        get(&client, w.address, path).await;
        get(&client, w.address, "/").await;
    }
    let stats = admin_json(&w, "/stats").await;
    let rate = |route: usize| {
        stats["routes"][route]["backends"][0]["success_rate"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(rate(0), 0.5, "{stats:#}");
    assert_eq!(rate(1), 1.0);
    assert_eq!(stats["routes"][0]["backends"][0]["requests"], 40);
    let text = admin_get(&w, "/metrics").await.text().to_owned();
    let ratio = |b| sample(&text, "weir_backend_success_ratio", &[("backend", b)]);
    assert_eq!((ratio("flaky"), ratio("healthy")), (Some(0.5), Some(1.0)));
    let codes = |c| {
        sample(
            &text,
            "weir_requests_total",
            &[("backend", "flaky"), ("code", c)],
        )
    };
    assert_eq!((codes("500"), codes("200")), (Some(20.0), Some(20.0)));
}

#[tokio::test]
async fn weirs_own_502_and_504_count_as_failures_with_an_error_kind() {
    let dead = closed_port().await;
    let slow = upstream("slow").await;
    let yaml = config(
        &[("dead", &[dead]), ("slow", &[slow.address])],
        "  - name: dead\n    match: { path_prefix: /dead }\n    backends: [{ upstream: dead, weight: 1 }]\n\
         \x20 - name: slow\n    timeout: 100ms\n    backends: [{ upstream: slow, weight: 1 }]\n",
    );
    let w = weir(&yaml).await;
    let client = http1_client();
    for _ in 0..3 {
        assert_eq!(
            get(&client, w.address, "/dead").await.status,
            StatusCode::BAD_GATEWAY
        );
    }
    assert_eq!(
        get(&client, w.address, "/slow?ms=2000").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    let text = admin_get(&w, "/metrics").await.text().to_owned();
    promtool_accepts(&text);
    let errors = |b, k| {
        sample(
            &text,
            "weir_upstream_errors_total",
            &[("backend", b), ("kind", k)],
        )
    };
    assert_eq!(errors("dead", "connect"), Some(3.0));
    assert_eq!(errors("slow", "timeout"), Some(1.0));
    let requests = |b, c| sample(&text, "weir_requests_total", &[("backend", b), ("code", c)]);
    assert_eq!(requests("dead", "502"), Some(3.0));
    assert_eq!(requests("slow", "504"), Some(1.0));
    let ratio = |b| sample(&text, "weir_backend_success_ratio", &[("backend", b)]);
    assert_eq!((ratio("dead"), ratio("slow")), (Some(0.0), Some(0.0)));
}

#[tokio::test]
async fn stats_shares_sum_to_one_and_latencies_are_reported() {
    let (w, _upstreams) = three_way([5, 3, 2]).await;
    tally(w.address, 300).await;
    let stats = admin_json(&w, "/stats").await;
    let backends = stats["routes"][0]["backends"].as_array().unwrap();
    let shares: f64 = backends.iter().map(|b| b["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9, "{stats:#}");
    assert_eq!(backends[0]["share"], 0.5);
    let requests: u64 = backends
        .iter()
        .map(|b| b["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 300);
    for b in backends {
        let l = &b["latency_ms"];
        let (p50, p99) = (l["p50"].as_f64().unwrap(), l["p99"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99, "{b:#}");
    }
    assert_eq!(stats["routes"][0]["rollout"], Value::Null);
}

fn sha256_of(path: &std::path::Path) -> String {
    weir::reload::revision::sha256_hex(&std::fs::read(path).unwrap())
}

#[tokio::test]
async fn config_shows_the_file_sha256_and_the_effective_config() {
    let up = upstream("u").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let c = admin_json(&w, "/config").await;
    assert_eq!(c["revision"]["sha256"], sha256_of(&w.path));
    assert_eq!(c["revision"]["git_commit"], Value::Null);
    assert!(c["revision"]["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(c["last_reload"]["result"], "success");
    assert_eq!(c["config"]["routes"][0]["name"], "app");
    // Defaults are filled in.
    assert_eq!(c["config"]["routes"][0]["timeout"], "30s");
    assert_eq!(c["config"]["limits"]["max_header_bytes"], 65536);
    assert_eq!(c["config"]["upstreams"][0]["protocol"], "http1");
}

#[tokio::test]
async fn config_names_the_git_commit_of_the_work_tree() {
    let up = upstream("u").await;
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("git is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(
        dir.path().join("weir.yaml"),
        split_config(up.address, up.address, 1, 0),
    )
    .unwrap();
    git(&["add", "weir.yaml"]);
    git(&["commit", "-q", "-m", "weights"]);
    let head = git(&["rev-parse", "HEAD"]);
    let yaml = std::fs::read_to_string(dir.path().join("weir.yaml")).unwrap();
    let w = weir_in(dir, &yaml).await;
    let c = admin_json(&w, "/config").await;
    assert_eq!(c["revision"]["git_commit"], head.as_str());
    assert_eq!(
        admin_json(&w, "/history").await[0]["git_commit"],
        head.as_str()
    );
}

#[tokio::test]
async fn history_records_weight_changes_and_refusals_newest_first() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&split_config(stable.address, canary.address, 90, 10)).await;
    let reloader = &w.running.reloader;

    std::fs::write(
        &w.path,
        split_config(stable.address, canary.address, 75, 25),
    )
    .unwrap();
    reload(&w).await.unwrap();
    let good_sha = sha256_of(&w.path);
    std::fs::write(&w.path, "routes: [").unwrap();
    assert!(reload(&w).await.is_err());
    // The same content again is not a new attempt.
    assert!(reloader.reload().await.is_ok_and(|changed| !changed));

    let h = admin_json(&w, "/history").await;
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 3, "{h:#?}");
    assert_eq!(h[0]["result"], "failure");
    assert!(
        h[0]["error"].as_str().unwrap().contains("invalid YAML"),
        "{:#}",
        h[0]
    );
    assert_eq!(h[1]["result"], "success");
    assert_eq!(h[1]["sha256"], good_sha);
    assert_eq!(
        h[1]["weights"],
        serde_json::json!([
            { "route": "app", "backend": "stable", "from": 90, "to": 75 },
            { "route": "app", "backend": "canary", "from": 10, "to": 25 },
        ])
    );
    assert_eq!(h[2]["weights"][0]["from"], Value::Null);

    let c = admin_json(&w, "/config").await;
    assert_eq!(c["last_reload"]["result"], "failure");
    assert_eq!(
        c["revision"]["sha256"], good_sha,
        "the good config still serves"
    );
    let text = admin_get(&w, "/metrics").await.text().to_owned();
    assert_eq!(
        sample(&text, "weir_config_reloads_total", &[("result", "failure")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "weir_config_reloads_total", &[("result", "success")]),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "weir_backend_weight", &[("backend", "canary")]),
        Some(25.0)
    );
}

#[tokio::test]
async fn health_readiness_unknown_paths_and_wrong_methods() {
    let up = upstream("u").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    assert_eq!(admin_get(&w, "/healthz").await.status, StatusCode::OK);
    assert_eq!(admin_get(&w, "/readyz").await.status, StatusCode::OK);
    assert_eq!(admin_get(&w, "/nope").await.status, StatusCode::NOT_FOUND);
    let post = http::Request::post(format!("http://{}/config", w.admin))
        .body(Default::default())
        .unwrap();
    assert_eq!(
        send(&http1_client(), post).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn history_keeps_the_configured_number_of_attempts() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let with_limit = |ws, wc| {
        split_config(stable.address, canary.address, ws, wc).replace(
            "admin:\n  address: 127.0.0.1:0\n",
            "admin:\n  address: 127.0.0.1:0\n  history: 3\n",
        )
    };
    let w = weir(&with_limit(90, 10)).await;
    for canary_weight in [20, 30, 40, 50] {
        std::fs::write(&w.path, with_limit(100 - canary_weight, canary_weight)).unwrap();
        reload(&w).await.unwrap();
    }
    let h = admin_json(&w, "/history").await;
    let to: Vec<&Value> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["weights"][1]["to"])
        .collect();
    assert_eq!(to, [50, 40, 30], "{h:#}");
}
