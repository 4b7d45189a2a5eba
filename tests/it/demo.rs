//! `weir demo`, run as a newcomer runs it: the real binary in a terminal-sized view, and
//! `weir demo --upstreams` standing in for a config's upstreams.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

#[test]
fn the_demo_fits_80_columns_logs_nothing_and_its_comparison_catches_what_thresholds_would_promote()
{
    // 30 s: the first act takes half of it (five checks a tenth apart), the third a few
    // thousand requests, whatever the machine's load makes of the rate.
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["demo", "--duration", "30s"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}{stderr}");
    // weir's own log is off: nothing can land between the live lines, even with 2>&1.
    assert_eq!(stderr, "");
    for line in stdout.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }
    // The story: v2 promoted, v3 rolled back by fast-fail, v4 rolled back by the comparison
    // with stable, then the tour ends by itself rather than when its time runs out.
    assert!(stdout.contains(">> v2 promoted"), "{stdout}");
    assert!(stdout.contains(">> v3 rolled back"), "{stdout}");
    assert!(
        stdout.contains(
            ">> v4 rolled back: canary 0% (step 0); comparison with stable: the\n    canary is \
             worse than stable"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains(">> v4 step"), "{stdout}");
    assert!(
        !stdout.contains("ran out before its story ended"),
        "{stdout}"
    );
    // v3 answers 500 to 60 % of its requests, spread evenly (not at random): whatever the
    // number of requests fast-fail let through, the clients saw it succeed 40 % of the time
    // (rounding of a few dozen requests aside), not a rate blended with the healthy v2.
    let v3 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("v3 canary, rolled back"))
        .unwrap_or_else(|| panic!("no summary line for v3:\n{stdout}"));
    let rate: f64 = v3
        .split_whitespace()
        .skip_while(|w| *w != "success")
        .nth(1)
        .and_then(|w| w.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no success rate in {v3:?}"));
    assert!((35.0..=45.0).contains(&rate), "{v3}");
    let v2 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("v2 canary, promoted"))
        .unwrap();
    assert!(v2.contains("success 100.0%"), "{v2}");
    // v4 fails 8 answers in 1,000, spread evenly: what the clients saw of it passes the
    // thresholds' 99 % (rounding of a few hundred requests aside: 1 failure more in 300
    // requests is 0.3 points), so only the comparison could roll it back.
    let v4 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("v4 canary, rolled back"))
        .unwrap_or_else(|| panic!("no summary line for v4:\n{stdout}"));
    let rate: f64 = v4
        .split_whitespace()
        .skip_while(|w| *w != "success")
        .nth(1)
        .and_then(|w| w.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no success rate in {v4:?}"));
    assert!((98.8..=99.5).contains(&rate), "{v4}");
}

#[tokio::test]
async fn demo_upstreams_serves_stand_ins_on_the_loopback_endpoints_of_a_config() {
    // Three free ports for the stand-ins: bound to learn a free number, then released for the
    // demo to bind (the config must name fixed ports, as the README's does).
    let mut ports = Vec::new();
    for _ in 0..3 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        ports.push(l.local_addr().unwrap());
    }
    let yaml = config(
        &[("app-stable", &ports[..2]), ("app-canary", &ports[2..])],
        "  - name: app\n    backends:\n      - { upstream: app-stable, weight: 1 }\n      - { upstream: app-canary, weight: 1 }\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["demo", "--upstreams", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.ends_with("stand-in endpoint(s) up; Ctrl-C stops them") {
                return (true, seen);
            }
            seen.push(line);
        }
        (false, seen)
    });
    let (ready, lines) = tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .unwrap()
        .unwrap();
    assert!(ready, "{lines:?}");
    assert_eq!(lines.len(), 3, "{lines:?}");

    // Straight to an endpoint, then through weir on the same config.
    let direct = get(&http1_client(), ports[2], "/anything").await;
    assert_eq!(direct.text(), format!("app-canary {}\n", ports[2]));
    let w = weir_in(dir, &yaml).await;
    let counts = tally(w.address, 60).await;
    let expected: Vec<String> = [("app-stable", 0), ("app-stable", 1), ("app-canary", 2)]
        .iter()
        .map(|(name, i)| format!("{name} {}\n", ports[*i]))
        .collect();
    for body in counts.keys() {
        assert!(expected.contains(body), "{body:?} not in {expected:?}");
    }
    assert_eq!(counts.len(), 3, "every endpoint answered: {counts:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}
