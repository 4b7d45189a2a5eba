//! Automated rollouts: per route, weir drives the canary's weight through the steps of its
//! `rollout:` block, judging the canary's own requests of each interval, and promotes or rolls
//! back by itself.
//!
//! `machine` is the pure state machine; `probe` measures the canary on the request path;
//! [`Rollouts`] is the control-plane state of every route's rollout (behind the `Reloader`'s
//! lock), turned into weights for the next `Snapshot`; `webhook` announces events and asks the
//! confirm gate; [`controller`] is the task that wakes at interval ends and on fast-fail.

pub mod compare;
mod machine;
pub mod probe;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::Uri;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

pub use machine::{
    Event, EventKind, FastFail, Measurement, Next, Phase, Plan, Progress, Verdict, weights,
};
use probe::Probe;

use crate::config::{self, Config};
use crate::reload::Reloader;
use crate::reload::revision::rfc3339;

/// What a snapshot needs from a route's rollout: the weights of its configured backends and the
/// canary's probe while the rollout runs.
pub struct Steering {
    pub weights: Vec<u32>,
    pub canary: usize,
    pub probe: Option<Arc<Probe>>,
}

/// The rollouts of the running config, by route name.
pub struct Rollouts {
    runs: BTreeMap<Arc<str>, Run>,
    /// Progress read from `rollout_state` at start, taken by the first rollout of its route.
    saved: HashMap<String, Saved>,
    state_file: Option<PathBuf>,
    pub wake: Arc<Notify>,
    pub hooks: webhook::Hooks,
}

struct Run {
    rollout: config::Rollout,
    canary: Arc<str>,
    configured: Vec<u32>,
    progress: Progress,
    probe: Arc<Probe>,
    interval_start: Instant,
    last_check: Option<LastCheck>,
    awaiting_gate: Option<Next>,
}

struct LastCheck {
    at: SystemTime,
    measurement: Measurement,
    verdict: Verdict,
}

/// One route's saved progress in the `rollout_state` file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Saved {
    definition: String,
    progress: Progress,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    routes: BTreeMap<String, Saved>,
}

/// A rollout event, ready to log, record and send.
#[derive(Clone, Debug)]
pub struct Announcement {
    pub route: Arc<str>,
    pub canary: Arc<str>,
    pub event: Event,
    pub at: SystemTime,
    webhooks: Vec<config::Webhook>,
}

impl Announcement {
    /// The webhook body of SPEC.md.
    pub fn json(&self) -> Value {
        json!({
            "route": &*self.route,
            "canary": &*self.canary,
            "event": self.event.kind.name(),
            "step": self.event.step,
            "canary_weight": self.event.canary_weight,
            "reason": self.event.reason,
            "at": rfc3339(self.at),
        })
    }
}

/// A confirm-gate call the controller makes before a step.
pub struct Gate {
    pub route: Arc<str>,
    pub url: Uri,
    pub body: Bytes,
}

impl Rollouts {
    /// No rollouts yet; `state_file` (the config's `rollout_state`) is read now, when given.
    pub fn new(state_file: Option<PathBuf>) -> Rollouts {
        let saved = state_file.as_deref().map(read_state).unwrap_or_default();
        Rollouts {
            runs: BTreeMap::new(),
            saved,
            state_file,
            wake: Arc::new(Notify::new()),
            hooks: webhook::Hooks::new(),
        }
    }

    /// Follows `config`: a rollout whose canary definition is unchanged keeps its progress; a new
    /// one, or one whose canary endpoints changed, starts at its first step (or resumes from the
    /// state file); rollouts the file no longer has end.
    pub fn sync(&mut self, config: &Config, now: Instant) -> Vec<Announcement> {
        self.state_file = config.rollout_state.clone();
        let mut announcements = Vec::new();
        let mut runs = BTreeMap::new();
        for r in &config.routes {
            let Some(ro) = &r.rollout else { continue };
            let canary = config.upstreams[r.backends[ro.canary].upstream]
                .name
                .clone();
            let configured: Vec<u32> = r.backends.iter().map(|b| b.weight).collect();
            let last_step = ro.plan.steps.len() - 1;
            let run = match self.runs.remove(&r.name) {
                Some(mut run) if run.rollout.definition == ro.definition => {
                    if run.rollout.plan.fast_fail != ro.plan.fast_fail {
                        run.probe = Arc::new(Probe::new(ro.plan.fast_fail, self.wake.clone()));
                    }
                    run.progress.step = run.progress.step.min(last_step);
                    run.rollout = ro.clone();
                    run.canary = canary.clone();
                    run.configured = configured;
                    run
                }
                old => {
                    let saved = self
                        .saved
                        .remove(&*r.name)
                        .filter(|s| s.definition == ro.definition);
                    let resumed = saved.is_some();
                    let mut progress = saved.map_or_else(Progress::start, |s| s.progress);
                    progress.step = progress.step.min(last_step);
                    let run = Run {
                        rollout: ro.clone(),
                        canary: canary.clone(),
                        configured,
                        progress,
                        probe: Arc::new(Probe::new(ro.plan.fast_fail, self.wake.clone())),
                        interval_start: now,
                        last_check: None,
                        awaiting_gate: None,
                    };
                    if resumed {
                        tracing::info!(route = &*r.name, canary = &*canary, phase = ?progress.phase, step = progress.step, "rollout resumed from the state file");
                    } else {
                        let reason = match old {
                            Some(_) => "the canary's endpoints changed",
                            None => "a new rollout",
                        };
                        announcements
                            .push(run.announce(&r.name, progress.started(&ro.plan, reason)));
                    }
                    run
                }
            };
            runs.insert(r.name.clone(), run);
        }
        self.runs = runs;
        self.wake.notify_one();
        announcements
    }

    /// The weights (and probes) the next snapshot gives each route with a rollout.
    pub fn steering(&self) -> HashMap<Arc<str>, Steering> {
        self.runs
            .iter()
            .map(|(route, run)| {
                let percent = run.progress.canary_weight(&run.rollout.plan);
                let steering = Steering {
                    weights: weights(&run.configured, run.rollout.canary, percent),
                    canary: run.rollout.canary,
                    probe: (run.progress.phase == Phase::Progressing).then(|| run.probe.clone()),
                };
                (route.clone(), steering)
            })
            .collect()
    }

    /// The phase of the rollout of `route`, `None` without one.
    pub fn phase(&self, route: &str) -> Option<Phase> {
        self.runs.get(route).map(|r| r.progress.phase)
    }

    /// When the next interval of a running rollout ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.runs
            .values()
            .filter(|r| r.progress.phase == Phase::Progressing && r.awaiting_gate.is_none())
            .map(|r| r.interval_start + r.rollout.plan.interval)
            .min()
    }

    /// Runs what is due at `now`: a fast-fail rollback, and the check of every interval that
    /// ended. Returns the events, and the confirm gates to ask before a step.
    pub fn tick(&mut self, now: Instant) -> (Vec<Announcement>, Vec<Gate>) {
        let (mut announcements, mut gates) = (Vec::new(), Vec::new());
        for (route, run) in self.runs.iter_mut() {
            if run.progress.phase != Phase::Progressing || run.awaiting_gate.is_some() {
                continue;
            }
            let plan = &run.rollout.plan;
            if run.probe.tripped()
                && let Some(reason) = run.progress.fast_fail(plan, &run.probe.peek())
            {
                let measurement = run.probe.take();
                run.last_check = Some(LastCheck {
                    at: SystemTime::now(),
                    measurement,
                    verdict: Verdict::Failed(reason.clone()),
                });
                if let Some(e) = run.progress.apply(plan, Next::RollBack(reason)) {
                    announcements.push(run.announce(route, e));
                }
                continue;
            }
            if now < run.interval_start + plan.interval {
                continue;
            }
            let measurement = run.probe.take();
            let (verdict, next) = run.progress.check(plan, &measurement);
            tracing::info!(route = &**route, requests = measurement.requests, failures = measurement.failures, p99 = ?measurement.p99, ?verdict, "rollout check");
            run.last_check = Some(LastCheck {
                at: SystemTime::now(),
                measurement,
                verdict,
            });
            run.interval_start = now;
            match (&next, &run.rollout.confirm) {
                (Next::Advance | Next::Promote, Some(url)) => {
                    let mut ahead = run.progress;
                    let step = ahead.apply(plan, next.clone());
                    let body = json!({
                        "route": &**route,
                        "canary": &*run.canary,
                        "event": "confirm",
                        "step": ahead.step,
                        "canary_weight": step.map_or(0, |e| e.canary_weight),
                        "reason": "the check passed; confirm the next step",
                        "at": rfc3339(SystemTime::now()),
                    });
                    gates.push(Gate {
                        route: route.clone(),
                        url: url.clone(),
                        body: Bytes::from(body.to_string()),
                    });
                    run.awaiting_gate = Some(next);
                }
                _ => {
                    if let Some(e) = run.progress.apply(plan, next) {
                        announcements.push(run.announce(route, e));
                    }
                }
            }
        }
        (announcements, gates)
    }

    /// The confirm gate of `route` answered: on `Ok` the step is taken, else the rollout holds
    /// at its step for another interval.
    pub fn confirmed(
        &mut self,
        route: &str,
        answer: Result<(), String>,
        now: Instant,
    ) -> Option<Announcement> {
        let (route, run) = self.runs.iter_mut().find(|(r, _)| &***r == route)?;
        let next = run.awaiting_gate.take()?;
        run.interval_start = now;
        run.probe.take();
        match answer {
            Ok(()) => {
                let e = run.progress.apply(&run.rollout.plan, next)?;
                Some(run.announce(route, e))
            }
            Err(reason) => {
                tracing::info!(route = &**route, %reason, "rollout held by its confirm gate");
                if let Some(c) = &mut run.last_check {
                    c.verdict = Verdict::Skipped(format!("passed, but held: {reason}"));
                }
                None
            }
        }
    }

    /// The `/stats` rollout block of `route` (null without a rollout).
    pub fn status(&self, route: &str) -> Value {
        let Some(run) = self.runs.get(route) else {
            return Value::Null;
        };
        let last_check = run.last_check.as_ref().map(|c| {
            let (verdict, reason) = match &c.verdict {
                Verdict::Passed => ("passed", None),
                Verdict::Failed(r) => ("failed", Some(r)),
                Verdict::Skipped(r) => ("skipped", Some(r)),
            };
            json!({
                "at": rfc3339(c.at),
                "requests": c.measurement.requests,
                "success_rate": c.measurement.success_rate(),
                "p99_ms": c.measurement.p99.map(|d| d.as_secs_f64() * 1e3),
                "verdict": verdict,
                "reason": reason,
            })
        });
        json!({
            "state": run.progress.phase,
            "step": run.progress.step,
            "canary": &*run.canary,
            "canary_weight": run.progress.canary_weight(&run.rollout.plan),
            "failed_checks": run.progress.failed_checks,
            "awaiting_confirmation": run.awaiting_gate.is_some(),
            "last_check": last_check,
        })
    }

    /// Sends each announcement to the webhooks that want it.
    pub fn announce(&self, announcements: &[Announcement]) {
        for a in announcements {
            tracing::info!(route = &*a.route, canary = &*a.canary, event = a.event.kind.name(), step = a.event.step, canary_weight = a.event.canary_weight, reason = %a.event.reason, "rollout");
            let body = Bytes::from(a.json().to_string());
            for hook in &a.webhooks {
                if hook.on.is_empty() || hook.on.contains(&a.event.kind) {
                    self.hooks.deliver(hook.url.clone(), body.clone());
                }
            }
        }
    }

    /// Saves every rollout's progress to `rollout_state`, atomically (a temporary file, fsync,
    /// rename, fsync of the directory). A failure is logged; rollouts go on.
    pub fn persist(&self) {
        let Some(path) = &self.state_file else { return };
        let mut state = StateFile::default();
        for (route, run) in &self.runs {
            state.routes.insert(
                route.to_string(),
                Saved {
                    definition: run.rollout.definition.clone(),
                    progress: run.progress,
                },
            );
        }
        // Routes saved but not (yet) in the config stay, so a bad reload loses nothing.
        for (route, saved) in &self.saved {
            state
                .routes
                .entry(route.clone())
                .or_insert_with(|| saved.clone());
        }
        if let Err(e) =
            write_atomically(path, &serde_json::to_vec_pretty(&state).unwrap_or_default())
        {
            tracing::error!(path = %path.display(), error = %e, "cannot save the rollout state");
        }
    }
}

impl Run {
    fn announce(&self, route: &Arc<str>, event: Event) -> Announcement {
        Announcement {
            route: route.clone(),
            canary: self.canary.clone(),
            event,
            at: SystemTime::now(),
            webhooks: self.rollout.webhooks.clone(),
        }
    }
}

fn read_state(path: &Path) -> HashMap<String, Saved> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
            Ok(s) => s.routes.into_iter().collect(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable rollout state file");
                HashMap::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the rollout state file");
            HashMap::new()
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("rollouts.json");
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The task that runs rollouts: it sleeps until the next interval ends, a fast-fail trips or a
/// reload changes the rollouts, then lets the `Reloader` run what is due. Confirm gates are
/// asked on tasks of their own, so a slow gate holds only its own rollout. Ends on `stop`.
pub async fn controller(reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
    let wake = reloader.rollouts().wake.clone();
    loop {
        let deadline = reloader.rollouts().next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = wake.notified() => {}
            _ = stop.changed() => return,
        }
        for gate in reloader.rollout_tick(Instant::now()) {
            let reloader = reloader.clone();
            tokio::spawn(async move {
                let hooks = reloader.rollouts().hooks.clone();
                let answer = hooks.confirm(&gate.url, gate.body).await;
                reloader.rollout_confirmed(&gate.route, answer, Instant::now());
            });
        }
    }
}
