//! One rollout's state machine, pure: a measurement goes in, the verdict, the next state and the
//! event to announce come out. No clock, no sockets; [`super::Rollouts`] drives it.

use serde::{Deserialize, Serialize};

use crate::config::{EventKind, Plan, gcd};
use crate::metrics::Measurement;
use crate::observe::human;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Progressing,
    Promoted,
    RolledBack,
}

impl Phase {
    /// The phase as the logs, `/stats` and the state file name it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
        }
    }

    /// The value of `weir_rollout_state` (0 is a route without a rollout).
    pub fn gauge(self) -> i64 {
        match self {
            Phase::Progressing => 1,
            Phase::Promoted => 2,
            Phase::RolledBack => 3,
        }
    }
}

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// Index into `Plan::steps` (while promoted or rolled back: the step it ended at).
    pub step: usize,
    pub failed_checks: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Failed(String),
    Skipped(String),
}

impl Verdict {
    /// Why the check failed or was skipped; empty for a pass.
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Passed => "",
            Verdict::Failed(why) | Verdict::Skipped(why) => why,
        }
    }

    /// The `result` label of `weir_rollout_checks_total`.
    pub fn result(&self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed(_) => "failed",
            Verdict::Skipped(_) => "skipped",
        }
    }
}

/// What the controller should do after a check.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    Stay,
    /// Go to the next step (after the confirm gate, when there is one).
    Advance,
    /// The last step held for an interval: promote (after the confirm gate).
    Promote,
    RollBack(String),
}

/// A state change to log, record and announce.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub step: usize,
    pub canary_weight: u32,
    pub reason: String,
}

impl Progress {
    /// A rollout at its first step.
    pub fn start() -> Progress {
        Progress {
            phase: Phase::Progressing,
            step: 0,
            failed_checks: 0,
        }
    }

    pub fn started(&self, plan: &Plan, reason: &str) -> Event {
        self.event(plan, EventKind::Started, reason.to_owned())
    }

    /// The canary's percent of the route's traffic.
    pub fn canary_weight(&self, plan: &Plan) -> u32 {
        match self.phase {
            Phase::Progressing => plan.steps[self.step.min(plan.steps.len() - 1)],
            Phase::Promoted => 100,
            Phase::RolledBack => 0,
        }
    }

    /// Judges one interval's measurement. A failed check counts towards `max_failed_checks`
    /// (over the whole rollout); a skipped one changes nothing.
    pub fn check(&mut self, plan: &Plan, m: &Measurement) -> (Verdict, Next) {
        if self.phase != Phase::Progressing {
            return (Verdict::Skipped("the rollout has ended".into()), Next::Stay);
        }
        if m.requests < plan.min_requests {
            return (
                Verdict::Skipped(format!(
                    "{} canary requests, fewer than min_requests {}",
                    m.requests, plan.min_requests
                )),
                Next::Stay,
            );
        }
        let mut problems = Vec::new();
        if let Some(rate) = m.success_rate()
            && rate < plan.success_rate
        {
            problems.push(format!(
                "success rate {} below {}",
                human::Percent(rate),
                human::Percent(plan.success_rate)
            ));
        }
        if let (Some(limit), Some(p99)) = (plan.p99, m.p99)
            && p99 > limit
        {
            problems.push(format!(
                "p99 latency {} above {}",
                human::duration(p99),
                human::duration(limit)
            ));
        }
        if problems.is_empty() {
            let next = if self.step + 1 < plan.steps.len() {
                Next::Advance
            } else {
                Next::Promote
            };
            return (Verdict::Passed, next);
        }
        let reason = problems.join("; ");
        self.failed_checks += 1;
        let next = if self.failed_checks >= plan.max_failed_checks {
            Next::RollBack(format!(
                "{} failed checks (max_failed_checks {}); last: {reason}",
                self.failed_checks, plan.max_failed_checks
            ))
        } else {
            Next::Stay
        };
        (Verdict::Failed(reason), next)
    }

    /// Fast-fail: the reason to roll back now, when the interval so far is overwhelmingly bad.
    pub fn fast_fail(&self, plan: &Plan, m: &Measurement) -> Option<String> {
        let ff = plan.fast_fail?;
        if self.phase != Phase::Progressing || m.requests < ff.min_requests {
            return None;
        }
        let rate = m.success_rate()?;
        (rate < ff.success_rate).then(|| {
            format!(
                "fast-fail: success rate {rate:.4} over {} canary requests, below {}",
                m.requests, ff.success_rate
            )
        })
    }

    /// Carries out `next`; returns the event it makes, if any.
    pub fn apply(&mut self, plan: &Plan, next: Next) -> Option<Event> {
        if self.phase != Phase::Progressing {
            return None;
        }
        let (kind, reason) = match next {
            Next::Stay => return None,
            Next::Advance => {
                self.step += 1;
                (
                    EventKind::Step,
                    "the previous step passed its check".to_owned(),
                )
            }
            Next::Promote => {
                self.phase = Phase::Promoted;
                (
                    EventKind::Promoted,
                    "the last step passed its check".to_owned(),
                )
            }
            Next::RollBack(reason) => {
                self.phase = Phase::RolledBack;
                (EventKind::RolledBack, reason)
            }
        };
        Some(self.event(plan, kind, reason))
    }

    fn event(&self, plan: &Plan, kind: EventKind, reason: String) -> Event {
        Event {
            kind,
            step: self.step,
            canary_weight: self.canary_weight(plan),
            reason,
        }
    }
}

/// The route's weights with the canary (index `canary`) at `percent`: the other backends share
/// the rest in their configured proportions, and the canary's share is exactly `percent` / 100.
/// Written as percentages (summing to 100) when the proportions allow it, as 90/10 or 60/30/10;
/// else as the smallest whole numbers with exactly those shares.
pub fn weights(configured: &[u32], canary: usize, percent: u32) -> Vec<u32> {
    let others: u64 = configured
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != canary)
        .map(|(_, w)| u64::from(*w))
        .sum();
    let percent = u64::from(percent.min(100));
    let rest = 100 - percent;
    let as_percent = others > 0
        && configured
            .iter()
            .enumerate()
            .all(|(i, &w)| i == canary || (rest * u64::from(w)) % others == 0);
    let raw: Vec<u64> = configured
        .iter()
        .enumerate()
        .map(|(i, &w)| match (i == canary, as_percent) {
            (true, true) => percent,
            (false, true) => rest * u64::from(w) / others,
            (true, false) => percent * others,
            (false, false) => rest * u64::from(w),
        })
        .collect();
    let g = if as_percent {
        1
    } else {
        raw.iter().fold(0, |g, &w| gcd(g, w)).max(1)
    };
    raw.iter()
        .map(|w| u32::try_from(w / g).unwrap_or(u32::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::FastFail;

    fn plan() -> Plan {
        Plan {
            steps: vec![5, 10, 25, 50, 100],
            interval: Duration::from_secs(30),
            min_requests: 50,
            success_rate: 0.99,
            p99: Some(Duration::from_millis(500)),
            max_failed_checks: 3,
            fast_fail: Some(FastFail {
                min_requests: 20,
                success_rate: 0.495,
            }),
            progress_deadline: None,
            source: None,
        }
    }

    fn measured(requests: u64, failures: u64, p99_ms: u64) -> Measurement {
        Measurement {
            requests,
            failures,
            p99: Some(Duration::from_millis(p99_ms)),
        }
    }

    /// Runs checks on `m` until the rollout ends or `limit` checks; returns the canary weight after
    /// each check and the events.
    fn run(m: Measurement, limit: usize) -> (Vec<u32>, Vec<EventKind>, Progress) {
        let plan = plan();
        let mut p = Progress::start();
        let (mut weights, mut events) = (Vec::new(), Vec::new());
        for _ in 0..limit {
            let (_, next) = p.check(&plan, &m);
            if let Some(e) = p.apply(&plan, next) {
                events.push(e.kind);
            }
            weights.push(p.canary_weight(&plan));
            if p.phase != Phase::Progressing {
                break;
            }
        }
        (weights, events, p)
    }

    #[test]
    fn a_healthy_canary_is_promoted_after_one_check_per_step() {
        let (weights, events, p) = run(measured(100, 0, 20), 20);
        assert_eq!(weights, [10, 25, 50, 100, 100]);
        assert_eq!(
            events,
            [
                EventKind::Step,
                EventKind::Step,
                EventKind::Step,
                EventKind::Step,
                EventKind::Promoted
            ]
        );
        assert_eq!(p.phase, Phase::Promoted);
    }

    #[test]
    fn errors_or_latency_roll_back_after_max_failed_checks() {
        for m in [measured(100, 5, 20), measured(100, 0, 900)] {
            let (weights, events, p) = run(m, 20);
            assert_eq!(weights, [5, 5, 0], "{m:?}");
            assert_eq!(events, [EventKind::RolledBack]);
            assert_eq!((p.phase, p.failed_checks), (Phase::RolledBack, 3));
        }
    }

    #[test]
    fn too_few_requests_neither_advance_nor_fail() {
        let plan = plan();
        let mut p = Progress::start();
        for _ in 0..100 {
            let (verdict, next) = p.check(&plan, &measured(49, 49, 9_000));
            assert!(matches!(verdict, Verdict::Skipped(_)));
            assert_eq!(next, Next::Stay);
        }
        assert_eq!(p, Progress::start());
    }

    #[test]
    fn fast_fail_needs_enough_requests_and_an_overwhelming_failure_rate() {
        let plan = plan();
        let p = Progress::start();
        assert_eq!(p.fast_fail(&plan, &measured(19, 19, 1)), None);
        assert!(p.fast_fail(&plan, &measured(20, 20, 1)).is_some());
        // 60 % success fails a 99 % check but is no emergency.
        assert_eq!(p.fast_fail(&plan, &measured(100, 40, 1)), None);
        let off = Plan {
            fast_fail: None,
            ..plan
        };
        assert_eq!(p.fast_fail(&off, &measured(1000, 1000, 1)), None);
    }

    #[test]
    fn rollout_weights_keep_the_other_backends_proportions() {
        assert_eq!(weights(&[90, 10], 1, 25), [75, 25]);
        assert_eq!(weights(&[90, 10], 1, 100), [0, 100]);
        assert_eq!(weights(&[90, 10], 1, 0), [100, 0]);
        // Two stables 2:1 and a canary at 10 %: 60/30/10.
        assert_eq!(weights(&[2, 1, 0], 2, 10), [60, 30, 10]);
        // 3:1 cannot split 90 in whole percents: exact shares in small numbers instead.
        let w = weights(&[3, 1, 5], 2, 10);
        assert_eq!(w, [27, 9, 4]);
        let total: u32 = w.iter().sum();
        assert_eq!(f64::from(w[2]) / f64::from(total), 0.1);
    }
}
