//! Hostile config and policy files, each hot-reloaded into a running weir under traffic: weir
//! stays up, the old config keeps serving, and the refusal names its place.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;

use crate::support::*;

/// Requests sent one after another until stopped: (answered 200, anything else).
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

fn traffic(address: std::net::SocketAddr) -> Traffic {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (flag, o, f) = (stop.clone(), ok.clone(), failed.clone());
    let task = tokio::spawn(async move {
        let client = http1_client();
        while !flag.load(Ordering::Relaxed) {
            let req = http::Request::get(format!("http://{address}/"))
                .body(Default::default())
                .unwrap();
            match client.request(req).await {
                Ok(r) if r.status() == StatusCode::OK => o.fetch_add(1, Ordering::Relaxed),
                _ => f.fetch_add(1, Ordering::Relaxed),
            };
        }
    });
    Traffic {
        stop,
        ok,
        failed,
        task,
    }
}

impl Traffic {
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Replaces the file at `path` with `bytes` at once (a write and a rename, as git-sync does).
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits (at most 30 s) until `/history` holds `attempts` entries; returns the newest.
async fn newest_attempt(w: &Weir, attempts: usize) -> Value {
    let started = Instant::now();
    loop {
        let a = get(&http1_client(), w.admin, "/history").await;
        let history: Value = serde_json::from_slice(&a.body).unwrap();
        if history.as_array().unwrap().len() >= attempts {
            return history[0].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "attempt {attempts} was not seen: {history:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A policy file and the error its config must be refused with.
struct PolicyCase {
    name: &'static str,
    rego: String,
    error: &'static str,
}

#[tokio::test]
async fn hostile_files_are_refused_under_traffic_and_the_old_config_keeps_serving() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let good = split_config(stable.address, canary.address, 100, 0);
    let w = weir(&good).await;
    let served = get(&http1_client(), w.admin, "/config").await;
    let served: Value = serde_json::from_slice(&served.body).unwrap();
    let load = traffic(w.address);
    let file = w.path.display().to_string();
    let dir = w.path.parent().unwrap().to_path_buf();

    // YAML that stops the parsers, or the reader, before any recursion or unbounded read.
    let laughs = {
        let mut y = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
            .into_iter()
            .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
        {
            let refs = vec![format!("*{prev}"); 9].join(",");
            y.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        y
    };
    let yaml_cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "5,000 nested sequences",
            ("- ".repeat(5_000) + "x\n").into_bytes(),
            format!("{file}:1:129: the YAML nests deeper than 64 levels"),
        ),
        (
            "20,000 nested sequences",
            ("- ".repeat(20_000) + "x\n").into_bytes(),
            format!("{file}:1:129: the YAML nests deeper than 64 levels"),
        ),
        (
            "a billion laughs",
            laughs.into_bytes(),
            format!("{file}:1:1: invalid YAML: repetition limit exceeded"),
        ),
        (
            "bytes that are not UTF-8",
            b"listeners: [\xff\xfe]\n".to_vec(),
            format!("{file}:1:1: the file is not UTF-8"),
        ),
        (
            "a certificate that is a device",
            good.replace(
                "    address: 127.0.0.1:0\nadmin",
                "    address: 127.0.0.1:0\n    tls: { certificates: [{ cert: /dev/zero, key: k.pem }] }\nadmin",
            )
            .into_bytes(),
            format!("{file}:4:29: listeners[0].tls.certificates[0].cert: cannot read /dev/zero: not a regular file"),
        ),
    ];
    let mut attempts = 1;
    for (name, bytes, error) in yaml_cases {
        replace(&w.path, &bytes);
        attempts += 1;
        let entry = newest_attempt(&w, attempts).await;
        assert_eq!(entry["result"], "failure", "{name}: {entry:#}");
        let text = entry["error"].as_str().unwrap();
        assert!(text.starts_with(&error), "{name}: {text}");
    }

    // Policies that would compile for a minute, or allocate gigabytes.
    let nested = "[".repeat(21) + "1" + &"]".repeat(21);
    let policy_cases = [
        PolicyCase {
            name: "21-deep nested arrays",
            rego: format!("package weir\n\nimport rego.v1\n\nx := {nested}\n\ndeny contains \"no\" if x == 2\n"),
            error: "took longer than 2s",
        },
        PolicyCase {
            name: "numbers.range(1, 3e8)",
            rego: "package weir\n\nimport rego.v1\n\ndeny contains \"big\" if count(numbers.range(1, 3e8)) > 0\n".to_owned(),
            error: "needed more than the sandbox's 1024 MiB of memory",
        },
    ];
    for (i, case) in policy_cases.iter().enumerate() {
        let policy = dir.join(format!("hostile{i}.rego"));
        std::fs::write(&policy, &case.rego).unwrap();
        let text = format!("{good}policies: [hostile{i}.rego]\n");
        replace(&w.path, text.as_bytes());
        attempts += 1;
        let entry = newest_attempt(&w, attempts).await;
        let error = entry["error"].as_str().unwrap();
        let line = text.lines().count();
        assert!(
            error.starts_with(&format!(
                "{file}:{line}:1: policies: denied: the policies could not be evaluated: "
            )) && error.contains(case.error),
            "{}: {error}",
            case.name
        );
    }

    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok > 50, "the traffic went on ({ok} requests)");
    assert_eq!(tally(w.address, 20).await.get("stable"), Some(&20));
    let now = get(&http1_client(), w.admin, "/config").await;
    let now: Value = serde_json::from_slice(&now.body).unwrap();
    assert_eq!(
        now["revision"], served["revision"],
        "the old config still serves"
    );
    assert_eq!(
        metric(&w, "weir_config_reloads_total", &[("result", "failure")]).await,
        (attempts - 1) as f64
    );
}

#[tokio::test]
async fn a_second_unreadable_file_reports_its_own_error() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&split_config(stable.address, canary.address, 100, 0)).await;
    std::fs::remove_file(&w.path).unwrap();
    let gone = newest_attempt(&w, 2).await;
    assert!(
        gone["error"].as_str().unwrap().contains("No such file"),
        "{gone:#}"
    );
    std::fs::create_dir(&w.path).unwrap();
    let dir = newest_attempt(&w, 3).await;
    let error = dir["error"].as_str().unwrap();
    assert!(
        error.ends_with("cannot read the config file: not a regular file"),
        "{error}"
    );
    let config = get(&http1_client(), w.admin, "/config").await;
    let config: Value = serde_json::from_slice(&config.body).unwrap();
    assert_eq!(config["last_reload"]["error"], dir["error"]);
    // A symlink loop in its place: a third error, reported as such.
    std::fs::remove_dir(&w.path).unwrap();
    std::os::unix::fs::symlink(&w.path, &w.path).unwrap();
    let looped = newest_attempt(&w, 4).await;
    let error = looped["error"].as_str().unwrap();
    assert!(error.contains("symbolic links"), "{error}");
    assert_eq!(tally(w.address, 10).await.get("stable"), Some(&10));
}
