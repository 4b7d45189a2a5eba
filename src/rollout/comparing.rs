//! The comparison with stable inside a running rollout (`analysis.compare`): one
//! [`compare::Comparison`] per step that gives both arms traffic, fed with [`Reading`]s of both
//! arms' probes on a tick ([`COMPARE_EVERY`]) and judged on the totals since the step's first
//! reading. Pure like the rest of `rollout`: readings and the time come in, decisions go out.
//! What a decision does to the rollout is `rollout`'s side (`Rollouts::compare`, in `mod.rs`):
//! this module imports nothing of its parent, so the module graph has no cycle.
//!
//! What a decision does to the rollout:
//! - **fail**: roll back at once, with the report's reason, never gated (as fast-fail);
//! - **pass**: the step may advance: at its interval's end with the thresholds' check
//!   (`advance: interval`), or at once (`advance: on_evidence`: the interval ends now, and the
//!   thresholds are checked on the interval so far);
//! - **no decision** at the interval's end: the check is skipped and the step holds, until
//!   `decide_within` has passed since the step's first reading and the comparison concludes by
//!   the sign of its evidence (or until `max_canary_requests`, which the comparison applies).
//!
//! The rollout's `false_alarm` is divided over the steps that compare; each step's comparison
//! divides its share over its two tests. A comparison starts again (spending its share again)
//! when the settings change on a reload or the probes were made anew (other fast-fail settings);
//! its progress is not saved in `rollout_state`, so a restarted weir compares the step afresh.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use super::compare::{self, Comparison, Counts, Decision, Report, Settings, Tolerance};
use crate::config::{Compare, ToleranceSpec, rfc3339};

/// How often a running comparison reads the arms' counters. At 1,000 requests a second that is
/// a batch of 250 requests, so a decision comes at most a quarter of a second after the request
/// that settled it; the reading costs the control task about a microsecond.
pub const COMPARE_EVERY: Duration = Duration::from_millis(250);

/// Both arms' totals, read from a run's probes, and which pair of probes they came from (a new
/// pair starts from zero, so a comparison cannot go on across them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub probes: u64,
    pub counts: Counts,
}

/// One step's comparison.
pub(super) struct Comparing {
    pub(super) step: usize,
    /// The settings it was made with: other settings on a reload start it again.
    pub(super) config: Compare,
    pub(super) comparison: Comparison,
    /// The reading its window started from, and when (`None` until the step's first reading).
    pub(super) base: Option<(Reading, Instant, SystemTime)>,
    pub(super) next_read: Instant,
    /// `advance: on_evidence` and the comparison passed: the interval is due now (once).
    pub(super) evidence_due: bool,
    pub(super) restarts: u32,
}

/// The `/stats` view of a rollout's comparison with stable.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComparisonStatus {
    /// The step it judges (the rollout may have moved on to a step that does not compare).
    pub step: usize,
    /// `stable`, or the backend the canary is compared with.
    pub against: String,
    pub advance: &'static str,
    /// This step's share of the rollout's `false_alarm`, and the miss rate per test.
    pub false_alarm: f64,
    pub miss: f64,
    /// When its window started (the step's first reading); null before.
    pub started_at: Option<String>,
    pub decide_within_seconds: f64,
    /// How many times it started again (a reload with other settings, new probes).
    pub restarts: u32,
    #[serde(flatten)]
    pub report: Report,
}

/// The statistics' settings for one step of `c`.
fn settings(c: &Compare) -> Settings {
    let ratios = |r: crate::config::Rates| compare::Ratios {
        margin: r.margin,
        detect: r.detect,
    };
    Settings {
        alpha: c.step_false_alarm(),
        beta: c.miss,
        errors: c.errors.map(ratios),
        latency: c.latency.map(|l| compare::Latency {
            quantile: l.quantile,
            tolerance: match l.tolerance {
                ToleranceSpec::Fraction(f) => Tolerance::Relative(f),
                ToleranceSpec::Duration(d) => Tolerance::Absolute(d.get()),
            },
            ratios: ratios(l.rates),
        }),
        max_canary_requests: c.max_canary_requests,
    }
}

impl Comparing {
    /// A comparison for `step`, which starts at its first reading. `None` when the settings are
    /// refused (validation refuses them first; logged).
    pub(super) fn new(
        config: &Compare,
        step: usize,
        now: Instant,
        restarts: u32,
    ) -> Option<Comparing> {
        match Comparison::new(settings(config)) {
            Ok(comparison) => Some(Comparing {
                step,
                config: config.clone(),
                comparison,
                base: None,
                next_read: now,
                evidence_due: false,
                restarts,
            }),
            Err(e) => {
                tracing::error!(error = %e, "the comparison with stable cannot start");
                None
            }
        }
    }

    pub(super) fn undecided(&self) -> bool {
        self.comparison.decision() == Decision::Continue
    }

    /// Takes `reading`, made at `at` (`wall` on the wall clock); returns the decision when this
    /// reading made it.
    pub(super) fn read(
        &mut self,
        reading: Reading,
        at: Instant,
        wall: SystemTime,
    ) -> Option<Decision> {
        self.next_read = at + COMPARE_EVERY;
        if !self.undecided() {
            return None;
        }
        let counts = match self.base {
            Some((base, _, _))
                if base.probes == reading.probes
                    && reading.counts.canary.covers(&base.counts.canary)
                    && reading.counts.stable.covers(&base.counts.stable) =>
            {
                Counts {
                    canary: reading.counts.canary.since(&base.counts.canary),
                    stable: reading.counts.stable.since(&base.counts.stable),
                }
            }
            Some(_) => {
                // Other probes: what came before cannot be told apart from what comes now.
                tracing::info!(
                    step = self.step,
                    "new probes: the comparison with stable starts again"
                );
                let restarted = Comparing::new(&self.config, self.step, at, self.restarts + 1)?;
                *self = restarted;
                self.next_read = at + COMPARE_EVERY;
                self.base = Some((reading, at, wall));
                return None;
            }
            None => {
                self.base = Some((reading, at, wall));
                return None;
            }
        };
        let mut decision = match self.comparison.observe(&counts) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "a comparison reading was refused");
                return None;
            }
        };
        let started = self.base.map_or(at, |(_, started, _)| started);
        if decision == Decision::Continue
            && at.saturating_duration_since(started) >= self.config.decide_within
        {
            decision = self.comparison.conclude();
        }
        (decision != Decision::Continue).then_some(decision)
    }

    pub(super) fn status(&self) -> ComparisonStatus {
        ComparisonStatus {
            step: self.step,
            against: self.config.against.clone(),
            advance: self.config.advance.name(),
            false_alarm: self.config.step_false_alarm(),
            miss: self.config.miss,
            started_at: self.base.map(|(_, _, wall)| rfc3339(wall)),
            decide_within_seconds: self.config.decide_within.as_secs_f64(),
            restarts: self.restarts,
            report: self.comparison.report(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::config::{self, Config};
    use crate::metrics::ArmCounts;
    use crate::metrics::Measurement;
    use crate::rollout::{Decisions, Now, Rollouts};

    /// Route `app`: `stable` 90 and `canary` 10 with a rollout of `rollout` (flow entries), a
    /// 30 s interval and 5 requests at least, compared with stable under `analysis` (flow
    /// entries after `compare: stable`).
    fn config(rollout: &str, analysis: &str) -> Config {
        let yaml = format!(
            "listeners: [{{ name: main, address: 127.0.0.1:0 }}]\nupstreams:\n  - {{ name: stable, endpoints: [127.0.0.1:1] }}\n  - {{ name: canary, endpoints: [127.0.0.1:2] }}\nroutes:\n  - name: app\n    rollout: {{ canary: canary, interval: 30s, min_requests: 5, thresholds: {{ success_rate: 0.5 }}, {rollout}, analysis: {{ compare: stable, {analysis} }} }}\n    backends: [{{ upstream: stable, weight: 90 }}, {{ upstream: canary, weight: 10 }}]\n"
        );
        config::load_str(&yaml, "t.yaml", Path::new(".")).unwrap()
    }

    fn at(start: Instant, ms: u64) -> Now {
        Now {
            at: start + Duration::from_millis(ms),
            wall: SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
        }
    }

    /// A rollout fed by two simulated arms: each request goes to the canary with the step's
    /// share, fails with its arm's rate, and lands in a latency bucket.
    struct Sim {
        rollouts: Rollouts,
        start: Instant,
        ms: u64,
        counts: Counts,
        rng: ChaCha8Rng,
        probes: u64,
    }

    impl Sim {
        fn new(config: &Config) -> Sim {
            let start = Instant::now();
            let mut rollouts = Rollouts::default();
            rollouts.sync(config, at(start, 0));
            Sim {
                rollouts,
                start,
                ms: 0,
                counts: Counts::default(),
                rng: ChaCha8Rng::seed_from_u64(22),
                probes: 1,
            }
        }

        /// `requests` requests over one tick, the canary failing at `canary_rate` and stable at
        /// `stable_rate`, both in the same latency bucket; then the control task's tick: comparisons, then
        /// the checks due. Returns the events' kinds.
        fn tick(&mut self, requests: u64, canary_rate: f64, stable_rate: f64) -> Vec<&'static str> {
            let share = f64::from(self.rollouts.statuses()["app"].canary_weight) / 100.0;
            for _ in 0..requests {
                let canary = self.rng.random::<f64>() < share;
                let (arm, rate) = if canary {
                    (&mut self.counts.canary, canary_rate)
                } else {
                    (&mut self.counts.stable, stable_rate)
                };
                arm.requests += 1;
                arm.failures += u64::from(self.rng.random::<f64>() < rate);
                arm.latency[5] += 1;
            }
            self.ms += COMPARE_EVERY.as_millis() as u64;
            let now = at(self.start, self.ms);
            let mut d = Decisions::default();
            for route in self.rollouts.comparisons_due(now.at) {
                let reading = Reading {
                    probes: self.probes,
                    counts: self.counts,
                };
                d.merge(self.rollouts.compare(&route, Some(reading), now));
            }
            for due in self.rollouts.due(now.at) {
                let m = Measurement {
                    requests: 100,
                    failures: 1,
                    p99: Some(Duration::from_millis(5)),
                };
                d.merge(self.rollouts.check(&due.route, m, now));
            }
            d.events.iter().map(|a| a.event.kind.name()).collect()
        }

        fn status(&self) -> super::super::Status {
            self.rollouts.statuses()["app"].clone()
        }
    }

    #[test]
    fn the_false_alarm_is_divided_over_the_steps_that_compare() {
        let c = config("steps: [0, 10, 50, 100]", "false_alarm: 0.04");
        let compare = c.routes[0]
            .rollout
            .as_ref()
            .unwrap()
            .compare
            .clone()
            .unwrap();
        assert_eq!(compare.comparing_steps, 2, "0 % and 100 % compare nothing");
        assert_eq!(compare.step_false_alarm(), 0.02);
        assert_eq!(settings(&compare).alpha_per_test(), 0.01);
        assert_eq!(compare.stable, [0]);
    }

    #[test]
    fn a_worse_canary_is_rolled_back_mid_interval_with_the_reports_reason() {
        let mut sim = Sim::new(&config("steps: [10, 100]", ""));
        let mut events = Vec::new();
        for _ in 0..400 {
            events.extend(sim.tick(250, 0.05, 0.01));
            if !events.is_empty() {
                break;
            }
        }
        assert_eq!(events, ["rolled_back"]);
        assert!(sim.ms < 30_000, "before the interval's end: {} ms", sim.ms);
        let status = sim.status();
        let check = status.last_check.unwrap();
        assert_eq!(check.verdict, "failed");
        let reason = check.reason.unwrap();
        assert!(
            reason.starts_with("comparison with stable: the canary is worse than stable"),
            "{reason}"
        );
        let comparison = status.comparison.unwrap();
        assert_eq!(comparison.report.decision, Decision::Fail);
        assert_eq!(comparison.step, 0);
        assert!(comparison.started_at.is_some());
    }

    #[test]
    fn an_equal_canary_passes_and_advances_at_the_interval_end_or_at_once_on_evidence() {
        for (advance, before_interval) in [("interval", false), ("on_evidence", true)] {
            let mut sim = Sim::new(&config(
                "steps: [50, 100]",
                &format!("advance: {advance}, latency: {{ enabled: false }}"),
            ));
            let mut events = Vec::new();
            while events.is_empty() && sim.ms < 60_000 {
                events.extend(sim.tick(2_000, 0.01, 0.01));
            }
            assert_eq!(events, ["step"], "{advance}");
            assert_eq!(sim.ms < 30_000, before_interval, "{advance}: {} ms", sim.ms);
            let comparison = sim.status().comparison.unwrap();
            assert_eq!(comparison.report.decision, Decision::Pass);
            // At 100 % nothing compares: the last comparison stays on view.
            assert_eq!(comparison.step, 0);
            assert_eq!(sim.status().step, 1);
            assert!(
                sim.rollouts
                    .comparisons_due(at(sim.start, sim.ms + 1_000).at)
                    .is_empty()
            );
        }
    }

    #[test]
    fn without_a_decision_the_step_holds_as_a_skipped_check_until_decide_within() {
        let mut sim = Sim::new(&config(
            "steps: [50, 100]",
            "decide_within: 90s, latency: { enabled: false }",
        ));
        // No failures at all: the error test has no evidence either way.
        let mut events = Vec::new();
        while sim.ms < 60_000 {
            events.extend(sim.tick(100, 0.0, 0.0));
        }
        assert!(events.is_empty(), "{events:?}");
        let status = sim.status();
        let check = status.last_check.unwrap();
        assert_eq!(check.verdict, "skipped");
        assert!(
            check.reason.unwrap().contains("no decision yet after"),
            "held as a skipped check"
        );
        assert_eq!(status.failed_checks, 0);
        // 90 s after the first reading the comparison concludes (no evidence: pass), and the
        // next interval's end takes the step.
        while events.is_empty() && sim.ms < 120_000 {
            events.extend(sim.tick(100, 0.0, 0.0));
        }
        assert_eq!(events, ["step"]);
        assert!(sim.ms >= 90_000, "{}", sim.ms);
        let comparison = sim.status().comparison.unwrap();
        assert!(comparison.report.concluded);
    }

    #[test]
    fn new_probes_or_new_settings_start_the_comparison_again() {
        let c = config("steps: [50, 100]", "");
        let mut sim = Sim::new(&c);
        // Few requests a tick, so that the comparison stays undecided.
        sim.tick(100, 0.01, 0.01);
        sim.tick(100, 0.01, 0.01);
        assert!(sim.status().comparison.unwrap().report.canary_requests > 0);
        // Other probes, counting from zero.
        sim.probes = 2;
        sim.counts = Counts::default();
        sim.tick(10, 0.01, 0.01);
        let comparison = sim.status().comparison.unwrap();
        assert_eq!(
            (comparison.restarts, comparison.report.canary_requests),
            (1, 0)
        );
        sim.tick(100, 0.01, 0.01);
        // A reload with other settings (the same canary: the step stays).
        let other = config("steps: [50, 100]", "miss: 0.05");
        sim.rollouts.sync(&other, at(sim.start, sim.ms));
        let comparison = sim.status().comparison.unwrap();
        assert_eq!((comparison.restarts, comparison.miss), (2, 0.05));
        assert_eq!(comparison.report.canary_requests, 0);
        // The same settings again keep it.
        sim.tick(100, 0.01, 0.01);
        sim.tick(100, 0.01, 0.01);
        sim.rollouts.sync(&other, at(sim.start, sim.ms));
        let comparison = sim.status().comparison.unwrap();
        assert_eq!(comparison.restarts, 2);
        assert!(comparison.report.canary_requests > 0);
    }

    #[test]
    fn counts_that_went_back_are_never_fed_to_the_comparison() {
        let base = ArmCounts {
            requests: 10,
            ..Default::default()
        };
        let mut later = base;
        later.requests = 9;
        assert!(!later.covers(&base));
        assert_eq!(later.since(&base).requests, 0);
    }
}
