//! `weir demo`: a stable and a canary upstream on loopback ports, weir in front with a 90/10
//! split, traffic for a while, and the split observed per version.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
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

/// Starts an HTTP/1.1 server on an ephemeral loopback port that answers every request with
/// `name`.
pub async fn named_upstream(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        name.as_bytes(),
                    ))))
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

pub async fn run(duration: Duration) -> anyhow::Result<()> {
    let stable = named_upstream("stable").await?;
    let canary = named_upstream("canary").await?;
    let yaml = format!(
        "listeners:\n  - name: demo\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n\
         upstreams:\n  - name: stable\n    endpoints: [\"{stable}\"]\n  - name: canary\n    endpoints: [\"{canary}\"]\n\
         routes:\n  - name: app\n    backends:\n      - {{ upstream: stable, weight: 90 }}\n      - {{ upstream: canary, weight: 10 }}\n"
    );
    let candidate = crate::reload::Candidate::from_str(&yaml, "demo.yaml")
        .map_err(|e| anyhow::anyhow!("the demo config is invalid:\n{e}"))?;
    let running = crate::server::start(candidate, None).await?;
    let address = running
        .address("demo")
        .context("the demo listener is bound")?;
    println!("weir demo: stable upstream on {stable}, canary on {canary}");
    println!(
        "weir listening on http://{address}/ with a 90/10 split; sending traffic for {duration:?}\n"
    );

    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let deadline = Instant::now() + duration;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("http://{address}/").parse()?;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, uri, counts) = (client.clone(), uri.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let slot = match client.get(uri.clone()).await {
                    Ok(resp) => match resp.into_body().collect().await.map(|b| b.to_bytes()) {
                        Ok(b) if b.as_ref() == b"stable" => 0,
                        Ok(b) if b.as_ref() == b"canary" => 1,
                        _ => 2,
                    },
                    Err(_) => 2,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    while Instant::now() < deadline {
        ticker.tick().await;
        print_line(&format!("t={:>3}s", started.elapsed().as_secs()), &counts);
    }
    for t in tasks {
        t.await?;
    }
    println!();
    print_line("total", &counts);
    let split: BTreeMap<&str, u64> = [("stable", 0), ("canary", 1)]
        .into_iter()
        .map(|(n, i)| (n, counts[i].load(Ordering::Relaxed)))
        .collect();
    println!("configured: stable 90.0%  canary 10.0%; observed: {split:?}");
    println!("\nas weir measured it (its /stats, last 60 s):");
    let snapshot = running.reloader.snapshots.load_full();
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

fn print_line(label: &str, counts: &[AtomicU64; 3]) {
    let [s, c, f] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    let total = (s + c).max(1) as f64;
    println!(
        "{label}  requests={:>7}  stable {:>5.1}%  canary {:>5.1}%  failed {f}",
        s + c + f,
        100.0 * s as f64 / total,
        100.0 * c as f64 / total,
    );
}
