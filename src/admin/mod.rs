//! The admin API on `admin.address`: `/metrics`, `/healthz`, `/readyz`, `/config`, `/stats`,
//! `/history` (SPEC.md, "Admin API"). Read-only; it stays up while the proxy drains.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::WINDOW_SECS;
use crate::reload::Reloader;
use crate::reload::revision::rfc3339;

/// What the admin handlers read.
pub struct AdminState {
    pub reloader: Arc<Reloader>,
    /// Set when the server starts draining; `/readyz` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
}

/// Serves the admin API until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, &req)) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn json_response(value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).expect("admin JSON always serializes");
    respond(StatusCode::OK, "application/json", body)
}

const TEXT: &str = "text/plain; charset=utf-8";

pub fn answer(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = [
        "/metrics", "/healthz", "/readyz", "/config", "/stats", "/history",
    ];
    if !known.contains(&path) {
        return respond(StatusCode::NOT_FOUND, TEXT, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/healthz" => respond(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" if state.draining.load(Ordering::Relaxed) => {
            respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "draining\n")
        }
        "/readyz" => respond(StatusCode::OK, TEXT, "ready\n"),
        "/metrics" => {
            let snapshot = state.reloader.snapshots.load_full();
            let backends = snapshot
                .routes
                .iter()
                .flat_map(|r| r.backends.iter().map(|b| &*b.metrics));
            let body = snapshot.metrics.render(backends);
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        "/config" => json_response(&config_json(&state.reloader)),
        "/stats" => json_response(&stats_json(&state.reloader)),
        _ => json_response(&history_json(&state.reloader)),
    }
}

fn config_json(reloader: &Reloader) -> Value {
    let snapshot = reloader.snapshots.load_full();
    let record = reloader.record();
    let last = record.last();
    json!({
        "revision": {
            "sha256": record.revision.sha256,
            "git_commit": record.revision.git_commit,
            "loaded_at": rfc3339(record.revision.loaded_at),
        },
        "last_reload": {
            "result": if last.success { "success" } else { "failure" },
            "error": last.error,
            "at": rfc3339(last.at),
            "warnings": last.warnings,
        },
        "config": snapshot.config.spec,
    })
}

/// Rounds to three decimals so the JSON stays readable.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn stats_json(reloader: &Reloader) -> Value {
    let snapshot = reloader.snapshots.load_full();
    let rollouts = reloader.rollouts();
    let now = snapshot.metrics.now_second();
    let routes: Vec<Value> = snapshot
        .routes
        .iter()
        .map(|r| {
            let weights = || r.backends.iter().map(|b| b.weight);
            let backends: Vec<Value> = r
                .backends
                .iter()
                .map(|b| {
                    let s = b.metrics.stats(now);
                    let p = |q| s.percentile_ms(q).map(round3);
                    json!({
                        "name": &**b.name(),
                        "weight": b.weight,
                        "share": crate::config::share(b.weight, weights()),
                        "requests": s.requests,
                        "success_rate": s.success_rate(),
                        "latency_ms": { "p50": p(0.5), "p90": p(0.9), "p99": p(0.99) },
                    })
                })
                .collect();
            json!({ "name": &*r.name, "backends": backends, "rollout": rollouts.status(&r.name) })
        })
        .collect();
    json!({ "window_seconds": WINDOW_SECS, "routes": routes })
}

fn history_json(reloader: &Reloader) -> Value {
    let record = reloader.record();
    Value::Array(
        record
            .history
            .iter()
            .map(|h| {
                json!({
                    "at": rfc3339(h.at),
                    "sha256": h.sha256,
                    "git_commit": h.git_commit,
                    "result": if h.success { "success" } else { "failure" },
                    "error": h.error,
                    "weights": h.weights,
                    "source": if h.rollout.is_some() { "rollout" } else { "reload" },
                    "rollout": h.rollout.as_ref().map(|a| a.json()),
                })
            })
            .collect(),
    )
}
