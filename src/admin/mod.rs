//! The admin API on `admin.address`: `/metrics`, `/healthz`, `/readyz`, `/config`, `/stats`,
//! `/history` (SPEC.md, "Admin API"), the live page at `/`, `POST /reload` and
//! `POST /rollouts/ROUTE/{promote,abort,pause,resume}`. It stays up while the proxy drains.
//!
//! Access: `/healthz` and `/readyz` are always open (probes); reads are open unless
//! `admin.reads: token`; `POST /reload`, the one state-changing call, always needs the bearer
//! token of `admin.token_file` / `admin.token_env`, compared in constant time
//! ([`crate::config::AdminToken`]). docs/OPERATIONS.md has the threat model.

mod page;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::AdminReads;
use crate::metrics::WINDOW_SECS;
use crate::reload::Reloader;
use crate::reload::revision::rfc3339;

/// What the admin handlers read.
pub struct AdminState {
    pub reloader: Arc<Reloader>,
    /// Set when the server starts draining; `/readyz` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
}

/// At most this many admin connections are open at once; more are closed as they come, so
/// the admin API never takes the descriptors the proxy needs.
pub const MAX_CONNECTIONS: usize = 64;

/// Serves the admin API until `stop` turns true. Each connection lives under the proxy's
/// limits: its request heads within `limits.header_read_timeout` (the first one included), and
/// it is closed after `limits.idle_timeout` without a request (HTTP/2: GOAWAY, then closed).
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut failing = crate::proxy::listener::AcceptFailures::default();
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        let pause = failing.failed("admin", &e);
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!("admin connection refused: {MAX_CONNECTIONS} are open");
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    connection(stream, state).await;
                    drop(slot);
                });
            }
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, state: Arc<AdminState>) {
    let limits = state.reloader.snapshots.load().config.limits;
    let service_state = state.clone();
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = requests.clone();
    let service = service_fn(move |req| {
        let state = service_state.clone();
        counted.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, Infallible>(answer(&state, &req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / 4)
        .keep_alive_timeout(limits.header_read_timeout)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let serving = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(serving);
    // The first request must start within the head's deadline; then each quiet stretch may last
    // `idle_timeout`; asked to close, the connection gets one more `header_read_timeout`.
    let mut deadline = limits.header_read_timeout;
    let mut seen = 0;
    let mut closing = false;
    loop {
        tokio::select! {
            _ = serving.as_mut() => return,
            () = tokio::time::sleep(deadline) => {
                let now = requests.load(Ordering::Relaxed);
                if closing || now == 0 {
                    return;
                }
                if now == seen {
                    serving.as_mut().graceful_shutdown();
                    closing = true;
                    deadline = limits.header_read_timeout;
                } else {
                    seen = now;
                    deadline = limits.idle_timeout;
                }
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
    let mut r = respond(StatusCode::OK, "application/json", body);
    // The live page polls these; a cache must never answer for weir.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Every path the admin API answers, and who may call it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Probes: always open, so a kubelet needs no token.
    Probe,
    /// Reads: open, or token-only with `admin.reads: token`.
    Read,
    /// State-changing: always needs the token, and only `POST`.
    Change,
}

fn access(path: &str) -> Option<Access> {
    match path {
        "/healthz" | "/readyz" => Some(Access::Probe),
        "/" | "/metrics" | "/config" | "/stats" | "/history" => Some(Access::Read),
        "/reload" => Some(Access::Change),
        p if rollout_command(p).is_some() => Some(Access::Change),
        _ => None,
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

/// The bearer token a request presents, if any (`Authorization: Bearer TOKEN`, the scheme in any
/// case, spaces around the token ignored). Anything else, however malformed, is no token.
pub fn presented_token(headers: &http::HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// 401 with the challenge of RFC 6750: `error="invalid_token"` when a token was presented.
fn unauthorized(presented: bool) -> Response<Full<Bytes>> {
    let (challenge, body) = if presented {
        (
            r#"Bearer realm="weir admin", error="invalid_token""#,
            "the bearer token is not valid\n",
        )
    } else {
        (
            r#"Bearer realm="weir admin""#,
            "this admin path needs a bearer token (Authorization: Bearer TOKEN)\n",
        )
    };
    let mut r = respond(StatusCode::UNAUTHORIZED, TEXT, body);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(challenge),
    );
    r
}

/// The refusal to send when `req` may not use a path of kind `access` under the running
/// config; `None` when it may.
fn refusal(
    config: &crate::config::Config,
    access: Access,
    req: &Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    let needed = match access {
        Access::Probe => false,
        Access::Read => config.spec.admin.reads == AdminReads::Token,
        Access::Change => true,
    };
    if !needed {
        return None;
    }
    let Some(token) = &config.admin_token else {
        return Some(respond(
            StatusCode::FORBIDDEN,
            TEXT,
            "state-changing admin calls are off: no admin.token_file or admin.token_env is set\n",
        ));
    };
    match presented_token(req.headers()) {
        Some(t) if token.matches(t) => None,
        Some(_) => Some(unauthorized(true)),
        None => Some(unauthorized(false)),
    }
}

pub async fn answer(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let Some(access) = access(path) else {
        return respond(StatusCode::NOT_FOUND, TEXT, "not found\n");
    };
    let method = req.method();
    if access == Access::Change {
        if method != Method::POST {
            return method_not_allowed("POST");
        }
    } else if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let snapshot = state.reloader.snapshots.load_full();
    if let Some(refused) = refusal(&snapshot.config, access, req) {
        return refused;
    }
    match path {
        "/healthz" => respond(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" if state.draining.load(Ordering::Relaxed) => {
            respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "draining\n")
        }
        "/readyz" => respond(StatusCode::OK, TEXT, "ready\n"),
        "/" => page::response(),
        "/metrics" => {
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
        "/reload" => reload(&state.reloader).await,
        "/history" => json_response(&history_json(&state.reloader)),
        _ => match rollout_command(path) {
            Some((route, action)) => rollout_action(&state.reloader, route, action).await,
            None => respond(StatusCode::NOT_FOUND, TEXT, "not found\n"),
        },
    }
}

/// `/rollouts/ROUTE/promote|abort|pause|resume`: the route and the command.
fn rollout_command(path: &str) -> Option<(&str, crate::rollout::Action)> {
    let rest = path.strip_prefix("/rollouts/")?;
    let (route, action) = rest.rsplit_once('/')?;
    let action = crate::rollout::Action::parse(action)?;
    (!route.is_empty() && !route.contains('/')).then_some((route, action))
}

/// `POST /rollouts/ROUTE/ACTION` (`weir rollout ACTION ROUTE` for a single instance): 200 with
/// the route's rollout block once carried out, 404 for a route without a rollout, 409 when the
/// rollout has ended or follows the fleet's status (then Git is where commands go).
async fn rollout_action(
    reloader: &Arc<Reloader>,
    route: &str,
    action: crate::rollout::Action,
) -> Response<Full<Bytes>> {
    use crate::rollout::Refusal;
    match reloader.manual(route, action).await {
        Ok(status) => {
            json_response(&json!({"route": route, "action": action.name(), "rollout": status}))
        }
        Err(refusal) => {
            let status = match refusal {
                Refusal::NoRollout(_) => StatusCode::NOT_FOUND,
                Refusal::Fleet(_) | Refusal::Ended(..) => StatusCode::CONFLICT,
            };
            respond(status, TEXT, format!("{refusal}\n"))
        }
    }
}

/// `POST /reload`: re-reads the config file now, as SIGHUP does. 200 when the file serves (new or
/// unchanged), 422 with the errors when it was refused (now, or its same bytes before), 409 when
/// weir runs without a file.
async fn reload(reloader: &Arc<Reloader>) -> Response<Full<Bytes>> {
    if reloader.path().is_none() {
        return respond(
            StatusCode::CONFLICT,
            TEXT,
            "this weir was started without a config file: nothing to reload\n",
        );
    }
    // The control task reads, validates and checks the policies off the async workers.
    // A refusal is in the record, which the answer shows.
    let changed = reloader.reload().await.unwrap_or(true);
    if changed {
        tracing::info!("config reloaded on POST /reload");
    }
    let mut value = config_json(reloader);
    let status = if value["last_reload"]["result"] == "success" {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let object = value.as_object_mut().expect("config_json is an object");
    object.remove("config");
    object.insert("changed".to_owned(), Value::Bool(changed));
    let mut r = json_response(&value);
    *r.status_mut() = status;
    r
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_scheme_with_a_token_presents_one() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"Bearer abc", Some(b"abc")),
            (b"bearer abc", Some(b"abc")),
            (b"BEARER   abc  ", Some(b"abc")),
            (b"Bearer", None),
            (b"Bearer ", None),
            (b"Bearer    ", None),
            (b"Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
            (b"Bearerabc", None),
            (b" Bearer abc", None),
            (b"", None),
            (b"\xff\xfe Bearer", None),
            (b"Bearer \xff\x00x", Some(b"\xff\x00x")),
        ];
        for (value, expected) in cases {
            let mut headers = http::HeaderMap::new();
            // Values a client can send but `HeaderValue` refuses (NUL) never reach weir.
            let Ok(v) = header::HeaderValue::from_bytes(value) else {
                continue;
            };
            headers.insert(header::AUTHORIZATION, v);
            assert_eq!(presented_token(&headers), *expected, "{value:?}");
        }
        assert_eq!(presented_token(&http::HeaderMap::new()), None);
    }
}
