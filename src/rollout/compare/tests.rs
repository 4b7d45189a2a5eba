use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::metrics::latency_bucket;

fn close(found: f64, want: f64, tolerance: f64) {
    assert!(
        (found - want).abs() <= tolerance,
        "found {found}, want {want} +- {tolerance}"
    );
}

// === Wald's bounds and the binomial SPRT against published values ===

#[test]
fn wald_bounds_are_the_logarithms_of_a_and_b() {
    for (alpha, beta) in [(0.05, 0.10), (0.025, 0.10), (0.01, 0.20), (0.10, 0.05)] {
        let b = Bounds::wald(alpha, beta);
        close(b.fail.exp(), (1.0 - beta) / alpha, 1e-9);
        close(b.pass.exp(), beta / (1.0 - alpha), 1e-12);
    }
    // alpha 0.05, beta 0.10: A = 18 and B = 2/19.
    close(Bounds::wald(0.05, 0.10).fail, 18f64.ln(), 1e-12);
    close(Bounds::wald(0.05, 0.10).pass, (2.0f64 / 19.0).ln(), 1e-12);
}

/// NIST/SEMATECH e-Handbook of Statistical Methods, 6.2.6 "What is a Sequential Sampling Plan?":
/// AQL p1 = 0.01 with alpha 0.05 and RQL p2 = 0.10 with beta 0.10 give the acceptance line
/// `x_a = -0.939 + 0.0397 n` and the rejection line `x_r = 1.205 + 0.0397 n` (defectives after n
/// items); "for n = 24 the acceptance number is 0 and the rejection number is 3".
#[test]
fn the_binomial_sprt_reproduces_the_nist_sequential_sampling_plan() {
    let (p0, p1): (f64, f64) = (0.01, 0.10);
    let bounds = Bounds::wald(0.05, 0.10);
    // The log ratio moves by ln(p1 / p0) per defective and ln((1 - p1) / (1 - p0)) per good
    // item: the lines in defectives are the bounds over the difference of the two steps.
    let k = (p1 / p0).ln() - ((1.0 - p1) / (1.0 - p0)).ln();
    close(-bounds.pass / k, 0.939, 5e-4);
    close(bounds.fail / k, 1.205, 5e-4);
    close(((1.0 - p0) / (1.0 - p1)).ln() / k, 0.0397, 5e-5);

    let decide = |n: u64, d: u64| Sprt::new(bounds).update(d, n - d, p0, p1);
    let acceptance = |n: u64| (0..=n).filter(|&d| decide(n, d) == Decision::Pass).max();
    let rejection = |n: u64| (0..=n).filter(|&d| decide(n, d) == Decision::Fail).min();
    assert_eq!((acceptance(24), rejection(24)), (Some(0), Some(3)));
    assert_eq!(acceptance(23), None);
    // Every n up to 60, except where a line passes within 0.01 of a whole number (there the
    // handbook's three decimals cannot say which side it is on).
    for n in 1..=60u64 {
        let x_a = -0.939 + 0.0397 * n as f64;
        let x_r = 1.205 + 0.0397 * n as f64;
        if (x_a - x_a.round()).abs() < 0.01 || (x_r - x_r.round()).abs() < 0.01 {
            continue;
        }
        let want_a = (x_a >= 0.0).then(|| x_a.floor() as u64);
        let want_r = Some(x_r.ceil() as u64).filter(|&r| r <= n);
        assert_eq!((acceptance(n), rejection(n)), (want_a, want_r), "n = {n}");
    }
}

#[test]
fn a_decided_sprt_keeps_its_decision_and_ignores_impossible_batches() {
    let mut t = Sprt::new(Bounds::wald(0.05, 0.10));
    assert_eq!(t.update(1, 0, 0.5, 0.4), Decision::Continue, "p1 < p0");
    assert_eq!(t.update(1, 0, 0.0, 0.4), Decision::Continue, "p0 = 0");
    assert_eq!(t.log_ratio(), 0.0);
    assert_eq!(t.update(10, 0, 0.05, 0.10), Decision::Fail);
    assert_eq!(t.update(0, 10_000, 0.05, 0.10), Decision::Fail);
    assert_eq!(t.conclude(), Decision::Fail);
}

#[test]
fn a_failure_comes_from_the_canary_by_its_share_times_the_ratio() {
    close(canary_share(5, 95, 1.0), 0.05, 1e-15);
    close(canary_share(5, 95, 2.0), 10.0 / 105.0, 1e-15);
    close(canary_share(50, 50, 2.0), 2.0 / 3.0, 1e-15);
    close(canary_share(25, 75, 1.5), 37.5 / 112.5, 1e-15);
}

// === Latency bounds from stable's histogram ===

fn histogram(requests: &[(u64, f64)]) -> [u64; BUCKETS] {
    let mut h = [0; BUCKETS];
    for &(n, ms) in requests {
        h[latency_bucket(Duration::from_secs_f64(ms / 1e3))] += n;
    }
    h
}

fn check_threshold(
    stable: &[(u64, f64)],
    quantile: f64,
    tolerance: Tolerance,
    want: Option<(f64, f64)>,
) {
    let found = Threshold::from_stable(&histogram(stable), quantile, tolerance)
        .map(|t| (t.reference_ms(), t.slow_ms()));
    assert_eq!(found, want, "{stable:?} q {quantile} {tolerance:?}");
}

#[test]
fn the_reference_is_the_bottom_of_stable_quantile_bucket_and_the_tolerance_rounds_down() {
    use Tolerance::{Absolute, Relative};
    let ms = Duration::from_millis;
    // p99 at 180 ms, in the bucket (150, 200]: at least 1 % of stable's requests above 150 ms.
    let p99_at_180 = [(985, 9.0), (15, 180.0)];
    check_threshold(&p99_at_180, 0.99, Relative(0.0), Some((150.0, 150.0)));
    // 150 x 1.3 = 195: no bound between 150 and 200, so nothing is tolerated.
    check_threshold(&p99_at_180, 0.99, Relative(0.3), Some((150.0, 150.0)));
    check_threshold(&p99_at_180, 0.99, Relative(0.5), Some((150.0, 200.0)));
    check_threshold(&p99_at_180, 0.99, Absolute(ms(40)), Some((150.0, 150.0)));
    check_threshold(&p99_at_180, 0.99, Absolute(ms(100)), Some((150.0, 200.0)));
    check_threshold(
        &p99_at_180,
        0.99,
        Absolute(ms(1_000_000)),
        Some((150.0, 30_000.0)),
    );
    // 40 x 1.25 is exactly the next bound, 50.
    check_threshold(
        &[(985, 9.0), (15, 45.0)],
        0.99,
        Relative(0.25),
        Some((40.0, 50.0)),
    );
    // The 990th of 1,000 requests is the last at 9 ms, in (7.5, 10], which holds nearly all of
    // them: its top, 10 ms.
    check_threshold(
        &[(990, 9.0), (10, 180.0)],
        0.99,
        Relative(0.0),
        Some((10.0, 10.0)),
    );
    // p50 needs 20 requests.
    check_threshold(&[(19, 2.5)], 0.5, Relative(0.0), None);
    check_threshold(
        &[(12, 2.5), (8, 600.0)],
        0.5,
        Relative(0.0),
        Some((2.0, 2.0)),
    );
    // p99 beyond the last bound: requests above 30 s are the slow ones.
    check_threshold(
        &[(985, 9.0), (15, 40_000.0)],
        0.99,
        Relative(0.0),
        Some((30_000.0, 30_000.0)),
    );
    // Too few for p99 (1,000 needed).
    check_threshold(&[(985, 9.0), (14, 180.0)], 0.99, Relative(0.0), None);
    // Tight latency: 100 % of stable above 10 ms, or 11 % above 3 ms, is more than 10 x 1 %:
    // the top of the bucket instead.
    check_threshold(&[(1000, 12.0)], 0.99, Relative(0.0), Some((15.0, 15.0)));
    check_threshold(
        &[(890, 2.5), (110, 3.5)],
        0.99,
        Relative(0.0),
        Some((4.0, 4.0)),
    );
    check_threshold(
        &[(900, 2.5), (100, 3.5)],
        0.99,
        Relative(0.0),
        Some((3.0, 3.0)),
    );
    // p99 in the first bucket: no bound below it.
    check_threshold(&[(1000, 0.3)], 0.99, Relative(0.0), Some((0.5, 0.5)));
}

// === Comparison: its input ===

fn arm(requests: u64, failures: u64, latency: &[(u64, f64)]) -> ArmCounts {
    ArmCounts {
        requests,
        failures,
        latency: histogram(latency),
    }
}

fn counts(canary: ArmCounts, stable: ArmCounts) -> Counts {
    Counts { canary, stable }
}

fn errors_only() -> Settings {
    Settings {
        latency: None,
        ..Settings::default()
    }
}

#[test]
fn bad_settings_are_refused_with_the_field_and_the_value() {
    let d = Settings::default();
    let latency = Latency::default();
    let cases: Vec<(Settings, &str)> = vec![
        (
            Settings { alpha: 0.0, ..d },
            "alpha: expected a probability strictly between 0 and 1, found 0",
        ),
        (
            Settings { beta: 1.0, ..d },
            "beta: expected a probability strictly between 0 and 1, found 1",
        ),
        (
            Settings {
                alpha: f64::NAN,
                ..d
            },
            "alpha: expected a probability strictly between 0 and 1, found NaN",
        ),
        (
            Settings {
                alpha: 0.6,
                beta: 0.5,
                ..d
            },
            "beta: alpha + beta must be below 1, found 0.6 + 0.5",
        ),
        (
            Settings {
                errors: Some(Ratios {
                    margin: 0.0,
                    detect: 1.0,
                }),
                ..d
            },
            "errors.detect: expected a ratio above 1 + margin (1), found 1",
        ),
        (
            Settings {
                errors: Some(Ratios {
                    margin: 0.5,
                    detect: 1.4,
                }),
                ..d
            },
            "errors.detect: expected a ratio above 1 + margin (1.5), found 1.4",
        ),
        (
            Settings {
                latency: Some(Latency {
                    ratios: Ratios {
                        margin: -0.1,
                        detect: 2.0,
                    },
                    ..latency
                }),
                ..d
            },
            "latency.margin: expected 0 or more, found -0.1",
        ),
        (
            Settings {
                latency: Some(Latency {
                    quantile: 1.0,
                    ..latency
                }),
                ..d
            },
            "latency.quantile: expected a probability strictly between 0 and 1, found 1",
        ),
        (
            Settings {
                latency: Some(Latency {
                    tolerance: Tolerance::Relative(f64::INFINITY),
                    ..latency
                }),
                ..d
            },
            "latency.tolerance: expected 0 or more, found inf",
        ),
        (
            Settings {
                errors: None,
                latency: None,
                ..d
            },
            "errors: both tests are off: enable errors, latency or both",
        ),
        (
            Settings {
                max_canary_requests: Some(0),
                ..d
            },
            "max_canary_requests: expected at least 1 (leave it out for no limit)",
        ),
    ];
    for (settings, message) in cases {
        let e = Comparison::new(settings).expect_err(message);
        assert_eq!(e.to_string(), message);
    }
    assert!(Comparison::new(Settings::default()).is_ok());
}

#[test]
fn counters_that_go_back_are_refused_and_change_nothing() {
    let mut c = Comparison::new(errors_only()).unwrap();
    let first = counts(arm(100, 3, &[]), arm(1900, 19, &[]));
    c.observe(&first).unwrap();
    let before = c.report();
    let e = c
        .observe(&counts(arm(99, 3, &[]), arm(2000, 20, &[])))
        .unwrap_err();
    assert_eq!(
        e,
        CompareError::WentBack {
            arm: "canary",
            counter: "requests",
            before: 100,
            after: 99
        }
    );
    assert_eq!(
        e.to_string(),
        "the canary requests counter went back from 100 to 99: counters must only grow within a \
         window (a new window needs a new Comparison)"
    );
    let e = c
        .observe(&counts(arm(100, 3, &[]), arm(1900, 19, &[(1, 1.0)])))
        .map(|_| ());
    assert_eq!(e, Ok(()));
    let e = c.observe(&first).unwrap_err();
    assert!(matches!(
        e,
        CompareError::WentBack {
            arm: "stable",
            counter: "latency bucket",
            ..
        }
    ));
    assert_eq!(c.report().errors, before.errors);
}

#[test]
fn failures_read_ahead_of_their_requests_are_held_back_not_lost() {
    let mut c = Comparison::new(errors_only()).unwrap();
    // Relaxed reads: 5 canary failures seen, but only 3 of their requests.
    c.observe(&counts(arm(3, 5, &[]), arm(100, 1, &[])))
        .unwrap();
    let r = c.report().errors.unwrap();
    assert_eq!((r.canary.requests, r.canary.events), (3, 3));
    c.observe(&counts(arm(10, 5, &[]), arm(200, 2, &[])))
        .unwrap();
    let r = c.report().errors.unwrap();
    assert_eq!((r.canary.requests, r.canary.events), (10, 5));
    assert_eq!((r.stable.requests, r.stable.events), (200, 2));
}

#[test]
fn a_batch_with_one_arm_only_waits_for_the_other() {
    let end = counts(arm(50, 1, &[]), arm(1000, 10, &[]));
    let mut stepwise = Comparison::new(errors_only()).unwrap();
    stepwise
        .observe(&counts(ArmCounts::default(), arm(1000, 10, &[])))
        .unwrap();
    assert_eq!(stepwise.report().errors.unwrap().stable, Tally::default());
    stepwise.observe(&end).unwrap();
    let mut at_once = Comparison::new(errors_only()).unwrap();
    at_once.observe(&end).unwrap();
    assert_eq!(stepwise.report(), at_once.report());
    assert_eq!(stepwise.report().errors.unwrap().canary.requests, 50);
}

/// Batches of 100 canary and 1,900 stable requests (5 %), with `canary` and 19 stable failures
/// each, until a decision; returns it and the canary requests it took.
fn decide_on_steady_batches(canary_failures: u64) -> (Decision, Option<u64>, Comparison) {
    let mut c = Comparison::new(errors_only()).unwrap();
    for i in 1..=1000 {
        let d = c
            .observe(&counts(
                arm(100 * i, canary_failures * i, &[]),
                arm(1900 * i, 19 * i, &[]),
            ))
            .unwrap();
        if d != Decision::Continue {
            return (d, c.decided_at(), c);
        }
    }
    (Decision::Continue, None, c)
}

#[test]
fn steady_equal_rates_pass_and_double_rates_fail_and_decisions_stick() {
    let (d, at, mut c) = decide_on_steady_batches(1);
    assert_eq!(d, Decision::Pass);
    let at = at.unwrap();
    // Each batch of 20 failures moves the log ratio by ln(pi1/pi0) + 19 ln((1-pi1)/(1-pi0)).
    let (p0, p1) = (canary_share(100, 1900, 1.0), canary_share(100, 1900, 2.0));
    let step = (p1 / p0).ln() + 19.0 * ((1.0 - p1) / (1.0 - p0)).ln();
    let bounds = Bounds::wald(0.05, 0.10);
    assert_eq!(at, 100 * (bounds.pass / step).ceil() as u64);
    // A pass is final: a disastrous next batch changes nothing.
    let worse = counts(
        arm(at + 100, at, &[]),
        arm(19 * at + 1900, at / 5 + 19, &[]),
    );
    assert_eq!(c.observe(&worse).unwrap(), Decision::Pass);
    assert_eq!(c.decided_at(), Some(at));

    let (d, at, _) = decide_on_steady_batches(2);
    assert_eq!(d, Decision::Fail);
    let step = 2.0 * (p1 / p0).ln() + 19.0 * ((1.0 - p1) / (1.0 - p0)).ln();
    assert_eq!(at, Some(100 * (bounds.fail / step).ceil() as u64));
}

#[test]
fn the_latency_test_warms_up_on_stable_then_counts_requests_above_the_bounds() {
    let settings = Settings {
        errors: None,
        latency: Some(Latency {
            tolerance: Tolerance::Relative(0.5),
            ..Latency::default()
        }),
        ..Settings::default()
    };
    let mut c = Comparison::new(settings).unwrap();
    // 990 stable requests: too few to place p99; their batch only warms up.
    let warm = counts(
        arm(50, 0, &[(50, 9.0)]),
        arm(990, 0, &[(975, 9.0), (15, 180.0)]),
    );
    c.observe(&warm).unwrap();
    let l = c.report().latency.unwrap();
    assert_eq!(
        (l.reference_ms, l.slow_ms, l.test.canary),
        (None, None, Tally::default())
    );
    // Still 990 before this batch: warming up.
    let more = counts(
        arm(60, 0, &[(60, 9.0)]),
        arm(1000, 0, &[(985, 9.0), (15, 180.0)]),
    );
    c.observe(&more).unwrap();
    assert_eq!(c.report().latency.unwrap().reference_ms, None);
    // Now p99 of 1,000 stable requests is in (150, 200]: stable's requests count above 150 ms,
    // the canary's above 200 ms (150 x 1.5 = 225, rounded down to a bound).
    let batch = counts(
        arm(70, 0, &[(60, 9.0), (5, 170.0), (5, 250.0)]),
        arm(1100, 0, &[(1080, 9.0), (20, 180.0)]),
    );
    c.observe(&batch).unwrap();
    let l = c.report().latency.unwrap();
    assert_eq!((l.reference_ms, l.slow_ms), (Some(150.0), Some(200.0)));
    let Some(Effective::Relative(t)) = l.effective_tolerance else {
        panic!("{:?}", l.effective_tolerance)
    };
    close(t, 1.0 / 3.0, 1e-12);
    assert_eq!(
        l.test.canary,
        Tally {
            requests: 10,
            events: 5
        }
    );
    assert_eq!(
        l.test.stable,
        Tally {
            requests: 100,
            events: 5
        }
    );
}

#[test]
fn conclude_decides_by_the_sign_of_the_evidence_and_max_canary_requests_calls_it() {
    let settings = Settings {
        max_canary_requests: Some(150),
        ..errors_only()
    };
    // One canary failure in 100 against 10 in 1,900: the ratio leans to H1 but reaches no bound.
    let mut c = Comparison::new(settings).unwrap();
    let leaning = counts(arm(100, 1, &[]), arm(1900, 10, &[]));
    assert_eq!(c.observe(&leaning).unwrap(), Decision::Continue);
    assert!(c.report().errors.unwrap().log_likelihood_ratio > 0.0);
    let mut early = c.clone();
    assert_eq!(early.conclude(), Decision::Fail);
    assert!(early.report().concluded);
    let over = counts(arm(150, 1, &[]), arm(2850, 20, &[]));
    assert_eq!(c.observe(&over).unwrap(), Decision::Pass);
    let r = c.report();
    assert!(r.concluded && r.errors.unwrap().log_likelihood_ratio <= 0.0);
    assert_eq!(r.decided_at, Some(150));
    assert!(
        r.reason.contains("ended without reaching a bound"),
        "{}",
        r.reason
    );
}

#[test]
fn the_report_carries_the_statistic_the_bounds_and_the_sample_sizes() {
    let mut c = Comparison::new(Settings::default()).unwrap();
    let stable_latency = [(1980, 19.0), (20, 180.0)];
    c.observe(&counts(
        arm(100, 2, &[(100, 19.0)]),
        arm(2000, 20, &stable_latency),
    ))
    .unwrap();
    let json = serde_json::to_value(c.report()).unwrap();
    assert_eq!(json["decision"], "continue");
    assert_eq!(json["canary_requests"], 100);
    assert_eq!(json["stable_requests"], 2000);
    let errors = &json["errors"];
    assert_eq!(
        errors["canary"],
        serde_json::json!({"requests": 100, "events": 2})
    );
    assert_eq!(
        errors["stable"],
        serde_json::json!({"requests": 2000, "events": 20})
    );
    assert_eq!(errors["h0_ratio"], 1.0);
    assert_eq!(errors["h1_ratio"], 2.0);
    assert_eq!(errors["observed_ratio"], 2.0);
    // alpha 0.05 shared by two tests: A = 0.9 / 0.025 = 36.
    close(
        errors["bounds"]["fail"].as_f64().unwrap(),
        36f64.ln(),
        1e-12,
    );
    assert!(errors["log_likelihood_ratio"].as_f64().unwrap() > 0.0);
    // The first batch only placed stable's p99.
    assert_eq!(json["latency"]["reference_ms"], serde_json::Value::Null);
    assert_eq!(json["latency"]["quantile"], 0.99);
    let reason = json["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("no decision yet; errors: canary 2/100 failed, stable 20/2000"),
        "{reason}"
    );
}

#[test]
fn arm_counters_count_requests_failures_and_latency_buckets() {
    let a = ArmCounters::default();
    a.record(true, 3);
    a.record(false, 3);
    a.record(false, 40);
    let read = a.read();
    assert_eq!((read.requests, read.failures), (3, 2));
    assert_eq!(read.latency[3], 2);
    assert_eq!(read.latency[BUCKETS - 1], 1);
}

// === Simulation ===

/// `erfc` by the Chebyshev fit of Numerical Recipes (fractional error below 1.2e-7): good
/// enough for tail probabilities of 1e-4 and more.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = [
        -1.26551223,
        1.00002368,
        0.37409196,
        0.09678418,
        -0.18628806,
        0.27886807,
        -1.13520398,
        1.48851587,
        -0.82215223,
        0.17087277,
    ]
    .iter()
    .rev()
    .fold(0.0, |acc, c| acc * t + c);
    let r = t * (-z * z + poly).exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

#[test]
fn the_normal_cdf_matches_its_table() {
    close(normal_cdf(0.0), 0.5, 1e-7);
    close(normal_cdf(1.959964), 0.975, 1e-7);
    close(normal_cdf(-2.326348), 0.01, 1e-8);
    close(normal_cdf(-3.090232), 0.001, 2e-9);
}

/// One arm of a simulated route.
#[derive(Clone, Copy, Debug)]
struct Arm {
    failure: f64,
    /// P(latency <= bound i); the overflow bucket takes the rest.
    cdf: [f64; BUCKETS],
}

impl Arm {
    /// Latency log-normal (median `median_ms`, log-sd `sigma`), times `scale`, plus `shift_ms`.
    fn new(failure: f64, median_ms: f64, sigma: f64, scale: f64, shift_ms: f64) -> Arm {
        let mut cdf = [1.0; BUCKETS];
        for (c, &bound) in cdf.iter_mut().zip(&LATENCY_BUCKETS_MS) {
            let base = (bound - shift_ms) / scale;
            *c = if base <= 0.0 {
                0.0
            } else {
                normal_cdf((base / median_ms).ln() / sigma)
            };
        }
        Arm { failure, cdf }
    }

    fn bucket(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(BUCKETS - 1)
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    /// The canary's share of requests (routing is a random draw per request, as weir's).
    share: f64,
    stable: Arm,
    canary: Arm,
    /// Requests between two reads of the counters.
    batch: u64,
}

const STABLE_FAILURE: f64 = 0.01;
const MEDIAN_MS: f64 = 50.0;
const SIGMA: f64 = 0.5;

fn stable() -> Arm {
    Arm::new(STABLE_FAILURE, MEDIAN_MS, SIGMA, 1.0, 0.0)
}

fn case(name: &'static str, canary: Arm) -> Case {
    Case {
        name,
        share: 0.05,
        stable: stable(),
        canary,
        batch: 100,
    }
}

fn equal_versions() -> Case {
    case("equal versions", stable())
}

fn double_errors() -> Case {
    case(
        "canary 2x errors (2% vs 1%)",
        Arm::new(0.02, MEDIAN_MS, SIGMA, 1.0, 0.0),
    )
}

fn slower_at_p99() -> Case {
    case(
        "canary +30% latency (p99 208 vs 160 ms)",
        Arm::new(STABLE_FAILURE, MEDIAN_MS, SIGMA, 1.3, 0.0),
    )
}

#[derive(Debug, Default)]
struct Summary {
    runs: u64,
    fail: u64,
    pass: u64,
    /// Ended by `conclude` at the request limit.
    concluded: u64,
    /// Runs in which the error test, and the latency test, decided fail.
    errors_failed: u64,
    latency_failed: u64,
    canary_requests: Vec<u64>,
}

impl Summary {
    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.runs as f64
    }

    fn mean_canary_requests(&self) -> f64 {
        self.canary_requests.iter().sum::<u64>() as f64 / self.runs as f64
    }

    fn percentile(&self, q: f64) -> u64 {
        let mut v = self.canary_requests.clone();
        v.sort_unstable();
        v[((v.len() - 1) as f64 * q).round() as usize]
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name:<44} runs {:>6}  fail {:.4} (errors {:.4}, latency {:.4})  pass {:.4}  \
             concluded {:>3}  canary requests: mean {:>6.0}  p50 {:>6}  p90 {:>6}",
            self.runs,
            self.rate(self.fail),
            self.rate(self.errors_failed),
            self.rate(self.latency_failed),
            self.rate(self.pass),
            self.concluded,
            self.mean_canary_requests(),
            self.percentile(0.5),
            self.percentile(0.9),
        )
    }
}

/// At most this many requests per simulated rollout before `conclude` decides.
const MAX_REQUESTS: u64 = 2_000_000;

/// `runs` rollouts of `case`, each a new `Comparison` fed every `case.batch` requests.
fn simulate(settings: Settings, case: &Case, runs: u64, seed: u64) -> Summary {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut summary = Summary {
        runs,
        ..Summary::default()
    };
    for _ in 0..runs {
        let mut c = Comparison::new(settings).unwrap();
        let mut totals = Counts::default();
        let mut sent = 0;
        let decision = loop {
            for _ in 0..case.batch {
                let (model, counts) = if rng.random::<f64>() < case.share {
                    (&case.canary, &mut totals.canary)
                } else {
                    (&case.stable, &mut totals.stable)
                };
                counts.requests += 1;
                counts.failures += u64::from(rng.random::<f64>() < model.failure);
                counts.latency[model.bucket(rng.random::<f64>())] += 1;
            }
            sent += case.batch;
            let d = c.observe(&totals).unwrap();
            if d != Decision::Continue {
                break d;
            }
            if sent >= MAX_REQUESTS {
                summary.concluded += 1;
                break c.conclude();
            }
        };
        match decision {
            Decision::Fail => summary.fail += 1,
            Decision::Pass => summary.pass += 1,
            Decision::Continue => unreachable!("the loop ends on a decision"),
        }
        summary.canary_requests.push(c.decided_at().unwrap());
        let r = c.report();
        let failed =
            |t: Option<&TestReport>| u64::from(t.is_some_and(|t| t.decision == Decision::Fail));
        summary.errors_failed += failed(r.errors.as_ref());
        summary.latency_failed += failed(r.latency.as_ref().map(|l| &l.test));
    }
    summary
}

/// The largest measured rate still consistent with a true rate of `p` over `runs` runs: `p` plus
/// three standard deviations of the estimate (one-sided, a 0.13 % chance for a seed to land above
/// it when the true rate is exactly `p`; the seeds are fixed, so the result never changes).
fn bound(p: f64, runs: u64) -> f64 {
    p + 3.0 * (p * (1.0 - p) / runs as f64).sqrt()
}

/// The SPRT alone on failure labels drawn one by one (each failure from the canary with
/// probability pi): error rates within Wald's, and the average number of failures to a decision
/// within 15 % of Wald's approximation `E[N] = (P(fail) ln A + P(pass) ln B) / E[step]`, which
/// ignores the overshoot (so the measured average is a little above it).
#[test]
fn the_sprt_alone_keeps_its_error_rates_and_wald_average_sample_number() {
    let (alpha, beta) = (0.05, 0.10);
    let bounds = Bounds::wald(alpha, beta);
    let (p0, p1) = (canary_share(5, 95, 1.0), canary_share(5, 95, 2.0));
    let hit = (p1 / p0).ln();
    let miss = ((1.0 - p1) / (1.0 - p0)).ln();
    let runs = 4_000;
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    for (truth, p_fail_wald) in [(p0, alpha), (p1, 1.0 - beta)] {
        let (mut fails, mut steps) = (0u64, 0u64);
        for _ in 0..runs {
            let mut t = Sprt::new(bounds);
            let d = loop {
                steps += 1;
                let from_canary = rng.random::<f64>() < truth;
                let d = t.update(u64::from(from_canary), u64::from(!from_canary), p0, p1);
                if d != Decision::Continue {
                    break d;
                }
            };
            fails += u64::from(d == Decision::Fail);
        }
        let measured = fails as f64 / runs as f64;
        if truth == p0 {
            assert!(measured <= bound(alpha, runs), "false alarm {measured}");
        } else {
            assert!(
                1.0 - measured <= bound(beta, runs),
                "miss {}",
                1.0 - measured
            );
        }
        let drift = truth * hit + (1.0 - truth) * miss;
        let wald = (p_fail_wald * bounds.fail + (1.0 - p_fail_wald) * bounds.pass) / drift;
        let mean = steps as f64 / runs as f64;
        assert!(
            mean >= wald * 0.95 && mean <= wald * 1.15,
            "truth {truth}: mean {mean} failures, Wald {wald}"
        );
    }
}

/// Rollouts per case in `cargo test` (debug build): 600 runs put 3 sd of the false-alarm
/// estimate at 0.027 and of the miss estimate at 0.037; the 10,000-run figures come from the
/// ignored test below.
const QUICK_RUNS: u64 = 600;

#[test]
fn equal_versions_fail_at_most_alpha_of_the_time() {
    let s = simulate(Settings::default(), &equal_versions(), QUICK_RUNS, 1);
    println!("{}", s.line("equal"));
    assert!(
        s.rate(s.fail) <= bound(0.05, QUICK_RUNS),
        "{}",
        s.line("equal")
    );
}

#[test]
fn a_canary_with_twice_the_errors_passes_at_most_beta_of_the_time() {
    let s = simulate(Settings::default(), &double_errors(), QUICK_RUNS, 2);
    println!("{}", s.line("2x"));
    assert!(
        s.rate(s.pass) <= bound(0.10, QUICK_RUNS),
        "{}",
        s.line("2x")
    );
}

#[test]
fn a_canary_thirty_percent_slower_passes_at_most_beta_of_the_time() {
    let s = simulate(Settings::default(), &slower_at_p99(), QUICK_RUNS, 3);
    println!("{}", s.line("+30%"));
    assert!(
        s.rate(s.pass) <= bound(0.10, QUICK_RUNS),
        "{}",
        s.line("+30%")
    );
}

/// The figures of docs/ANALYSIS.md: 10,000 rollouts per case (1,000 for the 0.1 % error rates,
/// ten times longer each). `cargo test --lib compare::tests::ten_thousand -- --ignored
/// --nocapture`: 15 minutes of CPU in a debug build, spread over the cores.
#[test]
#[ignore = "15 minutes of CPU: run it by hand"]
fn ten_thousand_rollouts_per_case_stay_within_alpha_and_beta() {
    const RUNS: u64 = 10_000;
    let d = Settings::default();
    let checked = [
        (equal_versions(), Decision::Fail, 0.05),
        (double_errors(), Decision::Pass, 0.10),
        (slower_at_p99(), Decision::Pass, 0.10),
    ];
    // For the record (no bound to hold): cases between the hypotheses, other shares, batches
    // and settings. (name, settings, case, runs)
    let with_canary = |name, canary| case(name, canary);
    let per_step = Settings { alpha: 0.0125, ..d };
    let lenient = Settings {
        latency: Some(Latency {
            ratios: Ratios {
                margin: 0.5,
                detect: 3.0,
            },
            ..Latency::default()
        }),
        ..d
    };
    let rare = |name, canary_failure| Case {
        stable: Arm::new(0.001, MEDIAN_MS, SIGMA, 1.0, 0.0),
        ..case(name, Arm::new(canary_failure, MEDIAN_MS, SIGMA, 1.0, 0.0))
    };
    let report = [
        (
            d,
            with_canary(
                "canary 1.5x errors",
                Arm::new(0.015, MEDIAN_MS, SIGMA, 1.0, 0.0),
            ),
            RUNS,
        ),
        (
            d,
            with_canary(
                "canary 3x errors",
                Arm::new(0.03, MEDIAN_MS, SIGMA, 1.0, 0.0),
            ),
            RUNS,
        ),
        (
            d,
            with_canary(
                "canary +10% latency",
                Arm::new(0.01, MEDIAN_MS, SIGMA, 1.1, 0.0),
            ),
            RUNS,
        ),
        (
            d,
            with_canary(
                "canary +40 ms latency",
                Arm::new(0.01, MEDIAN_MS, SIGMA, 1.0, 40.0),
            ),
            RUNS,
        ),
        (
            d,
            Case {
                name: "equal versions, batches of 1,000",
                batch: 1000,
                ..equal_versions()
            },
            RUNS,
        ),
        (
            d,
            Case {
                name: "canary 2x errors, batches of 1,000",
                batch: 1000,
                ..double_errors()
            },
            RUNS,
        ),
        (
            d,
            Case {
                name: "equal versions, canary share 25%",
                share: 0.25,
                ..equal_versions()
            },
            RUNS,
        ),
        (
            d,
            Case {
                name: "canary 2x errors, canary share 25%",
                share: 0.25,
                ..double_errors()
            },
            RUNS,
        ),
        (
            per_step,
            Case {
                name: "equal versions, alpha 0.0125",
                ..equal_versions()
            },
            RUNS,
        ),
        (
            per_step,
            Case {
                name: "canary 2x errors, alpha 0.0125",
                ..double_errors()
            },
            RUNS,
        ),
        (
            lenient,
            Case {
                name: "equal versions, latency margin 0.5 detect 3",
                ..equal_versions()
            },
            RUNS,
        ),
        (
            lenient,
            Case {
                name: "+10% latency, latency margin 0.5 detect 3",
                ..with_canary("", Arm::new(0.01, MEDIAN_MS, SIGMA, 1.1, 0.0))
            },
            RUNS,
        ),
        (
            lenient,
            Case {
                name: "+30% latency, latency margin 0.5 detect 3",
                ..slower_at_p99()
            },
            RUNS,
        ),
        (d, rare("equal versions, 0.1% errors", 0.001), RUNS / 10),
        (d, rare("canary 2x errors, 0.2% vs 0.1%", 0.002), RUNS / 10),
    ];
    // Every case on a thread of its own: each has its own seed, so the figures do not depend on
    // the threads.
    let (checked_summaries, report_summaries) = std::thread::scope(|scope| {
        let checked: Vec<_> = checked
            .iter()
            .enumerate()
            .map(|(seed, (case, _, _))| {
                scope.spawn(move || simulate(d, case, RUNS, 100 + seed as u64))
            })
            .collect();
        let report: Vec<_> = report
            .iter()
            .enumerate()
            .map(|(seed, (settings, case, runs))| {
                scope.spawn(move || simulate(*settings, case, *runs, 200 + seed as u64))
            })
            .collect();
        let join = |h: std::thread::ScopedJoinHandle<'_, Summary>| h.join().unwrap();
        (
            checked.into_iter().map(join).collect::<Vec<_>>(),
            report.into_iter().map(join).collect::<Vec<_>>(),
        )
    });
    for ((case, wrong, limit), s) in checked.iter().zip(&checked_summaries) {
        println!("{}", s.line(case.name));
        let measured = if *wrong == Decision::Fail {
            s.fail
        } else {
            s.pass
        };
        assert!(
            s.rate(measured) <= bound(*limit, RUNS),
            "{}",
            s.line(case.name)
        );
    }
    for ((_, case, _), s) in report.iter().zip(&report_summaries) {
        println!("{}", s.line(case.name));
    }
}
