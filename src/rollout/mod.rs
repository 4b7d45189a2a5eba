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
mod machine;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::Uri;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

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
}

impl Decisions {
    /// Adds `other`'s decisions to these.
    pub fn merge(&mut self, other: Decisions) {
        self.steer |= other.steer;
        self.events.extend(other.events);
        self.gates.extend(other.gates);
        self.save = other.save.or(self.save.take());
        self.restart.extend(other.restart);
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
}

/// Which measurement a running rollout's canary feeds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measure {
    pub run: u64,
    pub fast_fail: Option<FastFail>,
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
    pub last_check: Option<CheckStatus>,
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
        for r in &config.routes {
            let Some(ro) = &r.rollout else { continue };
            let canary = config.upstreams[r.backends[ro.canary].upstream]
                .name
                .clone();
            let configured: Vec<u32> = r.backends.iter().map(|b| b.weight).collect();
            let last_step = ro.plan.steps.len() - 1;
            let run = match self.runs.remove(&r.name) {
                Some(mut run) if run.rollout.definition == ro.definition => {
                    run.progress.step = run.progress.step.min(last_step);
                    run.rollout = ro.clone();
                    run.canary = canary;
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
                    self.next_run += 1;
                    let run = Run {
                        id: self.next_run,
                        rollout: ro.clone(),
                        canary: canary.clone(),
                        configured,
                        progress,
                        interval_start: now.at,
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
                let steer = Steer {
                    weights: weights(&run.configured, run.rollout.canary, percent),
                    canary: run.rollout.canary,
                    measure: (run.progress.phase == Phase::Progressing).then_some(Measure {
                        run: run.id,
                        fast_fail: plan.fast_fail,
                    }),
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
        run.progress.phase == Phase::Progressing && run.awaiting_gate.is_none()
    }

    /// The routes whose canary is being judged: their fast-fail readings matter.
    pub fn judged(&self) -> Vec<Arc<str>> {
        self.runs
            .iter()
            .filter(|(_, run)| Self::judging(run))
            .map(|(route, _)| route.clone())
            .collect()
    }

    /// When the next interval of a running rollout ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.runs
            .values()
            .filter(|r| Self::judging(r))
            .map(|r| r.interval_start + r.rollout.plan.interval)
            .min()
    }

    /// The intervals that have ended at `now`.
    pub fn due(&self, now: Instant) -> Vec<Due> {
        self.runs
            .iter()
            .filter(|(_, r)| Self::judging(r) && now >= r.interval_start + r.rollout.plan.interval)
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
        if !Self::judging(run) {
            return d;
        }
        let plan = &run.rollout.plan;
        let (verdict, next) = run.progress.check(plan, &m);
        tracing::info!(route = &**route, requests = m.requests, failures = m.failures, p99 = ?m.p99, ?verdict, "rollout check");
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
                    d.events.push(run.announce(route, e, now));
                    d.steer = true;
                }
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
                    d.events.push(run.announce(route, e, now));
                    d.steer = true;
                }
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
    fn announce(&self, route: &Arc<str>, event: Event, now: Now) -> Announcement {
        Announcement {
            route: route.clone(),
            canary: self.canary.clone(),
            event,
            at: now.wall,
            webhooks: self.rollout.webhooks.clone(),
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
            last_check,
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
