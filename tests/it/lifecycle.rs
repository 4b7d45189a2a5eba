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

/// Starts `weir run` and returns it with the address of its listener, read from its log.
fn spawn_weir(
    config: &std::path::Path,
) -> (Process, SocketAddr, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
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
        if line.contains("listening") {
            let address = line
                .split("address=")
                .nth(1)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            return (child, address, rx);
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
    tokio::time::sleep(Duration::from_millis(400)).await;
    signal(&child, "TERM");

    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "slow");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still accepting after exit"
    );
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
