//! The access log configured in the YAML (`access_log:`): flat JSON lines with the request ID,
//! protocol, authority, user agent, endpoint, times, bytes and response flags, written by its
//! own thread to a file; reloaded (text format, turned off) without a restart; a file that
//! cannot be opened refuses the config where `access_log.path` is written.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::support::*;

/// The lines of `path` once there are at least `n` (the writer is a thread of its own).
async fn lines_when(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{n} access lines within 30 s, got:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn yaml(up: std::net::SocketAddr, dead: std::net::SocketAddr, access_log: &str) -> String {
    config(
        &[("app", &[up]), ("dead", &[dead])],
        "  - name: dead\n    match: { path_prefix: /dead }\n    backends: [{ upstream: dead, weight: 1 }]\n\
         \x20 - name: app\n    match: { path_prefix: /echo }\n    backends: [{ upstream: app, weight: 1 }]\n\
         \x20 - name: plain\n    match: { path_prefix: /app }\n    backends: [{ upstream: app, weight: 1 }]\n",
    ) + access_log
}

#[tokio::test]
async fn the_yaml_access_log_writes_one_flat_json_line_per_request() {
    let (up, dead) = (upstream("app").await, closed_port().await);
    let w = weir(&yaml(
        up.address,
        dead,
        "access_log: { format: json, path: access.log }\n",
    ))
    .await;
    let path = w.path.parent().unwrap().join("access.log");
    let client = http1_client();
    let post = Request::post(format!("http://{}/echo?x=1", w.address))
        .header("user-agent", "curl/8.5.0")
        .header("x-request-id", "req-1")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    assert_eq!(send(&client, post).await.text(), "hello");
    let h2 = get(&h2c_client(), w.address, "/app").await;
    assert_eq!(h2.status, StatusCode::OK);
    let dead_answer = get(&client, w.address, "/dead").await;
    assert_eq!(dead_answer.status, StatusCode::BAD_GATEWAY);
    let none = get(&client, w.address, "/nowhere").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);

    let lines: Vec<Value> = lines_when(&path, 4)
        .await
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let by_path = |p: &str| {
        lines
            .iter()
            .find(|v| v["path"] == p)
            .unwrap_or_else(|| panic!("a line for {p}: {lines:#?}"))
    };
    let ok = by_path("/echo?x=1");
    assert_eq!(ok["request_id"], "req-1");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["authority"], w.address.to_string());
    assert_eq!(ok["user_agent"], "curl/8.5.0");
    assert_eq!(ok["listener"], "main");
    assert_eq!(ok["route"], "app");
    assert_eq!(ok["backend"], "app");
    assert_eq!(ok["endpoint"], up.address.to_string());
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["flags"], "-");
    assert_eq!(ok["retries"], 0);
    assert_eq!(ok["bytes_received"], 5);
    assert_eq!(ok["bytes_sent"], 5);
    let (upstream_ms, total_ms) = (
        ok["upstream_ms"].as_f64().unwrap(),
        ok["duration_ms"].as_f64().unwrap(),
    );
    assert!(upstream_ms <= total_ms, "{ok}");
    // Milliseconds with at most three decimals.
    let raw = lines_when(&path, 4).await.join("\n");
    for key in ["\"duration_ms\":", "\"upstream_ms\":"] {
        for rest in raw.split(key).skip(1) {
            let number: String = rest.chars().take_while(|c| *c != ',').collect();
            let decimals = number.split('.').nth(1).map_or(0, str::len);
            assert!(number == "null" || decimals <= 3, "{key}{number}");
        }
    }
    // Every value is flat: no object nests another.
    assert!(lines.iter().all(|v| {
        v.as_object()
            .unwrap()
            .values()
            .all(|f| !f.is_object() && !f.is_array())
    }));

    let h2_line = lines.iter().find(|v| v["protocol"] == "HTTP/2").unwrap();
    assert_eq!(h2_line["request_id"].as_str().unwrap().len(), 36);
    assert_eq!(h2_line["bytes_sent"], 3);

    let failed = by_path("/dead");
    assert_eq!(failed["status"], 502);
    assert_eq!(failed["flags"], "UF");
    assert_eq!(failed["endpoint"], Value::Null);
    assert_eq!(failed["upstream_ms"], Value::Null);
    assert_eq!(
        failed["request_id"],
        dead_answer.headers["x-request-id"].to_str().unwrap()
    );
    let unrouted = by_path("/nowhere");
    assert_eq!(unrouted["status"], 404);
    assert_eq!(unrouted["flags"], "NR");
    assert_eq!(unrouted["route"], Value::Null);

    assert_eq!(metric(&w, "weir_access_log_lines_total", &[]).await, 4.0);
}

#[tokio::test]
async fn a_reload_switches_the_access_log_to_text_then_off() {
    let (up, dead) = (upstream("app").await, closed_port().await);
    let json = yaml(up.address, dead, "access_log: { path: access.log }\n");
    let w = weir(&json).await;
    let path = w.path.parent().unwrap().join("access.log");
    let client = http1_client();
    get(&client, w.address, "/app").await;
    lines_when(&path, 1).await;

    std::fs::write(
        &w.path,
        yaml(
            up.address,
            dead,
            "access_log: { path: access.log, format: text }\n",
        ),
    )
    .unwrap();
    reload(&w).await.unwrap();
    let req = Request::get(format!("http://{}/app", w.address))
        .header("x-request-id", "text-1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&client, req).await;
    let lines = lines_when(&path, 2).await;
    assert!(lines[0].starts_with('{'), "{}", lines[0]);
    let text = &lines[1];
    assert!(text.starts_with('['), "{text}");
    assert!(
        text.contains("\"GET /app HTTP/1.1\" 200 - 0 3 ") && text.contains("\"text-1\""),
        "{text}"
    );
    assert!(text.contains(" route=plain backend=app "), "{text}");

    std::fs::write(
        &w.path,
        yaml(up.address, dead, "access_log: { enabled: false }\n"),
    )
    .unwrap();
    reload(&w).await.unwrap();
    for _ in 0..5 {
        get(&client, w.address, "/app").await;
    }
    // The writer of the old settings had all it was given; nothing more comes (its thread
    // writes within milliseconds; six short naps give it far more).
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lines_when(&path, 2).await.len(), 2);
}

#[tokio::test]
async fn an_access_log_file_that_cannot_be_opened_refuses_the_reload_at_its_line() {
    let (up, dead) = (upstream("app").await, closed_port().await);
    let w = weir(&yaml(up.address, dead, "")).await;
    std::fs::write(
        &w.path,
        yaml(
            up.address,
            dead,
            "access_log:\n  path: missing-dir/access.log\n",
        ),
    )
    .unwrap();
    let error = reload(&w).await.unwrap_err();
    let line = std::fs::read_to_string(&w.path)
        .unwrap()
        .lines()
        .position(|l| l.contains("missing-dir"))
        .unwrap()
        + 1;
    assert!(
        error.contains(&format!(
            "weir.yaml:{line}:3: access_log.path: cannot open access log file"
        )) && error.contains("missing-dir/access.log"),
        "{error}"
    );
    // The running config stays and serves.
    assert_eq!(get(&http1_client(), w.address, "/app").await.text(), "app");
    assert_eq!(
        metric(&w, "weir_config_last_reload_successful", &[]).await,
        0.0
    );
}
