//! [`Reloader`]: turns a file into a running [`Snapshot`] with one `ArcSwap` store, or refuses it
//! and leaves the running one serving. Its record of attempts is control-plane state behind a
//! std `Mutex`, never touched by the request path.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::revision::{self, Revision};
use crate::config::{self, Config, ConfigErrors};
use crate::metrics::Metrics;
use crate::rollout::{Announcement, Gate, Rollouts};
use crate::snapshot::Snapshot;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WeightChange {
    pub route: String,
    pub backend: String,
    pub from: Option<u32>,
    pub to: Option<u32>,
}

/// One reload attempt, applied or refused.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    pub at: SystemTime,
    pub sha256: Option<String>,
    pub git_commit: Option<String>,
    pub success: bool,
    pub error: Option<String>,
    /// What an applied change could not do (address changes that need a restart).
    pub warnings: Vec<String>,
    pub weights: Vec<WeightChange>,
    /// Set for a rollout's state change (not a reload): its route and event.
    pub rollout: Option<Announcement>,
}

/// What the admin API shows about reloads.
#[derive(Clone, Debug)]
pub struct ReloadRecord {
    /// The revision serving now.
    pub revision: Revision,
    /// Newest first; never empty (the initial load is the first entry, and `admin.history` is at
    /// least 1).
    pub history: VecDeque<HistoryEntry>,
    /// What was last tried, applied or refused: the same bytes (or the same unreadable file)
    /// again are not a new attempt, so a poll or a repeated event does not refuse a bad file
    /// over and over.
    last_attempt: Attempt,
}

impl ReloadRecord {
    /// The last reload attempt: `/config`'s `last_reload`.
    pub fn last(&self) -> &HistoryEntry {
        self.history
            .front()
            .expect("the history always holds the initial load or a later attempt")
    }
}

/// The identity of one reload attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Bytes(String),
    Unreadable,
}

/// The result of reading a config file.
pub type ReadResult = Result<Candidate, (Option<Revision>, ConfigErrors)>;

/// Which attempt `result` would be.
pub fn attempt_of(result: &ReadResult) -> Attempt {
    match result {
        Ok(c) => Attempt::Bytes(c.revision.identity.clone()),
        Err((Some(r), _)) => Attempt::Bytes(r.identity.clone()),
        Err((None, _)) => Attempt::Unreadable,
    }
}

pub struct Reloader {
    path: Option<PathBuf>,
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    record: Mutex<ReloadRecord>,
    /// The rollouts, and the lock under which every new snapshot is built and stored (by a
    /// reload or by a rollout), so the two never overwrite each other's.
    rollouts: Mutex<Rollouts>,
}

/// A config read from somewhere, with where it came from.
pub struct Candidate {
    pub config: Config,
    pub revision: Revision,
}

impl Candidate {
    /// A config from text that is not a file (the demo); its revision has no Git commit.
    pub fn from_str(text: &str, name: &str) -> Result<Candidate, ConfigErrors> {
        Ok(Candidate {
            config: config::load_str(text, name, Path::new("."))?,
            revision: Revision {
                sha256: revision::sha256_hex(text.as_bytes()),
                git_commit: None,
                loaded_at: SystemTime::now(),
                identity: String::new(),
            },
        })
    }
}

/// Reads and validates the file at `path`. On failure the revision (when the bytes could be
/// read) still names what was refused.
pub fn read_file(path: &Path) -> ReadResult {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Err((None, config::unreadable(path, &e))),
    };
    let sha256 = revision::sha256_hex(&bytes);
    let mut revision = Revision {
        identity: sha256.clone(),
        sha256,
        git_commit: revision::git_commit(path),
        loaded_at: SystemTime::now(),
    };
    let file = path.display().to_string();
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let result = match std::str::from_utf8(&bytes) {
        Ok(text) => config::load_str(text, &file, base_dir),
        Err(e) => Err(ConfigErrors(vec![config::ConfigError {
            file,
            line: 1,
            column: 1,
            path: String::new(),
            message: format!("the file is not UTF-8: {e}"),
        }])),
    };
    match result {
        Ok(config) => {
            let mut named = Vec::new();
            for f in &config.files {
                named.extend_from_slice(f.as_os_str().as_encoded_bytes());
                named.extend_from_slice(&std::fs::read(f).unwrap_or_default());
            }
            if !named.is_empty() {
                revision.identity.push_str(&revision::sha256_hex(&named));
            }
            Ok(Candidate { config, revision })
        }
        Err(errors) => {
            // A refusal caused by another file (a missing certificate) is a new attempt once
            // that file changes the errors.
            revision
                .identity
                .push_str(&revision::sha256_hex(errors.to_string().as_bytes()));
            Err((Some(revision), errors))
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Reloader {
    /// The initial load, recorded as the first reload.
    pub fn start(candidate: Candidate, path: Option<PathBuf>, metrics: Arc<Metrics>) -> Reloader {
        let weights = weight_changes(None, &candidate.config);
        let identity = candidate.revision.identity.clone();
        let mut rollouts = Rollouts::new(candidate.config.rollout_state.clone());
        let announcements = rollouts.sync(&candidate.config, Instant::now());
        let config = Arc::new(candidate.config);
        let snapshot = build(&rollouts, config.clone(), None, &metrics);
        let at = candidate.revision.loaded_at;
        metrics.reloads.with_label_values(&["success"]).inc();
        metrics.last_reload_success.set(unix_seconds(at));
        let entry = HistoryEntry {
            at,
            sha256: Some(candidate.revision.sha256.clone()),
            git_commit: candidate.revision.git_commit.clone(),
            success: true,
            error: None,
            warnings: Vec::new(),
            weights,
            rollout: None,
        };
        let reloader = Reloader {
            path,
            snapshots: Arc::new(ArcSwap::from_pointee(snapshot)),
            metrics,
            record: Mutex::new(ReloadRecord {
                revision: candidate.revision,
                last_attempt: Attempt::Bytes(identity),
                history: VecDeque::from([entry]),
            }),
            rollouts: Mutex::new(rollouts),
        };
        reloader.record_rollouts(&config_weights(&config), &announcements);
        reloader.rollouts().announce(&announcements);
        reloader
    }

    pub fn rollouts(&self) -> MutexGuard<'_, Rollouts> {
        self.rollouts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs the rollout checks due at `now` and applies their weights; returns the confirm
    /// gates to ask.
    pub fn rollout_tick(&self, now: Instant) -> Vec<Gate> {
        let mut rollouts = self.rollouts();
        let (announcements, gates) = rollouts.tick(now);
        self.steer(&rollouts, &announcements);
        gates
    }

    /// A confirm gate answered for `route`.
    pub fn rollout_confirmed(&self, route: &str, answer: Result<(), String>, now: Instant) {
        let mut rollouts = self.rollouts();
        let announcements: Vec<Announcement> =
            rollouts.confirmed(route, answer, now).into_iter().collect();
        self.steer(&rollouts, &announcements);
        rollouts.wake.notify_one();
    }

    /// After rollout events: a snapshot with the new weights, the history, the webhooks.
    fn steer(&self, rollouts: &Rollouts, announcements: &[Announcement]) {
        if announcements.is_empty() {
            return;
        }
        let previous = self.snapshots.load_full();
        let snapshot = build(
            rollouts,
            previous.config.clone(),
            Some(&previous),
            &self.metrics,
        );
        self.snapshots.store(Arc::new(snapshot));
        self.record_rollouts(&snapshot_weights(&previous), announcements);
        rollouts.announce(announcements);
    }

    /// Adds each rollout event to the history, with its route's weight changes since `before`.
    fn record_rollouts(&self, before: &[RouteWeight], announcements: &[Announcement]) {
        if announcements.is_empty() {
            return;
        }
        let after = self.snapshots.load_full();
        let limit = after.config.spec.admin.history;
        let mut record = self.record();
        let (sha256, git_commit) = (
            record.revision.sha256.clone(),
            record.revision.git_commit.clone(),
        );
        let all = changes(before, &snapshot_weights(&after));
        for a in announcements {
            let weights = all
                .iter()
                .filter(|c| c.route == *a.route)
                .cloned()
                .collect();
            push_history(
                &mut record.history,
                HistoryEntry {
                    at: a.at,
                    sha256: Some(sha256.clone()),
                    git_commit: git_commit.clone(),
                    success: true,
                    error: None,
                    warnings: Vec::new(),
                    weights,
                    rollout: Some(a.clone()),
                },
                limit,
            );
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn record(&self) -> MutexGuard<'_, ReloadRecord> {
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Re-reads the config file and [`submit`](Reloader::submit)s it.
    pub fn reload(&self) -> Result<bool, ConfigErrors> {
        match &self.path {
            Some(path) => self.submit(read_file(path)),
            None => Ok(false),
        }
    }

    /// Takes the result of reading the file. The attempt last made again is a no-op (returns
    /// `Ok(false)`); a valid new file is applied (`Ok(true)`); an invalid one is refused and
    /// recorded, and the running config stays.
    pub fn submit(&self, result: ReadResult) -> Result<bool, ConfigErrors> {
        if attempt_of(&result) == self.record().last_attempt {
            return Ok(false);
        }
        match result {
            Ok(candidate) => {
                let running = self.snapshots.load_full();
                if let Err(errors) = candidate.config.check_policies(Some(&running.config.spec)) {
                    self.refuse(Some(candidate.revision), &errors);
                    return Err(errors);
                }
                self.apply(candidate);
                Ok(true)
            }
            Err((revision, errors)) => {
                self.refuse(revision, &errors);
                Err(errors)
            }
        }
    }

    /// Swaps `candidate` in. Listener and admin addresses are bound once at start: a change of
    /// them is reported in the warnings and the old addresses stay; the rest applies.
    pub fn apply(&self, candidate: Candidate) {
        let Candidate {
            mut config,
            revision,
        } = candidate;
        let previous = self.snapshots.load_full();
        let mut warnings = Vec::new();
        if previous.config.listeners != config.listeners {
            warnings.push(String::from(
                "listener names or addresses changed: restart weir to apply them",
            ));
        }
        // The sockets bound at start stay. Each keeps its new definition (certificates included)
        // where the file still names it at the same address, else its old one: a renamed TLS
        // listener must not fall back to plaintext.
        config.listeners = previous
            .config
            .listeners
            .iter()
            .map(|bound| {
                config
                    .listeners
                    .iter()
                    .find(|l| *l == bound)
                    .unwrap_or(bound)
                    .clone()
            })
            .collect();
        if previous.config.admin_address != config.admin_address {
            warnings.push(String::from(
                "the admin address changed: restart weir to apply it",
            ));
        }
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let candidate = Candidate { config, revision };
        let weights = weight_changes(Some(&previous.config), &candidate.config);
        let mut rollouts = self.rollouts();
        let announcements = rollouts.sync(&candidate.config, Instant::now());
        let config = Arc::new(candidate.config);
        let snapshot = build(&rollouts, config, Some(&previous), &self.metrics);
        self.snapshots.store(Arc::new(snapshot));

        let at = candidate.revision.loaded_at;
        self.metrics.reloads.with_label_values(&["success"]).inc();
        self.metrics.last_reload_success.set(unix_seconds(at));
        tracing::info!(sha256 = %candidate.revision.sha256, changes = weights.len(), "config applied");
        let limit = self.snapshots.load().config.spec.admin.history;
        let mut record = self.record();
        push_history(
            &mut record.history,
            HistoryEntry {
                at,
                sha256: Some(candidate.revision.sha256.clone()),
                git_commit: candidate.revision.git_commit.clone(),
                success: true,
                error: None,
                warnings,
                weights,
                rollout: None,
            },
            limit,
        );
        record.last_attempt = Attempt::Bytes(candidate.revision.identity.clone());
        record.revision = candidate.revision;
        drop(record);
        self.record_rollouts(&snapshot_weights(&previous), &announcements);
        rollouts.announce(&announcements);
    }

    fn refuse(&self, revision: Option<Revision>, errors: &ConfigErrors) {
        let at = SystemTime::now();
        self.metrics.reloads.with_label_values(&["failure"]).inc();
        tracing::error!(errors = %errors, "config refused; the running config stays");
        let error = errors.to_string();
        let limit = self.snapshots.load().config.spec.admin.history;
        let mut record = self.record();
        record.last_attempt = match &revision {
            Some(r) => Attempt::Bytes(r.identity.clone()),
            None => Attempt::Unreadable,
        };
        push_history(
            &mut record.history,
            HistoryEntry {
                at,
                sha256: revision.as_ref().map(|r| r.sha256.clone()),
                git_commit: revision.and_then(|r| r.git_commit),
                success: false,
                error: Some(error),
                warnings: Vec::new(),
                weights: Vec::new(),
                rollout: None,
            },
            limit,
        );
    }
}

/// Builds the snapshot of `config` with the rollouts' weights, publishes each route's
/// `weir_rollout_state` and saves the rollouts' progress.
fn build(
    rollouts: &Rollouts,
    config: Arc<Config>,
    previous: Option<&Snapshot>,
    metrics: &Arc<Metrics>,
) -> Snapshot {
    let snapshot = Snapshot::build(config, previous, metrics, &rollouts.steering());
    for r in snapshot.routes.iter() {
        let state = rollouts.phase(&r.name).map_or(0, |p| p.gauge());
        metrics
            .rollout_state
            .with_label_values(&[&*r.name])
            .set(state);
    }
    if let Some(previous) = previous {
        for r in previous.routes.iter() {
            if !snapshot.routes.iter().any(|n| n.name == r.name) {
                let _ = metrics.rollout_state.remove_label_values(&[&*r.name]);
            }
        }
    }
    rollouts.persist();
    snapshot
}

/// (route, backend, weight), in file order.
type RouteWeight = (String, String, u32);

/// The weights a config gives.
fn config_weights(c: &Config) -> Vec<RouteWeight> {
    c.routes
        .iter()
        .flat_map(|r| {
            r.backends.iter().map(|b| {
                (
                    r.name.to_string(),
                    c.upstreams[b.upstream].name.to_string(),
                    b.weight,
                )
            })
        })
        .collect()
}

/// The weights a snapshot serves (a rollout's included).
fn snapshot_weights(s: &Snapshot) -> Vec<RouteWeight> {
    let configured = config_weights(&s.config);
    s.routes
        .iter()
        .flat_map(|r| {
            r.backends
                .iter()
                .map(|b| (r.name.to_string(), b.name().to_string(), b.weight))
        })
        // Only the configured backends, not the weight-0 ones that overrides add.
        .filter(|(r, b, _)| configured.iter().any(|(cr, cb, _)| cr == r && cb == b))
        .collect()
}

/// Adds `entry` as the newest, keeping the running config's `admin.history` entries.
fn push_history(history: &mut VecDeque<HistoryEntry>, entry: HistoryEntry, limit: usize) {
    history.push_front(entry);
    history.truncate(limit);
}

/// Every (route, backend) whose weight differs between `old` and `new`, in the new file's order
/// and then the removed ones.
pub fn weight_changes(old: Option<&Config>, new: &Config) -> Vec<WeightChange> {
    let before = old.map(config_weights).unwrap_or_default();
    changes(&before, &config_weights(new))
}

fn changes(before: &[RouteWeight], after: &[RouteWeight]) -> Vec<WeightChange> {
    let find = |list: &[(String, String, u32)], r: &str, b: &str| {
        list.iter()
            .find(|(lr, lb, _)| lr == r && lb == b)
            .map(|(_, _, w)| *w)
    };
    let mut found: Vec<WeightChange> = after
        .iter()
        .filter_map(|(r, b, w)| {
            let from = find(before, r, b);
            (from != Some(*w)).then(|| WeightChange {
                route: r.clone(),
                backend: b.clone(),
                from,
                to: Some(*w),
            })
        })
        .collect();
    found.extend(
        before
            .iter()
            .filter(|(r, b, _)| find(after, r, b).is_none())
            .map(|(r, b, w)| WeightChange {
                route: r.clone(),
                backend: b.clone(),
                from: Some(*w),
                to: None,
            }),
    );
    found
}
