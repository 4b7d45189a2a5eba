//! What a rollout costs and how long it takes, at a fixed 1,000 requests per second through weir
//! (release build, in-process, loopback):
//! - a dead canary (every answer 500) at its first step, with fast-fail on and off: the failed
//!   requests clients saw and the time to rollback;
//! - a healthy canary: the time to promotion.
//!
//! `cargo bench --bench rollout -- [INTERVAL]` (default 30s; steps 5, 10, 25, 50, 100;
//! max_failed_checks 3). The fast-fail-off and healthy runs take about 3 and 5 intervals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const RATE: u64 = 1_000;

struct Outcome {
    ended_in: &'static str,
    after: Duration,
    failed: u64,
    sent: u64,
}

async fn scenario(canary_failing: u64, fast_fail: bool, interval: Duration) -> Outcome {
    let stable = weir::demo::named_upstream("stable").await.unwrap();
    let canary = weir::demo::failing_upstream("canary", canary_failing)
        .await
        .unwrap();
    let yaml = format!(
        "listeners: [{{ name: main, address: 127.0.0.1:0 }}]\nadmin: {{ address: 127.0.0.1:0 }}\n\
         upstreams:\n  - {{ name: stable, endpoints: [\"{stable}\"] }}\n  - {{ name: canary, endpoints: [\"{canary}\"] }}\n\
         routes:\n  - name: app\n    backends: [{{ upstream: stable, weight: 95 }}, {{ upstream: canary, weight: 5 }}]\n\
         \x20   rollout: {{ canary: canary, steps: [5, 10, 25, 50, 100], interval: {}ms, min_requests: 50, max_failed_checks: 3, fast_fail: {{ enabled: {fast_fail} }} }}\n",
        interval.as_millis()
    );
    let candidate = weir::reload::Candidate::from_str(&yaml, "bench.yaml").unwrap();
    let running = weir::server::start(candidate, None).await.unwrap();
    let uri: hyper::Uri = format!("http://{}/", running.address("main").unwrap())
        .parse()
        .unwrap();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let (failed, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (failed, sent, stop) = (failed.clone(), sent.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (client, uri, failed) = (client.clone(), uri.clone(), failed.clone());
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Ok(r) = client.get(uri).await {
                        let bad = r.status().is_server_error();
                        let _ = r.into_body().collect().await;
                        if bad {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        })
    };
    let started = Instant::now();
    let limit = interval * 12;
    let ended_in = loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let phase = running.reloader.rollouts().phase("app");
        match phase {
            Some(weir::rollout::Phase::Promoted) => break "promoted",
            Some(weir::rollout::Phase::RolledBack) => break "rolled_back",
            _ if started.elapsed() > limit => break "still progressing",
            _ => {}
        }
    };
    let after = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.drain().await;
    Outcome {
        ended_in,
        after,
        failed: failed.load(Ordering::Relaxed),
        sent: sent.load(Ordering::Relaxed),
    }
}

fn main() {
    let interval = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| weir::config::parse_duration(&a))
        .unwrap_or(Duration::from_secs(30));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("{RATE} req/s, canary at 5 % first, interval {interval:?}");
    for (name, failing, fast_fail) in [
        ("dead canary, fast-fail on ", 100, true),
        ("dead canary, fast-fail off", 100, false),
        ("healthy canary            ", 0, true),
    ] {
        let o = rt.block_on(scenario(failing, fast_fail, interval));
        println!(
            "{name}: {} after {:.2} s; {} failed requests of {} sent",
            o.ended_in,
            o.after.as_secs_f64(),
            o.failed,
            o.sent
        );
    }
}
