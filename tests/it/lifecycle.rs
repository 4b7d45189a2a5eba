//! The `weir` binary as an operator runs it: start, SIGHUP, SIGTERM with a request in flight.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::StatusCode;

use crate::support::*;

/// A `weir run` process that is killed and reaped if the test ends without waiting for it.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

type Log = std::sync::mpsc::Receiver<String>;

/// Starts `weir run` and returns it with the address of its listener, read from its log.
fn spawn_weir(config: &std::path::Path) -> (Process, SocketAddr, Log) {
    spawn_weir_with(config, &[], "info")
}

fn spawn_weir_with(
    config: &std::path::Path,
    args: &[&str],
    rust_log: &str,
) -> (Process, SocketAddr, Log) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", rust_log)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Process(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("weir logs its listener within 20 s");
        if line.contains("listening") && !line.contains("admin") {
            // Text lines say `address=A`; JSON lines say `"address":"A"`.
            let rest = line.split("address").nth(1).unwrap();
            let address: String = rest
                .trim_start_matches(['=', '"', ':'])
                .chars()
                .take_while(|c| !matches!(c, '"' | ' ' | '}'))
                .collect();
            return (child, address.parse().unwrap(), rx);
        }
    }
}

fn signal(child: &Process, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Process) -> std::process::ExitStatus {
    for _ in 0..200 {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("weir did not exit within 10 s of SIGTERM");
}

#[tokio::test]
async fn sigterm_drains_a_request_in_flight_then_exits_zero() {
    let up = upstream("slow").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, split_config(up.address, up.address, 1, 0)).unwrap();
    let (mut child, address, _log) = spawn_weir(&path);

    let in_flight =
        tokio::spawn(async move { get(&http1_client(), address, "/slow?ms=1500").await });
    // The request is in flight once the upstream has it.
    for _ in 0..500 {
        if up.hits() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.hits(), 1, "the request reached the upstream");
    signal(&child, "TERM");

    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "slow");
    // The connection closes after it, and says so.
    assert_eq!(answer.headers["connection"], "close");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still accepting after exit"
    );
}

/// What a drain does to a connection caught half-way: weir in front of one upstream answering
/// `app`, a connection to it that has sent `first`, then SIGTERM. Returns once the listener has
/// stopped accepting, with the connection still open (and the directory of weir's config file).
async fn first_bytes_then_sigterm(
    first: &[u8],
) -> (Process, tokio::net::TcpStream, Upstream, tempfile::TempDir) {
    use tokio::io::AsyncWriteExt;
    let up = upstream("app").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, split_config(up.address, up.address, 1, 0)).unwrap();
    let (child, address, _log) = spawn_weir(&path);
    let mut s = tokio::net::TcpStream::connect(address).await.unwrap();
    s.write_all(first).await.unwrap();
    // Time for weir to accept the connection and read the first bytes: one still in the listen
    // queue when the listener closes is reset, and one with nothing read yet is closed as idle
    // (both right for a drain, neither what these tests are about).
    tokio::time::sleep(Duration::from_millis(50)).await;
    signal(&child, "TERM");
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(address).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (child, s, up, dir)
}

#[tokio::test]
async fn sigterm_while_a_head_with_a_body_arrives_answers_it_with_connection_close() {
    use tokio::io::AsyncWriteExt;
    // Half a head on weir's own HTTP/1.1 path; the rest, with a body, goes to hyper after the
    // drain began.
    let (_child, mut s, up, _dir) =
        first_bytes_then_sigterm(b"POST /record HTTP/1.1\r\nhost: a\r\n").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(b"content-length: 3\r\n\r\nabc").await.unwrap();
    let answer = read_response(&mut s).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(
        answer.text.contains("connection: close\r\n"),
        "{}",
        answer.text
    );
    assert_eq!(up.recorded.lock().unwrap()[0].2, "abc");
}

#[tokio::test]
async fn sigterm_while_an_h2c_preface_arrives_answers_its_stream_and_goes_away() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The preface's first line, read on weir's own HTTP/1.1 path, which cannot tell it from an
    // HTTP/1 head yet; the rest, with a request, after the drain began. hyper's HTTP/2 server
    // then starts closing: GOAWAY, and the stream the client sent with its preface answered.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let (_child, mut s, up, _dir) = first_bytes_then_sigterm(&preface[..16]).await;
    let mut rest = preface[16..].to_vec();
    rest.extend(h2_frame(4, 0, 0, &[]));
    // HEADERS, END_STREAM and END_HEADERS: GET, http, / (static table), :authority `a`.
    rest.extend(h2_frame(1, 0x5, 1, &[0x82, 0x86, 0x84, 0x41, 1, b'a']));
    s.write_all(&rest).await.unwrap();
    let (mut answered, mut goaway) = (None, false);
    let read = async {
        loop {
            let mut head = [0u8; 9];
            if s.read_exact(&mut head).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.unwrap();
            match (head[3], head[4]) {
                (4, flags) if flags & 1 == 0 => s.write_all(&h2_frame(4, 1, 0, &[])).await.unwrap(),
                // PING: acknowledged, as a client does (hyper's GOAWAY waits for it).
                (6, flags) if flags & 1 == 0 => {
                    s.write_all(&h2_frame(6, 1, 0, &payload)).await.unwrap()
                }
                // The first byte of the block: `:status: 200` is index 8 of the static table.
                (1, _) if stream == 1 => answered = Some(payload[0]),
                (7, _) => goaway = true,
                _ => {}
            }
            if answered.is_some() && goaway {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("weir answers or closes within 10 s");
    assert_eq!(answered, Some(0x88), "stream 1 answered 200");
    assert!(goaway, "a GOAWAY says the connection closes");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn sighup_reloads_the_weights_from_the_file() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, split_config(stable.address, canary.address, 100, 0)).unwrap();
    let (mut child, address, log) = spawn_weir(&path);
    assert_eq!(tally(address, 50).await.get("stable"), Some(&50));

    std::fs::write(&path, split_config(stable.address, canary.address, 0, 100)).unwrap();
    signal(&child, "HUP");
    loop {
        let line = log
            .recv_timeout(Duration::from_secs(20))
            .expect("a reload is logged");
        if line.contains("reloaded") {
            break;
        }
    }
    assert_eq!(tally(address, 50).await.get("canary"), Some(&50));
    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_access_log_writes_one_json_line_per_request() {
    let up = upstream("access").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, split_config(up.address, up.address, 1, 0)).unwrap();
    let (mut child, address, log) =
        spawn_weir_with(&path, &["--log-format", "json"], "info,weir::access=info");
    let client = http1_client();
    for _ in 0..3 {
        assert_eq!(get(&client, address, "/hello?x=1").await.text(), "access");
    }
    let mut lines = Vec::new();
    while lines.len() < 3 {
        let line = log
            .recv_timeout(Duration::from_secs(20))
            .expect("three access lines");
        let v: serde_json::Value = serde_json::from_str(&line).expect("every log line is JSON");
        if v["target"] == "weir::access" {
            lines.push(v);
        }
    }
    for v in &lines {
        let f = &v["fields"];
        assert_eq!(f["route"], "app");
        assert_eq!(f["backend"], "stable");
        assert_eq!(f["status"], 200);
        assert_eq!(f["bytes"], 6, "{v}");
        assert_eq!(f["path"], "/hello?x=1");
        assert!(f["duration_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(f["request_id"].as_str().unwrap().len(), 36, "{v}");
    }
    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_demo_promotes_a_healthy_canary_and_rolls_back_a_broken_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["demo", "--duration", "8s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    // The rollout events, as the live view prints them, oldest first.
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(">> "))
        .map(|(_, event)| event.split(':').next().unwrap())
        .collect();
    assert_eq!(
        events[..7.min(events.len())],
        [
            "v2 started",
            "v2 step",
            "v2 step",
            "v2 step",
            "v2 promoted",
            "v3 started",
            "v3 rolled back"
        ],
        "{text}"
    );
    // The third act (tests/it/demo.rs runs it to its end) needs more than 8 s on a loaded
    // machine: whatever of it fits comes in order.
    let third = ["v4 started", "v4 rolled back"];
    assert!(third.starts_with(&events[7..]), "{text}");
    assert!(text.contains("fast-fail"), "{text}");
    // The live view showed the weight bar move.
    assert!(text.contains(" 50% [#####.....]"), "{text}");
    // weir's own measurements: after a rollback the stable (v2, promoted) has all the weight;
    // with the third act cut short, v4 still has its step's quarter.
    let stable = text
        .lines()
        .find(|l| l.trim_start().starts_with("v2") && l.contains("weight"))
        .unwrap_or_else(|| panic!("no v2 line in:\n{text}"));
    let weight = if events.last() == Some(&"v4 started") {
        "weight  75"
    } else {
        "weight 100"
    };
    assert!(stable.contains(weight), "{stable}");
}

/// Reads `log` until a JSON line whose message is `message` and that `wanted` accepts; returns
/// it, with every line read on the way appended to `seen`.
fn wait_for_line(
    log: &Log,
    seen: &mut Vec<serde_json::Value>,
    message: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    loop {
        let line = log
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("a `{message}` line within 30 s; seen: {seen:#?}"));
        let v: serde_json::Value = serde_json::from_str(&line).expect("every log line is JSON");
        seen.push(v.clone());
        if v["fields"]["message"] == message && wanted(&v) {
            return v;
        }
    }
}

#[tokio::test]
async fn a_configmap_swap_logs_what_changed_in_words_and_no_warning() {
    let (stable, canary, more) = (
        upstream("stable").await,
        upstream("canary").await,
        upstream("more").await,
    );
    let yaml = |ws: u32, wc: u32, canary_endpoints: &str| {
        format!(
            "listeners: [{{ name: main, address: 127.0.0.1:0 }}]\nadmin: {{ address: 127.0.0.1:0 }}\n\
             upstreams:\n  - {{ name: stable, endpoints: [\"{}\"] }}\n  - {{ name: canary, endpoints: [{canary_endpoints}] }}\n\
             \x20 - {{ name: next, endpoints: [\"{}\"] }}\n\
             routes:\n  - name: app\n    match: {{ path_prefix: /app }}\n    backends: [{{ upstream: stable, weight: {ws} }}, {{ upstream: canary, weight: {wc} }}]\n\
             \x20 - name: slow\n    rollout: {{ canary: next, steps: [10, 100], interval: 1s, min_requests: 50 }}\n    backends: [{{ upstream: stable, weight: 90 }}, {{ upstream: next, weight: 10 }}]\n",
            stable.address, more.address
        )
    };
    // The layout a Kubernetes ConfigMap volume has: the file is a link through `..data`, itself
    // a link to a timestamped directory that the kubelet replaces at each update.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..v1")).unwrap();
    std::fs::write(
        root.join("..v1/weir.yaml"),
        yaml(90, 10, &format!("\"{}\"", canary.address)),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/weir.yaml", root.join("weir.yaml")).unwrap();
    let (mut child, address, log) =
        spawn_weir_with(&root.join("weir.yaml"), &["--log-format", "json"], "info");
    assert_eq!(
        get(&http1_client(), address, "/app").await.status,
        StatusCode::OK
    );

    // A skipped rollout check says so in words, with no Rust type in sight.
    let mut seen = Vec::new();
    let check = wait_for_line(&log, &mut seen, "rollout check", |_| true);
    let f = &check["fields"];
    assert_eq!(f["route"], "slow", "{check}");
    assert_eq!(f["verdict"], "skipped", "{check}");
    assert_eq!(
        f["reason"], "0 canary requests, fewer than min_requests 50",
        "{check}"
    );
    assert_eq!(f["p99"], "none", "{check}");

    // The kubelet's swap: a new directory, a new `..data` link renamed over the old one, the
    // old directory deleted.
    std::fs::create_dir(root.join("..v2")).unwrap();
    std::fs::write(
        root.join("..v2/weir.yaml"),
        yaml(
            75,
            25,
            &format!("\"{}\", \"{}\"", canary.address, more.address),
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..v1")).unwrap();
    let applied = wait_for_line(&log, &mut seen, "config applied", |_| true);
    assert_eq!(
        applied["fields"]["changes"],
        format!(
            "route app: stable 90 -> 75, canary 10 -> 25; upstream canary: endpoints added {}",
            more.address
        ),
        "{applied}"
    );
    // What the watcher does after the swap (it re-watches the new directory) is logged by now
    // or within the next check's line.
    wait_for_line(&log, &mut seen, "rollout check", |_| true);
    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    seen.extend(
        log.try_iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok()),
    );
    for v in &seen {
        assert!(
            v["level"] != "WARN" && v["level"] != "ERROR",
            "a normal ConfigMap update logs no warning: {v}"
        );
        let text = v.to_string();
        for debug in ["Some(", "None", "Skipped(", "Failed(", "Duration"] {
            assert!(!text.contains(debug), "no Rust Debug output in logs: {v}");
        }
    }
}
