//! Allocations per proxied request, counted by a global allocator that counts only on weir's own
//! runtime threads (the client and the upstream run on another runtime and are not counted).
//! Run with `cargo bench --bench allocs`; REQUESTS sets the count (default 20,000). The client
//! sends no `x-request-id`, so weir generates one per request; `INCOMING_ID=1` sends one (kept).
//! `WEIR_EXTRA` is top-level YAML appended to weir's config (`tracing: {sampling: 1.0}`, say);
//! `ROUTE_EXTRA` is YAML added to the route, each line indented by four spaces (gateway fields:
//! `ROUTE_EXTRA='    backend_header: true'`, say).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[path = "support/counting.rs"]
mod counting;
use counting::{ALLOCATIONS, BYTES, COUNTED};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let requests: u64 = std::env::var("REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let peers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let upstream = peers
        .block_on(weir::demo::named_upstream("stable"))
        .unwrap();

    // weir on its own single-threaded runtime thread, the one whose allocations count.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let route_extra = std::env::var("ROUTE_EXTRA").map_or(String::new(), |e| e + "\n");
            let yaml = format!(
                "listeners: [{{ name: main, address: 127.0.0.1:0 }}]\nadmin: {{ address: 127.0.0.1:0 }}\n\
                 upstreams:\n  - {{ name: stable, endpoints: [\"{upstream}\"] }}\n  - {{ name: canary, endpoints: [\"{upstream}\"] }}\n\
                 routes:\n  - name: app\n{route_extra}    backends: [{{ upstream: stable, weight: 90 }}, {{ upstream: canary, weight: 10 }}]\n"
            );
            let yaml = yaml + &std::env::var("WEIR_EXTRA").unwrap_or_default();
            let candidate = weir::reload::Candidate::from_str(&yaml, "allocs.yaml").unwrap();
            let running = weir::server::start(candidate, None).await.unwrap();
            tx.send(running.address("main").unwrap()).unwrap();
            COUNTED.with(|c| c.set(true));
            std::future::pending::<()>().await;
        });
    });
    let address = rx.recv().unwrap();

    peers.block_on(async move {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let uri: hyper::Uri = format!("http://{address}/").parse().unwrap();
        let incoming = std::env::var("INCOMING_ID").is_ok_and(|v| v == "1");
        let get = || async {
            let mut req = hyper::Request::get(uri.clone());
            if incoming {
                req = req.header("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e");
            }
            let r = client.request(req.body(Empty::new()).unwrap()).await.unwrap();
            assert_eq!(r.status(), 200);
            r.into_body().collect().await.unwrap();
        };
        // Warm up: connections, pools, lazily created metric handles.
        for _ in 0..1_000 {
            get().await;
        }
        let (a0, b0) = (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
        for _ in 0..requests {
            get().await;
        }
        let (a, b) = (ALLOCATIONS.load(Ordering::Relaxed) - a0, BYTES.load(Ordering::Relaxed) - b0);
        println!(
            "{requests} keep-alive GETs through weir (90/10 split): {:.2} allocations and {:.0} bytes allocated per request on weir's thread",
            a as f64 / requests as f64,
            b as f64 / requests as f64
        );
    });
}
