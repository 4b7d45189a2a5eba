//! Automated rollouts: per route, weir drives the canary's weight through the steps of its
//! `rollout:` block, judging the canary's requests of each interval, and promotes or rolls back
//! by itself.
//!
//! [`Rollouts`] is the rollouts of the running config, and it is data in, data out: a new config
//! ([`Rollouts::sync`]), an interval's measurement ([`Rollouts::check`]), a fast-fail reading
//! ([`Rollouts::fast_fail`]) or a confirm gate's answer ([`Rollouts::confirmed`]) goes in with the
//! time ([`Now`], never read here), and [`Decisions`] come out: whether the weights changed, the
//! events to record and send, the gates to ask, the state to save. Where a measurement comes from
//! (the in-process `metrics::Probe` today, a Prometheus query for a fleet) and how decisions are
//! carried out (the control task in `reload::control`) is not this module's business; `machine`
//! is one rollout's state machine; `webhook` is the HTTP client the control task sends with.

pub mod compare;
mod comparing;
pub mod fleet;
mod machine;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Uri;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use comparing::{COMPARE_EVERY, ComparisonStatus, Reading};
pub use machine::{Event, Next, Phase, Progress, Verdict, weights};

use crate::config::{self, Config, FastFail, rfc3339};
use crate::metrics::Measurement;

/// The time of an input: the monotonic instant that drives intervals (tokio's, so tests can run
/// on a paused clock) and the wall-clock time shown in events and `/stats`.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub at: Instant,
    pub wall: SystemTime,
}

/// The rollouts of the running config, by route name.
#[derive(Default)]
pub struct Rollouts {
    runs: BTreeMap<Arc<str>, Run>,
    /// Progress read from `rollout_state` at start, taken by the first rollout of its route.
    saved: BTreeMap<String, Saved>,
    /// The id of the next run; a run is one rollout of one canary definition.
    next_run: u64,
}

struct Run {
    id: u64,
    rollout: config::Rollout,
    canary: Arc<str>,
    configured: Vec<u32>,
    progress: Progress,
    interval_start: Instant,
    last_check: Option<LastCheck>,
    awaiting_gate: Option<Next>,
    /// The comparison with stable of the current (or last comparing) step.
    comparing: Option<comparing::Comparing>,
    /// Held by an operator (`weir rollout pause`): no checks until resumed.
    paused: bool,
    /// When the rollout last moved (started, stepped, resumed): `progress_deadline` counts
    /// from here.
    progressed_at: Instant,
    /// The run follows the fleet's status file (`fleet:`) instead of deciding its steps; only
    /// fast-fail is decided here.
    follows: bool,
    /// A follower's own fast-fail rolled it back: it stays rolled back while the status still
    /// says progressing (the controller records the rollback for the fleet).
    local_rollback: bool,
    /// Promoted, and the promotion commit made the canary the stable: the file's own weights.
    released: bool,
}

struct LastCheck {
    at: SystemTime,
    measurement: Measurement,
    verdict: Verdict,
}

/// What to do after an input.
#[derive(Debug, Default)]
pub struct Decisions {
    /// The weights changed: the next snapshot takes [`Rollouts::steering`].
    pub steer: bool,
    /// Events to log, record in the history and send to the webhooks that want them.
    pub events: Vec<Announcement>,
    /// Confirm gates to ask; each answer comes back through [`Rollouts::confirmed`].
    pub gates: Vec<Gate>,
    /// Progress to save in `rollout_state`.
    pub save: Option<StateFile>,
    /// Routes whose measurement interval starts again now (the measurement so far is dropped).
    pub restart: Vec<Arc<str>>,
    /// Checks made, by route, with their result (`passed`, `failed`, `skipped`), for
    /// `weir_rollout_checks_total`.
    pub checks: Vec<(Arc<str>, &'static str)>,
    /// Routes rolled back because their progress deadline passed.
    pub deadlines: Vec<Arc<str>>,
}

impl Decisions {
    /// Adds `other`'s decisions to these.
    pub fn merge(&mut self, other: Decisions) {
        self.steer |= other.steer;
        self.events.extend(other.events);
        self.gates.extend(other.gates);
        self.save = other.save.or(self.save.take());
        self.restart.extend(other.restart);
        self.checks.extend(other.checks);
        self.deadlines.extend(other.deadlines);
    }
}

/// What a snapshot needs from one route's rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct Steer {
    /// The weights of the route's configured backends.
    pub weights: Vec<u32>,
    /// The index of the canary among them.
    pub canary: usize,
    /// While the rollout runs, its canary is measured: by one probe per run, kept across
    /// snapshots until the run or its fast-fail settings change.
    pub measure: Option<Measure>,
    /// The backends compared with the canary (`analysis.compare`), whose requests feed one
    /// probe together while the rollout is measured; empty without a comparison.
    pub stable: Vec<usize>,
}

/// Which measurement a running rollout's canary feeds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measure {
    pub run: u64,
    pub fast_fail: Option<FastFail>,
    /// The stable backends are measured too (`analysis.compare`).
    pub compare: bool,
}

/// An interval that ended: measure `route` since `since` and [`check`](Rollouts::check) it.
#[derive(Clone, Debug, PartialEq)]
pub struct Due {
    pub route: Arc<str>,
    pub since: Instant,
}

/// One route's saved progress in the `rollout_state` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    definition: String,
    progress: Progress,
    #[serde(default)]
    paused: bool,
}

/// The `rollout_state` file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub routes: BTreeMap<String, Saved>,
}

/// A rollout event, ready to log, record and send.
#[derive(Clone, Debug)]
pub struct Announcement {
    pub route: Arc<str>,
    pub canary: Arc<str>,
    pub event: Event,
    pub at: SystemTime,
    pub webhooks: Vec<config::Webhook>,
}

/// The JSON body of a webhook event (SPEC.md) and of a confirm gate's call.
#[derive(Debug, Serialize)]
pub struct EventBody<'a> {
    pub route: &'a str,
    pub canary: &'a str,
    pub event: &'a str,
    pub step: usize,
    pub canary_weight: u32,
    pub reason: &'a str,
    pub at: String,
}

impl Announcement {
    pub fn body(&self) -> EventBody<'_> {
        EventBody {
            route: &self.route,
            canary: &self.canary,
            event: self.event.kind.name(),
            step: self.event.step,
            canary_weight: self.event.canary_weight,
            reason: &self.event.reason,
            at: rfc3339(self.at),
        }
    }

    /// The webhook body as JSON (`/history` shows it too).
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).expect("an event body always serializes")
    }

    /// The webhooks that want this event.
    pub fn receivers(&self) -> impl Iterator<Item = &Uri> {
        self.webhooks
            .iter()
            .filter(|h| h.on.is_empty() || h.on.contains(&self.event.kind))
            .map(|h| &h.url)
    }
}

/// A confirm-gate call to make before a step.
#[derive(Clone, Debug)]
pub struct Gate {
    pub route: Arc<str>,
    pub url: Uri,
    pub body: Bytes,
}

/// The `/stats` rollout block of one route.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    pub state: Phase,
    pub step: usize,
    pub canary: String,
    pub canary_weight: u32,
    pub failed_checks: u32,
    pub awaiting_confirmation: bool,
    /// Held by an operator.
    pub paused: bool,
    /// Follows the fleet's status file (`fleet:`): the controller decides the steps.
    pub fleet: bool,
    pub last_check: Option<CheckStatus>,
    /// The comparison with stable (`analysis.compare`): the running test, or the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<ComparisonStatus>,
}

/// The last check of a rollout, as `/stats` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckStatus {
    pub at: String,
    pub requests: u64,
    pub success_rate: Option<f64>,
    pub p99_ms: Option<f64>,
    pub verdict: &'static str,
    pub reason: Option<String>,
}

/// An operator's command on a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Promote,
    Abort,
    Pause,
    Resume,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Promote,
        Action::Abort,
        Action::Pause,
        Action::Resume,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Abort => "abort",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }

    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// Why an operator's command was not carried out.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error("route `{0}` has no rollout")]
    NoRollout(String),
    #[error(
        "route `{0}` follows the fleet's rollout status: run `weir rollout` against the Git repository instead"
    )]
    Fleet(String),
    #[error("the rollout of route `{0}` has ended ({1:?})")]
    Ended(String, Phase),
}

impl Rollouts {
    /// No rollouts yet; `saved` is the `rollout_state` file read at start.
    pub fn new(saved: StateFile) -> Rollouts {
        Rollouts {
            runs: BTreeMap::new(),
            saved: saved.routes,
            next_run: 0,
        }
    }

    /// Follows `config`: a rollout whose canary definition is unchanged keeps its progress; a new
    /// one, or one whose canary endpoints changed, starts at its first step (or resumes from the
    /// state file); rollouts the file no longer has end.
    pub fn sync(&mut self, config: &Config, now: Now) -> Decisions {
        let mut d = Decisions {
            steer: true,
            ..Decisions::default()
        };
        let mut runs = BTreeMap::new();
        let status = config.fleet.as_ref().map(|f| f.status.clone());
        for r in &config.routes {
            let Some(ro) = &r.rollout else { continue };
            let canary = config.upstreams[r.backends[ro.canary].upstream]
                .name
                .clone();
            let configured: Vec<u32> = r.backends.iter().map(|b| b.weight).collect();
            let last_step = ro.plan.steps.len() - 1;
            if let Some(status) = &status {
                let entry = status
                    .routes
                    .get(&*r.name)
                    .filter(|e| e.definition == ro.definition);
                let old = self
                    .runs
                    .remove(&r.name)
                    .filter(|run| run.follows && run.rollout.definition == ro.definition);
                let run = self.follow(&r.name, ro, canary, configured, entry, old, now, &mut d);
                runs.insert(r.name.clone(), run);
                continue;
            }
            let run = match self.runs.remove(&r.name) {
                Some(mut run) if !run.follows && run.rollout.definition == ro.definition => {
                    run.progress.step = run.progress.step.min(last_step);
                    run.rollout = ro.clone();
                    run.canary = canary;
                    run.configured = configured;
                    follow_comparison(&mut run, now.at);
                    run
                }
                old => {
                    let saved = self
                        .saved
                        .remove(&*r.name)
                        .filter(|s| s.definition == ro.definition);
                    let resumed = saved.is_some();
                    let paused = saved.as_ref().is_some_and(|s| s.paused);
                    let mut progress = saved.map_or_else(Progress::start, |s| s.progress);
                    progress.step = progress.step.min(last_step);
                    self.next_run += 1;
                    let mut run = Run {
                        id: self.next_run,
                        rollout: ro.clone(),
                        canary: canary.clone(),
                        configured,
                        progress,
                        interval_start: now.at,
                        last_check: None,
                        awaiting_gate: None,
                        comparing: None,
                        paused,
                        progressed_at: now.at,
                        follows: false,
                        local_rollback: false,
                        released: false,
                    };
                    follow_comparison(&mut run, now.at);
                    if resumed {
                        tracing::info!(
                            route = &*r.name,
                            canary = &*canary,
                            phase = progress.phase.name(),
                            step = progress.step,
                            "rollout resumed from the state file"
                        );
                    } else {
                        let reason = match old {
                            Some(_) => "the canary's endpoints changed",
                            None => "a new rollout",
                        };
                        let e = progress.started(&ro.plan, reason);
                        d.events.push(run.announce(&r.name, e, now));
                    }
                    run
                }
            };
            runs.insert(r.name.clone(), run);
        }
        self.runs = runs;
        d.save = Some(self.state());
        d
    }

    /// What the next snapshot gives each route with a rollout.
    pub fn steering(&self) -> HashMap<Arc<str>, Steer> {
        self.runs
            .iter()
            .map(|(route, run)| {
                let plan = &run.rollout.plan;
                let percent = run.progress.canary_weight(plan);
                let weights = if run.released && run.progress.phase == Phase::Promoted {
                    run.configured.clone()
                } else {
                    weights(&run.configured, run.rollout.canary, percent)
                };
                let steer = Steer {
                    weights,
                    canary: run.rollout.canary,
                    measure: (run.progress.phase == Phase::Progressing).then_some(Measure {
                        run: run.id,
                        fast_fail: plan.fast_fail,
                        compare: run.rollout.compare.is_some(),
                    }),
                    stable: run.stable_arm(),
                };
                (route.clone(), steer)
            })
            .collect()
    }

    /// The phase of the rollout of `route`, `None` without one.
    pub fn phase(&self, route: &str) -> Option<Phase> {
        self.runs.get(route).map(|r| r.progress.phase)
    }

    /// Whether `route`'s canary is being judged now (progressing, not waiting for its gate).
    fn judging(run: &Run) -> bool {
        run.progress.phase == Phase::Progressing && run.awaiting_gate.is_none() && !run.paused
    }

    /// Whether this process checks `run`'s intervals (a follower's steps come from the fleet's
    /// status instead).
    fn checking(run: &Run) -> bool {
        Self::judging(run) && !run.follows
    }

    /// The routes whose canary is being judged: their fast-fail readings matter.
    pub fn judged(&self) -> Vec<Arc<str>> {
        self.runs
            .iter()
            .filter(|(_, run)| Self::judging(run))
            .map(|(route, _)| route.clone())
            .collect()
    }

    /// When the next interval of a running rollout ends, or the next comparison reading is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let intervals = self
            .runs
            .values()
            .filter(|r| Self::checking(r))
            .map(|r| r.interval_start + r.rollout.plan.interval);
        intervals.chain(self.next_comparison()).min()
    }

    /// The intervals that have ended at `now` (or end early: a comparison passed with
    /// `advance: on_evidence`).
    pub fn due(&self, now: Instant) -> Vec<Due> {
        self.runs
            .iter()
            .filter(|(_, r)| {
                Self::checking(r)
                    && (now >= r.interval_start + r.rollout.plan.interval || evidence_due(r))
            })
            .map(|(route, r)| Due {
                route: route.clone(),
                since: r.interval_start,
            })
            .collect()
    }

    /// Fast-fail: `m` is `route`'s canary so far in its interval, which tripped its probe. Rolls
    /// back when the interval is overwhelmingly bad.
    pub fn fast_fail(&mut self, route: &str, m: Measurement, now: Now) -> Decisions {
        let mut d = Decisions::default();
        let Some((route, run)) = self.runs.iter_mut().find(|(r, _)| &***r == route) else {
            return d;
        };
        if !Self::judging(run) {
            return d;
        }
        let plan = &run.rollout.plan;
        let Some(reason) = run.progress.fast_fail(plan, &m) else {
            return d;
        };
        run.last_check = Some(LastCheck {
            at: now.wall,
            measurement: m,
            verdict: Verdict::Failed(reason.clone()),
        });
        if let Some(e) = run.progress.apply(plan, Next::RollBack(reason)) {
            run.local_rollback = run.follows;
            d.events.push(run.announce(route, e, now));
            d.steer = true;
        }
        d.save = Some(self.state());
        d
    }

    /// The check at the end of `route`'s interval, on `m`, the interval's measurement: the next
    /// interval starts now; a passing check steps forward (after the confirm gate, when there is
    /// one), too many failed checks roll back.
    pub fn check(&mut self, route: &str, m: Measurement, now: Now) -> Decisions {
        let mut d = Decisions::default();
        let Some((route, run)) = self.runs.iter_mut().find(|(r, _)| &***r == route) else {
            return d;
        };
        if !Self::checking(run) {
            return d;
        }
        let plan = &run.rollout.plan;
        let (verdict, next) = run.progress.check(plan, &m);
        // An undecided comparison turns a passing check into a skipped one (the step holds).
        let (verdict, mut next) = judge_with_comparison(run, verdict, next, now.at);
        let plan = &run.rollout.plan;
        d.checks.push((route.clone(), verdict.result()));
        if let (Verdict::Skipped(why), Some(deadline)) = (&verdict, plan.progress_deadline)
            && now.at.saturating_duration_since(run.progressed_at) >= deadline
        {
            next = Next::RollBack(format!(
                "progress deadline: no progress for {} (last check: {why})",
                crate::observe::human::duration(deadline)
            ));
            d.deadlines.push(route.clone());
        }
        tracing::info!(
            route = &**route,
            verdict = verdict.result(),
            reason = verdict.reason(),
            requests = m.requests,
            failures = m.failures,
            p99 = %crate::observe::human::MaybeDuration(m.p99),
            "rollout check"
        );
        run.last_check = Some(LastCheck {
            at: now.wall,
            measurement: m,
            verdict,
        });
        run.interval_start = now.at;
        match (&next, &run.rollout.confirm) {
            (Next::Advance | Next::Promote, Some(url)) => {
                let mut ahead = run.progress;
                let step = ahead.apply(plan, next.clone());
                let body = EventBody {
                    route,
                    canary: &run.canary,
                    event: "confirm",
                    step: ahead.step,
                    canary_weight: step.map_or(0, |e| e.canary_weight),
                    reason: "the check passed; confirm the next step",
                    at: rfc3339(now.wall),
                };
                d.gates.push(Gate {
                    route: route.clone(),
                    url: url.clone(),
                    body: Bytes::from(
                        serde_json::to_vec(&body).expect("an event body always serializes"),
                    ),
                });
                run.awaiting_gate = Some(next);
            }
            _ => {
                if let Some(e) = run.progress.apply(plan, next) {
                    run.progressed_at = now.at;
                    d.events.push(run.announce(route, e, now));
                    d.steer = true;
                }
                follow_comparison(run, now.at);
            }
        }
        d.save = Some(self.state());
        d
    }

    /// The confirm gate of `route` answered: on `Ok` the step is taken, else the rollout holds
    /// at its step for another interval. Either way the interval starts again now.
    pub fn confirmed(&mut self, route: &str, answer: Result<(), String>, now: Now) -> Decisions {
        let mut d = Decisions::default();
        let Some((route, run)) = self.runs.iter_mut().find(|(r, _)| &***r == route) else {
            return d;
        };
        let Some(next) = run.awaiting_gate.take() else {
            return d;
        };
        run.interval_start = now.at;
        d.restart.push(route.clone());
        match answer {
            Ok(()) => {
                if let Some(e) = run.progress.apply(&run.rollout.plan, next) {
                    run.progressed_at = now.at;
                    d.events.push(run.announce(route, e, now));
                    d.steer = true;
                }
                follow_comparison(run, now.at);
            }
            Err(reason) => {
                tracing::info!(route = &**route, %reason, "rollout held by its confirm gate");
                if let Some(c) = &mut run.last_check {
                    c.verdict = Verdict::Skipped(format!("passed, but held: {reason}"));
                }
            }
        }
        d.save = Some(self.state());
        d
    }

    /// An operator's command on `route`'s rollout (`weir rollout promote|abort|pause|resume`,
    /// through the admin API): promote and abort end the rollout now, pause holds it at its
    /// step (no checks, no deadline), resume starts a fresh interval.
    pub fn manual(&mut self, route: &str, action: Action, now: Now) -> Result<Decisions, Refusal> {
        let mut d = Decisions::default();
        let Some((route, run)) = self.runs.iter_mut().find(|(r, _)| &***r == route) else {
            return Err(Refusal::NoRollout(route.to_owned()));
        };
        if run.follows {
            return Err(Refusal::Fleet(route.to_string()));
        }
        if run.progress.phase != Phase::Progressing {
            return Err(Refusal::Ended(route.to_string(), run.progress.phase));
        }
        let plan = &run.rollout.plan;
        let next = match action {
            Action::Pause | Action::Resume => {
                let pause = action == Action::Pause;
                if run.paused != pause {
                    run.paused = pause;
                    run.awaiting_gate = None;
                    run.interval_start = now.at;
                    run.progressed_at = now.at;
                    d.restart.push(route.clone());
                    tracing::info!(
                        route = &**route,
                        action = action.name(),
                        "rollout held or resumed by an operator"
                    );
                }
                d.save = Some(self.state());
                return Ok(d);
            }
            Action::Promote => Next::Promote,
            Action::Abort => Next::RollBack(String::from("aborted by an operator")),
        };
        run.awaiting_gate = None;
        run.paused = false;
        if let Some(mut e) = run.progress.apply(plan, next) {
            if action == Action::Promote {
                e.reason = String::from("promoted by an operator");
            }
            run.progressed_at = now.at;
            d.events.push(run.announce(route, e, now));
            d.steer = true;
        }
        d.save = Some(self.state());
        Ok(d)
    }

    /// A follower's run for `route`: its progress is the status file's `entry` (a new rollout at
    /// its first step without one), except that its own fast-fail rollback stands while the
    /// status still says progressing. A change of step is an event (logged and recorded) and
    /// starts the probe's count again.
    #[allow(clippy::too_many_arguments)]
    fn follow(
        &mut self,
        route: &Arc<str>,
        ro: &config::Rollout,
        canary: Arc<str>,
        configured: Vec<u32>,
        entry: Option<&config::RouteStatus>,
        old: Option<Run>,
        now: Now,
        d: &mut Decisions,
    ) -> Run {
        let last_step = ro.plan.steps.len() - 1;
        let mut followed = entry.map_or_else(Progress::start, |e| Progress {
            phase: match e.phase {
                config::StatusPhase::Progressing => Phase::Progressing,
                config::StatusPhase::Promoted => Phase::Promoted,
                config::StatusPhase::RolledBack => Phase::RolledBack,
            },
            step: e.step,
            failed_checks: e.failed_checks,
        });
        followed.step = followed.step.min(last_step);
        let paused = entry.is_some_and(|e| e.paused);
        let released = entry.is_some_and(|e| e.released);
        let Some(mut run) = old else {
            self.next_run += 1;
            let run = Run {
                id: self.next_run,
                rollout: ro.clone(),
                canary,
                configured,
                progress: followed,
                interval_start: now.at,
                last_check: None,
                awaiting_gate: None,
                paused,
                progressed_at: now.at,
                follows: true,
                local_rollback: false,
                released,
                // A fleet's rollout is judged by `weir rollout`: no comparison here (validation
                // refuses `compare` with `source.prometheus`).
                comparing: None,
            };
            tracing::info!(
                route = &**route,
                canary = &*run.canary,
                phase = followed.phase.name(),
                step = followed.step,
                "rollout follows the fleet's status"
            );
            return run;
        };
        run.rollout = ro.clone();
        run.canary = canary;
        run.configured = configured;
        run.paused = paused;
        run.released = released;
        let before = run.progress;
        if run.local_rollback && followed.phase == Phase::Progressing {
            return run;
        }
        run.local_rollback = false;
        run.progress = followed;
        if before != followed {
            d.restart.push(route.clone());
            let kind = match followed.phase {
                Phase::Progressing => config::EventKind::Step,
                Phase::Promoted => config::EventKind::Promoted,
                Phase::RolledBack => config::EventKind::RolledBack,
            };
            let event = Event {
                kind,
                step: followed.step,
                canary_weight: followed.canary_weight(&run.rollout.plan),
                reason: entry.map_or_else(String::new, |e| format!("fleet status: {}", e.reason)),
            };
            if before.step != followed.step || before.phase != followed.phase {
                d.events.push(run.announce(route, event, now));
            }
        }
        run
    }

    /// The `/stats` rollout block of every route with a rollout.
    pub fn statuses(&self) -> BTreeMap<Arc<str>, Status> {
        self.runs
            .iter()
            .map(|(route, run)| (route.clone(), run.status()))
            .collect()
    }

    /// Every rollout's progress, for `rollout_state`. Routes saved but not (yet) in the config
    /// stay, so a bad reload loses nothing.
    fn state(&self) -> StateFile {
        let mut state = StateFile::default();
        for (route, run) in &self.runs {
            state.routes.insert(
                route.to_string(),
                Saved {
                    definition: run.rollout.definition.clone(),
                    progress: run.progress,
                    paused: run.paused,
                },
            );
        }
        for (route, saved) in &self.saved {
            state
                .routes
                .entry(route.clone())
                .or_insert_with(|| saved.clone());
        }
        state
    }
}

impl Run {
    /// An event of this run. A follower's events are logged and recorded, never sent: the
    /// fleet's controller sends them once for the fleet.
    fn announce(&self, route: &Arc<str>, event: Event, now: Now) -> Announcement {
        Announcement {
            route: route.clone(),
            canary: self.canary.clone(),
            event,
            at: now.wall,
            webhooks: if self.follows {
                Vec::new()
            } else {
                self.rollout.webhooks.clone()
            },
        }
    }

    fn status(&self) -> Status {
        let last_check = self.last_check.as_ref().map(|c| {
            let (verdict, reason) = match &c.verdict {
                Verdict::Passed => ("passed", None),
                Verdict::Failed(r) => ("failed", Some(r.clone())),
                Verdict::Skipped(r) => ("skipped", Some(r.clone())),
            };
            CheckStatus {
                at: rfc3339(c.at),
                requests: c.measurement.requests,
                success_rate: c.measurement.success_rate(),
                p99_ms: c.measurement.p99.map(|d| d.as_secs_f64() * 1e3),
                verdict,
                reason,
            }
        });
        Status {
            state: self.progress.phase,
            step: self.progress.step,
            canary: self.canary.to_string(),
            canary_weight: self.progress.canary_weight(&self.rollout.plan),
            failed_checks: self.progress.failed_checks,
            awaiting_confirmation: self.awaiting_gate.is_some(),
            paused: self.paused,
            fleet: self.follows,
            last_check,
            comparison: self.comparison_status(),
        }
    }
}

impl StateFile {
    /// Parses a `rollout_state` file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<StateFile, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a rollout state always serializes")
    }
}

// === the comparison with stable (`comparing`), the rollout's side ===

/// Keeps `run`'s comparison in step with its progress and settings: a new one when a step that
/// compares begins or the settings changed, none without `compare`. After the last comparing
/// step, and once the rollout ended, the last comparison stays for `/stats`.
fn follow_comparison(run: &mut Run, now: Instant) {
    let Some(config) = &run.rollout.compare else {
        run.comparing = None;
        return;
    };
    if run.progress.phase != Phase::Progressing {
        return;
    }
    let step = run.progress.step;
    let current = run.comparing.as_ref().filter(|c| c.step == step);
    if current.is_some_and(|c| c.config == *config) {
        return;
    }
    if !config::compares(run.progress.canary_weight(&run.rollout.plan)) {
        return;
    }
    let restarts = current.map_or(0, |c| c.restarts + 1);
    if current.is_some() {
        tracing::info!(
            step,
            "other comparison settings: the comparison with stable starts again"
        );
    }
    run.comparing = comparing::Comparing::new(config, step, now, restarts);
}

/// The comparison of `run`'s current step, if it has one.
fn current_comparison(run: &Run) -> Option<&comparing::Comparing> {
    run.comparing
        .as_ref()
        .filter(|c| c.step == run.progress.step && run.progress.phase == Phase::Progressing)
}

/// Whether `run`'s interval is due now because its comparison passed (`advance: on_evidence`).
fn evidence_due(run: &Run) -> bool {
    current_comparison(run).is_some_and(|c| c.evidence_due)
}

/// The check at an interval's end, with the comparison: thresholds that passed while the
/// comparison has no decision yet make a skipped check, and the step holds.
fn judge_with_comparison(
    run: &mut Run,
    verdict: Verdict,
    next: Next,
    now: Instant,
) -> (Verdict, Next) {
    let step = run.progress.step;
    let Some(c) = run.comparing.as_mut().filter(|c| c.step == step) else {
        return (verdict, next);
    };
    c.evidence_due = false;
    if verdict != Verdict::Passed || !c.undecided() {
        return (verdict, next);
    }
    let report = c.comparison.report();
    let left = c.base.map_or(c.config.decide_within, |(_, at, _)| {
        c.config
            .decide_within
            .saturating_sub(now.saturating_duration_since(at))
    });
    let why = format!(
        "thresholds passed; comparison with stable: no decision yet after {} canary requests \
         (it decides within {:?})",
        report.canary_requests,
        Duration::from_secs(left.as_secs().max(1)),
    );
    (Verdict::Skipped(why), Next::Stay)
}

impl Run {
    fn comparison_status(&self) -> Option<ComparisonStatus> {
        self.comparing.as_ref().map(comparing::Comparing::status)
    }

    /// The backends whose requests make the stable arm (empty without a comparison).
    fn stable_arm(&self) -> Vec<usize> {
        self.rollout
            .compare
            .as_ref()
            .map_or_else(Vec::new, |c| c.stable.clone())
    }
}

impl Rollouts {
    /// The routes whose comparison wants a reading at `now`: judged, undecided, and its last
    /// reading [`COMPARE_EVERY`] ago.
    pub fn comparisons_due(&self, now: Instant) -> Vec<Arc<str>> {
        self.runs
            .iter()
            .filter(|(_, run)| Self::checking(run))
            .filter(|(_, run)| {
                current_comparison(run).is_some_and(|c| c.undecided() && c.next_read <= now)
            })
            .map(|(route, _)| route.clone())
            .collect()
    }

    /// When the next comparison reading is due.
    fn next_comparison(&self) -> Option<Instant> {
        self.runs
            .values()
            .filter(|run| Self::checking(run))
            .filter_map(current_comparison)
            .filter(|c| c.undecided())
            .map(|c| c.next_read)
            .min()
    }

    /// A reading of `route`'s arms (`None` when its probes could not be read: the next reading
    /// is then [`COMPARE_EVERY`] later). A comparison that fails rolls back now; one that passes
    /// lets the step advance, per `advance`.
    pub fn compare(&mut self, route: &str, reading: Option<Reading>, now: Now) -> Decisions {
        let mut d = Decisions::default();
        let Some((route, run)) = self.runs.iter_mut().find(|(r, _)| &***r == route) else {
            return d;
        };
        if !Self::checking(run) {
            return d;
        }
        let step = run.progress.step;
        let Some(c) = run.comparing.as_mut().filter(|c| c.step == step) else {
            return d;
        };
        let Some(reading) = reading else {
            c.next_read = now.at + COMPARE_EVERY;
            return d;
        };
        let canary = c.base.map_or_else(Default::default, |(b, _, _)| {
            reading.counts.canary.since(&b.counts.canary)
        });
        let Some(decision) = c.read(reading, now.at, now.wall) else {
            return d;
        };
        let report = c.comparison.report();
        tracing::info!(route = &**route, step, ?decision, canary_requests = report.canary_requests, reason = %report.reason, "comparison with stable");
        match decision {
            compare::Decision::Fail => {
                let reason = format!("comparison with stable: {}", report.reason);
                let stats = canary.stats();
                run.last_check = Some(LastCheck {
                    at: now.wall,
                    measurement: Measurement {
                        requests: stats.requests,
                        failures: stats.requests - stats.successes,
                        p99: stats
                            .percentile_ms(0.99)
                            .map(|ms| Duration::from_secs_f64(ms / 1e3)),
                    },
                    verdict: Verdict::Failed(reason.clone()),
                });
                let plan = &run.rollout.plan;
                if let Some(e) = run.progress.apply(plan, Next::RollBack(reason)) {
                    d.events.push(run.announce(route, e, now));
                    d.steer = true;
                }
                d.save = Some(self.state());
            }
            compare::Decision::Pass => {
                c.evidence_due = c.config.advance == config::Advance::OnEvidence;
            }
            compare::Decision::Continue => {}
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    /// A route `app` over `stable` 90 and `canary` 10 with a rollout of `rollout` (flow entries),
    /// a 30 s interval and 5 requests at least.
    fn config(canary_endpoint: &str, rollout: &str) -> Config {
        let yaml = format!(
            "listeners: [{{ name: main, address: 127.0.0.1:0 }}]\nupstreams:\n  - {{ name: stable, endpoints: [127.0.0.1:1] }}\n  - {{ name: canary, endpoints: [{canary_endpoint}] }}\nroutes:\n  - name: app\n    rollout: {{ canary: canary, interval: 30s, min_requests: 5, {rollout} }}\n    backends: [{{ upstream: stable, weight: 90 }}, {{ upstream: canary, weight: 10 }}]\n"
        );
        config::load_str(&yaml, "t.yaml", Path::new(".")).unwrap()
    }

    fn at(start: Instant, secs: u64) -> Now {
        Now {
            at: start + Duration::from_secs(secs),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    fn healthy() -> Measurement {
        Measurement {
            requests: 100,
            failures: 0,
            p99: Some(Duration::from_millis(5)),
        }
    }

    /// The kinds and canary weights of a decision's events, and whether it steers.
    type Summary = (Vec<(&'static str, u32)>, bool);

    fn summary(d: &Decisions) -> Summary {
        let events = d
            .events
            .iter()
            .map(|a| (a.event.kind.name(), a.event.canary_weight))
            .collect();
        (events, d.steer)
    }

    /// One input to a [`Rollouts`], as the control task would give it.
    enum Input {
        Check(Measurement),
        FastFail(Measurement),
        Confirmed(Result<(), String>),
    }

    /// Feeds `inputs` one interval apart (after a sync at 0 s); returns each step's summary,
    /// the gates asked, and the final status.
    fn check(config: &Config, inputs: Vec<Input>) -> (Vec<Summary>, usize, Status) {
        let start = Instant::now();
        let mut r = Rollouts::default();
        let mut out = vec![summary(&r.sync(config, at(start, 0)))];
        let mut gates = 0;
        for (i, input) in inputs.into_iter().enumerate() {
            let now = at(start, 30 * (i as u64 + 1));
            let d = match input {
                Input::Check(m) => {
                    assert_eq!(r.due(now.at).len(), 1, "the interval ended");
                    r.check("app", m, now)
                }
                Input::FastFail(m) => r.fast_fail("app", m, now),
                Input::Confirmed(answer) => r.confirmed("app", answer, now),
            };
            assert!(d.save.is_some() || d.events.is_empty(), "progress is saved");
            gates += d.gates.len();
            out.push(summary(&d));
        }
        (out, gates, r.statuses()["app"].clone())
    }

    #[test]
    fn a_passing_check_steps_and_the_last_promotes() {
        let c = config("127.0.0.1:2", "steps: [20, 100]");
        let (out, gates, status) =
            check(&c, vec![Input::Check(healthy()), Input::Check(healthy())]);
        assert_eq!(
            out,
            [
                (vec![("started", 20)], true),
                (vec![("step", 100)], true),
                (vec![("promoted", 100)], true),
            ]
        );
        assert_eq!((gates, status.state), (0, Phase::Promoted));
    }

    #[test]
    fn a_confirm_gate_holds_the_step_until_it_answers() {
        let c = config(
            "127.0.0.1:2",
            "steps: [20, 100], confirm: { url: \"http://127.0.0.1:3/gate\" }",
        );
        let (out, gates, status) = check(
            &c,
            vec![
                Input::Check(healthy()),
                Input::Confirmed(Err("403".into())),
                Input::Check(healthy()),
                Input::Confirmed(Ok(())),
            ],
        );
        assert_eq!(gates, 2);
        assert_eq!(
            out[1..],
            [
                (vec![], false),
                (vec![], false),
                (vec![], false),
                (vec![("step", 100)], true),
            ]
        );
        assert_eq!((status.state, status.step), (Phase::Progressing, 1));
    }

    #[test]
    fn fast_fail_rolls_back_only_on_an_overwhelming_failure_rate() {
        let c = config("127.0.0.1:2", "steps: [20, 100]");
        let bad = |requests, failures| Measurement {
            requests,
            failures,
            p99: None,
        };
        let (out, _, status) = check(
            &c,
            vec![Input::FastFail(bad(100, 40)), Input::FastFail(bad(20, 20))],
        );
        assert_eq!(out[1], (vec![], false), "60 % success is no emergency");
        assert_eq!(out[2], (vec![("rolled_back", 0)], true));
        assert_eq!(status.state, Phase::RolledBack);
        assert!(
            status
                .last_check
                .unwrap()
                .reason
                .unwrap()
                .starts_with("fast-fail")
        );
    }

    #[test]
    fn a_sync_keeps_progress_resumes_saved_state_and_restarts_on_a_new_canary() {
        let start = Instant::now();
        let c = config("127.0.0.1:2", "steps: [20, 50, 100]");
        let mut r = Rollouts::default();
        let first = r.sync(&c, at(start, 0));
        r.check("app", healthy(), at(start, 30));
        let saved = r.sync(&c, at(start, 31)).save.unwrap();
        assert_eq!(
            r.statuses()["app"].step,
            1,
            "an unchanged canary keeps its step"
        );
        assert!(first.events.len() == 1);

        // A new process resumes from the saved state, without a `started` event.
        let mut resumed = Rollouts::new(saved);
        assert!(resumed.sync(&c, at(start, 40)).events.is_empty());
        assert_eq!(resumed.statuses()["app"].step, 1);

        // Another canary definition starts over, as a new run (which gets a new probe).
        let run = |r: &Rollouts| r.steering()["app"].measure.unwrap().run;
        let before = run(&resumed);
        let other = config("127.0.0.1:4", "steps: [20, 50, 100]");
        let d = resumed.sync(&other, at(start, 50));
        assert_eq!(summary(&d).0, [("started", 20)]);
        assert_eq!(resumed.statuses()["app"].step, 0);
        assert_ne!(run(&resumed), before);
        assert_eq!(resumed.steering()["app"].weights, [80, 20]);
    }

    #[test]
    fn nothing_is_due_before_the_interval_ends_and_the_deadline_says_when() {
        let start = Instant::now();
        let c = config("127.0.0.1:2", "steps: [20, 100]");
        let mut r = Rollouts::default();
        r.sync(&c, at(start, 0));
        assert_eq!(r.next_deadline(), Some(start + Duration::from_secs(30)));
        assert!(r.due(start + Duration::from_secs(29)).is_empty());
        assert_eq!(r.due(start + Duration::from_secs(30))[0].since, start);
    }
}
