//! Automated rollouts end to end, with short intervals and real traffic: promotion step by step,
//! rollback on errors (fast-fail) and on latency, no traffic, reloads, webhooks, the confirm gate
//! and resuming from the state file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

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

/// Polls until the rollout has reached step `step` (at most 10 s); returns the step it is at.
async fn wait_for_step(admin: SocketAddr, step: u64) -> u64 {
    for _ in 0..200 {
        if rollout_at(admin).await["step"].as_u64().unwrap() >= step {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rollout_at(admin).await["step"].as_u64().unwrap()
}

/// Polls `/stats` until the rollout is in `state` (at most 20 s); returns its block.
async fn wait_for(w: &Weir, state: &str) -> Value {
    for _ in 0..200 {
        let r = rollout_status(w).await;
        if r["state"] == state {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
async fn a_healthy_canary_is_promoted_one_check_per_step() {
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
async fn a_slow_canary_is_rolled_back_after_max_failed_checks() {
    let stable = upstream("stable").await;
    let canary = fixed_upstream(200, Duration::from_millis(120)).await;
    let w = weir(&rollout_config(
        stable.address,
        &[canary.address],
        "steps: [50, 100], interval: 500ms, min_requests: 2, thresholds: { success_rate: 0.9, p99_latency: 50ms }, max_failed_checks: 2",
    ))
    .await;
    let load = traffic(w.address, Duration::from_millis(5));
    let status = wait_for(&w, "rolled_back").await;
    load.stop().await;
    assert_eq!(status["failed_checks"], 2);
    let reason = status["last_check"]["reason"].as_str().unwrap();
    assert!(reason.contains("p99 latency"), "{reason}");
    assert_eq!(
        events(&w).await,
        [ev("started", 0, 50), ev("rolled_back", 0, 0)]
    );
}

#[tokio::test]
async fn without_traffic_a_rollout_neither_advances_nor_fails() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&rollout_config(
        stable.address,
        &[canary.address],
        "steps: [10, 100], interval: 200ms, min_requests: 5",
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let status = rollout_status(&w).await;
    assert_eq!(status["state"], "progressing");
    assert_eq!(status["step"], 0);
    assert_eq!(status["failed_checks"], 0);
    assert_eq!(status["last_check"]["verdict"], "skipped");
    assert_eq!(status["last_check"]["requests"], 0);
}

#[tokio::test]
async fn a_reload_keeps_progress_unless_the_canary_endpoints_change() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let yaml = rollout_config(
        stable.address,
        &[canary.address],
        "steps: [10, 20, 30, 40, 50, 100], interval: 300ms, min_requests: 3",
    );
    let w = weir(&yaml).await;
    let load = traffic(w.address, Duration::from_millis(2));
    wait_for_step(w.admin, 2).await;
    load.stop().await;
    let step = rollout_status(&w).await["step"].as_u64().unwrap();
    assert!((2..5).contains(&step), "step {step}");

    // Another weight of the stable and a longer timeout: the rollout goes on where it was.
    std::fs::write(
        &w.path,
        yaml.replace("weight: 90", "weight: 80") + "    timeout: 20s\n",
    )
    .unwrap();
    w.running.reloader.reload().unwrap();
    assert_eq!(rollout_status(&w).await["step"].as_u64().unwrap(), step);

    // A new canary version (another endpoint): the rollout starts over.
    let second = upstream("canary").await;
    let moved = rollout_config(
        stable.address,
        &[canary.address, second.address],
        "steps: [10, 20, 30, 40, 50, 100], interval: 300ms, min_requests: 3",
    );
    std::fs::write(&w.path, moved).unwrap();
    w.running.reloader.reload().unwrap();
    let status = rollout_status(&w).await;
    assert_eq!(
        (status["state"].as_str(), status["step"].as_u64()),
        (Some("progressing"), Some(0))
    );
    assert_eq!(events(&w).await.last().unwrap(), &ev("started", 0, 10));
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
    for _ in 0..50 {
        bodies = hook.recorded.lock().unwrap().clone();
        if bodies.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    tokio::time::sleep(Duration::from_millis(1500)).await;
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
    w.running.reloader.reload().unwrap();
    wait_for(&w, "promoted").await;
    load.stop().await;
    let asked = gate.recorded.lock().unwrap().clone();
    let body: Value = serde_json::from_slice(&asked[0].2).unwrap();
    assert_eq!(body["event"], "confirm");
    assert_eq!(body["canary_weight"], 100);
}

#[tokio::test]
async fn a_restarted_weir_resumes_from_the_state_file() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    let yaml = rollout_config(
        stable.address,
        &[canary.address],
        "steps: [10, 20, 30, 40, 50, 100], interval: 300ms, min_requests: 3",
    ) + "rollout_state: state/rollouts.json\n";
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::write(&path, &yaml).unwrap();
    let start = || async {
        let candidate = weir::reload::read_file(&path).unwrap_or_else(|r| panic!("{}", r.errors));
        weir::server::start(candidate, Some(path.clone()))
            .await
            .unwrap()
    };
    let first = start().await;
    let load = traffic(first.address("main").unwrap(), Duration::from_millis(2));
    wait_for_step(first.admin_address, 2).await;
    load.stop().await;
    let step = rollout_at(first.admin_address).await["step"]
        .as_u64()
        .unwrap();
    assert!(step >= 2);
    first.drain().await;

    let saved: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/rollouts.json")).unwrap())
            .unwrap();
    assert_eq!(
        saved["routes"]["app"]["progress"]["step"].as_u64(),
        Some(step)
    );

    let second = start().await;
    let resumed = rollout_at(second.admin_address).await;
    assert_eq!(resumed["state"], "progressing");
    assert_eq!(resumed["step"].as_u64(), Some(step));
    second.drain().await;
}
