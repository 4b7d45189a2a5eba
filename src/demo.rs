//! `weir demo`: the whole story on loopback ports, in an 80-column terminal, in three acts.
//! Version v1 is stable and v2 the canary, behind weir with an automated rollout: traffic flows,
//! weir checks the canary each interval and promotes it step by step. Then v2 becomes the stable
//! and a broken v3 (60 % of its answers are 500) is deployed as the canary: the rollout starts
//! over and fast-fail rolls it back within a few dozen requests. Last, v4 is deployed: only
//! slightly worse (0.8 % of its answers are 500, where v2 fails none), so the thresholds (99 %
//! success) would promote it; this rollout also compares the canary with stable
//! (`analysis.compare`, docs/ANALYSIS.md), which rolls it back after a few hundred of its
//! requests. The tour ends a moment after that.
//!
//! The live view prints one line a second (the canary's weight, and per version what the
//! clients saw in that second) and one line per rollout event; weir's own log is off unless
//! `RUST_LOG` asks for it, so the two never mix. The summary counts each version apart, so the
//! broken canary's success rate is its own, not blended with the healthy canary's.
//!
//! `weir demo --upstreams` is the other mode: stand-in upstreams on the endpoints of a config
//! the reader wants to try ([`stand_in_upstreams`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::metrics::{Probe, latency_bucket};

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
    per_mille_failing_upstream(name, percent_failing * 10).await
}

/// Like [`named_upstream`], but `per_mille` of every 1,000 answers are 500, spread evenly.
async fn per_mille_failing_upstream(
    name: &'static str,
    per_mille: u64,
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
                        if (n * per_mille) % 1000 < per_mille {
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
/// The third act's steps: a quarter of the traffic, compared (the whole `false_alarm`, 0.05, on
/// this one step), then all of it.
const COMPARED_STEPS: [u32; 2] = [25, 100];
/// The versions, by the body their upstream answers with.
const VERSIONS: [&str; 4] = ["v1", "v2", "v3", "v4"];
/// How much of the broken v3's answers are 500.
const BROKEN_PERCENT: u64 = 60;
/// How many of every 1,000 answers of the slightly worse v4 are 500: its success rate, 99.2 %,
/// passes the thresholds' 99 %.
const WORSE_PER_MILLE: u64 = 8;
/// Live lines shown after the broken canary is rolled back, before the tour ends.
const EPILOGUE_TICKS: u32 = 2;
/// The live view's width: every line fits an 80-column terminal.
pub const WIDTH: usize = 80;

/// Route `app` over `stable` and `canary` (version names, also the upstream names), with a
/// rollout of `canary`; with `compare`, the rollout also compares the canary's errors with
/// stable's (the versions answer alike fast: the latency test is off).
fn demo_config(
    (stable, stable_at): (&str, SocketAddr),
    (canary, canary_at): (&str, SocketAddr),
    interval: Duration,
    compare: bool,
) -> String {
    let (steps, analysis) = if compare {
        (
            COMPARED_STEPS.as_slice(),
            ", analysis: { compare: stable, latency: { enabled: false } }",
        )
    } else {
        (STEPS.as_slice(), "")
    };
    format!(
        "listeners:\n  - name: demo\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n\
         upstreams:\n  - name: {stable}\n    endpoints: [\"{stable_at}\"]\n  - name: {canary}\n    endpoints: [\"{canary_at}\"]\n\
         routes:\n  - name: app\n    backends:\n      - {{ upstream: {stable}, weight: 100 }}\n      - {{ upstream: {canary}, weight: 0 }}\n\
         \x20   rollout: {{ canary: {canary}, steps: {steps:?}, interval: {}ms, min_requests: 20, thresholds: {{ success_rate: 0.99, p99_latency: 250ms }}{analysis} }}\n",
        interval.as_millis()
    )
}

/// What the clients saw of one version, counted as weir counts a rollout's canary: `tick` since
/// the last live line, `total` the whole tour.
struct Seen {
    tick: Probe,
    total: Probe,
}

impl Seen {
    fn new() -> Self {
        let probe = || Probe::new(None, Arc::new(tokio::sync::Notify::new()));
        Seen {
            tick: probe(),
            total: probe(),
        }
    }
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// Splits `text` into lines of at most [`WIDTH`] - 1 characters, continuation lines indented by
/// `indent` spaces.
pub fn wrap(text: &str, indent: usize) -> Vec<String> {
    let max = WIDTH - 1;
    let mut lines = Vec::new();
    // The first line keeps the text's own leading spaces (the live view's time column).
    let lead = text.len() - text.trim_start().len();
    let mut line = " ".repeat(lead.min(max / 2));
    for word in text.split_whitespace() {
        let fresh = line.trim().is_empty();
        if !fresh && line.chars().count() + 1 + word.chars().count() > max {
            lines.push(std::mem::take(&mut line));
            line.push_str(&" ".repeat(indent));
        } else if !fresh {
            line.push(' ');
        }
        // A single word longer than the line is cut rather than overflowing.
        let left = max.saturating_sub(line.chars().count());
        line.extend(word.chars().take(left));
    }
    if !line.trim().is_empty() {
        lines.push(line);
    }
    lines
}

fn say(text: &str) {
    for line in wrap(text, 4) {
        println!("{line}");
    }
}

pub async fn run(duration: Duration) -> anyhow::Result<()> {
    let v1 = named_upstream(VERSIONS[0]).await?;
    let v2 = named_upstream(VERSIONS[1]).await?;
    let v3 = failing_upstream(VERSIONS[2], BROKEN_PERCENT).await?;
    let v4 = per_mille_failing_upstream(VERSIONS[3], WORSE_PER_MILLE).await?;
    // The healthy rollout takes four checks and one more to hold 100 %; the broken one needs
    // only fast-fail, the slightly worse one a few thousand requests. A tenth of the duration
    // per check leaves room for all three.
    let interval = (duration / 10).max(Duration::from_millis(200));
    let first = demo_config(("v1", v1), ("v2", v2), interval, false);
    let candidate = crate::reload::Candidate::from_str(&first, "demo.yaml")
        .map_err(|e| anyhow::anyhow!("the demo config is invalid:\n{e}"))?;
    let running = crate::server::start(candidate, None).await?;
    let address = running
        .address("demo")
        .context("the demo listener is bound")?;
    say(&format!(
        "weir demo: v1 is stable, v2 the canary; weir on http://{address}/, admin API \
         and live page on http://{}/. Rollout steps {STEPS:?} %, one check every {interval:?}; \
         at most {duration:?} in all.",
        running.admin_address
    ));
    println!();
    header("v1", "v2");

    let seen: Arc<[Seen; 4]> = Arc::new(std::array::from_fn(|_| Seen::new()));
    let deadline = Instant::now() + duration;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("http://{address}/").parse()?;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, uri, seen, stop) = (client.clone(), uri.clone(), seen.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let Ok(resp) = client.get(uri.clone()).await else {
                    continue;
                };
                let ok = resp.status().is_success();
                let Ok(body) = resp.into_body().collect().await.map(|b| b.to_bytes()) else {
                    continue;
                };
                let Some(v) = VERSIONS.iter().position(|v| v.as_bytes() == body.as_ref()) else {
                    continue;
                };
                let bucket = latency_bucket(sent.elapsed());
                seen[v].tick.record(ok, bucket);
                seen[v].total.record(ok, bucket);
            }
        }));
    }

    let started = Instant::now();
    let reloader = running.reloader.clone();
    let mut versions = (0, 1);
    let mut deployed_broken = false;
    let mut deployed_worse = false;
    let mut epilogue = None;
    let mut events_shown = 0;
    let mut checks_shown = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut last_line = Instant::now();
    let mut finished = false;
    while Instant::now() < deadline {
        ticker.tick().await;
        events_shown = show_events(&reloader, events_shown, started);
        let status = reloader.rollouts().status("app");
        show_held_check(&status, &mut checks_shown, started);
        let state = status["state"].as_str().unwrap_or("-").to_owned();
        let canary = status["canary"].as_str().unwrap_or("-").to_owned();
        if last_line.elapsed() >= Duration::from_secs(1) {
            let secs = last_line.elapsed().as_secs_f64();
            last_line = Instant::now();
            live_line(started.elapsed(), &status, &seen, versions, secs);
            if let Some(left) = epilogue.as_mut() {
                *left -= 1;
                if *left == 0 {
                    finished = true;
                    break;
                }
            }
        }
        if state == "promoted" && !deployed_broken {
            deployed_broken = true;
            println!();
            say(&format!(
                "== v2 is promoted and becomes the stable. Now v3 is deployed as the canary, \
                 and {BROKEN_PERCENT}% of its answers are 500 =="
            ));
            println!();
            versions = (1, 2);
            header("v2", "v3");
            deploy(&reloader, ("v2", v2), ("v3", v3), interval, false).await?;
        } else if !deployed_worse && canary == "v3" && state == "rolled_back" {
            deployed_worse = true;
            // The last live line of v3's act, then the third act.
            let secs = last_line.elapsed().as_secs_f64();
            live_line(started.elapsed(), &status, &seen, versions, secs);
            last_line = Instant::now();
            println!();
            say(&format!(
                "== v3 is rolled back; v2 stays the stable. Now v4 is deployed: only slightly \
                 worse, {:.1}% of its answers are 500 where v2 fails none. Its {:.1}% success \
                 passes the 99% threshold, so thresholds alone would promote it; this \
                 rollout also compares v4 with v2 (analysis.compare: stable) ==",
                WORSE_PER_MILLE as f64 / 10.0,
                100.0 - WORSE_PER_MILLE as f64 / 10.0,
            ));
            println!();
            versions = (1, 3);
            header("v2", "v4");
            deploy(&reloader, ("v2", v2), ("v4", v4), interval, true).await?;
        } else if canary == "v4" && state == "rolled_back" && epilogue.is_none() {
            epilogue = Some(EPILOGUE_TICKS);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    show_events(&reloader, events_shown, started);
    if !finished {
        println!();
        say(&format!(
            "(the tour's {duration:?} ran out before its story ended; try a longer --duration)"
        ));
    }
    summary(&reloader, &seen);
    running.drain().await;
    Ok(())
}

/// Deploys `canary` next to `stable`, through the same door as a reload of the file: policies,
/// history, rollouts.
async fn deploy(
    reloader: &crate::reload::Reloader,
    stable: (&str, SocketAddr),
    canary: (&str, SocketAddr),
    interval: Duration,
    compare: bool,
) -> anyhow::Result<()> {
    let next = demo_config(stable, canary, interval, compare);
    let candidate = crate::reload::Candidate::from_str(&next, "demo.yaml")
        .map_err(|e| anyhow::anyhow!("the demo config is invalid:\n{e}"))?;
    if let Err(e) = reloader.submit(Ok(candidate)).await {
        anyhow::bail!("the demo config was refused:\n{e}");
    }
    Ok(())
}

/// Prints the rollout's last check when it held the step (a skipped check: the thresholds
/// passed, the comparison had no decision yet), once per check; `shown` is the last one printed.
fn show_held_check(status: &serde_json::Value, shown: &mut Option<String>, started: Instant) {
    let check = &status["last_check"];
    if check["verdict"] != "skipped" {
        return;
    }
    let at = check["at"].as_str().unwrap_or_default();
    if shown.as_deref() == Some(at) {
        return;
    }
    *shown = Some(at.to_owned());
    let reason = check["reason"].as_str().unwrap_or_default();
    // The first clause is the story; the rest (the statistics) is on /stats.
    let reason = reason.split(" (it decides").next().unwrap_or(reason);
    say(&format!(
        "{:>5.1}s  .. {} held at step {}: {reason}",
        started.elapsed().as_secs_f64(),
        status["canary"].as_str().unwrap_or("-"),
        status["step"],
    ));
}

/// The column heads of the live view, aligned with [`live_line`].
fn header(stable: &str, canary: &str) {
    let block = |v: &str| format!("{:<10} {:>6} {:>6}", format!("{v} req/s"), "ok", "p99");
    println!(
        "{:>6}  {:<17}  {} | {}",
        "time",
        "canary weight",
        block(stable),
        block(canary)
    );
}

/// One live line: the canary's weight as a bar, and per version what the clients saw since the
/// last line. At most 79 characters.
fn live_line(
    elapsed: Duration,
    status: &serde_json::Value,
    seen: &[Seen; 4],
    (stable, canary): (usize, usize),
    secs: f64,
) {
    let weight = status["canary_weight"].as_u64().unwrap_or(0);
    let filled = (weight as usize).div_ceil(10).min(10);
    let bar: String = "#".repeat(filled) + &".".repeat(10 - filled);
    let version = |v: usize| {
        let s = seen[v].tick.take_stats();
        format!(
            "{} {:>5}/s {:>6} {:>6}",
            VERSIONS[v],
            (s.requests as f64 / secs).round(),
            percent(s.success_rate()),
            short_millis(s.percentile_ms(0.99)),
        )
    };
    println!(
        "{:>5.1}s  {:>3}% [{bar}]  {} | {}",
        elapsed.as_secs_f64(),
        weight,
        version(stable),
        version(canary),
    );
}

/// A latency in at most six characters: `0.8ms`, `13.2ms`, `132ms`, `1.5s`.
fn short_millis(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(v) if v < 100.0 => format!("{v:.1}ms"),
        Some(v) if v < 1000.0 => format!("{v:.0}ms"),
        Some(v) => format!("{:.1}s", v / 1000.0),
    }
}

/// Prints the rollout events recorded since the `shown` first ones; returns how many there are.
fn show_events(reloader: &crate::reload::Reloader, shown: usize, started: Instant) -> usize {
    let record = reloader.record();
    let events: Vec<_> = record
        .history
        .iter()
        .rev()
        .filter_map(|h| h.rollout.as_ref())
        .collect();
    for a in events.iter().skip(shown) {
        let at =
            a.at.duration_since(std::time::SystemTime::now() - started.elapsed())
                .unwrap_or_default();
        say(&format!(
            "{:>5.1}s  >> {} {}: canary {}% (step {}); {}",
            at.as_secs_f64(),
            a.canary,
            a.event.kind.name().replace('_', " "),
            a.event.canary_weight,
            a.event.step,
            a.event.reason
        ));
    }
    events.len()
}

/// The end of the tour: each version as the clients saw it over the whole tour, and weir's own
/// `/stats` for the backends still configured.
fn summary(reloader: &crate::reload::Reloader, seen: &[Seen; 4]) {
    println!();
    println!("What the clients saw, per version, over the whole tour:");
    let roles = [
        "stable, replaced",
        "canary, promoted",
        "canary, rolled back",
        "canary, rolled back",
    ];
    for (v, role) in roles.iter().enumerate() {
        let s = seen[v].total.peek_stats();
        println!(
            "  {} {:<19} {:>7} req  success {:>6}  p50 {:>6}  p99 {:>6}",
            VERSIONS[v],
            role,
            s.requests,
            percent(s.success_rate()),
            short_millis(s.percentile_ms(0.5)),
            short_millis(s.percentile_ms(0.99)),
        );
    }
    println!();
    println!("As weir measured it (its /stats, last 60 s):");
    let snapshot = reloader.snapshots.load_full();
    let now = snapshot.metrics.now_second();
    for route in snapshot.routes.iter() {
        for b in route.backends.iter() {
            let s = b.metrics.stats(now);
            println!(
                "  {:<3} weight {:>3}        {:>7} req  success {:>6}  p50 {:>6}  p99 {:>6}",
                &**b.name(),
                b.weight,
                s.requests,
                percent(s.success_rate()),
                short_millis(s.percentile_ms(0.5)),
                short_millis(s.percentile_ms(0.99)),
            );
        }
    }
}

/// `weir demo --upstreams`: serves a stand-in on every loopback endpoint of every upstream in
/// the config at `path`, answering each request (HTTP/1.1 or h2c) with `UPSTREAM ENDPOINT`, until
/// Ctrl-C or SIGTERM. Endpoints that are not on loopback, and TLS upstreams, are left alone.
pub async fn stand_in_upstreams(path: &Path) -> anyhow::Result<()> {
    let config = crate::config::load_file(path)
        .map_err(|e| anyhow::anyhow!("{} is not a valid config:\n{e}", path.display()))?;
    let mut serving = 0;
    for upstream in &config.upstreams {
        for endpoint in &upstream.endpoints {
            let host = endpoint
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let ip = match host {
                "localhost" => Some(std::net::IpAddr::from([127, 0, 0, 1])),
                other => other.parse::<std::net::IpAddr>().ok(),
            };
            let (Some(ip), Some(port)) = (ip.filter(|ip| ip.is_loopback()), endpoint.port_u16())
            else {
                println!(
                    "skipped {} {endpoint}: not a loopback address",
                    upstream.name
                );
                continue;
            };
            if upstream.tls.is_some() {
                println!(
                    "skipped {} {endpoint}: the upstream speaks TLS",
                    upstream.name
                );
                continue;
            }
            let address = SocketAddr::new(ip, port);
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} for {}", upstream.name))?;
            let answer = Bytes::from(format!("{} {endpoint}\n", upstream.name));
            println!("serving {} on {address}", upstream.name);
            serving += 1;
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |_req| {
                            let body = Full::new(answer.clone());
                            async move { Ok::<_, Infallible>(hyper::Response::new(body)) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        }
    }
    anyhow::ensure!(
        serving > 0,
        "{} names no plain-HTTP endpoint on a loopback address",
        path.display()
    );
    println!("{serving} stand-in endpoint(s) up; Ctrl-C stops them");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_every_line_within_the_width_and_indents_continuations() {
        let text = "word ".repeat(60) + &"x".repeat(200);
        let lines = wrap(&text, 4);
        assert!(lines.len() > 3);
        for (i, l) in lines.iter().enumerate() {
            assert!(l.chars().count() < WIDTH, "{l}");
            assert_eq!(l.starts_with("    "), i > 0, "{l}");
        }
        assert_eq!(wrap("a b", 2), ["a b"]);
        assert_eq!(wrap("  1.0s  >> a", 2), ["  1.0s >> a"]);
    }
}
