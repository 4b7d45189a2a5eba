//! Who may call the admin API: probes always, reads unless `admin.reads: token`, and the
//! state-changing `POST /reload` only with the bearer token (from a file or an environment
//! variable). Real clients on real sockets, and the real binary for the environment variable.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "0123456789abcdef-token-one";
const OTHER: &str = "fedcba9876543210-token-two";

async fn call(
    w: &Weir,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", w.admin));
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = http1_client()
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    (parts.status, parts.headers, body)
}

/// weir over `stable` and `canary` at 90/10 whose admin section gets `admin_extra` lines, with
/// the token file `token` beside the config.
async fn weir_with_token(admin_extra: &str) -> (Weir, Upstream, Upstream) {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let yaml = split_config(stable.address, canary.address, 90, 10).replace(
        "admin:\n  address: 127.0.0.1:0\n",
        &format!("admin:\n  address: 127.0.0.1:0\n{admin_extra}"),
    );
    (weir_in(dir, &yaml).await, stable, canary)
}

fn canary_weight(stats: &Value) -> &Value {
    &stats["routes"][0]["backends"][1]["weight"]
}

#[tokio::test]
async fn post_reload_needs_the_bearer_token_then_rereads_the_file() {
    let (w, stable, canary) = weir_with_token("  token_file: token\n").await;
    std::fs::write(
        &w.path,
        std::fs::read_to_string(&w.path)
            .unwrap()
            .replace("weight: 90", "weight: 75")
            .replace("weight: 10", "weight: 25"),
    )
    .unwrap();
    drop((stable, canary));

    let (status, headers, _) = call(&w, Method::POST, "/reload", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        r#"Bearer realm="weir admin""#
    );
    let (status, headers, _) = call(&w, Method::POST, "/reload", Some(OTHER)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        r#"Bearer realm="weir admin", error="invalid_token""#
    );
    // Nothing was reloaded by the refused calls (the watcher may not have run yet either: the
    // reload below must report a change).
    let (status, _, body) = call(&w, Method::POST, "/reload", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["last_reload"]["result"], "success");
    assert!(answer.get("config").is_none());
    let stats: Value =
        serde_json::from_slice(&call(&w, Method::GET, "/stats", None).await.2).unwrap();
    assert_eq!(*canary_weight(&stats), 25, "{stats:#}");

    // The same bytes again: nothing new to apply.
    let (status, _, body) = call(&w, Method::POST, "/reload", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["changed"],
        false
    );

    // A broken file is refused with its errors, and the running config stays.
    std::fs::write(&w.path, "routes: [").unwrap();
    let (status, _, body) = call(&w, Method::POST, "/reload", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["last_reload"]["result"], "failure");
    assert!(
        answer["last_reload"]["error"]
            .as_str()
            .unwrap()
            .contains("invalid YAML"),
        "{answer:#}"
    );
    let stats: Value =
        serde_json::from_slice(&call(&w, Method::GET, "/stats", None).await.2).unwrap();
    assert_eq!(*canary_weight(&stats), 25);
}

#[tokio::test]
async fn without_a_configured_token_state_changing_calls_are_forbidden() {
    let up = upstream("u").await;
    let w = weir(&split_config(up.address, up.address, 1, 0)).await;
    let (status, _, body) = call(&w, Method::POST, "/reload", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        std::str::from_utf8(&body)
            .unwrap()
            .contains("admin.token_file or admin.token_env")
    );
    let (status, headers, _) = call(&w, Method::GET, "/reload", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::ALLOW], "POST");
    // Reads stay open by default.
    for path in [
        "/", "/stats", "/config", "/history", "/metrics", "/healthz", "/readyz",
    ] {
        assert_eq!(
            call(&w, Method::GET, path, None).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn reads_token_closes_every_read_but_the_probes() {
    let (w, _s, _c) = weir_with_token("  token_file: token\n  reads: token\n").await;
    for path in ["/", "/stats", "/config", "/history", "/metrics"] {
        let (status, headers, _) = call(&w, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            call(&w, Method::GET, path, Some(OTHER)).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&w, Method::GET, path, Some(TOKEN)).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            call(&w, Method::GET, path, None).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    // The token is never shown, only where it comes from.
    let (_, _, body) = call(&w, Method::GET, "/config", Some(TOKEN)).await;
    let config = std::str::from_utf8(&body).unwrap();
    assert!(!config.contains(TOKEN));
    assert!(config.contains(r#""token_file": "token""#), "{config}");
}

#[tokio::test]
async fn a_rotated_token_file_replaces_the_token_without_a_restart() {
    let (w, _s, _c) = weir_with_token("  token_file: token\n").await;
    let token_file = w.path.parent().unwrap().join("token");
    std::fs::write(&token_file, OTHER).unwrap();
    // The token file is an input of the config, watched with it: the new token takes over
    // within the spec's reload time (1 s), bounded here at 10 s.
    let mut rotated = false;
    for _ in 0..200 {
        if call(&w, Method::POST, "/reload", Some(OTHER)).await.0 == StatusCode::OK {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "the new token was never accepted");
    assert_eq!(
        call(&w, Method::POST, "/reload", Some(TOKEN)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// The real binary, with the token in the environment variable the config names: `weir run`
/// serves POST /reload with it, and `weir check` refuses the file when the variable is unset.
#[tokio::test]
async fn token_env_names_the_environment_variable_holding_the_token() {
    let up = upstream("u").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    let yaml = split_config(up.address, up.address, 1, 0).replace(
        "admin:\n  address: 127.0.0.1:0\n",
        "admin:\n  address: 127.0.0.1:0\n  token_env: WEIR_TEST_ADMIN_TOKEN\n",
    );
    std::fs::write(&path, &yaml).unwrap();

    let check = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("WEIR_TEST_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains(
            "admin.token_env: the environment variable WEIR_TEST_ADMIN_TOKEN holds no token"
        ),
        "{stderr}"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .env("WEIR_TEST_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let admin = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "admin API listening" {
                return v["fields"]["address"]
                    .as_str()
                    .unwrap()
                    .parse::<std::net::SocketAddr>()
                    .unwrap();
            }
        }
        panic!("weir exited before its admin API listened");
    });
    let admin = tokio::time::timeout(Duration::from_secs(30), admin)
        .await
        .unwrap()
        .unwrap();
    let client = http1_client();
    let post = |token: &'static str| {
        let req = Request::post(format!("http://{admin}/reload"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(&client, req)
    };
    assert_eq!(post(OTHER).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(post(TOKEN).await.status, StatusCode::OK);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn the_shipped_admin_policy_allows_a_pod_address_only_with_a_token() {
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/policies/admin_loopback.rego");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let check = |admin: &str| {
        let path = dir.path().join("weir.yaml");
        std::fs::write(
            &path,
            format!(
                "listeners: [{{ name: main, address: 127.0.0.1:8080 }}]\nadmin: {admin}\n\
                 upstreams: [{{ name: a, endpoints: [127.0.0.1:9001] }}]\n\
                 routes: [{{ name: r, backends: [{{ upstream: a, weight: 1 }}] }}]\npolicies: [\"{}\"]\n",
                policy.display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(check("{ address: 127.0.0.1:9901 }").0, Some(0));
    let (code, stderr) = check("{ address: 0.0.0.0:9901 }");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("is not loopback and the admin API has no token"),
        "{stderr}"
    );
    assert_eq!(
        check("{ address: 0.0.0.0:9901, token_file: token }").0,
        Some(0)
    );
}
