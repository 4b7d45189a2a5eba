//! The canary judged against stable (`analysis.compare`, docs/ANALYSIS.md). Under real traffic
//! (about 1,000 requests a second, open loop, through real sockets to seeded upstreams): a canary
//! with twice stable's error rate and one 40 ms slower are rolled back by the comparison where
//! the thresholds would have promoted them; a canary as good as stable is promoted, run after
//! run. On a paused clock, with the probes fed as the request path feeds them: which backends
//! feed which probe, a failing comparison that no gate holds, `advance: on_evidence`.
//!
//! How sure the real-traffic tests are: weir's routing draw is not seeded, so each run is new;
//! each test's settings put the chance of a wrong outcome (a false alarm or a miss, bounded by
//! Wald's and Ville's inequalities, which hold however often weir looks) below 0.1 %, and each
//! says how.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir::metrics::{Probe, latency_bucket};
use weir::rollout::COMPARE_EVERY;

use crate::support::*;

/// Route `app`: `stable` 90, `canary` 10, with a rollout of `canary` (`rollout`: flow mapping
/// entries after `canary: canary`).
fn compare_config(stable: SocketAddr, canary: SocketAddr, rollout: &str) -> String {
    config(
        &[("stable", &[stable]), ("canary", &[canary])],
        &format!(
            "  - name: app\n    rollout: {{ canary: canary, {rollout} }}\n    backends:\n      - {{ upstream: stable, weight: 90 }}\n      - {{ upstream: canary, weight: 10 }}\n"
        ),
    )
}

/// The `/stats` rollout block of route `app`, through the admin API.
async fn rollout_block(w: &Weir) -> Value {
    let a = get(&http1_client(), w.admin, "/stats").await;
    let stats: Value = serde_json::from_slice(&a.body).unwrap();
    stats["routes"][0]["rollout"].clone()
}

/// Polls `/stats` until the rollout is `promoted` or `rolled_back` (at most `limit`); returns
/// its block and when it ended.
async fn ended(w: &Weir, limit: Duration) -> (Value, Instant) {
    let started = Instant::now();
    while started.elapsed() < limit {
        let r = rollout_block(w).await;
        if r["state"] != "progressing" {
            return (r, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no decision within {limit:?}: {}", rollout_block(w).await);
}

fn rollout_events(w: &Weir) -> Vec<String> {
    let record = w.running.reloader.record();
    record
        .history
        .iter()
        .rev()
        .filter_map(|h| h.rollout.as_ref())
        .map(|a| a.event.kind.name().to_owned())
        .collect()
}

/// How long a real-traffic test waits for its rollout to end: far beyond the 2 to 20 s they take
/// at 1,000 requests a second, for a loaded machine that reaches a fifth of the rate (the paced
/// traffic stops by itself at 240 s).
const PATIENCE: Duration = Duration::from_secs(180);

const STABLE_LATENCY: Behaviour = Behaviour {
    failure_rate: 0.01,
    median: Duration::from_millis(5),
    log_sd: 0.5,
    extra: Duration::ZERO,
};

// === real traffic ===

/// Canary 2 % errors against stable's 1 %, at 1,000 requests a second. Thresholds at 95 %
/// success would pass it (and are checked only every 30 s); the comparison catches it. Only the
/// error test runs, with `miss: 0.0005`: a canary twice as bad passes it at most
/// 0.0005 / (1 - alpha) = 0.05 % of the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_with_twice_the_error_rate_of_stable_is_rolled_back_by_the_comparison() {
    let stable = seeded_upstream(1, STABLE_LATENCY).await;
    let canary = seeded_upstream(
        2,
        Behaviour {
            failure_rate: 0.02,
            ..STABLE_LATENCY
        },
    )
    .await;
    let w = weir(&compare_config(
        stable.address,
        canary.address,
        "steps: [25, 50, 100], interval: 30s, thresholds: { success_rate: 0.95 }, \
         analysis: { compare: stable, miss: 0.0005, latency: { enabled: false } }",
    ))
    .await;
    let started = Instant::now();
    let load = paced(w.address, 1_000);
    let (status, at) = ended(&w, PATIENCE).await;
    let canary_served = canary.hits();
    let (sent, rate) = load.stop().await;
    assert_eq!(status["state"], "rolled_back", "{status}");
    assert_eq!(status["failed_checks"], 0, "no threshold failed: {status}");
    let reason = status["last_check"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("comparison with stable: the canary is worse than stable"),
        "{reason}"
    );
    let c = &status["comparison"];
    assert_eq!(
        (c["decision"].as_str(), c["step"].as_u64()),
        (Some("fail"), Some(0))
    );
    let errors = &c["errors"];
    assert_eq!(errors["decision"], "fail");
    assert!(
        errors["log_likelihood_ratio"].as_f64().unwrap()
            >= errors["bounds"]["fail"].as_f64().unwrap(),
        "{c}"
    );
    assert_eq!(c["latency"], Value::Null, "the latency test is off");
    assert_eq!(rollout_events(&w), ["started", "rolled_back"]);
    let decided_at = c["decided_at"].as_u64().unwrap();
    println!(
        "2 % vs 1 % errors at 25 %: rolled back after {decided_at} canary requests in the \
         comparison ({} failed; stable {}/{}), {canary_served} served by the canary in all, \
         {sent} requests at {rate:.0}/s, {:.1} s",
        errors["canary"]["events"],
        errors["stable"]["events"],
        errors["stable"]["requests"],
        (at - started).as_secs_f64(),
    );
    // Far more than a handful (the test needs evidence) and far fewer than the thresholds'
    // 30 s would have let through at this rate (7,500).
    assert!((50..7_500).contains(&decided_at), "{decided_at}");
}

/// Both versions fail 1 % of requests, with the same latency. Each run is one rollout (50 %,
/// then 100 %) with `advance: on_evidence`, so a run ends soon after the comparison passes.
/// `false_alarm: 0.0001` for the rollout: a canary as good as stable is rolled back at most
/// 0.0001 / (1 - miss) = 0.011 % of the time in a run (Ville's inequality on the likelihood
/// ratio, however often it is read), so at most 0.045 % over the four runs. `decide_within`
/// stays at 10 minutes, so no run ends by the sign of its evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_as_good_as_stable_is_promoted_and_never_rolled_back_in_four_seeded_runs() {
    const RUNS: u64 = 4;
    let mut figures = Vec::new();
    for run in 0..RUNS {
        let stable = seeded_upstream(100 + 2 * run, STABLE_LATENCY).await;
        let canary = seeded_upstream(101 + 2 * run, STABLE_LATENCY).await;
        let w = weir(&compare_config(
            stable.address,
            canary.address,
            "steps: [50, 100], interval: 1s, thresholds: { success_rate: 0.95 }, \
             analysis: { compare: stable, advance: on_evidence, false_alarm: 0.0001 }",
        ))
        .await;
        let started = Instant::now();
        let load = paced(w.address, 1_000);
        // While it runs, /stats shows the test: its statistics, bounds and requests so far.
        let mut seen_running = false;
        for _ in 0..2_000 {
            let c = rollout_block(&w).await["comparison"].clone();
            if c["decision"] == "continue" && c["canary_requests"].as_u64() > Some(0) {
                for test in ["errors", "latency"] {
                    assert!(c[test]["log_likelihood_ratio"].is_f64(), "{c}");
                    assert!(c[test]["bounds"]["fail"].as_f64().unwrap() > 0.0, "{c}");
                    assert!(c[test]["bounds"]["pass"].as_f64().unwrap() < 0.0, "{c}");
                }
                assert!(c["errors"]["canary"]["requests"].as_u64() > Some(0), "{c}");
                seen_running = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen_running, "the running comparison shows on /stats");
        let (status, at) = ended(&w, PATIENCE).await;
        let (sent, rate) = load.stop().await;
        assert_eq!(status["state"], "promoted", "run {run}: {status}");
        assert_eq!(
            rollout_events(&w),
            ["started", "step", "promoted"],
            "run {run}"
        );
        let c = &status["comparison"];
        assert_eq!(c["decision"], "pass", "run {run}: {c}");
        assert_eq!(
            c["concluded"], false,
            "decided by a bound, not by decide_within"
        );
        figures.push(format!(
            "run {run}: passed after {} canary requests (errors {}/{} vs stable {}/{}), \
             promoted after {:.1} s, {sent} requests at {rate:.0}/s",
            c["decided_at"],
            c["errors"]["canary"]["events"],
            c["errors"]["canary"]["requests"],
            c["errors"]["stable"]["events"],
            c["errors"]["stable"]["requests"],
            (at - started).as_secs_f64(),
        ));
        w.running.drain().await;
    }
    println!(
        "equal versions, 1 % errors, 50 %:\n  {}",
        figures.join("\n  ")
    );
}

/// Stable answers in a log-normal time (median 50 ms, p99 about 160 ms); the canary in the
/// same plus 40 ms, so its p99 is about 200 ms, within the 500 ms threshold. Only the latency
/// test runs, with `miss: 0.0005` (a canary twice as often above stable's p99 passes at most
/// 0.05 % of the time; this one is four times as often above it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_40ms_slower_at_p99_is_rolled_back_by_the_comparison() {
    let slow = Behaviour {
        failure_rate: 0.0,
        median: Duration::from_millis(50),
        log_sd: 0.5,
        extra: Duration::ZERO,
    };
    let stable = seeded_upstream(3, slow).await;
    let canary = seeded_upstream(
        4,
        Behaviour {
            extra: Duration::from_millis(40),
            ..slow
        },
    )
    .await;
    let w = weir(&compare_config(
        stable.address,
        canary.address,
        "steps: [25, 50, 100], interval: 30s, thresholds: { success_rate: 0.95, p99_latency: 500ms }, \
         analysis: { compare: stable, miss: 0.0005, errors: { enabled: false } }",
    ))
    .await;
    let started = Instant::now();
    let load = paced(w.address, 1_000);
    let (status, at) = ended(&w, PATIENCE).await;
    let canary_served = canary.hits();
    let (sent, rate) = load.stop().await;
    assert_eq!(status["state"], "rolled_back", "{status}");
    assert_eq!(status["failed_checks"], 0, "no threshold failed: {status}");
    let c = &status["comparison"];
    let latency = &c["latency"];
    assert_eq!(latency["decision"], "fail", "{c}");
    let reason = status["last_check"]["reason"].as_str().unwrap();
    assert!(reason.contains("latency: canary"), "{reason}");
    // The canary's p99 as the thresholds saw it: well within their 500 ms.
    let p99 = status["last_check"]["p99_ms"].as_f64().unwrap();
    assert!(p99 < 500.0, "{p99}");
    println!(
        "40 ms slower at 25 %: rolled back after {} canary requests in the comparison ({} \
         above {} ms; stable {}/{} above {} ms; canary p99 {p99:.0} ms), {canary_served} \
         served by the canary in all, {sent} requests at {rate:.0}/s, {:.1} s",
        c["decided_at"],
        latency["canary"]["events"],
        latency["slow_ms"],
        latency["stable"]["events"],
        latency["stable"]["requests"],
        latency["reference_ms"],
        (at - started).as_secs_f64(),
    );
}

// === on a paused clock ===

/// Route `app` over `stable-a` 60, `stable-b` 30 and `canary` 10 (never called: the probes are
/// fed directly), with a rollout compared as `analysis` says; 30 s interval, no hash poll.
fn paused_config(rollout: &str, analysis: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n\
         upstreams:\n  - {{ name: stable-a, endpoints: [127.0.0.1:9] }}\n  - {{ name: stable-b, endpoints: [127.0.0.1:9] }}\n  - {{ name: canary, endpoints: [127.0.0.1:9] }}\n\
         routes:\n  - name: app\n    rollout: {{ canary: canary, interval: 30s, min_requests: 5, thresholds: {{ success_rate: 0.5 }}, {rollout}, analysis: {{ {analysis} }} }}\n\
         \x20   backends:\n      - {{ upstream: stable-a, weight: 60 }}\n      - {{ upstream: stable-b, weight: 30 }}\n      - {{ upstream: canary, weight: 10 }}\n\
         reload: {{ poll_interval: 0s }}\n"
    )
}

fn probe_of(w: &Weir, backend: &str) -> Option<Arc<Probe>> {
    let s = w.running.reloader.snapshots.load_full();
    s.backend("app", backend).and_then(|b| b.probe.clone())
}

/// `n` requests to `backend`, one in `fail_every` failing (0: none), as the request path
/// records them. Latencies follow an exponential law (mean 10 ms, p99 46 ms) through a
/// golden-ratio sequence, so every backend fed the same `n` sees the same spread.
fn feed(w: &Weir, backend: &str, n: u64, fail_every: u64) {
    let p = probe_of(w, backend).expect("a measured backend has a probe");
    for i in 0..n {
        let failed = fail_every > 0 && i % fail_every == 0;
        let u = (i as f64 * 0.618_033_988_749_895).fract();
        let latency = Duration::from_secs_f64(-(1.0 - u).ln() * 0.010);
        p.record(!failed, latency_bucket(latency));
    }
}

async fn pass(w: &Weir, d: Duration) {
    tokio::time::advance(d).await;
    w.running.reloader.caught_up().await;
}

fn status_of(w: &Weir) -> Value {
    w.running.reloader.rollouts().status("app")
}

#[tokio::test(start_paused = true)]
async fn the_stable_backends_feed_one_probe_and_a_named_baseline_feeds_its_own() {
    let w = weir(&paused_config("steps: [10, 100]", "compare: stable")).await;
    let (a, b, c) = (
        probe_of(&w, "stable-a").unwrap(),
        probe_of(&w, "stable-b").unwrap(),
        probe_of(&w, "canary").unwrap(),
    );
    assert!(Arc::ptr_eq(&a, &b), "the stable arm is pooled");
    assert!(!Arc::ptr_eq(&a, &c));

    // A reload that names one baseline: only it is measured with the canary, and the probes
    // (the run and its fast-fail settings unchanged) stay, so nothing counted is lost.
    std::fs::write(
        &w.path,
        paused_config("steps: [10, 100]", "compare: stable-b"),
    )
    .unwrap();
    reload(&w).await.unwrap();
    assert!(probe_of(&w, "stable-a").is_none());
    assert!(Arc::ptr_eq(&probe_of(&w, "stable-b").unwrap(), &b));
    assert!(Arc::ptr_eq(&probe_of(&w, "canary").unwrap(), &c));

    // Without a comparison only the canary is measured.
    std::fs::write(&w.path, paused_config("steps: [10, 100]", "")).unwrap();
    reload(&w).await.unwrap();
    assert!(probe_of(&w, "stable-b").is_none());
    assert!(probe_of(&w, "canary").is_some());
    assert_eq!(status_of(&w)["comparison"], Value::Null);
}

#[tokio::test(start_paused = true)]
async fn a_failing_comparison_rolls_back_at_once_and_no_confirm_gate_holds_it() {
    let gate = upstream("gate").await;
    let w = weir(&paused_config(
        &format!(
            "steps: [10, 100], confirm: {{ url: \"http://{}/gate\" }}",
            gate.address
        ),
        "compare: stable, latency: { enabled: false }",
    ))
    .await;
    // The first reading starts the window; stable fails 1 %, the canary 10 %.
    pass(&w, COMPARE_EVERY).await;
    feed(&w, "stable-a", 6_000, 100);
    feed(&w, "stable-b", 3_000, 100);
    feed(&w, "canary", 1_000, 10);
    pass(&w, COMPARE_EVERY).await;
    let status = status_of(&w);
    assert_eq!(status["state"], "rolled_back", "{status}");
    assert_eq!(status["last_check"]["requests"], 1_000);
    assert_eq!(status["comparison"]["errors"]["canary"]["events"], 100);
    assert_eq!(status["comparison"]["errors"]["stable"]["requests"], 9_000);
    assert_eq!(gate.hits(), 0, "rollbacks are never gated");
    let s = w.running.reloader.snapshots.load_full();
    let weights: Vec<u32> = s.routes[0].backends.iter().map(|b| b.weight).collect();
    assert_eq!(
        (weights[0], weights[2]),
        (2 * weights[1], 0),
        "back to the stables' 2:1: {weights:?}"
    );
    assert!(
        probe_of(&w, "canary").is_none(),
        "nothing is measured any more"
    );
}

#[tokio::test(start_paused = true)]
async fn on_evidence_a_step_advances_when_its_comparison_passes_and_otherwise_at_its_interval_end()
{
    for advance in ["on_evidence", "interval"] {
        let w = weir(&paused_config(
            "steps: [10, 100]",
            &format!("compare: stable, advance: {advance}"),
        ))
        .await;
        pass(&w, COMPARE_EVERY).await;
        // As good as stable, and plenty of evidence, twice: the first batch places stable's
        // p99 for the latency test, the second decides both tests.
        for _ in 0..2 {
            feed(&w, "stable-a", 60_000, 100);
            feed(&w, "stable-b", 30_000, 100);
            feed(&w, "canary", 10_000, 100);
            pass(&w, COMPARE_EVERY).await;
        }
        let status = status_of(&w);
        assert_eq!(
            status["comparison"]["decision"], "pass",
            "{advance}: {status}"
        );
        let advanced = |w: &Weir| status_of(w)["step"] == 1;
        assert_eq!(
            advanced(&w),
            advance == "on_evidence",
            "{advance}: {status}"
        );
        if advance == "interval" {
            pass(&w, Duration::from_secs(30)).await;
            assert!(advanced(&w), "{advance}: {}", status_of(&w));
        }
        // Either way the thresholds were checked (on the interval so far, on evidence) and
        // passed: the comparison never skips them.
        let check = &status_of(&w)["last_check"];
        assert_eq!(check["verdict"], "passed", "{advance}: {check}");
        assert_eq!(check["requests"], 20_000, "{advance}: {check}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_undecided_comparison_holds_the_step_as_a_skipped_check() {
    let w = weir(&paused_config(
        "steps: [10, 100]",
        "compare: stable, decide_within: 2m",
    ))
    .await;
    pass(&w, COMPARE_EVERY).await;
    // Too little evidence: a handful of requests, no failure.
    feed(&w, "stable-a", 60, 0);
    feed(&w, "canary", 10, 0);
    pass(&w, Duration::from_secs(30)).await;
    let status = status_of(&w);
    assert_eq!(
        (status["state"].as_str(), status["step"].as_u64()),
        (Some("progressing"), Some(0))
    );
    assert_eq!(status["last_check"]["verdict"], "skipped", "{status}");
    let reason = status["last_check"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("comparison with stable: no decision yet after 10 canary requests"),
        "{reason}"
    );
    assert_eq!(status["failed_checks"], 0);
    // decide_within: two minutes after its first reading the comparison concludes (no
    // evidence either way: pass), and the interval's end takes the step.
    for _ in 0..4 {
        feed(&w, "canary", 10, 0);
        pass(&w, Duration::from_secs(30)).await;
    }
    let status = status_of(&w);
    assert_eq!(status["step"], 1, "{status}");
    assert_eq!(status["comparison"]["concluded"], true);
}
