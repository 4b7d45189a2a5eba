//! `weir demo`: the whole story on loopback ports. A stable upstream and a healthy canary behind
//! weir with an automated rollout: traffic flows, weir checks the canary each interval and
//! promotes it step by step. Then a broken canary (most requests fail) is deployed: the rollout
//! starts over and fast-fail rolls it back within a few dozen requests. A live view prints, each
//! second, the requests, success rate and p99 per version and the canary's weight.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::metrics::Probe;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Starts an HTTP/1.1 server on an ephemeral loopback port that answers every request with
/// `name`.
pub async fn named_upstream(name: &'static str) -> std::io::Result<SocketAddr> {
    failing_upstream(name, 0).await
}

/// Like [`named_upstream`], but `percent_failing` of its answers are 500, spread evenly.
pub async fn failing_upstream(
    name: &'static str,
    percent_failing: u64,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let served = served.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let n = served.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let mut r =
                            hyper::Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                        if (n * percent_failing) % 100 < percent_failing {
                            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

const CLIENTS: usize = 8;
const STEPS: [u32; 4] = [10, 25, 50, 100];

fn demo_config(stable: SocketAddr, canary: SocketAddr, interval: Duration) -> String {
    format!(
        "listeners:\n  - name: demo\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n\
         upstreams:\n  - name: stable\n    endpoints: [\"{stable}\"]\n  - name: canary\n    endpoints: [\"{canary}\"]\n\
         routes:\n  - name: app\n    backends:\n      - {{ upstream: stable, weight: 100 }}\n      - {{ upstream: canary, weight: 0 }}\n\
         \x20   rollout: {{ canary: canary, steps: {STEPS:?}, interval: {}ms, min_requests: 20, thresholds: {{ success_rate: 0.99, p99_latency: 250ms }} }}\n",
        interval.as_millis()
    )
}

/// What the clients saw per version since the last tick, counted as weir counts a canary.
struct Tally {
    versions: [Probe; 2],
}

impl Default for Tally {
    fn default() -> Self {
        let probe = || Probe::new(None, Arc::new(tokio::sync::Notify::new()));
        Tally {
            versions: [probe(), probe()],
        }
    }
}

pub async fn run(duration: Duration) -> anyhow::Result<()> {
    let stable = named_upstream("stable").await?;
    let healthy = named_upstream("canary").await?;
    let broken = failing_upstream("canary", 60).await?;
    // The healthy rollout takes four checks; the broken one needs only fast-fail.
    let interval = (duration / 10).max(Duration::from_millis(200));
    let candidate =
        crate::reload::Candidate::from_str(&demo_config(stable, healthy, interval), "demo.yaml")
            .map_err(|e| anyhow::anyhow!("the demo config is invalid:\n{e}"))?;
    let running = crate::server::start(candidate, None).await?;
    let address = running
        .address("demo")
        .context("the demo listener is bound")?;
    println!(
        "weir demo: stable upstream on {stable}, healthy canary on {healthy}, broken canary on {broken}"
    );
    println!(
        "weir on http://{address}/, admin on http://{}/; rollout steps {STEPS:?}, one check every {interval:?}; {duration:?} in all\n",
        running.admin_address
    );

    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + duration;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("http://{address}/").parse()?;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, uri, tally) = (client.clone(), uri.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let sent = Instant::now();
                let Ok(resp) = client.get(uri.clone()).await else {
                    continue;
                };
                let ok = resp.status().is_success();
                let Ok(body) = resp.into_body().collect().await.map(|b| b.to_bytes()) else {
                    continue;
                };
                let seen = &tally.versions[usize::from(body.as_ref() == b"canary")];
                seen.record(ok, crate::metrics::latency_bucket(sent.elapsed()));
            }
        }));
    }

    let started = Instant::now();
    let reloader = running.reloader.clone();
    let mut deployed_broken = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    ticker.tick().await;
    let mut shown = 0;
    while Instant::now() < deadline {
        ticker.tick().await;
        let status = reloader.rollouts().status("app");
        let state = status["state"].as_str().unwrap_or("-").to_owned();
        shown += 1;
        if shown % 2 == 0 {
            live_line(started.elapsed(), &status, &tally);
        }
        if state == "promoted" && !deployed_broken {
            deployed_broken = true;
            println!(
                "\n== the canary is promoted; now a broken canary (60% of its answers are 500) is deployed ==\n"
            );
            // Only the canary's endpoint changes: a new version, so the rollout starts over.
            let text = demo_config(stable, broken, interval);
            let candidate = crate::reload::Candidate::from_str(&text, "demo.yaml")
                .map_err(|e| anyhow::anyhow!("the demo config is invalid:\n{e}"))?;
            // Through the same door as a reload of the file: policies, history, rollouts.
            if let Err(e) = reloader.submit(Ok(candidate)).await {
                anyhow::bail!("the broken canary's config was refused:\n{e}");
            }
        }
    }
    for t in tasks {
        t.await?;
    }

    println!("\nrollout events (as in /history):");
    for h in reloader.record().history.iter().rev() {
        if let Some(a) = &h.rollout {
            println!(
                "  {:<11} step {}  canary {:>3}%  {}",
                a.event.kind.name(),
                a.event.step,
                a.event.canary_weight,
                a.event.reason
            );
        }
    }
    println!("\nas weir measured it (its /stats, last 60 s):");
    let snapshot = reloader.snapshots.load_full();
    let now = snapshot.metrics.now_second();
    for route in snapshot.routes.iter() {
        for b in route.backends.iter() {
            let s = b.metrics.stats(now);
            let ms = |q| {
                s.percentile_ms(q)
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"))
            };
            println!(
                "  {:<7} weight {:>3}  requests {:>7}  success {:>6}  p50 {:>9}  p99 {:>9}",
                &**b.name(),
                b.weight,
                s.requests,
                s.success_rate()
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
                ms(0.5),
                ms(0.99),
            );
        }
    }
    running.drain().await;
    Ok(())
}

/// One line of the live view: the rollout, the canary's weight as a bar, and per version what
/// the clients saw in the last second.
fn live_line(elapsed: Duration, status: &serde_json::Value, tally: &Tally) {
    let weight = status["canary_weight"].as_u64().unwrap_or(0);
    let filled = (weight as usize).div_ceil(5);
    let bar: String = "#".repeat(filled) + &".".repeat(20 - filled.min(20));
    let version = |name: &str, seen: &Probe| {
        let m = seen.take();
        format!(
            "{name} {:>6} req {:>6} p99 {:>8}",
            m.requests,
            m.success_rate()
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            m.p99.map_or_else(
                || "-".to_owned(),
                |v| format!("{:.2}ms", v.as_secs_f64() * 1e3)
            ),
        )
    };
    println!(
        "t={:>5.1}s  {:<12} step {}  canary [{bar}] {weight:>3}%  | {} | {}",
        elapsed.as_secs_f64(),
        status["state"].as_str().unwrap_or("-"),
        status["step"],
        version("stable", &tally.versions[0]),
        version("canary", &tally.versions[1]),
    );
}
