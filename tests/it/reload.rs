//! Hot reload from the file, by every way a file reaches disk, under load: the new split serves
//! within a second or so, nothing fails, and a bad file changes nothing. The hash poll is off in
//! these configs, so each change is seen by the file watcher (notify) or not at all.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;

use crate::support::*;

/// Waits until every answer comes from `want` (at most 10 s), then checks 30 more in a row.
async fn wait_for_backend(address: std::net::SocketAddr, want: &str) -> Duration {
    let client = http1_client();
    let started = Instant::now();
    loop {
        if get(&client, address, "/").await.text() == want {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the split never moved to {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    for _ in 0..30 {
        assert_eq!(get(&client, address, "/").await.text(), want);
    }
    took
}

async fn served_sha(w: &Weir) -> String {
    let a = get(&http1_client(), w.admin, "/config").await;
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    v["revision"]["sha256"].as_str().unwrap().to_owned()
}

fn sha_of(path: &Path) -> String {
    weir::reload::revision::sha256_hex(&std::fs::read(path).unwrap())
}

struct Pair {
    stable: Upstream,
    canary: Upstream,
}

impl Pair {
    async fn new() -> Pair {
        Pair {
            stable: upstream("stable").await,
            canary: upstream("canary").await,
        }
    }
    /// With the hash poll off: these tests prove that the file watcher alone sees each change.
    fn yaml(&self, ws: u32, wc: u32) -> String {
        split_config(self.stable.address, self.canary.address, ws, wc)
            + "reload: { poll_interval: 0s }\n"
    }
}

fn write_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn write_and_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn delete_and_recreate(path: &Path, text: &str) {
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, text).unwrap();
}

/// What vim does with `backupcopy=no`: move the original aside, write anew, drop the backup.
fn editor_backup_write(path: &Path, text: &str) {
    let backup = PathBuf::from(format!("{}~", path.display()));
    std::fs::rename(path, &backup).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::remove_file(backup).unwrap();
}

async fn check_writer(write: fn(&Path, &str)) {
    let pair = Pair::new().await;
    let w = weir(&pair.yaml(100, 0)).await;
    wait_for_backend(w.address, "stable").await;
    write(&w.path, &pair.yaml(0, 100));
    wait_for_backend(w.address, "canary").await;
    assert_eq!(served_sha(&w).await, sha_of(&w.path));
}

#[tokio::test]
async fn an_in_place_write_is_applied() {
    check_writer(write_in_place).await;
}

#[tokio::test]
async fn a_write_and_rename_over_is_applied() {
    check_writer(write_and_rename).await;
}

#[tokio::test]
async fn a_delete_and_recreate_is_applied() {
    check_writer(delete_and_recreate).await;
}

#[tokio::test]
async fn an_editor_backup_write_is_applied() {
    check_writer(editor_backup_write).await;
}

/// A Kubernetes ConfigMap volume: `weir.yaml -> ..data/weir.yaml`, `..data -> ..<timestamp>`,
/// updated by writing a new timestamped directory and renaming a new `..data` link over the old.
struct ConfigMap {
    root: PathBuf,
    generation: u32,
}

impl ConfigMap {
    fn new(root: &Path, text: &str) -> ConfigMap {
        let mut m = ConfigMap {
            root: root.to_path_buf(),
            generation: 0,
        };
        m.update(text);
        symlink("..data/weir.yaml", root.join("weir.yaml")).unwrap();
        m
    }

    fn update(&mut self, text: &str) {
        self.generation += 1;
        let dir = format!("..2026_11_22_{:04}", self.generation);
        std::fs::create_dir(self.root.join(&dir)).unwrap();
        std::fs::write(self.root.join(&dir).join("weir.yaml"), text).unwrap();
        let tmp = self.root.join("..data_tmp");
        symlink(&dir, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
        if self.generation > 1 {
            let old = format!("..2026_11_22_{:04}", self.generation - 1);
            std::fs::remove_dir_all(self.root.join(old)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_applied() {
    let pair = Pair::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut map = ConfigMap::new(dir.path(), &pair.yaml(100, 0));
    let w = weir_at(dir, "weir.yaml").await;
    let (path, address, running) = (w.path.clone(), w.address, &w.running);
    wait_for_backend(address, "stable").await;
    for (ws, wc, want) in [(0, 100, "canary"), (100, 0, "stable"), (0, 100, "canary")] {
        map.update(&pair.yaml(ws, wc));
        wait_for_backend(address, want).await;
    }
    let record = running.reloader.record();
    assert_eq!(record.revision.sha256, sha_of(&path));
    assert!(
        record.history.iter().all(|h| h.success),
        "no attempt was refused"
    );
}

#[tokio::test]
async fn a_git_sync_worktree_swap_is_applied() {
    let pair = Pair::new().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let worktree = |name: &str, text: &str| {
        let wt = root.join(".worktrees").join(name);
        std::fs::create_dir_all(&wt).unwrap();
        std::fs::write(wt.join("weir.yaml"), text).unwrap();
    };
    worktree("aaaa", &pair.yaml(100, 0));
    symlink(".worktrees/aaaa", root.join("link")).unwrap();
    let w = weir_at(dir, "link/weir.yaml").await;
    let (path, address, running) = (w.path.clone(), w.address, &w.running);
    wait_for_backend(address, "stable").await;

    worktree("bbbb", &pair.yaml(0, 100));
    symlink(".worktrees/bbbb", root.join("link.tmp")).unwrap();
    std::fs::rename(root.join("link.tmp"), root.join("link")).unwrap();
    wait_for_backend(address, "canary").await;
    assert_eq!(running.reloader.record().revision.sha256, sha_of(&path));
}

#[tokio::test]
async fn invalid_files_are_refused_and_the_old_weights_keep_serving() {
    let pair = Pair::new().await;
    let w = weir(&pair.yaml(100, 0)).await;
    let good = served_sha(&w).await;
    let bad = [
        "listeners: [".to_owned(),
        pair.yaml(0, 100)
            .replace("upstream: canary", "upstream: nowhere"),
        pair.yaml(0, 0),
    ];
    for (i, text) in bad.iter().enumerate() {
        write_and_rename(&w.path, text);
        let started = Instant::now();
        loop {
            let v: Value =
                serde_json::from_slice(&get(&http1_client(), w.admin, "/history").await.body)
                    .unwrap();
            if v.as_array().unwrap().len() == i + 2 {
                assert_eq!(v[0]["result"], "failure", "{v:#}");
                assert_eq!(v[0]["sha256"], sha_of(&w.path));
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the bad file was not seen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(tally(w.address, 30).await.get("stable"), Some(&30));
        assert_eq!(served_sha(&w).await, good);
    }
    write_and_rename(&w.path, &pair.yaml(0, 100));
    wait_for_backend(w.address, "canary").await;
}

#[tokio::test]
async fn a_reload_keeps_the_connections_of_an_unchanged_upstream() {
    let pair = Pair::new().await;
    let w = weir(&pair.yaml(100, 0)).await;
    let client = http1_client();
    for _ in 0..5 {
        assert_eq!(get(&client, w.address, "/").await.status, StatusCode::OK);
    }
    assert_eq!(pair.stable.connections(), 1);
    // Only the canary's weight changes: the stable upstream's pool, and its connection, stay.
    write_and_rename(&w.path, &pair.yaml(100, 1));
    let started = Instant::now();
    while served_sha(&w).await != sha_of(&w.path) {
        if started.elapsed() > Duration::from_secs(10) {
            let h = get(&http1_client(), w.admin, "/history").await;
            panic!("not applied: {}", h.text());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut stable_answers = 0;
    while stable_answers < 5 {
        if get(&client, w.address, "/").await.text() == "stable" {
            stable_answers += 1;
        }
    }
    assert_eq!(pair.stable.connections(), 1, "the stable pool was rebuilt");
}

#[tokio::test]
async fn a_reload_storm_under_load_fails_no_request() {
    let pair = Pair::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut map = ConfigMap::new(dir.path(), &pair.yaml(100, 0));
    let w = weir_at(dir, "weir.yaml").await;
    let (path, address, running) = (w.path.clone(), w.address, &w.running);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let client = http1_client();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(format!("http://{address}/"))
                    .body(Default::default())
                    .unwrap();
                match client.request(req).await {
                    Ok(r) if r.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    // 240 rewrites, by rename, in place (through the symlink) and ConfigMap swap, in turn.
    for i in 0..240u32 {
        let text = pair.yaml(100 - i % 100, i % 100 + 1);
        match i % 3 {
            0 => map.update(&text),
            1 => write_in_place(&path, &text),
            _ => {
                // A rename over the link replaces it with a plain file; the next swap restores it.
                write_and_rename(&path, &text);
                let tmp = path.with_file_name("weir.yaml.link");
                symlink("..data/weir.yaml", &tmp).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    map.update(&pair.yaml(0, 100));
    // Intermediate configs also send some traffic to the canary: wait for the final file itself.
    let started = Instant::now();
    while running.reloader.record().revision.sha256 != sha_of(&path) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the final file was not applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tally(address, 50).await.get("canary"), Some(&50));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok > 200, "the clients kept sending ({ok})");
    let record = running.reloader.record();
    let applied = record.history.iter().filter(|h| h.success).count();
    assert!(applied > 2, "the storm was seen: {applied} reloads applied");
    // Every file written was valid: a refusal would mean a half-written file was taken as bad.
    assert!(
        record.history.iter().all(|h| h.success),
        "{:#?}",
        record.history
    );
}

#[tokio::test]
async fn a_read_that_started_before_a_newer_one_never_undoes_it() {
    let pair = Pair::new().await;
    let w = weir(&pair.yaml(100, 0)).await;
    let reloader = &w.running.reloader;
    write_in_place(&w.path, &pair.yaml(50, 50));
    let older = reloader.read().unwrap();
    write_in_place(&w.path, &pair.yaml(0, 100));
    let newer = reloader.read().unwrap();
    assert!(reloader.submit_read(newer).await.unwrap());
    // The slow first read (a poll, a debounced event) arrives last: it is dropped.
    assert!(!reloader.submit_read(older).await.unwrap());
    assert_eq!(served_sha(&w).await, sha_of(&w.path));
    wait_for_backend(w.address, "canary").await;
}

#[tokio::test]
async fn a_long_stream_keeps_its_connection_but_not_the_old_snapshot() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use tokio_stream::wrappers::ReceiverStream;

    let pair = Pair::new().await;
    let w = weir(&pair.yaml(100, 0)).await;
    let old = Arc::downgrade(&w.running.reloader.snapshots.load_full());
    type Chunk = Result<Frame<bytes::Bytes>, std::convert::Infallible>;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<StreamBody<ReceiverStream<Chunk>>>();
    let req = http::Request::post(format!("http://{}/echo", w.address))
        .body(StreamBody::new(ReceiverStream::new(rx)))
        .unwrap();
    tx.send(Ok(Frame::data("first ".into()))).await.unwrap();
    let mut body = client.request(req).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first ");

    // The head is back: a reload frees the old snapshot while the stream goes on.
    write_and_rename(&w.path, &pair.yaml(0, 100));
    wait_for_backend(w.address, "canary").await;
    let started = Instant::now();
    while old.upgrade().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the stream keeps the old snapshot alive"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(Ok(Frame::data("second".into()))).await.unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
}
