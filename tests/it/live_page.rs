//! The live page at the admin root, in a real browser: headless Chromium (Debian's `chromium`;
//! CI installs it) loads it while traffic flows, and the test reads the rendered numbers from
//! the DOM through the DevTools protocol, compares them with `/stats`, and saves a screenshot.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium with one page, driven over the DevTools protocol.
struct Browser {
    child: Child,
    page: Socket,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1100,700",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium is installed (apt-get install chromium)");
        // Chromium writes the port it bound (port 0 asked for any) into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let port = wait_for(Duration::from_secs(60), || {
            let text = std::fs::read_to_string(&port_file).ok()?;
            text.lines().next()?.trim().parse::<u16>().ok()
        })
        .await
        .expect("chromium wrote its DevTools port");
        let debugger = format!("127.0.0.1:{port}").parse().unwrap();
        let targets = wait_for_async(Duration::from_secs(30), || async {
            let list = get(&http1_client(), debugger, "/json/list").await;
            let targets: Value = serde_json::from_slice(&list.body).ok()?;
            targets
                .as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
        })
        .await
        .expect("chromium lists its page");
        let (page, _) = tokio_tungstenite::connect_async(targets).await.unwrap();
        Browser {
            child,
            page,
            next_id: 0,
            _profile: profile,
        }
    }

    /// Sends one DevTools command and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({ "id": id, "method": method, "params": params });
        self.page
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.page.next())
                .await
                .expect("chromium answers within 30 s")
                .expect("the DevTools socket stays open")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; it must return a JSON string.
    async fn json(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        serde_json::from_str(result["result"]["value"].as_str().unwrap_or("null")).unwrap()
    }
}

impl Browser {
    /// Reads the page ([`READ_PAGE`]) until `done` holds, for at most `limit`.
    async fn read_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let page = self.json(READ_PAGE).await;
            if done(&page) {
                return Some(page);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// What the page shows: the number of completed polls, each backend row's cells, each route's
/// rollout line, the number of history rows.
const READ_PAGE: &str = r##"JSON.stringify({
  polls: Number(document.body.dataset.polls),
  rows: [...document.querySelectorAll("tr[data-backend]")].map((tr) => Object.assign(
    { route: tr.dataset.route, backend: tr.dataset.backend },
    Object.fromEntries([...tr.querySelectorAll("[data-field]")].map((td) => [td.dataset.field, td.textContent])))),
  rollouts: [...document.querySelectorAll("section[data-route]")].map((s) => ({
    route: s.dataset.route,
    state: s.querySelector("[data-field=rollout-state]")?.textContent,
    step: s.querySelector("[data-field=rollout-step]")?.textContent,
    canary_weight: s.querySelector("[data-field=canary-weight]")?.textContent })),
  history: document.querySelectorAll("#history tr").length,
  status: document.getElementById("status").textContent,
})"##;

/// A number the page rendered (`12.5%`, `1.23 ms`, `42`), without its unit.
fn number(cell: &Value) -> f64 {
    let text = cell.as_str().unwrap();
    text.trim_end_matches(" ms")
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

/// Base64 (standard alphabet) to bytes, for the screenshot.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(value(c)) << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[tokio::test]
async fn the_live_page_renders_what_stats_reports_while_traffic_flows() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    // A rollout that stays at its first step (its check is an hour away): canary weight 20.
    let yaml = split_config(stable.address, canary.address, 100, 0).replace(
        "      - { upstream: canary, weight: 0 }\n",
        "      - { upstream: canary, weight: 0 }\n    rollout: { canary: canary, steps: [20, 100], interval: 1h }\n",
    );
    let w = weir(&yaml).await;

    // Traffic, one request in ten failing (the upstreams answer /status/500 with a 500).
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, address) = (stop.clone(), w.address);
        tokio::spawn(async move {
            let client = http1_client();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let path = if n % 10 == 9 { "/status/500" } else { "/" };
                get(&client, address, path).await;
                n += 1;
            }
            n
        })
    };

    let mut browser = Browser::open(&format!("http://{}/", w.admin)).await;
    // While the traffic flows, the page fills in and keeps polling.
    let flowing = browser
        .read_until(Duration::from_secs(60), |page| {
            let rps = page["rows"][0]["rps"]
                .as_str()
                .map(|_| number(&page["rows"][0]["rps"]));
            page["polls"].as_u64() >= Some(2) && rps > Some(0.0)
        })
        .await
        .expect("the page showed traffic within 60 s");
    assert_eq!(flowing["rows"].as_array().unwrap().len(), 2, "{flowing:#}");

    // Stop the traffic; once the page has polled twice more, it and /stats describe the same
    // last 60 s (the window does not move until its oldest second is a minute old).
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.await.unwrap();
    assert!(sent > 0);
    let polls = browser.json(READ_PAGE).await["polls"].as_u64().unwrap();
    let page = browser
        .read_until(Duration::from_secs(30), |page| {
            page["polls"].as_u64() >= Some(polls + 2)
        })
        .await
        .expect("the page kept polling");
    let stats: Value =
        serde_json::from_slice(&get(&http1_client(), w.admin, "/stats").await.body).unwrap();
    let window = stats["window_seconds"].as_f64().unwrap();

    let rows = page["rows"].as_array().unwrap();
    let backends = stats["routes"][0]["backends"].as_array().unwrap();
    assert_eq!(rows.len(), backends.len());
    let mut requests = 0;
    for (row, b) in rows.iter().zip(backends) {
        assert_eq!(row["route"], "app");
        assert_eq!(row["backend"], b["name"]);
        assert_eq!(
            number(&row["weight"]),
            b["weight"].as_f64().unwrap(),
            "{row}"
        );
        assert_eq!(
            number(&row["requests"]),
            b["requests"].as_f64().unwrap(),
            "{row}"
        );
        requests += b["requests"].as_u64().unwrap();
        // Each shown number equals the reported one up to its last shown digit (half a unit).
        let close = |shown: f64, reported: f64, half_unit: f64, what: &str| {
            assert!(
                (shown - reported).abs() <= half_unit + 1e-9,
                "{what}: page {shown}, /stats {reported}: {row}"
            );
        };
        close(
            number(&row["share"]),
            b["share"].as_f64().unwrap() * 100.0,
            0.05,
            "share",
        );
        close(
            number(&row["rps"]),
            b["requests"].as_f64().unwrap() / window,
            0.05,
            "req/s",
        );
        close(
            number(&row["success"]),
            b["success_rate"].as_f64().unwrap() * 100.0,
            0.05,
            "success",
        );
        close(
            number(&row["p50"]),
            b["latency_ms"]["p50"].as_f64().unwrap(),
            0.005,
            "p50",
        );
        close(
            number(&row["p99"]),
            b["latency_ms"]["p99"].as_f64().unwrap(),
            0.005,
            "p99",
        );
    }
    assert_eq!(requests, sent, "every request is counted once");
    // One request in ten failed: the page shows a success rate below 100 % for the backend
    // that got the most of them.
    assert!(
        rows.iter().any(|r| number(&r["success"]) < 100.0),
        "{rows:?}"
    );

    let rollout = &stats["routes"][0]["rollout"];
    let shown = &page["rollouts"][0];
    assert_eq!(shown["state"], rollout["state"]);
    assert_eq!(shown["state"], "progressing");
    assert_eq!(shown["step"], rollout["step"].to_string());
    assert_eq!(shown["canary_weight"], rollout["canary_weight"].to_string());
    assert_eq!(shown["canary_weight"], "20");
    assert!(
        page["history"].as_u64().unwrap() >= 2,
        "the load and the rollout's start: {page:#}"
    );
    assert!(
        page["status"].as_str().unwrap().starts_with("updated"),
        "{page:#}"
    );

    let shot = browser
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .await;
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live-page.png");
    std::fs::write(&file, &png).unwrap();
    if let Some(keep) = std::env::var_os("WEIR_SCREENSHOT_DIR") {
        std::fs::copy(&file, Path::new(&keep).join("live-page.png")).unwrap();
    }
    println!("screenshot: {} ({} bytes)", file.display(), png.len());
}
