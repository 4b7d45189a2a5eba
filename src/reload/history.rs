//! The record of attempts: the revision serving, and the history of reload attempts (applied or
//! refused) and rollout events that `/config` and `/history` show. The control task is its only
//! writer; the admin API reads it. The lock is a std `Mutex`, held for a few field copies and
//! never across an `.await`, and never taken on the request path.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;

use super::read::Attempt;
use super::revision::Revision;
use crate::config::Config;
use crate::rollout::Announcement;
use crate::snapshot::Snapshot;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WeightChange {
    pub route: String,
    pub backend: String,
    pub from: Option<u32>,
    pub to: Option<u32>,
}

/// One reload attempt, applied or refused, or one rollout event.
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

impl HistoryEntry {
    /// `revision` applied, changing `weights`.
    pub fn applied(revision: &Revision, weights: Vec<WeightChange>, warnings: Vec<String>) -> Self {
        HistoryEntry {
            at: revision.loaded_at,
            sha256: Some(revision.sha256.clone()),
            git_commit: revision.git_commit.clone(),
            success: true,
            error: None,
            warnings,
            weights,
            rollout: None,
        }
    }

    /// A file refused at `at` (its revision, when its bytes could be read).
    pub fn refused(revision: Option<&Revision>, error: String, at: SystemTime) -> Self {
        HistoryEntry {
            at,
            sha256: revision.map(|r| r.sha256.clone()),
            git_commit: revision.and_then(|r| r.git_commit.clone()),
            success: false,
            error: Some(error),
            warnings: Vec::new(),
            weights: Vec::new(),
            rollout: None,
        }
    }

    /// A rollout event under the serving `revision`, changing its route's `weights`.
    pub fn rollout(revision: &Revision, event: Announcement, weights: Vec<WeightChange>) -> Self {
        HistoryEntry {
            at: event.at,
            sha256: Some(revision.sha256.clone()),
            git_commit: revision.git_commit.clone(),
            success: true,
            error: None,
            warnings: Vec::new(),
            weights,
            rollout: Some(event),
        }
    }
}

/// What the admin API shows about reloads.
#[derive(Clone, Debug)]
pub struct ReloadRecord {
    /// The revision serving now.
    pub revision: Revision,
    /// Newest first; never empty (the initial load is the first entry, and `admin.history` is at
    /// least 1).
    pub history: VecDeque<HistoryEntry>,
    /// What was last tried, applied or refused: the same bytes (or the same read error) again
    /// are not a new attempt, so a poll or a repeated event does not refuse a bad file over and
    /// over.
    pub last_attempt: Attempt,
}

impl ReloadRecord {
    /// The last reload attempt or event: `/config`'s `last_reload`.
    pub fn last(&self) -> &HistoryEntry {
        self.history
            .front()
            .expect("the history always holds the initial load or a later attempt")
    }

    /// Adds `entry` as the newest, keeping the running config's `admin.history` entries.
    pub fn push(&mut self, entry: HistoryEntry, limit: usize) {
        self.history.push_front(entry);
        self.history.truncate(limit);
    }
}

/// The shared record.
#[derive(Debug)]
pub struct History(Mutex<ReloadRecord>);

impl History {
    pub fn new(record: ReloadRecord) -> History {
        History(Mutex::new(record))
    }

    pub fn record(&self) -> MutexGuard<'_, ReloadRecord> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// === weight changes ===

/// (route, backend, weight), in file order.
pub type RouteWeight = (String, String, u32);

/// The weights a config gives.
pub fn config_weights(c: &Config) -> Vec<RouteWeight> {
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

/// The weights a snapshot serves (a rollout's included), of the configured backends only (not
/// the weight-0 ones that overrides add).
pub fn snapshot_weights(s: &Snapshot) -> Vec<RouteWeight> {
    let configured = config_weights(&s.config);
    s.routes
        .iter()
        .flat_map(|r| {
            r.backends
                .iter()
                .map(|b| (r.name.to_string(), b.name().to_string(), b.weight))
        })
        .filter(|(r, b, _)| configured.iter().any(|(cr, cb, _)| cr == r && cb == b))
        .collect()
}

/// Every (route, backend) whose weight differs between `old` and `new`, in the new file's order
/// and then the removed ones.
pub fn weight_changes(old: Option<&Config>, new: &Config) -> Vec<WeightChange> {
    let before = old.map(config_weights).unwrap_or_default();
    changes(&before, &config_weights(new))
}

/// Every (route, backend) whose weight differs between `before` and `after`.
pub fn changes(before: &[RouteWeight], after: &[RouteWeight]) -> Vec<WeightChange> {
    let find = |list: &[RouteWeight], r: &str, b: &str| {
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
