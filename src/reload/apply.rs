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
use crate::config::{self, Config, ConfigErrors, Input};
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

/// The identity of one reload attempt: the same bytes, reading the same inputs, are the same
/// attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Read {
        /// The file's sha256 and the fingerprint of its inputs.
        identity: String,
        /// What the file read besides itself, to fingerprint them again.
        inputs: Vec<Input>,
    },
    /// The file could not be read, for this reason.
    Unreadable(String),
}

/// The result of reading a config file.
pub type ReadResult = Result<Candidate, Box<Refused>>;

/// A config file that cannot serve: why, and (when its bytes could be read) what was refused.
#[derive(Debug)]
pub struct Refused {
    pub revision: Option<Revision>,
    pub errors: ConfigErrors,
}

/// Which attempt `result` would be.
pub fn attempt_of(result: &ReadResult) -> Attempt {
    match result {
        Ok(c) => Attempt::Read {
            identity: c.revision.identity.clone(),
            inputs: c.revision.inputs.clone(),
        },
        Err(refused) => match &refused.revision {
            Some(r) => Attempt::Read {
                identity: r.identity.clone(),
                inputs: r.inputs.clone(),
            },
            None => Attempt::Unreadable(refused.errors.to_string()),
        },
    }
}

/// The identity of a file with `sha256` reading `inputs` as they are now.
fn identity(sha256: &str, inputs: &[Input]) -> String {
    if inputs.is_empty() {
        return sha256.to_owned();
    }
    let mut all = Vec::with_capacity(32 * inputs.len());
    for input in inputs {
        all.extend_from_slice(&input.fingerprint());
    }
    format!("{sha256}+{}", config::sha256_hex(&all))
}

/// Reads the file at `path` unless it is `last` again (the same bytes, whose inputs have the
/// same content, or the same read error): then `None`, without parsing or validating anything.
/// This is what keeps the periodic poll cheap on a large config.
pub fn read_if_changed(path: &Path, last: &Attempt) -> Option<ReadResult> {
    let unchanged = match (read_config(path), last) {
        (
            Ok(bytes),
            Attempt::Read {
                identity: id,
                inputs,
            },
        ) => identity(&revision::sha256_hex(&bytes), inputs) == *id,
        (Err(e), Attempt::Unreadable(last)) => config::unreadable(path, &e).to_string() == *last,
        _ => false,
    };
    (!unchanged).then(|| read_file(path))
}

fn read_config(path: &Path) -> std::io::Result<Vec<u8>> {
    config::files::read_limited(path, config::MAX_FILE_BYTES)
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
                inputs: Vec::new(),
            },
        })
    }
}

/// Reads and validates the file at `path`. On failure the revision (when the bytes could be
/// read) still names what was refused.
pub fn read_file(path: &Path) -> ReadResult {
    let bytes = match read_config(path) {
        Ok(b) => b,
        Err(e) => {
            return Err(Box::new(Refused {
                revision: None,
                errors: config::unreadable(path, &e),
            }));
        }
    };
    let sha256 = revision::sha256_hex(&bytes);
    let file = path.display().to_string();
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let loaded = match std::str::from_utf8(&bytes) {
        Ok(text) => config::load_text(text, &file, base_dir),
        Err(e) => config::Loaded {
            result: Err(config::not_utf8(&file, &e)),
            inputs: Vec::new(),
        },
    };
    let revision = Revision {
        identity: identity(&sha256, &loaded.inputs),
        inputs: loaded.inputs,
        sha256,
        git_commit: revision::git_commit(path),
        loaded_at: SystemTime::now(),
    };
    match loaded.result {
        Ok(config) => Ok(Candidate { config, revision }),
        Err(errors) => Err(Box::new(Refused {
            revision: Some(revision),
            errors,
        })),
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
        let attempt = Attempt::Read {
            identity: candidate.revision.identity.clone(),
            inputs: candidate.revision.inputs.clone(),
        };
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
                last_attempt: attempt,
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

    /// Re-reads the config file and [`submit`](Reloader::submit)s it, unless it is the attempt
    /// last made (then `Ok(false)`, without parsing it).
    pub fn reload(&self) -> Result<bool, ConfigErrors> {
        match self.read_if_changed() {
            Some(result) => self.submit(result),
            None => Ok(false),
        }
    }

    /// The file read, when it is not the attempt last made (see [`read_if_changed`]).
    pub fn read_if_changed(&self) -> Option<ReadResult> {
        let last = self.record().last_attempt.clone();
        read_if_changed(self.path.as_deref()?, &last)
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
            Err(refused) => {
                let Refused { revision, errors } = *refused;
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
        record.last_attempt = Attempt::Read {
            identity: candidate.revision.identity.clone(),
            inputs: candidate.revision.inputs.clone(),
        };
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
            Some(r) => Attempt::Read {
                identity: r.identity.clone(),
                inputs: r.inputs.clone(),
            },
            None => Attempt::Unreadable(error.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(path: &Path) -> Attempt {
        attempt_of(&read_file(path))
    }

    #[test]
    fn an_unchanged_file_and_unchanged_inputs_are_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.yaml");
        let policy = dir.path().join("p.rego");
        std::fs::write(&policy, "package weir\n").unwrap();
        std::fs::write(
            &path,
            "listeners: [{ name: main, address: 127.0.0.1:0 }]\npolicies: [p.rego]\n",
        )
        .unwrap();
        let last = attempt(&path);
        assert!(matches!(&last, Attempt::Read { inputs, .. } if inputs.len() == 1));
        assert!(read_if_changed(&path, &last).is_none());
        // A file it reads changed: a new attempt, the config file's bytes unchanged.
        std::fs::write(&policy, "package weir\n\nx := 1\n").unwrap();
        assert!(read_if_changed(&path, &last).is_some());
        let last = attempt(&path);
        assert!(read_if_changed(&path, &last).is_none());
        // The same read error twice is one attempt; another error is a new one.
        std::fs::remove_file(&path).unwrap();
        let gone = attempt(&path);
        assert!(matches!(&gone, Attempt::Unreadable(e) if e.contains("No such file")));
        assert!(read_if_changed(&path, &gone).is_none());
        std::fs::create_dir(&path).unwrap();
        let dir_error = read_if_changed(&path, &gone).expect("another error is a new attempt");
        assert!(attempt_of(&dir_error) != gone);
    }
}
