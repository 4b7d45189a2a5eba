//! One rollout for the whole fleet, with the real parts: a bare Git repository on disk as the
//! remote (real `git`), three `weir run` replicas in-process, each on its own clone that a
//! git-sync loop keeps up to date (every 200 ms), a real Prometheus (Debian's `prometheus`) on a
//! loopback port scraping the replicas every second, and the controller (`weir rollout`),
//! in-process or as the real binary. Every wait is bounded; the figures of docs/FLEET.md are
//! printed (`cargo test --test it fleet:: -- --nocapture`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;
use weir::config::{FleetStatus, StatusPhase};
use weir::rollout::fleet::controller::{Controller, spawn};

use crate::support::*;

/// The longest any one stage of a fleet test may take: a step needs a git-sync, a reload, a
/// scrape, a sync of the controller and an interval, a few seconds on an idle machine; CI's
/// machine is shared.
const STAGE: Duration = Duration::from_secs(90);
/// The git-sync loop's period (git-sync's `--period`, shortened for the tests).
const GIT_SYNC: Duration = Duration::from_millis(200);

fn fleet_config(
    prometheus: SocketAddr,
    stable: SocketAddr,
    canary: SocketAddr,
    rollout: &str,
) -> String {
    [
        "# the fleet's config: every replica serves it, weir rollout judges it".to_owned(),
        "listeners: [{ name: main, address: 127.0.0.1:0 }]".to_owned(),
        "admin: { address: 127.0.0.1:0 }".to_owned(),
        "upstreams:".to_owned(),
        "  - name: stable   # the version users get".to_owned(),
        format!("    endpoints: [{stable}]"),
        "  - name: canary".to_owned(),
        format!("    endpoints: [{canary}]"),
        "routes:".to_owned(),
        "  - name: app".to_owned(),
        "    backends:".to_owned(),
        "      - { upstream: stable, weight: 100 }".to_owned(),
        "      - { upstream: canary, weight: 5 }   # driven by the rollout".to_owned(),
        "    rollout:".to_owned(),
        "      canary: canary".to_owned(),
        "      interval: 3s".to_owned(),
        "      min_requests: 10".to_owned(),
        format!("{rollout}      analysis:"),
        "        source:".to_owned(),
        format!("          prometheus: {{ url: \"http://{prometheus}\", selector: 'job=\"weir-fleet\"' }}"),
        "fleet:".to_owned(),
        "  status: status.json".to_owned(),
        "  sync_interval: 500ms".to_owned(),
        "reload: { poll_interval: 250ms }".to_owned(),
    ]
    .join("\n")
        + "\n"
}

/// One replica: its clone and, while it runs, weir serving the clone's config.
struct Replica {
    clone: PathBuf,
    running: Option<weir::server::Running>,
    address: SocketAddr,
    admin: SocketAddr,
}

impl Replica {
    async fn start(clone: PathBuf) -> Replica {
        use_sandbox();
        let candidate = weir::reload::read_file(&clone.join("weir.yaml"))
            .unwrap_or_else(|r| panic!("config:\n{}", r.errors));
        let running = weir::server::start(candidate, Some(clone.join("weir.yaml")))
            .await
            .unwrap();
        Replica {
            clone,
            address: running.address("main").unwrap(),
            admin: running.admin_address,
            running: Some(running),
        }
    }
}

/// The fleet of a test: the remote, the replicas, Prometheus, the git-sync loop and traffic.
struct Fleet {
    dir: tempfile::TempDir,
    remote: PathBuf,
    seed: PathBuf,
    /// The stable upstream's address (the upstream serves while the fleet lives).
    stable: SocketAddr,
    _stable: Upstream,
    replicas: Arc<Mutex<Vec<Replica>>>,
    prometheus: Prometheus,
    stop: Arc<AtomicBool>,
}

impl Fleet {
    /// `replicas` replicas of a route `app` over `stable` and `canary` with a rollout of
    /// `rollout` (extra YAML lines of the `rollout:` block); traffic when `traffic`.
    async fn start(replicas: usize, canary: SocketAddr, rollout: &str, traffic: bool) -> Fleet {
        let stable = upstream("stable").await;
        let prometheus = Prometheus::scraping("weir-fleet");
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remote.git");
        let seed = dir.path().join("seed");
        git(
            dir.path(),
            &["init", "--quiet", "--bare", "-b", "main", "remote.git"],
        )
        .await;
        git(dir.path(), &["clone", "--quiet", "remote.git", "seed"]).await;
        git(&seed, &["checkout", "--quiet", "-b", "main"]).await;
        let yaml = fleet_config(prometheus.address, stable.address, canary, rollout);
        std::fs::write(seed.join("weir.yaml"), yaml).unwrap();
        git(&seed, &["add", "weir.yaml"]).await;
        commit(&seed, "the fleet's config").await;
        git(&seed, &["push", "--quiet", "origin", "main"]).await;
        let mut list = Vec::new();
        for i in 0..replicas {
            let name = format!("replica{i}");
            git(dir.path(), &["clone", "--quiet", "remote.git", &name]).await;
            list.push(Replica::start(dir.path().join(name)).await);
        }
        prometheus.set_targets(&list.iter().map(|r| r.admin).collect::<Vec<_>>());
        prometheus.ready().await;
        let fleet = Fleet {
            dir,
            remote,
            seed,
            stable: stable.address,
            _stable: stable,
            replicas: Arc::new(Mutex::new(list)),
            prometheus,
            stop: Arc::new(AtomicBool::new(false)),
        };
        fleet.git_sync();
        if traffic {
            fleet.traffic();
        }
        fleet
    }

    /// git-sync, as the Kubernetes kit runs it beside each replica: fetch and check out the
    /// remote branch every [`GIT_SYNC`].
    fn git_sync(&self) {
        let (replicas, stop) = (self.replicas.clone(), self.stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let clones: Vec<PathBuf> = replicas
                    .lock()
                    .await
                    .iter()
                    .map(|r| r.clone.clone())
                    .collect();
                for clone in clones {
                    // A replica restarting has no clone for a moment: git says so, unheard.
                    let fetched = tokio::process::Command::new("git")
                        .arg("-C")
                        .arg(&clone)
                        .args(["fetch", "--quiet", "origin", "main"])
                        .stderr(std::process::Stdio::null())
                        .status()
                        .await;
                    if fetched.is_ok_and(|s| s.success()) {
                        let _ = tokio::process::Command::new("git")
                            .arg("-C")
                            .arg(&clone)
                            .args(["reset", "--quiet", "--hard", "FETCH_HEAD"])
                            .status()
                            .await;
                    }
                }
                tokio::time::sleep(GIT_SYNC).await;
            }
        });
    }

    /// About 50 requests a second to each running replica until the test ends.
    fn traffic(&self) {
        let (replicas, stop) = (self.replicas.clone(), self.stop.clone());
        tokio::spawn(async move {
            let client = http1_client();
            while !stop.load(Ordering::Relaxed) {
                let targets: Vec<SocketAddr> = replicas
                    .lock()
                    .await
                    .iter()
                    .filter(|r| r.running.is_some())
                    .map(|r| r.address)
                    .collect();
                for address in targets {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let req = http::Request::get(format!("http://{address}/"))
                            .body(http_body_util::Full::new(bytes::Bytes::new()))
                            .unwrap();
                        let _ =
                            tokio::time::timeout(Duration::from_secs(5), client.request(req)).await;
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    /// The status file on the remote (empty before the controller wrote one).
    async fn status(&self) -> FleetStatus {
        let out = tokio::process::Command::new("git")
            .arg("--git-dir")
            .arg(&self.remote)
            .args(["show", "main:status.json"])
            .output()
            .await
            .unwrap();
        if !out.status.success() {
            return FleetStatus::default();
        }
        FleetStatus::parse(&out.stdout).unwrap()
    }

    /// The commit subjects of the remote's branch, oldest first.
    async fn subjects(&self) -> Vec<String> {
        let out = git(&self.remote, &["log", "--reverse", "--format=%s", "main"]).await;
        out.lines().map(str::to_owned).collect()
    }

    /// A controller on its own clone (`ctl-NAME`), syncing until the test ends.
    async fn controller(&self, name: &str) -> tokio::sync::watch::Sender<bool> {
        let workdir = self.dir.path().join(format!("ctl-{name}"));
        let ctl = Controller::open(&self.seed.join("weir.yaml"), Some(&workdir))
            .await
            .unwrap();
        spawn(ctl).0
    }

    /// Waits until the remote's status of `app` satisfies `done`; its status then.
    async fn until(&self, what: &str, done: impl Fn(&FleetStatus) -> bool) -> FleetStatus {
        let deadline = Instant::now() + STAGE;
        loop {
            let s = self.status().await;
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what} within {STAGE:?}; status: {s:?}\ncommits: {:?}",
                self.subjects().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Each running replica's view: (status generation it serves, `/stats` canary weight,
    /// rollout state).
    async fn views(&self) -> Vec<(u64, u64, String)> {
        let admins: Vec<SocketAddr> = self
            .replicas
            .lock()
            .await
            .iter()
            .filter(|r| r.running.is_some())
            .map(|r| r.admin)
            .collect();
        let mut out = Vec::new();
        for admin in admins {
            out.push(view(admin).await);
        }
        out
    }

    async fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn commit(dir: &Path, message: &str) {
    git(
        dir,
        &[
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@localhost",
            "commit",
            "--quiet",
            "-m",
            message,
        ],
    )
    .await;
}

/// One replica's (status generation, canary weight, rollout state) from its admin API.
async fn view(admin: SocketAddr) -> (u64, u64, String) {
    let client = http1_client();
    let metrics = get(&client, admin, "/metrics").await;
    let generation =
        sample(metrics.text(), "weir_fleet_status_generation", &[]).unwrap_or(0.0) as u64;
    let stats: Value = serde_json::from_slice(&get(&client, admin, "/stats").await.body).unwrap();
    let route = &stats["routes"][0];
    let canary = route["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "canary")
        .map_or(0, |b| b["weight"].as_u64().unwrap());
    let state = route["rollout"]["state"]
        .as_str()
        .unwrap_or("none")
        .to_owned();
    (generation, canary, state)
}

/// One replica's view: (status generation, canary weight, rollout state).
type View = (u64, u64, String);
/// When the sampler looked, and what each replica showed.
type Sample = (SystemTime, Vec<View>);

/// Samples every replica every 50 ms until stopped: for each status generation, the first time
/// all replicas served it, and every canary weight they all showed at once.
struct Sampler {
    seen: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start(fleet: &Fleet) -> Sampler {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, replicas) = (seen.clone(), stop.clone(), fleet.replicas.clone());
        tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                let admins: Vec<SocketAddr> = replicas
                    .lock()
                    .await
                    .iter()
                    .filter(|r| r.running.is_some())
                    .map(|r| r.admin)
                    .collect();
                let mut views = Vec::new();
                for a in admins {
                    views.push(view(a).await);
                }
                s.lock().await.push((SystemTime::now(), views));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Sampler { seen, stop }
    }

    /// For each generation of `status_history` (generation, decision time): the time from the
    /// decision to the first sample with every replica serving it.
    async fn lags(&self, decisions: &[(u64, SystemTime)]) -> Vec<Duration> {
        let seen = self.seen.lock().await;
        decisions
            .iter()
            .filter_map(|(g, at)| {
                seen.iter()
                    .find(|(_, views)| !views.is_empty() && views.iter().all(|v| v.0 >= *g))
                    .map(|(t, _)| t.duration_since(*at).unwrap_or_default())
            })
            .collect()
    }

    /// Whether, at some sample, every replica showed canary weight `w`.
    async fn all_showed(&self, w: u64, replicas: usize) -> bool {
        self.seen
            .lock()
            .await
            .iter()
            .any(|(_, views)| views.len() == replicas && views.iter().all(|v| v.1 == w))
    }
}

/// The decision times of the remote's history of `status.json`: (generation, `at`).
async fn decisions(fleet: &Fleet) -> Vec<(u64, SystemTime)> {
    let revs = git(
        &fleet.remote,
        &["log", "--format=%H", "main", "--", "status.json"],
    )
    .await;
    let mut out = Vec::new();
    for rev in revs.lines() {
        let text = git(&fleet.remote, &["show", &format!("{rev}:status.json")]).await;
        let s = FleetStatus::parse(text.as_bytes()).unwrap();
        if let Some(e) = s.routes.get("app") {
            out.push((s.generation, humantime::parse_rfc3339(&e.at).unwrap()));
        }
    }
    out.reverse();
    out
}

fn summary(lags: &[Duration]) -> String {
    let mut ms: Vec<u128> = lags.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    format!(
        "n={} median={} ms max={} ms",
        ms.len(),
        ms.get(ms.len() / 2).copied().unwrap_or(0),
        ms.last().copied().unwrap_or(0)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_in_steps_by_two_controllers_while_a_replica_restarts() {
    let canary = upstream("canary").await;
    let fleet = Fleet::start(3, canary.address, "      steps: [25, 50, 100]\n", true).await;
    let sampler = Sampler::start(&fleet);
    // Two controllers at once, each on its own clone.
    let first = fleet.controller("a").await;
    let second = fleet.controller("b").await;

    // Mid-rollout, at the second step, a replica is killed and a new one started on its
    // clone: it serves the current step from its first request.
    fleet
        .until("the second step", |s| {
            s.routes.get("app").is_some_and(|e| e.step >= 1)
        })
        .await;
    let clone = fleet.replicas.lock().await[0].clone.clone();
    let on_disk = |clone: &Path| {
        std::fs::read(clone.join("status.json"))
            .map(|b| FleetStatus::parse(&b).unwrap())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + STAGE;
    while on_disk(&clone).routes.get("app").is_none_or(|e| e.step < 1) {
        assert!(
            Instant::now() < deadline,
            "git-sync brought the second step"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old = fleet.replicas.lock().await.remove(0);
    old.running.unwrap().drain().await;
    // Its clone no longer syncs: what it holds is what the new replica must serve at once.
    let held = on_disk(&clone);
    let restarted = Replica::start(clone).await;
    let (generation, weight, state) = view(restarted.admin).await;
    assert_eq!(
        (generation, weight, state.as_str()),
        (
            held.generation,
            u64::from(held.routes["app"].canary_weight),
            match held.routes["app"].phase {
                StatusPhase::Progressing => "progressing",
                StatusPhase::Promoted => "promoted",
                StatusPhase::RolledBack => "rolled_back",
            }
        ),
        "the new replica serves its clone's step from its first request, not the first step"
    );
    assert!(weight >= 50, "{weight}");
    fleet.replicas.lock().await.push(restarted);
    let admins: Vec<SocketAddr> = fleet
        .replicas
        .lock()
        .await
        .iter()
        .map(|r| r.admin)
        .collect();
    fleet.prometheus.set_targets(&admins);

    let done = fleet
        .until("promotion", |s| {
            s.routes
                .get("app")
                .is_some_and(|e| e.phase == StatusPhase::Promoted)
        })
        .await;
    let _ = (first.send(true), second.send(true));
    assert!(done.routes["app"].released);

    // Every step appears exactly once in the history, whatever the two controllers did.
    let subjects = fleet.subjects().await;
    let rollout: Vec<&String> = subjects
        .iter()
        .filter(|s| s.starts_with("rollout app"))
        .collect();
    let events: Vec<&str> = rollout
        .iter()
        .map(|s| s.split(": ").nth(1).unwrap().split(',').next().unwrap())
        .collect();
    assert_eq!(
        events,
        ["started", "step", "step", "promoted"],
        "{subjects:#?}"
    );
    assert_eq!(done.generation, 4, "one generation per decision");

    // The promotion commit: the canary's definition becomes the stable's, the canary's weight
    // 0, comments and layout kept.
    let diff = git(
        &fleet.remote,
        &["show", "main", "--format=", "--", "weir.yaml"],
    )
    .await;
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('-') || l.starts_with('+'))
                && !l.starts_with("---")
                && !l.starts_with("+++")
        })
        .collect();
    assert_eq!(
        changed,
        [
            format!("-    endpoints: [{}]", fleet.stable),
            format!("+    endpoints: [{}]", canary.address),
            "-      - { upstream: canary, weight: 5 }   # driven by the rollout".to_owned(),
            "+      - { upstream: canary, weight: 0 }   # driven by the rollout".to_owned(),
        ],
        "{diff}"
    );

    // At every step all three replicas showed the same weights at once, and once promoted,
    // every replica sends everything to the new stable (the canary's endpoint).
    for w in [25, 50, 100] {
        assert!(
            sampler.all_showed(w, 3).await,
            "all three replicas at canary {w} %"
        );
    }
    let deadline = Instant::now() + STAGE;
    loop {
        let addresses: Vec<SocketAddr> = fleet
            .replicas
            .lock()
            .await
            .iter()
            .map(|r| r.address)
            .collect();
        let mut all = true;
        for a in addresses {
            all &= tally(a, 20).await.keys().all(|k| k == "canary");
        }
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every replica serves the promotion"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lags = sampler.lags(&decisions(&fleet).await).await;
    sampler.stop.store(true, Ordering::Relaxed);
    eprintln!(
        "FIGURE decision -> all replicas serving (git-sync {GIT_SYNC:?}, scrape 1 s, controller sync 500 ms): {}; commits for the rollout: {}",
        summary(&lags),
        rollout.len()
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_on_every_replica_is_cut_off_by_each_replica_then_rolled_back_for_the_fleet()
 {
    let canary = fixed_upstream(500, Duration::ZERO).await;
    let fleet = Fleet::start(3, canary.address, "      steps: [50, 100]\n", true).await;
    let _ctl = fleet.controller("a").await;
    let done = fleet
        .until("the fleet's rollback", |s| {
            s.routes
                .get("app")
                .is_some_and(|e| e.phase == StatusPhase::RolledBack)
        })
        .await;
    let e = &done.routes["app"];
    // Each replica's own fast-fail fired first: the controller records it for the fleet (or a
    // failed check, when the metrics showed the failures before the replicas' state).
    assert!(
        e.reason.starts_with("fast-fail on") || e.event == "rolled_back",
        "{e:?}"
    );
    let replicas = fleet.replicas.lock().await;
    let client = http1_client();
    let mut failures = Vec::new();
    for r in replicas.iter() {
        let history: Value =
            serde_json::from_slice(&get(&client, r.admin, "/history").await.body).unwrap();
        let local = history
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| {
                h["rollout"]["reason"]
                    .as_str()
                    .or(h["event"]["reason"].as_str())
            })
            .any(|reason| reason.starts_with("fast-fail"));
        assert!(
            local,
            "replica {} fast-failed on its own: {history:#}",
            r.admin
        );
        let text = get(&client, r.admin, "/metrics").await;
        let failed = sample(
            text.text(),
            "weir_responses_total",
            &[("backend", "canary"), ("outcome", "failure")],
        )
        .unwrap_or(0.0);
        failures.push(failed as u64);
        // The bound: each replica cuts a dead canary off within 25 failed requests.
        assert!(
            failed <= 25.0,
            "replica {} let {failed} requests fail",
            r.admin
        );
    }
    eprintln!("FIGURE failed requests per replica before fast-fail: {failures:?}");
    drop(replicas);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_rollout_brings_every_replica_back_to_stable_within_one_sync() {
    let canary = upstream("canary").await;
    let fleet = Fleet::start(
        3,
        canary.address,
        "      steps: [20, 40, 60, 80, 100]\n",
        true,
    )
    .await;
    let ctl = fleet.controller("a").await;
    fleet
        .until("the second step", |s| {
            s.routes.get("app").is_some_and(|e| e.step >= 1)
        })
        .await;
    // The operator's command, with the real binary, on a clone of its own.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["rollout", "abort", "app", "--config"])
        .arg(fleet.seed.join("weir.yaml"))
        .arg("--workdir")
        .arg(fleet.dir.path().join("operator"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let aborted_at = SystemTime::now();
    let subject = String::from_utf8_lossy(&out.stdout);
    assert!(subject.starts_with("rollout app: rolled_back"), "{subject}");
    let status = fleet.status().await;
    assert_eq!(status.routes["app"].reason, "aborted by an operator");
    let deadline = Instant::now() + STAGE;
    loop {
        let views = fleet.views().await;
        if views
            .iter()
            .all(|v| v.0 >= status.generation && v.1 == 0 && v.2 == "rolled_back")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every replica rolled back: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lag = aborted_at.elapsed().unwrap();
    eprintln!(
        "FIGURE abort commit -> all replicas at stable: {} ms (git-sync {GIT_SYNC:?})",
        lag.as_millis()
    );
    // The controller records nothing more for a rollout that ended.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fleet.status().await.generation, status.generation);
    let _ = ctl.send(true);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_rollout_fails_at_its_progress_deadline_and_rolls_back() {
    let canary = upstream("canary").await;
    // No traffic: every check is skipped (fewer than min_requests).
    let fleet = Fleet::start(
        1,
        canary.address,
        "      steps: [50, 100]\n      progress_deadline: 8s\n",
        false,
    )
    .await;
    let _ctl = fleet.controller("a").await;
    let done = fleet
        .until("the deadline's rollback", |s| {
            s.routes
                .get("app")
                .is_some_and(|e| e.phase == StatusPhase::RolledBack)
        })
        .await;
    let e = &done.routes["app"];
    assert!(e.reason.starts_with("progress deadline"), "{e:?}");
    let started = decisions(&fleet).await[0].1;
    let ended = humantime::parse_rfc3339(&e.at).unwrap();
    assert!(ended.duration_since(started).unwrap() >= Duration::from_secs(8));
    assert_eq!(
        fleet.subjects().await.len(),
        3,
        "the config, started, rolled_back"
    );
    fleet.stop().await;
}

/// A route `app` over `stable` 90 and `canary` 10 with a rollout of `rollout` (flow entries).
fn single_config(rollout: &str) -> String {
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    config(
        &[("stable", &[nowhere]), ("canary", &[nowhere])],
        &format!(
            "  - name: app\n    rollout: {{ canary: canary, {rollout} }}\n    backends:\n      - {{ upstream: stable, weight: 90 }}\n      - {{ upstream: canary, weight: 10 }}\n"
        ),
    )
}

#[tokio::test(start_paused = true)]
async fn a_single_instance_rollout_without_progress_fails_at_its_deadline_with_an_event_and_a_metric()
 {
    let w = weir(&single_config(
        "steps: [10, 100], interval: 10s, min_requests: 5, progress_deadline: 30s",
    ))
    .await;
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(10)).await;
        w.running.reloader.caught_up().await;
    }
    let status = w.running.reloader.rollouts().status("app");
    assert_eq!(status["state"], "rolled_back", "{status}");
    let history: Value =
        serde_json::from_slice(&get(&http1_client(), w.admin, "/history").await.body).unwrap();
    let event = &history[0]["rollout"];
    assert_eq!(event["event"], "rolled_back");
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .starts_with("progress deadline"),
        "{event}"
    );
    let labels = [("route", "app")];
    assert_eq!(
        metric(&w, "weir_rollout_deadline_exceeded_total", &labels).await,
        1.0
    );
    let skipped = [("route", "app"), ("result", "skipped")];
    assert_eq!(metric(&w, "weir_rollout_checks_total", &skipped).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_instance_takes_rollout_commands_through_its_admin_api_and_only_with_its_token() {
    let admin = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("token"),
        "a-token-of-thirty-two-characters\n",
    )
    .unwrap();
    let yaml = single_config("steps: [10, 100], interval: 1h").replace(
        "address: 127.0.0.1:0\nupstreams",
        &format!("address: {admin}\n  token_file: token\nupstreams"),
    );
    let w = weir_in(dir, &yaml).await;
    assert_eq!(w.admin, admin);
    let path = w.path.clone();
    let cli = move |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
        c.args(["rollout"]).args(args).arg("--config").arg(&path);
        c.output().unwrap()
    };
    // Without the token, nothing changes.
    let client = http1_client();
    let req = http::Request::post(format!("http://{admin}/rollouts/app/abort"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(
        send(&client, req).await.status,
        http::StatusCode::UNAUTHORIZED
    );
    let out = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["pause", "app"])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(w.running.reloader.rollouts().status("app")["paused"], true);
    let resumed = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["resume", "app"])
    })
    .await
    .unwrap();
    assert!(resumed.status.success());
    assert_eq!(w.running.reloader.rollouts().status("app")["paused"], false);
    let aborted = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["abort", "app"])
    })
    .await
    .unwrap();
    assert!(aborted.status.success());
    let status = w.running.reloader.rollouts().status("app");
    assert_eq!(
        (status["state"].as_str(), status["canary_weight"].as_u64()),
        (Some("rolled_back"), Some(0))
    );
    // A rollout that ended takes no more commands (409), and an unknown route is a 404.
    let again =
        tokio::task::spawn_blocking(move || (cli(&["promote", "app"]), cli(&["pause", "nope"])))
            .await
            .unwrap();
    assert!(!again.0.status.success());
    assert!(
        String::from_utf8_lossy(&again.0.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&again.0.stderr)
    );
    assert!(String::from_utf8_lossy(&again.1.stderr).contains("404"));
}

#[test]
fn weir_check_shows_the_queries_a_fleet_rollout_is_judged_on() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(
        &path,
        fleet_config(nowhere, nowhere, nowhere, "      steps: [10, 100]\n"),
    )
    .unwrap();
    let run = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["check", "--format", format, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let requests = "sum(increase(weir_responses_total{job=\"weir-fleet\",route=\"app\",backend=\"canary\"}[3s]))";
    let text = run("text");
    assert!(text.contains(requests), "{text}");
    assert!(
        text.contains("count(weir_fleet_status_generation{job=\"weir-fleet\"} >= {G})"),
        "{text}"
    );
    let json: Value = serde_json::from_str(&run("json")).unwrap();
    let queries = &json["routes"][0]["queries"];
    assert_eq!(queries["requests"], requests);
    assert_eq!(
        queries["p99"],
        "histogram_quantile(0.99, sum by (le) (increase(weir_request_duration_seconds_bucket{job=\"weir-fleet\",route=\"app\",backend=\"canary\"}[3s])))"
    );
}
