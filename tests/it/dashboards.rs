//! The Grafana dashboard and the Prometheus alert rules under deploy/, tested for real: a real
//! Prometheus (Debian's `prometheus`; CI installs it) scrapes weir under load and answers every
//! panel's query, the alert rules load and evaluate in it, and `promtool test rules` runs a
//! fixture for every alert.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Metrics whose series appear only once something happened: a query that needs one may come
/// back empty while it is absent from /metrics; from the moment it appears, it must not. Every
/// other metric (`weir_build_info`, `weir_config_last_reload_successful`,
/// `weir_client_errors_total` among them) must give series from the first scrape.
const NOT_YET_EXPORTED: [&str; 1] = [
    // A series per (route, result) from that route's first check.
    "weir_rollout_checks_total",
];

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("deploy/grafana/weir.json")).unwrap())
        .unwrap()
}

/// Every query of the dashboard: (panel title, PromQL as Grafana would send it, with the
/// template variables at "All" and the rate interval at 10 s). Template variables'
/// `label_values(SELECTOR, LABEL)` become `count by (LABEL) (SELECTOR)`.
fn dashboard_queries() -> Vec<(String, String)> {
    let d = dashboard();
    let grafana = |expr: &str| {
        expr.replace("$__rate_interval", "10s")
            .replace("$route", ".*")
            .replace("$backend", ".*")
    };
    let mut queries = Vec::new();
    for v in d["templating"]["list"].as_array().unwrap() {
        let Some(q) = v["query"]["query"].as_str() else {
            continue;
        };
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: {q}", v["name"]));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        queries.push((
            format!("variable {}", v["name"]),
            grafana(&format!("count by ({}) ({selector})", label.trim())),
        ));
    }
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            queries.push((
                p["title"].as_str().unwrap().to_owned(),
                grafana(t["expr"].as_str().unwrap()),
            ));
        }
    }
    queries
}

fn alert_rules() -> Vec<(String, String)> {
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            out.push((
                rule["alert"].as_str().unwrap().to_owned(),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// The `weir_*` metric families a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("weir_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

/// The metric names of the tables in docs/OPERATIONS.md and in SPEC.md (`../shared`, beside
/// the repository, as CI lays it out).
fn documented_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for doc in [
        root().join("docs/OPERATIONS.md"),
        root().join("../shared/SPEC.md"),
    ] {
        let Ok(text) = std::fs::read_to_string(&doc) else {
            continue;
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("| `weir_") {
                names.insert(format!("weir_{}", &rest[..rest.find('`').unwrap()]));
            }
        }
    }
    names
}

#[test]
fn dashboard_and_alerts_use_only_documented_metric_names() {
    let documented = documented_metrics();
    assert!(documented.contains("weir_requests_total"), "{documented:?}");
    let mut used = BTreeSet::new();
    for (_, q) in dashboard_queries().iter().chain(alert_rules().iter()) {
        used.extend(metric_names(q));
    }
    assert!(used.len() >= 12, "{used:?}");
    let unknown: Vec<&String> = used
        .iter()
        .filter(|n| !documented.contains(*n) && !NOT_YET_EXPORTED.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "not in docs/OPERATIONS.md or SPEC.md: {unknown:?}"
    );
}

#[test]
fn every_alert_has_a_promtool_fixture_where_it_fires_and_the_fixtures_pass() {
    let fixtures: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/alerts_test.yml")).unwrap(),
    )
    .unwrap();
    let mut firing = BTreeSet::new();
    for test in fixtures["tests"].as_sequence().unwrap() {
        for case in test["alert_rule_test"].as_sequence().unwrap() {
            if case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
            {
                firing.insert(case["alertname"].as_str().unwrap().to_owned());
            }
        }
    }
    let alerts: BTreeSet<String> = alert_rules().into_iter().map(|(name, _)| name).collect();
    let untested: Vec<&String> = alerts.difference(&firing).collect();
    assert!(
        untested.is_empty(),
        "alerts without a firing fixture: {untested:?}"
    );
    for args in [
        vec!["check", "rules", "deploy/prometheus/alerts.yml"],
        vec!["test", "rules", "deploy/prometheus/alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(root())
            .output()
            .expect("promtool is installed (apt-get install prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn every_dashboard_query_returns_series_from_prometheus_scraping_weir_under_load() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let dead = closed_port().await;
    // The stable upstream has a dead endpoint that outlier detection ejects; the route has a
    // rollout (at its first step for the whole test); the admin history gets a refusal.
    let yaml = config(
        &[("stable", &[stable.address, dead]), ("canary", &[canary.address])],
        "  - name: app\n    backends:\n      - { upstream: stable, weight: 100 }\n      - { upstream: canary, weight: 0 }\n\
         \x20   rollout: { canary: canary, steps: [10, 100], interval: 1h }\n",
    )
    .replace(
        &format!("    endpoints: [\"{}\", \"{dead}\"]\n", stable.address),
        &format!(
            "    endpoints: [\"{}\", \"{dead}\"]\n    outlier: {{ consecutive_failures: 1, ejection: 5m }}\n",
            stable.address
        ),
    );
    let w = weir(&yaml).await;

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, address) = (stop.clone(), w.address);
        tokio::spawn(async move {
            let client = http1_client();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                get(&client, address, "/").await;
            }
        })
    };

    let prometheus = Prometheus::with_rules("weir", &root().join("deploy/prometheus/alerts.yml"));
    prometheus.set_targets(&[w.admin]);
    prometheus.ready().await;
    // Enough scrapes for every rate() over 10 s: at least five samples of weir's series.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let data = prometheus
            .query("count_over_time(weir_backend_weight{backend=\"canary\"}[1m])")
            .await;
        let samples = data["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        if samples >= Some(5.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape weir within 60 s: {data}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A refused reload, after Prometheus has seen the counters (an increase needs two samples).
    let good = std::fs::read_to_string(&w.path).unwrap();
    std::fs::write(&w.path, "routes: [").unwrap();
    assert!(reload(&w).await.is_err());
    std::fs::write(&w.path, &good).unwrap();

    let exported = get(&http1_client(), w.admin, "/metrics")
        .await
        .text()
        .to_owned();
    let mut empty = Vec::new();
    let queries = dashboard_queries();
    for (panel, q) in &queries {
        let data = prometheus.query(q).await;
        let series = data["result"].as_array().map_or(0, Vec::len);
        if series > 0 {
            continue;
        }
        let pending: Vec<&str> = NOT_YET_EXPORTED
            .iter()
            .copied()
            .filter(|m| q.contains(m) && !exported.contains(&format!("\n{m}")))
            .collect();
        if pending.is_empty() {
            empty.push(format!("{panel}: {q}"));
        } else {
            println!("allowed empty until weir exports {pending:?}: {panel}");
        }
    }
    assert!(
        empty.is_empty(),
        "panel queries with no series:\n{}",
        empty.join("\n")
    );

    // The alert rules loaded and evaluate without an error, and the two alerts that are true
    // of this weir (the endpoint it ejected, the refused reload) become pending or firing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rules = loop {
        let a = get(&http1_client(), prometheus.address, "/api/v1/rules").await;
        let answer: Value = serde_json::from_slice(&a.body).unwrap();
        let rules: Vec<Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let healthy = !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok");
        let active: BTreeSet<&str> = rules
            .iter()
            .filter(|r| r["state"] != "inactive")
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        if healthy && active.contains("WeirEndpointEjected") && active.contains("WeirConfigRefused")
        {
            break rules;
        }
        assert!(
            Instant::now() < deadline,
            "rules unhealthy or inactive: {answer:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rules.len(), alert_rules().len());

    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    println!(
        "{} dashboard queries answered, {} alert rules healthy",
        queries.len(),
        rules.len()
    );
}
