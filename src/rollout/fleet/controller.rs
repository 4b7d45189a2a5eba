//! The fleet's controller, `weir rollout`: the one place of the fleet's rollouts that acts. Each
//! sync it brings its clone up to date, reads the config and the status from it, asks
//! Prometheus what it needs (is every replica serving the step? did a replica fast-fail? the
//! interval's measurement), lets the pure core decide, and records each decision as a commit it
//! pushes. A push refused as non-fast-forward means another controller moved first: it fetches,
//! re-reads and decides again on the new status, so no interval makes two steps and no step is
//! lost. When Git or Prometheus cannot be reached it holds: it never guesses, and the replicas
//! keep serving the last status.
//!
//! It reads the wall clock in one place ([`now`]); git runs as a child process (`git`), files
//! are read and written on blocking threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::git::{GitError, Pushed, Repo, git, toplevel};
use super::prometheus::{QueryError, Source};
use super::promote::{Promotion, promote};
use super::{Applied, Change, FleetRoute, NotApplied, Observation, apply, decide, entry};
use crate::config::{self, Config, ConfigErrors, FleetStatus, StatusPhase, rfc3339};
use crate::rollout::webhook::Hooks;
use crate::rollout::{Action, EventBody};

/// Tries of one decision against a remote that keeps moving (each after a fetch).
const MAX_PUSH_TRIES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("the config in the controller's clone is refused:\n{0}")]
    Config(ConfigErrors),
    #[error("{0} has no `fleet` block: a single instance runs its rollouts inside `weir run`")]
    NoFleet(PathBuf),
    #[error("{0}")]
    Io(String),
    #[error("route `{0}` has no fleet rollout (a rollout with analysis.source.prometheus)")]
    NoRoute(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "the remote moved {MAX_PUSH_TRIES} times in a row; the decision waits for the next sync"
    )]
    Busy,
}

/// When a route's step is served by every replica, and so when its interval began.
#[derive(Clone, Copy, Debug)]
struct Clock {
    generation: u64,
    since: Option<SystemTime>,
}

/// The controller: its clone, the config's path inside it, and each route's interval clock
/// (kept in memory: after a restart, an interval starts again, never twice).
pub struct Controller {
    repo: Repo,
    config_path: PathBuf,
    clocks: HashMap<String, Clock>,
    hooks: Hooks,
    /// What the last sync read, for the interval between syncs.
    sync_interval: Duration,
}

/// A config and its text, read from the clone.
struct Read {
    config: Config,
    text: String,
}

/// The wall clock, read here and nowhere else in the fleet's controller.
fn now() -> SystemTime {
    SystemTime::now()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl Controller {
    /// Opens the controller for the config at `config`: in `workdir` (or `fleet.git.workdir`),
    /// a clone of the config's repository made on first use; without either, the config's own
    /// work tree.
    pub async fn open(
        config: &Path,
        workdir: Option<&Path>,
    ) -> Result<Controller, ControllerError> {
        let path = config.to_path_buf();
        let loaded = blocking(move || config::load_file(&path))
            .await
            .map_err(ControllerError::Config)?;
        let Some(fleet) = loaded.fleet.clone() else {
            return Err(ControllerError::NoFleet(config.to_path_buf()));
        };
        let absolute = std::fs::canonicalize(config)
            .map_err(|e| ControllerError::Io(format!("{}: {e}", config.display())))?;
        let dir = absolute.parent().unwrap_or(Path::new("/")).to_path_buf();
        let workdir = workdir
            .map(Path::to_path_buf)
            .or_else(|| fleet.git.workdir.as_ref().map(|w| loaded.base_dir.join(w)));
        let git_spec = &fleet.git;
        let Some(workdir) = workdir else {
            let root = toplevel(&dir).await?;
            return Ok(Controller {
                repo: Repo {
                    root,
                    remote: git_spec.remote.clone(),
                    branch: git_spec.branch.clone(),
                    author: git_spec.author.clone(),
                },
                config_path: absolute,
                clocks: HashMap::new(),
                hooks: Hooks::new(),
                sync_interval: fleet.sync_interval,
            });
        };
        let source_root = toplevel(&dir).await.ok();
        let url = match (&git_spec.url, &source_root) {
            (Some(url), _) => url.clone(),
            (None, Some(root)) => git(root, &["remote", "get-url", &git_spec.remote])
                .await?
                .trim()
                .to_owned(),
            (None, None) => {
                return Err(ControllerError::Io(format!(
                    "fleet.git.url is not set and {} is not in a Git work tree to take it from",
                    config.display()
                )));
            }
        };
        let relative = match &source_root {
            Some(root) => {
                let root = std::fs::canonicalize(root).unwrap_or(root.clone());
                absolute
                    .strip_prefix(&root)
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|_| PathBuf::from(absolute.file_name().unwrap_or_default()))
            }
            None => PathBuf::from(absolute.file_name().unwrap_or_default()),
        };
        let repo = Repo::clone_into(
            &url,
            &workdir,
            &git_spec.remote,
            &git_spec.branch,
            &git_spec.author,
        )
        .await?;
        let config_path = repo.root.join(relative);
        Ok(Controller {
            repo,
            config_path,
            clocks: HashMap::new(),
            hooks: Hooks::new(),
            sync_interval: fleet.sync_interval,
        })
    }

    /// The clone the controller works in.
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// Syncs every `fleet.sync_interval` until `stop` turns true. A failed sync is logged and
    /// tried again at the next one: the controller holds, the replicas keep their status.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            match self.sync().await {
                Ok(events) => {
                    for e in events {
                        tracing::info!("{e}");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rollout sync failed; holding until the next one")
                }
            }
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
                _ = tokio::time::sleep(self.sync_interval) => {}
            }
        }
    }

    /// Fetches, reads the config and the status, and pushes a commit for every decision due.
    /// Returns the subjects of the commits pushed.
    pub async fn sync(&mut self) -> Result<Vec<String>, ControllerError> {
        self.repo.sync().await?;
        let read = self.read().await?;
        let status = read
            .config
            .fleet
            .as_ref()
            .map(|f| f.status.clone())
            .ok_or_else(|| ControllerError::NoFleet(self.config_path.clone()))?;
        self.sync_interval = read
            .config
            .fleet
            .as_ref()
            .map_or(self.sync_interval, |f| f.sync_interval);
        let mut done = Vec::new();
        let routes = FleetRoute::of(&read.config);
        self.clocks
            .retain(|name, _| routes.iter().any(|r| r.name == *name));
        for route in routes {
            let observation = match self.observe(&status, &route).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(route = %route.name, error = %e, "Prometheus did not answer; the rollout holds");
                    continue;
                }
            };
            let Some(change) = decide(&status, &route, &observation, now()) else {
                continue;
            };
            if let Some(subject) = self.record(&route.name, change).await? {
                done.push(subject);
            }
        }
        Ok(done)
    }

    /// An operator's command on `route`, as a commit. The commit's subject.
    pub async fn command(
        &mut self,
        route: &str,
        action: Action,
    ) -> Result<String, ControllerError> {
        self.repo.sync().await?;
        let read = self.read().await?;
        if !FleetRoute::of(&read.config).iter().any(|r| r.name == route) {
            return Err(ControllerError::NoRoute(route.to_owned()));
        }
        match self.record(route, Change::Manual(action)).await? {
            Some(subject) => Ok(subject),
            None => Ok(format!(
                "rollout {route}: already {}",
                match action {
                    Action::Pause => "paused",
                    Action::Resume => "running",
                    Action::Promote => "promoted",
                    Action::Abort => "rolled back",
                }
            )),
        }
    }

    async fn read(&self) -> Result<Read, ControllerError> {
        let path = self.config_path.clone();
        blocking(move || {
            let bytes = config::read_bytes(&path)
                .map_err(|e| ControllerError::Config(config::unreadable(&path, &e)))?;
            let text = String::from_utf8(bytes)
                .map_err(|e| ControllerError::Io(format!("{}: {e}", path.display())))?;
            let base = path.parent().unwrap_or(Path::new("."));
            let config = config::load_str(&text, &path.display().to_string(), base)
                .map_err(ControllerError::Config)?;
            Ok(Read { config, text })
        })
        .await
    }

    /// What Prometheus says of `route`'s current step.
    async fn observe(
        &mut self,
        status: &FleetStatus,
        route: &FleetRoute,
    ) -> Result<Observation, QueryError> {
        let mut obs = Observation::default();
        let Some(e) = entry(status, route) else {
            return Ok(obs);
        };
        if e.phase != StatusPhase::Progressing || e.paused {
            self.clocks.remove(&route.name);
            return Ok(obs);
        }
        let source = Source::new(route.source.clone());
        let queries = route.queries();
        let clock = self.clocks.entry(route.name.clone()).or_insert(Clock {
            generation: e.generation,
            since: None,
        });
        if clock.generation != e.generation {
            *clock = Clock {
                generation: e.generation,
                since: None,
            };
        }
        let t = now();
        let Some(since) = clock.since else {
            let (ready, up) = source.serving(&queries, e.generation, t).await?;
            if ready {
                tracing::info!(route = %route.name, step = e.step, replicas = up, generation = e.generation, "every replica serves the step: its interval starts");
                clock.since = Some(t);
            }
            return Ok(obs);
        };
        obs.ready = true;
        obs.since = Some(since);
        obs.fast_failed = source.fast_failed(&queries, t).await?;
        let elapsed = t.duration_since(since).unwrap_or_default();
        if elapsed >= route.rollout.plan.interval {
            obs.measurement = Some(source.measure(&queries, elapsed, t).await?);
            clock.since = Some(t);
        }
        Ok(obs)
    }

    /// Records `change` for `route` as a commit, deciding again on a fresh status each time the
    /// push is refused. `None` when there was nothing to record (a skipped check) or the status
    /// moved under the decision (it is decided again at the next sync).
    async fn record(
        &mut self,
        route: &str,
        change: Change,
    ) -> Result<Option<String>, ControllerError> {
        for attempt in 0..MAX_PUSH_TRIES {
            if attempt > 0 {
                self.repo.sync().await?;
            }
            let read = self.read().await?;
            let Some(fleet) = read.config.fleet.clone() else {
                return Err(ControllerError::NoFleet(self.config_path.clone()));
            };
            let Some(r) = FleetRoute::of(&read.config)
                .into_iter()
                .find(|r| r.name == route)
            else {
                return Ok(None);
            };
            let mut status = (*fleet.status).clone();
            let t = now();
            let applied = match apply(&mut status, &r, &change, t) {
                Ok(a) => a,
                Err(NotApplied::Stale) => {
                    tracing::info!(route, "the status moved since the decision: deciding again");
                    self.clocks.remove(route);
                    return Ok(None);
                }
                Err(NotApplied::Nothing(check)) => {
                    if let Some(result) = check {
                        match &change {
                            Change::Judge { measurement: m, .. } => tracing::info!(
                                route,
                                verdict = result,
                                requests = m.requests,
                                failures = m.failures,
                                p99 = %crate::observe::human::MaybeDuration(m.p99),
                                "rollout check"
                            ),
                            _ => tracing::info!(route, verdict = result, "rollout check"),
                        }
                    }
                    return Ok(None);
                }
                Err(NotApplied::Refused(why)) => return Err(ControllerError::Refused(why)),
            };
            let mut files = vec![fleet.status_file.clone()];
            let mut new_config = None;
            if applied.promote {
                match promotion(&read.config, &r).map(|p| promote(&read.text, &p)) {
                    Some(Ok(text)) => {
                        new_config = Some(text);
                        files.push(self.config_path.clone());
                    }
                    Some(Err(e)) => {
                        tracing::warn!(route, error = %e, "cannot write the promotion into the config: the canary stays at 100 %");
                        unrelease(&mut status, route);
                    }
                    None => {
                        tracing::warn!(
                            route,
                            "the route has no single stable backend to take the canary's definition: the canary stays at 100 %"
                        );
                        unrelease(&mut status, route);
                    }
                }
            }
            let (status_file, config_path) = (fleet.status_file.clone(), self.config_path.clone());
            let bytes = status.to_bytes();
            blocking(move || {
                write(&status_file, &bytes)?;
                match new_config {
                    Some(text) => write(&config_path, text.as_bytes()),
                    None => Ok(()),
                }
            })
            .await
            .map_err(ControllerError::Io)?;
            let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
            match self.repo.commit_and_push(&paths, &applied.message).await? {
                Pushed::Done => {
                    let subject = applied
                        .message
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    self.announce(&r, &status, &applied, t);
                    return Ok(Some(subject));
                }
                Pushed::Rejected => {
                    tracing::info!(
                        route,
                        attempt,
                        "the remote moved first (non-fast-forward): fetching and deciding again"
                    );
                }
            }
        }
        self.repo.sync().await?;
        Err(ControllerError::Busy)
    }

    /// Sends the rollout's webhooks for a recorded event (the controller sends them once for
    /// the fleet; replicas send none).
    fn announce(
        &self,
        route: &FleetRoute,
        status: &FleetStatus,
        applied: &Applied,
        at: SystemTime,
    ) {
        let Some(kind) = config::EventKind::ALL
            .into_iter()
            .find(|k| k.name() == applied.event)
        else {
            return;
        };
        let Some(e) = status.routes.get(&route.name) else {
            return;
        };
        let body = EventBody {
            route: &route.name,
            canary: route.canary(),
            event: applied.event,
            step: e.step,
            canary_weight: e.canary_weight,
            reason: &e.reason,
            at: rfc3339(at),
        };
        let body =
            bytes::Bytes::from(serde_json::to_vec(&body).expect("an event body always serializes"));
        for hook in &route.rollout.webhooks {
            if hook.on.is_empty() || hook.on.contains(&kind) {
                self.hooks.deliver(hook.url.clone(), body.clone());
            }
        }
    }
}

/// The promotion of `route` in `config`: the one other backend with a positive weight is the
/// stable; `None` when there is not exactly one.
fn promotion(config: &Config, route: &FleetRoute) -> Option<Promotion> {
    let r = &config.routes[route.index];
    let canary = route.rollout.canary;
    let mut stables = r
        .backends
        .iter()
        .enumerate()
        .filter(|(i, b)| *i != canary && b.weight > 0);
    let (_, stable) = stables.next()?;
    if stables.next().is_some() {
        return None;
    }
    let canary_upstream = &config.upstreams[r.backends[canary].upstream];
    if r.backends[canary].upstream == stable.upstream {
        return None;
    }
    Some(Promotion {
        stable_upstream: stable.upstream,
        endpoints: canary_upstream.spec.endpoints.clone(),
        route: route.index,
        canary_backend: canary,
    })
}

/// A promotion the config could not take: the canary keeps its 100 %.
fn unrelease(status: &mut FleetStatus, route: &str) {
    if let Some(e) = status.routes.get_mut(route) {
        e.released = false;
        e.reason
            .push_str(" (the config keeps its stable: canary at 100 %)");
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader (or a crash)
/// sees the old file or the new one.
fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| format!("{}: {}", path.display(), e.error))?;
    Ok(())
}

/// Shared by tests and the command line: a controller started on its own task, stopped when
/// the returned sender says so.
pub fn spawn(controller: Controller) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(controller.run(stopped));
    (stop, task)
}
