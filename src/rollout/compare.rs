//! The canary judged against stable over the same window, by Wald's sequential probability ratio
//! test (SPRT) on the conditional binomial: pure, no clock, no I/O, no randomness. The request
//! path counts requests, failures and latency buckets per arm ([`ArmCounters`], relaxed atomic
//! adds); the controller reads them as often as it likes and hands the totals since the window
//! started to [`Comparison::observe`], which says continue, pass or fail.
//!
//! **Errors.** With `n_c` canary and `n_s` stable requests in a batch, failure rates `p_c` and
//! `p_s`, and `k` failures in the batch, each failure came from the canary with probability
//! `pi(rho) = n_c rho / (n_c rho + n_s)`, where `rho = p_c / p_s`. The stable's own rate, unknown
//! and drifting with load, cancels out; the traffic shares enter only through `n_c / n_s`, so 5 %
//! against 95 % (or any step's split) needs no special case. The hypotheses are
//! `H0: rho <= 1 + margin` (the canary is as good as stable) and `H1: rho >= detect`; the test
//! multiplies the likelihood ratio of `H1` to `H0` over the batches and fails when it reaches
//! Wald's `A = (1 - beta) / alpha`, passes when it falls to `B = beta / (1 - alpha)`.
//!
//! **Latency.** Reduced to the same test. From the stable's histogram so far (before the batch),
//! the *reference* bound is the lower bound of the bucket holding stable's `quantile` (so at
//! least `1 - quantile` of stable's requests lie above it; its upper bound when latency is so
//! tight that the lower one would leave more than `10 x (1 - quantile)` above it); the *slow*
//! bound is the highest bucket bound at most `reference x (1 + tolerance)` (or `+ tolerance` in
//! milliseconds). A stable request is counted when it lands above the reference bound, a canary
//! request when it lands above the slow bound, and the two counts are compared exactly as
//! failures are: `H0: P(canary > slow) <= (1 + margin) P(stable > reference)`. A canary at most
//! the (effective) tolerance slower than stable satisfies `H0`; equal versions satisfy it whatever
//! the bounds, so bucket granularity costs power, never false alarms. The tolerance is rounded
//! *down* to what the buckets can express ([`LatencyReport::effective_tolerance`]).
//!
//! docs/ANALYSIS.md explains the method, its assumptions and the simulation figures.

use std::time::Duration;

use serde::Serialize;

use crate::metrics::LATENCY_BUCKETS_MS;
/// The request path's per-arm counters live with the probes they make up (`metrics::probe`).
pub use crate::metrics::probe::{ArmCounters, ArmCounts, BUCKETS};

/// The stable requests the latency test needs before it trusts stable's quantile: enough for
/// about this many of them to lie above it (1,000 requests for p99).
const TAIL_REQUESTS_FOR_REFERENCE: f64 = 10.0;

/// The most of stable's requests the reference may leave above it, in multiples of
/// `1 - quantile` (10 % for p99): beyond that the next bound up is the reference.
const TAIL_SHARE_CAP: f64 = 10.0;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    #[error("{field}: {problem}")]
    Setting {
        field: &'static str,
        problem: String,
    },
    #[error(
        "the {arm} {counter} counter went back from {before} to {after}: counters must only grow \
         within a window (a new window needs a new Comparison)"
    )]
    WentBack {
        arm: &'static str,
        counter: &'static str,
        before: u64,
        after: u64,
    },
}

/// Both arms' totals since the window started: the input of [`Comparison::observe`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub canary: ArmCounts,
    /// Every other backend of the route, pooled.
    pub stable: ArmCounts,
}

// === Settings ===

/// What the comparison tests, checked by [`Comparison::new`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// The chance that a canary as good as stable fails the comparison (the false alarm, alpha),
    /// shared equally by the enabled tests.
    pub alpha: f64,
    /// The chance that a canary as bad as `detect` passes a test (the miss, beta), per test.
    pub beta: f64,
    /// The error-rate test; `None` turns it off.
    pub errors: Option<Ratios>,
    /// The latency test; `None` turns it off.
    pub latency: Option<Latency>,
    /// With no decision after this many canary requests, [`Comparison::conclude`] decides.
    pub max_canary_requests: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            alpha: 0.05,
            beta: 0.10,
            errors: Some(Ratios::default()),
            latency: Some(Latency::default()),
            max_canary_requests: None,
        }
    }
}

/// The two canary/stable rate ratios a test tells apart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratios {
    /// `H0: ratio <= 1 + margin`: up to this much worse still counts as good.
    pub margin: f64,
    /// `H1: ratio >= detect`: this much worse is caught with probability `1 - beta`.
    pub detect: f64,
}

impl Default for Ratios {
    fn default() -> Self {
        Ratios {
            margin: 0.0,
            detect: 2.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    /// The quantile of stable that anchors the reference bound (0.99: p99).
    pub quantile: f64,
    /// How much slower than stable the canary may be at the quantile and still count as good.
    pub tolerance: Tolerance,
    /// Ratios of the canary's share of slow requests to stable's.
    pub ratios: Ratios,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            quantile: 0.99,
            tolerance: Tolerance::Relative(0.0),
            ratios: Ratios::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// A fraction of stable's quantile: 0.3 is 30 % slower.
    Relative(f64),
    /// A fixed amount on top of stable's quantile.
    Absolute(Duration),
}

fn setting(field: &'static str, problem: impl Into<String>) -> CompareError {
    CompareError::Setting {
        field,
        problem: problem.into(),
    }
}

fn probability(field: &'static str, value: f64) -> Result<(), CompareError> {
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(setting(
            field,
            format!("expected a probability strictly between 0 and 1, found {value}"),
        ))
    }
}

impl Ratios {
    fn check(&self, margin: &'static str, detect: &'static str) -> Result<(), CompareError> {
        if !(self.margin >= 0.0 && self.margin.is_finite()) {
            return Err(setting(
                margin,
                format!("expected 0 or more, found {}", self.margin),
            ));
        }
        if !(self.detect > 1.0 + self.margin && self.detect.is_finite()) {
            return Err(setting(
                detect,
                format!(
                    "expected a ratio above 1 + margin ({}), found {}",
                    1.0 + self.margin,
                    self.detect
                ),
            ));
        }
        Ok(())
    }
}

impl Settings {
    fn check(&self) -> Result<(), CompareError> {
        probability("alpha", self.alpha)?;
        probability("beta", self.beta)?;
        if self.alpha + self.beta >= 1.0 {
            return Err(setting(
                "beta",
                format!(
                    "alpha + beta must be below 1, found {} + {}",
                    self.alpha, self.beta
                ),
            ));
        }
        if let Some(r) = &self.errors {
            r.check("errors.margin", "errors.detect")?;
        }
        if let Some(l) = &self.latency {
            probability("latency.quantile", l.quantile)?;
            l.ratios.check("latency.margin", "latency.detect")?;
            if let Tolerance::Relative(t) = l.tolerance
                && !(t >= 0.0 && t.is_finite())
            {
                return Err(setting(
                    "latency.tolerance",
                    format!("expected 0 or more, found {t}"),
                ));
            }
        }
        if self.errors.is_none() && self.latency.is_none() {
            return Err(setting(
                "errors",
                "both tests are off: enable errors, latency or both",
            ));
        }
        if self.max_canary_requests == Some(0) {
            return Err(setting(
                "max_canary_requests",
                "expected at least 1 (leave it out for no limit)",
            ));
        }
        Ok(())
    }

    /// The false-alarm rate of each enabled test (Bonferroni: the union of the tests' false alarms
    /// stays within `alpha`).
    pub fn alpha_per_test(&self) -> f64 {
        let tests = u32::from(self.errors.is_some()) + u32::from(self.latency.is_some());
        self.alpha / f64::from(tests.max(1))
    }
}

// === impl Bounds, Sprt ===

/// Wald's boundaries, as natural logarithms of the likelihood ratio.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Bounds {
    /// `ln A`, `A = (1 - beta) / alpha`: at or above it, reject `H0` (fail).
    pub fail: f64,
    /// `ln B`, `B = beta / (1 - alpha)`: at or below it, accept `H0` (pass).
    pub pass: f64,
}

impl Bounds {
    /// Wald (1945): with these bounds the false alarm is at most `alpha / (1 - beta)` and the miss
    /// at most `beta / (1 - alpha)` (their sum at most `alpha + beta`), and in practice below
    /// `alpha` and `beta`, since the ratio overshoots the bound it crosses.
    pub fn wald(alpha: f64, beta: f64) -> Bounds {
        Bounds {
            fail: ((1.0 - beta) / alpha).ln(),
            pass: (beta / (1.0 - alpha)).ln(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Continue,
    /// Evidence that the canary is not worse than stable (`H0` accepted).
    Pass,
    /// Evidence that the canary is worse (`H0` rejected): roll back.
    Fail,
}

/// A sequential probability ratio test on a stream of two-kind observations ("hits" and
/// "misses"), where a hit has probability `p0` under `H0` and `p1 > p0` under `H1`, and those may
/// change from batch to batch. It stops at the first bound it reaches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sprt {
    bounds: Bounds,
    log_ratio: f64,
    decision: Decision,
}

impl Sprt {
    pub fn new(bounds: Bounds) -> Sprt {
        Sprt {
            bounds,
            log_ratio: 0.0,
            decision: Decision::Continue,
        }
    }

    /// One batch of `hits` and `misses`; the bounds are checked after the batch, as a batch's
    /// order is not known. `0 < p0 < p1 < 1` (a batch outside that is ignored).
    pub fn update(&mut self, hits: u64, misses: u64, p0: f64, p1: f64) -> Decision {
        if self.decision != Decision::Continue || !(0.0 < p0 && p0 < p1 && p1 < 1.0) {
            return self.decision;
        }
        // ln(1 - p) by ln_1p keeps the digits of a miss's tiny step when p is small.
        self.log_ratio +=
            hits as f64 * (p1 / p0).ln() + misses as f64 * ((-p1).ln_1p() - (-p0).ln_1p());
        if self.log_ratio >= self.bounds.fail {
            self.decision = Decision::Fail;
        } else if self.log_ratio <= self.bounds.pass {
            self.decision = Decision::Pass;
        }
        self.decision
    }

    /// Ends the test without a bound reached: fail when the evidence leans towards `H1` (log
    /// likelihood ratio above 0), else pass. A decided test keeps its decision.
    pub fn conclude(&mut self) -> Decision {
        if self.decision == Decision::Continue {
            self.decision = if self.log_ratio > 0.0 {
                Decision::Fail
            } else {
                Decision::Pass
            };
        }
        self.decision
    }

    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// The statistic: the natural log of the likelihood ratio of `H1` to `H0` so far.
    pub fn log_ratio(&self) -> f64 {
        self.log_ratio
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }
}

/// The probability that an event (failure or slow request) of a batch came from the canary, when
/// the canary's rate is `ratio` times stable's and the arms had `canary` and `stable` requests.
pub fn canary_share(canary: u64, stable: u64, ratio: f64) -> f64 {
    let c = canary as f64 * ratio;
    c / (c + stable as f64)
}

// === impl Threshold ===

/// The latency test's two bounds for a batch, as bucket indexes into [`LATENCY_BUCKETS_MS`]: a
/// stable request is counted when its bucket is above `reference`, a canary request when above
/// `slow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    pub reference: usize,
    pub slow: usize,
}

impl Threshold {
    /// From stable's histogram: the reference is the lower bound of the bucket holding its
    /// quantile (at least `1 - quantile` of stable's requests lie above it), unless more than
    /// `10 x (1 - quantile)` lie above it (latency so tight that one bucket holds most of the
    /// tail, where no canary could be `detect` times worse) or there is no lower bound (the first
    /// bucket): then that bucket's upper bound. `None` while stable has too few requests to place
    /// its quantile (`10 / (1 - quantile)`: 1,000 for p99).
    pub fn from_stable(
        stable: &[u64; BUCKETS],
        quantile: f64,
        tolerance: Tolerance,
    ) -> Option<Self> {
        let total: u64 = stable.iter().sum();
        let tail = 1.0 - quantile;
        if (total as f64) < TAIL_REQUESTS_FOR_REFERENCE / tail {
            return None;
        }
        let rank = (quantile * total as f64).ceil().max(1.0) as u64;
        let mut below = 0;
        let holding = stable.iter().position(|&n| {
            below += n;
            below >= rank
        })?;
        let above_lower = total - (below - stable[holding]);
        let reference = match holding.checked_sub(1) {
            Some(lower)
                if holding == BUCKETS - 1
                    || above_lower as f64 <= TAIL_SHARE_CAP * tail * total as f64 =>
            {
                lower
            }
            _ => holding,
        };
        let bound = LATENCY_BUCKETS_MS[reference];
        let limit = match tolerance {
            Tolerance::Relative(t) => bound * (1.0 + t),
            Tolerance::Absolute(d) => bound + d.as_secs_f64() * 1e3,
        };
        // The highest bound not above the limit (a hair of slack for 40 x 1.25 and the like).
        let slow = LATENCY_BUCKETS_MS.partition_point(|&b| b <= limit * (1.0 + 1e-12)) - 1;
        Some(Threshold {
            reference,
            slow: slow.max(reference),
        })
    }

    pub fn reference_ms(&self) -> f64 {
        LATENCY_BUCKETS_MS[self.reference]
    }

    pub fn slow_ms(&self) -> f64 {
        LATENCY_BUCKETS_MS[self.slow]
    }
}

fn above(counts: &[u64; BUCKETS], bucket: usize) -> u64 {
    counts[bucket + 1..].iter().sum()
}

// === impl Comparison ===

/// One window's comparison of the canary with stable; feed it with [`Comparison::observe`].
#[derive(Clone, Debug)]
pub struct Comparison {
    settings: Settings,
    last: Counts,
    errors: Option<ErrorTest>,
    latency: Option<LatencyTest>,
    decision: Decision,
    decided_at: Option<u64>,
    concluded: bool,
}

/// What a test has counted, for the report and the observed ratio.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub requests: u64,
    /// Failures (error test) or slow requests (latency test).
    pub events: u64,
}

#[derive(Clone, Debug)]
struct ErrorTest {
    ratios: Ratios,
    sprt: Sprt,
    /// The counts already used: a batch is what came since.
    used: Counts,
    canary: Tally,
    stable: Tally,
}

#[derive(Clone, Debug)]
struct LatencyTest {
    latency: Latency,
    sprt: Sprt,
    used_canary: [u64; BUCKETS],
    used_stable: [u64; BUCKETS],
    threshold: Option<Threshold>,
    canary: Tally,
    stable: Tally,
}

impl Comparison {
    pub fn new(settings: Settings) -> Result<Comparison, CompareError> {
        settings.check()?;
        let bounds = Bounds::wald(settings.alpha_per_test(), settings.beta);
        Ok(Comparison {
            errors: settings.errors.map(|ratios| ErrorTest {
                ratios,
                sprt: Sprt::new(bounds),
                used: Counts::default(),
                canary: Tally::default(),
                stable: Tally::default(),
            }),
            latency: settings.latency.map(|latency| LatencyTest {
                latency,
                sprt: Sprt::new(bounds),
                used_canary: [0; BUCKETS],
                used_stable: [0; BUCKETS],
                threshold: None,
                canary: Tally::default(),
                stable: Tally::default(),
            }),
            settings,
            last: Counts::default(),
            decision: Decision::Continue,
            decided_at: None,
            concluded: false,
        })
    }

    /// Takes both arms' totals since the window started (read as often as wanted: after every
    /// request, every batch or every tick) and returns the decision so far. Once the comparison
    /// passes or fails it keeps that decision. Totals that went back are refused and change
    /// nothing.
    pub fn observe(&mut self, counts: &Counts) -> Result<Decision, CompareError> {
        let now = Counts {
            canary: clamped(&counts.canary),
            stable: clamped(&counts.stable),
        };
        went_back("canary", &self.last.canary, &now.canary)?;
        went_back("stable", &self.last.stable, &now.stable)?;
        self.last = now;
        if self.decision != Decision::Continue {
            return Ok(self.decision);
        }
        if let Some(t) = &mut self.errors {
            t.observe(&now);
        }
        if let Some(t) = &mut self.latency {
            t.observe(&now);
        }
        self.combine();
        if self.decision == Decision::Continue
            && self
                .settings
                .max_canary_requests
                .is_some_and(|max| now.canary.requests >= max)
        {
            return Ok(self.conclude());
        }
        Ok(self.decision)
    }

    /// Ends the comparison now (the step's time is up, or `max_canary_requests`): each undecided
    /// test decides by the sign of its evidence (fail when the log likelihood ratio is above 0).
    pub fn conclude(&mut self) -> Decision {
        if self.decision == Decision::Continue {
            self.concluded = true;
            if let Some(t) = &mut self.errors {
                t.sprt.conclude();
            }
            if let Some(t) = &mut self.latency {
                t.sprt.conclude();
            }
            self.combine();
        }
        self.decision
    }

    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// Canary requests seen when the comparison decided (`None` while it continues).
    pub fn decided_at(&self) -> Option<u64> {
        self.decided_at
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Fail when any test failed; pass when every test passed.
    fn combine(&mut self) {
        let decisions = [
            self.errors.as_ref().map(|t| t.sprt.decision()),
            self.latency.as_ref().map(|t| t.sprt.decision()),
        ];
        let mut enabled = decisions.iter().flatten();
        let decision = if enabled.clone().any(|&d| d == Decision::Fail) {
            Decision::Fail
        } else if enabled.all(|&d| d == Decision::Pass) {
            Decision::Pass
        } else {
            Decision::Continue
        };
        if decision != Decision::Continue {
            self.decided_at = Some(self.last.canary.requests);
        }
        self.decision = decision;
    }

    /// The running test for `/stats`: the statistics, bounds and sample sizes.
    pub fn report(&self) -> Report {
        let errors = self.errors.as_ref().map(|t| TestReport {
            decision: t.sprt.decision(),
            log_likelihood_ratio: t.sprt.log_ratio(),
            bounds: t.sprt.bounds(),
            h0_ratio: 1.0 + t.ratios.margin,
            h1_ratio: t.ratios.detect,
            canary: t.canary,
            stable: t.stable,
            observed_ratio: observed_ratio(t.canary, t.stable),
        });
        let latency = self.latency.as_ref().map(|t| LatencyReport {
            test: TestReport {
                decision: t.sprt.decision(),
                log_likelihood_ratio: t.sprt.log_ratio(),
                bounds: t.sprt.bounds(),
                h0_ratio: 1.0 + t.latency.ratios.margin,
                h1_ratio: t.latency.ratios.detect,
                canary: t.canary,
                stable: t.stable,
                observed_ratio: observed_ratio(t.canary, t.stable),
            },
            quantile: t.latency.quantile,
            reference_ms: t.threshold.map(|th| th.reference_ms()),
            slow_ms: t.threshold.map(|th| th.slow_ms()),
            effective_tolerance: t.threshold.map(|th| match t.latency.tolerance {
                Tolerance::Relative(_) => {
                    Effective::Relative(th.slow_ms() / th.reference_ms() - 1.0)
                }
                Tolerance::Absolute(_) => Effective::Ms(th.slow_ms() - th.reference_ms()),
            }),
        });
        Report {
            decision: self.decision,
            reason: self.reason(&errors, &latency),
            concluded: self.concluded,
            canary_requests: self.last.canary.requests,
            stable_requests: self.last.stable.requests,
            decided_at: self.decided_at,
            errors,
            latency,
        }
    }

    fn reason(&self, errors: &Option<TestReport>, latency: &Option<LatencyReport>) -> String {
        let how = if self.concluded {
            "ended without reaching a bound; the evidence leaned that way"
        } else {
            "reached its bound"
        };
        let fmt = |name: &str, t: &TestReport, what: &str| {
            let ratio = t
                .observed_ratio
                .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}"));
            format!(
                "{name}: canary {}/{} {what}, stable {}/{} (ratio {ratio}; H0 <= {:.2}, H1 >= \
                 {:.2}); log likelihood ratio {:.2} (fail at {:.2}, pass at {:.2})",
                t.canary.events,
                t.canary.requests,
                t.stable.events,
                t.stable.requests,
                t.h0_ratio,
                t.h1_ratio,
                t.log_likelihood_ratio,
                t.bounds.fail,
                t.bounds.pass
            )
        };
        let mut parts = Vec::new();
        if let Some(t) = errors {
            parts.push(fmt("errors", t, "failed"));
        }
        if let Some(l) = latency {
            let what = match (l.reference_ms, l.slow_ms) {
                (Some(r), Some(s)) => format!("above {s} ms (stable: above {r} ms)"),
                _ => "slow (waiting for enough stable requests to place its quantile)".to_owned(),
            };
            parts.push(fmt("latency", &l.test, &what));
        }
        let verdict = match self.decision {
            Decision::Continue => "no decision yet".to_owned(),
            Decision::Pass => format!("the canary is not worse than stable: every test {how}"),
            Decision::Fail => format!("the canary is worse than stable: a test {how}"),
        };
        format!("{verdict}; {}", parts.join("; "))
    }
}

fn observed_ratio(canary: Tally, stable: Tally) -> Option<f64> {
    (canary.requests > 0 && stable.events > 0).then(|| {
        (canary.events as f64 / canary.requests as f64)
            / (stable.events as f64 / stable.requests as f64)
    })
}

/// Failures can be seen before their request (relaxed reads of two counters): never more
/// failures than requests.
fn clamped(arm: &ArmCounts) -> ArmCounts {
    ArmCounts {
        failures: arm.failures.min(arm.requests),
        ..*arm
    }
}

fn went_back(arm: &'static str, before: &ArmCounts, after: &ArmCounts) -> Result<(), CompareError> {
    let pairs = [
        ("requests", before.requests, after.requests),
        ("failures", before.failures, after.failures),
    ];
    let buckets = before
        .latency
        .iter()
        .zip(&after.latency)
        .map(|(&b, &a)| ("latency bucket", b, a));
    match pairs.into_iter().chain(buckets).find(|(_, b, a)| a < b) {
        Some((counter, before, after)) => Err(CompareError::WentBack {
            arm,
            counter,
            before,
            after,
        }),
        None => Ok(()),
    }
}

impl ErrorTest {
    fn observe(&mut self, now: &Counts) {
        let n_c = now.canary.requests - self.used.canary.requests;
        let n_s = now.stable.requests - self.used.stable.requests;
        if n_c == 0 || n_s == 0 {
            // A batch with one arm only says nothing about the ratio: keep it for the next one.
            return;
        }
        let x_c = (now.canary.failures - self.used.canary.failures).min(n_c);
        let x_s = (now.stable.failures - self.used.stable.failures).min(n_s);
        self.used.canary.requests += n_c;
        self.used.stable.requests += n_s;
        self.used.canary.failures += x_c;
        self.used.stable.failures += x_s;
        self.canary.requests += n_c;
        self.stable.requests += n_s;
        self.canary.events += x_c;
        self.stable.events += x_s;
        self.sprt.update(
            x_c,
            x_s,
            canary_share(n_c, n_s, 1.0 + self.ratios.margin),
            canary_share(n_c, n_s, self.ratios.detect),
        );
    }
}

impl LatencyTest {
    fn observe(&mut self, now: &Counts) {
        let d_c: [u64; BUCKETS] =
            std::array::from_fn(|i| now.canary.latency[i] - self.used_canary[i]);
        let d_s: [u64; BUCKETS] =
            std::array::from_fn(|i| now.stable.latency[i] - self.used_stable[i]);
        let n_c: u64 = d_c.iter().sum();
        let n_s: u64 = d_s.iter().sum();
        if n_c == 0 || n_s == 0 {
            return;
        }
        // The bounds come from stable's histogram *before* this batch, so they do not depend on
        // the counts they are applied to (and the likelihood ratio stays a martingale under H0).
        let threshold = Threshold::from_stable(
            &self.used_stable,
            self.latency.quantile,
            self.latency.tolerance,
        );
        self.used_canary = now.canary.latency;
        self.used_stable = now.stable.latency;
        let Some(th) = threshold else {
            // Warming up: these requests placed stable's quantile and count for nothing else.
            return;
        };
        self.threshold = Some(th);
        let y_c = above(&d_c, th.slow);
        let y_s = above(&d_s, th.reference);
        self.canary.requests += n_c;
        self.stable.requests += n_s;
        self.canary.events += y_c;
        self.stable.events += y_s;
        self.sprt.update(
            y_c,
            y_s,
            canary_share(n_c, n_s, 1.0 + self.latency.ratios.margin),
            canary_share(n_c, n_s, self.latency.ratios.detect),
        );
    }
}

// === Report ===

/// The comparison for `/stats`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub decision: Decision,
    pub reason: String,
    /// Decided by [`Comparison::conclude`] rather than by reaching a bound.
    pub concluded: bool,
    pub canary_requests: u64,
    pub stable_requests: u64,
    pub decided_at: Option<u64>,
    pub errors: Option<TestReport>,
    pub latency: Option<LatencyReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestReport {
    pub decision: Decision,
    /// The statistic: natural log of the likelihood ratio of H1 to H0.
    pub log_likelihood_ratio: f64,
    pub bounds: Bounds,
    /// `H0: canary rate <= stable's x h0_ratio`.
    pub h0_ratio: f64,
    /// `H1: canary rate >= stable's x h1_ratio`.
    pub h1_ratio: f64,
    pub canary: Tally,
    pub stable: Tally,
    /// The canary's event rate over stable's, from the counted requests.
    pub observed_ratio: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyReport {
    #[serde(flatten)]
    pub test: TestReport,
    pub quantile: f64,
    /// Stable's requests count as slow above this bound (the bottom of the bucket holding its
    /// quantile); `None` while warming up.
    pub reference_ms: Option<f64>,
    /// The canary's requests count as slow above this bound.
    pub slow_ms: Option<f64>,
    /// The tolerance the buckets could express (at most the configured one).
    pub effective_tolerance: Option<Effective>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effective {
    Relative(f64),
    Ms(f64),
}

#[cfg(test)]
mod tests;
