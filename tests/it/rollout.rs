//! Automated rollouts. The decisions that wait on intervals (promotion step by step, rollback on
//! latency, no traffic, reloads, resuming from the state file) run weir on a paused clock: the
//! canary's probe is fed as the request path feeds it, time is advanced by whole intervals, and
//! nothing sleeps. What needs the network runs on the real clock with short intervals: a
//! promotion and a fast-fail rollback under real traffic, webhooks and the confirm gate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use weir::metrics::{Probe, latency_bucket};

use crate::support::*;

/// A route `app` over `stable` (weight 90) and `canary` (10) with `rollout` (YAML flow mapping
/// entries after `canary: canary`).
fn rollout_config(stable: SocketAddr, canary: &[SocketAddr], rollout: &str) -> String {
    config(
        &[("stable", &[stable]), ("canary", canary)],
        &format!(
            "  - name: app\n    rollout: {{ canary: canary, {rollout} }}\n    backends:\n      - {{ upstream: stable, weight: 90 }}\n      - {{ upstream: canary, weight: 10 }}\n"
        ),
    )
}

/// GETs to `/` one after another, a pause between them, until stopped (or 60 s).
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

fn traffic(address: SocketAddr, pause: Duration) -> Traffic {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let client = http1_client();
        let started = std::time::Instant::now();
        let mut sent = 0;
        while !flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
            get(&client, address, "/").await;
            sent += 1;
            tokio::time::sleep(pause).await;
        }
        sent
    });
    Traffic { stop, task }
}

impl Traffic {
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

async fn rollout_status(w: &Weir) -> Value {
    rollout_at(w.admin).await
}

/// The `/stats` rollout block of the first route of the weir whose admin API is at `admin`.
async fn rollout_at(admin: SocketAddr) -> Value {
    let a = get(&http1_client(), admin, "/stats").await;
    let stats: Value = serde_json::from_slice(&a.body).unwrap();
    stats["routes"][0]["rollout"].clone()
}

/// Polls `/stats` until the rollout is in `state` (at most 20 s); returns its block.
async fn wait_for(w: &Weir, state: &str) -> Value {
    for _ in 0..1000 {
        let r = rollout_status(w).await;
        if r["state"] == state {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no `{state}` within 20 s: {}", rollout_status(w).await);
}

/// The rollout events in `/history`, oldest first: (event, step, canary_weight).
async fn events(w: &Weir) -> Vec<(String, u64, u64)> {
    let a = get(&http1_client(), w.admin, "/history").await;
    let history: Vec<Value> = serde_json::from_slice(&a.body).unwrap();
    history
        .iter()
        .rev()
        .filter(|h| h["source"] == "rollout")
        .map(|h| {
            let r = &h["rollout"];
            (
                r["event"].as_str().unwrap().to_owned(),
                r["step"].as_u64().unwrap(),
                r["canary_weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn ev(event: &str, step: u64, weight: u64) -> (String, u64, u64) {
    (event.to_owned(), step, weight)
}

#[tokio::test]
async fn a_healthy_canary_under_real_traffic_is_promoted_one_check_per_step() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&rollout_config(
        stable.address,
        &[canary.address],
        "steps: [20, 50, 100], interval: 400ms, min_requests: 5",
    ))
    .await;
    let weights = |w: &Weir| {
        let s = w.running.reloader.snapshots.load_full();
        s.routes[0]
            .backends
            .iter()
            .map(|b| b.weight)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        weights(&w),
        [80, 20],
        "the rollout owns the weights from the start"
    );
    let load = traffic(w.address, Duration::from_millis(2));
    let status = wait_for(&w, "promoted").await;
    load.stop().await;
    assert_eq!(status["canary_weight"], 100);
    assert_eq!(status["failed_checks"], 0);
    assert_eq!(status["last_check"]["verdict"], "passed");
    assert_eq!(
        events(&w).await,
        [
            ev("started", 0, 20),
            ev("step", 1, 50),
            ev("step", 2, 100),
            ev("promoted", 2, 100),
        ]
    );
    assert_eq!(weights(&w), [0, 100]);
    let labels = [("route", "app")];
    assert_eq!(metric(&w, "weir_rollout_state", &labels).await, 2.0);
    let canary_weight = [("route", "app"), ("backend", "canary")];
    assert_eq!(
        metric(&w, "weir_backend_weight", &canary_weight).await,
        100.0
    );
}

#[tokio::test]
async fn a_failing_canary_is_rolled_back_by_fast_fail_within_25_failed_requests() {
    let stable = upstream("stable").await;
    let canary = fixed_upstream(500, Duration::ZERO).await;
    // A 30 s interval: without fast-fail the first check would come after 30 s.
    let w = weir(&rollout_config(
        stable.address,
        &[canary.address],
        "steps: [50, 100], interval: 30s, min_requests: 10",
    ))
    .await;
    let load = traffic(w.address, Duration::from_millis(1));
    let status = wait_for(&w, "rolled_back").await;
    let sent = load.stop().await;
    assert!(
        canary.hits() <= 25,
        "{} failed canary requests of {sent}",
        canary.hits()
    );
    assert!(canary.hits() >= 20, "fast-fail waits for 20 requests");
    assert_eq!(status["canary_weight"], 0);
    assert_eq!(status["last_check"]["verdict"], "failed");
    assert!(
        status["last_check"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("fast-fail"),
        "{status}"
    );
    let before = canary.hits();
    tally(w.address, 50).await;
    assert_eq!(
        canary.hits(),
        before,
        "a rolled-back canary gets no traffic"
    );
    assert_eq!(
        metric(&w, "weir_rollout_state", &[("route", "app")]).await,
        3.0
    );
}

#[tokio::test]
async fn webhooks_get_every_event_and_a_dead_one_holds_nothing_up() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let hook = upstream("hook").await;
    let hole = blackhole().await;
    let w = weir(&rollout_config(
        stable.address,
        &[canary.address],
        &format!(
            "steps: [50, 100], interval: 300ms, min_requests: 3, webhooks: [{{ url: \"http://{hole}/dead\" }}, {{ url: \"http://{}/record/hook\" }}]",
            hook.address
        ),
    ))
    .await;
    let load = traffic(w.address, Duration::from_millis(2));
    wait_for(&w, "promoted").await;
    load.stop().await;
    let mut bodies = Vec::new();
    for _ in 0..250 {
        bodies = hook.recorded.lock().unwrap().clone();
        if bodies.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events: Vec<(String, u64, u64)> = bodies
        .iter()
        .map(|(method, _, body)| {
            assert_eq!(method, "POST");
            let v: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(
                (v["route"].as_str(), v["canary"].as_str()),
                (Some("app"), Some("canary"))
            );
            assert!(v["at"].as_str().unwrap().ends_with('Z'));
            assert!(v["reason"].is_string());
            (
                v["event"].as_str().unwrap().to_owned(),
                v["step"].as_u64().unwrap(),
                v["canary_weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ev("started", 0, 50),
            ev("step", 1, 100),
            ev("promoted", 1, 100)
        ]
    );
}

#[tokio::test]
async fn the_confirm_gate_holds_a_step_until_it_answers_2xx() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let gate = upstream("gate").await;
    let with_gate = |path: &str| {
        rollout_config(
            stable.address,
            &[canary.address],
            &format!(
                "steps: [20, 100], interval: 300ms, min_requests: 3, confirm: {{ url: \"http://{}{path}\" }}",
                gate.address
            ),
        )
    };
    let w = weir(&with_gate("/status/403")).await;
    let load = traffic(w.address, Duration::from_millis(2));
    // Two passing checks, each held by the gate's 403.
    for _ in 0..1000 {
        if gate.hits() >= 2 && rollout_status(&w).await["last_check"]["reason"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = rollout_status(&w).await;
    assert_eq!(
        (held["state"].as_str(), held["step"].as_u64()),
        (Some("progressing"), Some(0))
    );
    assert!(
        gate.hits() >= 2,
        "the gate is asked after each passing check"
    );
    let reason = held["last_check"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("403"), "{held}");

    std::fs::write(&w.path, with_gate("/record/gate")).unwrap();
    reload(&w).await.unwrap();
    wait_for(&w, "promoted").await;
    load.stop().await;
    let asked = gate.recorded.lock().unwrap().clone();
    let body: Value = serde_json::from_slice(&asked[0].2).unwrap();
    assert_eq!(body["event"], "confirm");
    assert_eq!(body["canary_weight"], 100);
}

// === on a paused clock ===

/// A config for the paused-clock tests: the rollout's `steps` with a 30 s interval and 5 requests
/// at least, over upstreams that are never called (the probe is fed directly), the hash poll
/// off (it would be the only other timer).
fn paused_config(canary: &str, extra: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n\
         upstreams:\n  - {{ name: stable, endpoints: [127.0.0.1:9] }}\n  - {{ name: canary, endpoints: [{canary}] }}\n\
         routes:\n  - name: app\n    rollout: {{ canary: canary, interval: 30s, min_requests: 5, {extra} }}\n\
         \x20   backends:\n      - {{ upstream: stable, weight: 90 }}\n      - {{ upstream: canary, weight: 10 }}\n\
         reload: {{ poll_interval: 0s }}\n"
    )
}

const INTERVAL: Duration = Duration::from_secs(30);

/// The canary's probe in the running snapshot.
fn probe(w: &Weir) -> Arc<Probe> {
    let s = w.running.reloader.snapshots.load_full();
    s.backend("app", "canary")
        .and_then(|b| b.probe.clone())
        .expect("a running rollout's canary has a probe")
}

/// `n` canary requests as the request path records them.
fn feed(w: &Weir, n: u64, success: bool, latency: Duration) {
    let p = probe(w);
    for _ in 0..n {
        p.record(success, latency_bucket(latency));
    }
}

/// Lets `d` pass on the paused clock and waits until the control task has run what fell due.
async fn pass(w: &Weir, d: Duration) {
    tokio::time::advance(d).await;
    w.running.reloader.caught_up().await;
}

/// The route's weights in the running snapshot.
fn served_weights(w: &Weir) -> Vec<u32> {
    let s = w.running.reloader.snapshots.load_full();
    s.routes[0].backends.iter().map(|b| b.weight).collect()
}

fn status_of(w: &Weir) -> Value {
    w.running.reloader.rollouts().status("app")
}

/// The rollout events of the history, oldest first.
fn history_events(w: &Weir) -> Vec<(String, u64, u64)> {
    let record = w.running.reloader.record();
    record
        .history
        .iter()
        .rev()
        .filter_map(|h| h.rollout.as_ref())
        .map(|a| {
            (
                a.event.kind.name().to_owned(),
                a.event.step as u64,
                u64::from(a.event.canary_weight),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_healthy_canary_is_promoted_one_check_per_step() {
    let w = weir(&paused_config("127.0.0.1:9", "steps: [20, 50, 100]")).await;
    assert_eq!(served_weights(&w), [80, 20], "the rollout owns the weights");
    for (step, weights) in [(1, [50, 50]), (2, [0, 100])] {
        feed(&w, 10, true, Duration::from_millis(3));
        pass(&w, INTERVAL).await;
        assert_eq!(status_of(&w)["step"], step);
        assert_eq!(served_weights(&w), weights);
    }
    // The last step holds one interval, then the canary is promoted.
    feed(&w, 10, true, Duration::from_millis(3));
    pass(&w, INTERVAL).await;
    let status = status_of(&w);
    assert_eq!(status["state"], "promoted", "{status}");
    assert_eq!(status["canary_weight"], 100);
    assert_eq!(status["failed_checks"], 0);
    assert_eq!(status["last_check"]["verdict"], "passed");
    assert_eq!(
        history_events(&w),
        [
            ev("started", 0, 20),
            ev("step", 1, 50),
            ev("step", 2, 100),
            ev("promoted", 2, 100),
        ]
    );
    assert_eq!(served_weights(&w), [0, 100]);
    let metrics = &w.running.reloader.metrics;
    assert_eq!(metrics.rollout_state.with_label_values(&["app"]).get(), 2);
    // Every check is counted, by its result.
    for (result, n) in [("passed", 3.0), ("failed", 0.0), ("skipped", 0.0)] {
        let labels = [("route", "app"), ("result", result)];
        assert_eq!(checks_counted(&w, &labels), n, "{result}");
    }
    let s = w.running.reloader.snapshots.load_full();
    assert_eq!(
        s.backend("app", "canary").unwrap().metrics.weight.get(),
        100
    );
    // Nothing is measured any more.
    assert!(s.backend("app", "canary").unwrap().probe.is_none());
}

/// `weir_rollout_checks_total{labels}`, read from the registry (no socket under a paused clock).
fn checks_counted(w: &Weir, labels: &[(&str, &str)]) -> f64 {
    let text = w.running.reloader.metrics.render(std::iter::empty());
    sample(
        std::str::from_utf8(&text).unwrap(),
        "weir_rollout_checks_total",
        labels,
    )
    .unwrap_or(0.0)
}

#[tokio::test(start_paused = true)]
async fn a_check_comes_exactly_when_the_interval_ends() {
    let w = weir(&paused_config("127.0.0.1:9", "steps: [20, 100]")).await;
    feed(&w, 10, true, Duration::from_millis(3));
    pass(&w, INTERVAL - Duration::from_millis(1)).await;
    assert_eq!(status_of(&w)["last_check"], Value::Null);
    pass(&w, Duration::from_millis(1)).await;
    assert_eq!(status_of(&w)["step"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_canary_is_rolled_back_after_max_failed_checks() {
    let w = weir(&paused_config(
        "127.0.0.1:9",
        "steps: [50, 100], thresholds: { success_rate: 0.9, p99_latency: 50ms }, max_failed_checks: 2",
    ))
    .await;
    for failed in 1..=2 {
        feed(&w, 10, true, Duration::from_millis(120));
        pass(&w, INTERVAL).await;
        assert_eq!(status_of(&w)["failed_checks"], failed);
    }
    let status = status_of(&w);
    assert_eq!(status["state"], "rolled_back");
    let reason = status["last_check"]["reason"].as_str().unwrap();
    assert!(reason.contains("p99 latency"), "{reason}");
    assert_eq!(
        history_events(&w),
        [ev("started", 0, 50), ev("rolled_back", 0, 0)]
    );
    assert_eq!(served_weights(&w), [100, 0]);
    for (result, n) in [("passed", 0.0), ("failed", 2.0)] {
        let labels = [("route", "app"), ("result", result)];
        assert_eq!(checks_counted(&w, &labels), n, "{result}");
    }
}

#[tokio::test(start_paused = true)]
async fn fast_fail_rolls_back_on_the_failing_request_without_waiting_for_the_interval() {
    let w = weir(&paused_config("127.0.0.1:9", "steps: [50, 100]")).await;
    // 19 failures are not enough (fast_fail.min_requests is 20), the 20th is.
    feed(&w, 19, false, Duration::from_millis(1));
    w.running.reloader.caught_up().await;
    assert_eq!(status_of(&w)["state"], "progressing");
    feed(&w, 1, false, Duration::from_millis(1));
    w.running.reloader.caught_up().await;
    let status = status_of(&w);
    assert_eq!(status["state"], "rolled_back", "{status}");
    assert_eq!(status["last_check"]["requests"], 20);
    assert_eq!(served_weights(&w), [100, 0]);
}

#[tokio::test(start_paused = true)]
async fn without_traffic_a_rollout_neither_advances_nor_fails() {
    let w = weir(&paused_config("127.0.0.1:9", "steps: [10, 100]")).await;
    for _ in 0..5 {
        pass(&w, INTERVAL).await;
    }
    let status = status_of(&w);
    assert_eq!(status["state"], "progressing");
    assert_eq!(status["step"], 0);
    assert_eq!(status["failed_checks"], 0);
    assert_eq!(status["last_check"]["verdict"], "skipped");
    assert_eq!(status["last_check"]["requests"], 0);
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_progress_unless_the_canary_endpoints_change() {
    let steps = "steps: [10, 20, 30, 40, 50, 100]";
    let yaml = paused_config("127.0.0.1:9", steps);
    let w = weir(&yaml).await;
    for _ in 0..2 {
        feed(&w, 10, true, Duration::from_millis(3));
        pass(&w, INTERVAL).await;
    }
    assert_eq!(status_of(&w)["step"], 2);

    // Another weight of the stable and a longer timeout: the rollout goes on where it was.
    std::fs::write(
        &w.path,
        yaml.replace("weight: 90", "weight: 80")
            .replace("    backends:", "    timeout: 20s\n    backends:"),
    )
    .unwrap();
    reload(&w).await.unwrap();
    assert_eq!(status_of(&w)["step"], 2);

    // A new canary version (another endpoint): the rollout starts over.
    std::fs::write(&w.path, paused_config("127.0.0.1:9, 127.0.0.2:9", steps)).unwrap();
    reload(&w).await.unwrap();
    let status = status_of(&w);
    assert_eq!(
        (status["state"].as_str(), status["step"].as_u64()),
        (Some("progressing"), Some(0))
    );
    assert_eq!(history_events(&w).last().unwrap(), &ev("started", 0, 10));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_weir_resumes_from_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let yaml = paused_config("127.0.0.1:9", "steps: [10, 20, 30, 40, 50, 100]")
        + "rollout_state: state/rollouts.json\n";
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let start = || async {
        let candidate = weir::reload::read_file(&path).unwrap_or_else(|r| panic!("{}", r.errors));
        weir::server::start(candidate, Some(path.clone()))
            .await
            .unwrap()
    };
    let running = start().await;
    let feed_running = |running: &weir::server::Running| {
        let s = running.reloader.snapshots.load_full();
        let p = s.backend("app", "canary").unwrap().probe.clone().unwrap();
        for _ in 0..10 {
            p.record(true, 3);
        }
    };
    for _ in 0..2 {
        feed_running(&running);
        tokio::time::advance(INTERVAL).await;
        running.reloader.caught_up().await;
    }
    assert_eq!(running.reloader.rollouts().status("app")["step"], 2);
    running.drain().await;

    let saved: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/rollouts.json")).unwrap())
            .unwrap();
    assert_eq!(saved["routes"]["app"]["progress"]["step"].as_u64(), Some(2));

    let second = start().await;
    let resumed = second.reloader.rollouts().status("app");
    assert_eq!(resumed["state"], "progressing");
    assert_eq!(resumed["step"].as_u64(), Some(2));
    second.drain().await;
}
