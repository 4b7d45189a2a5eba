//! Hot reload, measured: the time from a config file's rename to the first response that follows
//! the new weights (median and p99 over many reloads), and requests/s during a reload storm
//! against the same load without one. In-process weir, real files, real watcher, real sockets.
//! Run with `cargo bench --bench reload`; REPS and SECONDS can be set in the environment.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn yaml(stable: SocketAddr, canary: SocketAddr, ws: u32, wc: u32) -> String {
    format!(
        "listeners: [{{ name: main, address: 127.0.0.1:0 }}]\nadmin: {{ address: 127.0.0.1:0 }}\n\
         upstreams:\n  - {{ name: stable, endpoints: [\"{stable}\"] }}\n  - {{ name: canary, endpoints: [\"{canary}\"] }}\n\
         routes:\n  - name: app\n    backends: [{{ upstream: stable, weight: {ws} }}, {{ upstream: canary, weight: {wc} }}]\n"
    )
}

fn rename_over(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn load(
    address: SocketAddr,
    seconds: u64,
    storm: Option<(&Path, SocketAddr, SocketAddr)>,
) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("http://{address}/").parse().unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (stop, ok, failed, client, uri) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                client.clone(),
                uri.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answered = match client.get(uri.clone()).await {
                        Ok(r) => r.status() == 200 && r.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    };
                    let counter = if answered { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut i = 0u32;
    while Instant::now() < end {
        match storm {
            Some((path, s, c)) => {
                i += 1;
                rename_over(path, &yaml(s, c, 100 - i % 50, 1 + i % 50));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and test listing: nothing to list.
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stable = weir::demo::named_upstream("stable").await.unwrap();
        let canary = weir::demo::named_upstream("canary").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.yaml");
        std::fs::write(&path, yaml(stable, canary, 100, 0)).unwrap();
        let candidate = weir::reload::read_file(&path).unwrap_or_else(|r| panic!("{}", r.errors));
        let running = weir::server::start(candidate, Some(path.clone())).await.unwrap();
        let address = running.address("main").unwrap();
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let uri: hyper::Uri = format!("http://{address}/").parse().unwrap();

        let reps = env("REPS", 100);
        let mut latencies = Vec::new();
        for i in 0..reps {
            let (want, ws, wc) = if i % 2 == 0 { ("canary", 0, 100) } else { ("stable", 100, 0) };
            // Let the previous change settle so each rename is seen on its own.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let started = Instant::now();
            rename_over(&path, &yaml(stable, canary, ws, wc));
            loop {
                let body = client.get(uri.clone()).await.unwrap().into_body().collect().await.unwrap().to_bytes();
                if body == want.as_bytes() {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(5), "reload not seen");
            }
            latencies.push(started.elapsed());
        }
        latencies.sort();
        let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        println!(
            "rename -> first response on the new weights, {reps} reloads: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            pick(0.5).as_secs_f64() * 1e3,
            pick(0.99).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3
        );

        let seconds = env("SECONDS", 5);
        let (calm, calm_failed) = load(address, seconds, None).await;
        let (storm, storm_failed) = load(address, seconds, Some((&path, stable, canary))).await;
        let applied = running.reloader.record().history.iter().filter(|h| h.success).count();
        println!(
            "16 clients, {seconds} s each: {:.0} req/s without reloads, {:.0} req/s with a rewrite every 10 ms ({:.2}x); failed: {calm_failed} and {storm_failed}; history holds {applied} applied reloads (capped at 100)",
            calm as f64 / seconds as f64,
            storm as f64 / seconds as f64,
            storm as f64 / calm as f64,
        );
    });
}
