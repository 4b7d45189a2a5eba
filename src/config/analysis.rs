//! A rollout's `analysis:` block, as far as it judges the canary against stable
//! (`analysis.compare`, docs/ANALYSIS.md): the schema types that mirror the YAML, the validated
//! [`Compare`], and its validation, one function, called from `validate::rollout`. Like the rest
//! of `config` it is pure and imports nothing above `config`; `rollout::comparing` turns a
//! [`Compare`] into the statistics' own settings.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::diag::Diagnostics;
use super::duration::{DurationSpec, parse_duration};

/// The word `compare:` takes for every backend of the route but the canary, pooled.
pub const COMPARE_STABLE: &str = "stable";

// === schema ===

/// `rollout.analysis`: how the canary is judged besides the thresholds. Without `compare` the
/// comparison is off and the other comparison settings must stay at their defaults.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSpec {
    /// Where the measurements come from: in-process (the default, one instance) or Prometheus
    /// (a fleet, judged by `weir rollout`, docs/FLEET.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
    /// `stable`: judge the canary against every other backend of the route, pooled; or the
    /// upstream name of one backend (a baseline of the stable version started with the canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<String>,
    /// `interval` (default): a step whose comparison passed advances at its interval's end;
    /// `on_evidence`: as soon as the comparison passes.
    #[serde(default)]
    pub advance: Advance,
    /// The chance that a canary as good as stable is rolled back, for the whole rollout: divided
    /// over the steps that compare and over the two tests.
    #[serde(default = "defaults::false_alarm")]
    pub false_alarm: f64,
    /// The chance that a canary `detect` times worse passes a test, per test and step.
    #[serde(default = "defaults::miss")]
    pub miss: f64,
    #[serde(default)]
    pub errors: ErrorsSpec,
    #[serde(default)]
    pub latency: LatencySpec,
    /// Per step: without a decision by then, the comparison decides by the sign of its evidence.
    #[serde(default = "defaults::decide_within")]
    pub decide_within: DurationSpec,
    /// Per step, optional: the same, counted in canary requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_canary_requests: Option<u64>,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            source: None,
            compare: None,
            advance: Advance::default(),
            false_alarm: defaults::false_alarm(),
            miss: defaults::miss(),
            errors: ErrorsSpec::default(),
            latency: LatencySpec::default(),
            decide_within: defaults::decide_within(),
            max_canary_requests: None,
        }
    }
}

/// Where a rollout's measurements come from (`analysis.source`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,
}

/// A Prometheus server that scrapes every replica (docs/FLEET.md has the queries).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSpec {
    /// The server's base URL, such as `http://prometheus:9090`.
    pub url: String,
    /// Label matchers that select this fleet's replicas in every query, such as `job="weir"`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// How long one query may take.
    #[serde(default = "defaults::prometheus_timeout")]
    pub timeout: DurationSpec,
}

/// When a step whose comparison passed advances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Advance {
    /// At the interval's end, with the thresholds' check.
    #[default]
    Interval,
    /// As soon as the comparison passes (the thresholds are checked then, on the interval so far).
    OnEvidence,
}

impl Advance {
    pub fn name(self) -> &'static str {
        match self {
            Advance::Interval => "interval",
            Advance::OnEvidence => "on_evidence",
        }
    }
}

/// The error-rate test: `H0: canary rate <= stable's x (1 + margin)`, `H1: >= stable's x detect`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorsSpec {
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
    #[serde(default)]
    pub margin: f64,
    #[serde(default = "defaults::detect")]
    pub detect: f64,
}

impl Default for ErrorsSpec {
    fn default() -> Self {
        ErrorsSpec {
            enabled: true,
            margin: 0.0,
            detect: defaults::detect(),
        }
    }
}

/// The latency test: the canary's share of requests above stable's `quantile` bucket (moved up
/// by `tolerance`), against stable's share, as the error test compares failures.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
    #[serde(default = "defaults::quantile")]
    pub quantile: f64,
    #[serde(default)]
    pub tolerance: ToleranceSpec,
    #[serde(default)]
    pub margin: f64,
    #[serde(default = "defaults::detect")]
    pub detect: f64,
}

impl Default for LatencySpec {
    fn default() -> Self {
        LatencySpec {
            enabled: true,
            quantile: defaults::quantile(),
            tolerance: ToleranceSpec::default(),
            margin: 0.0,
            detect: defaults::detect(),
        }
    }
}

/// A tolerated slowdown: a fraction of stable's quantile (`0.3`: 30 % slower) or a duration on
/// top of it (`40ms`). Either is rounded down to the latency buckets' bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ToleranceSpec {
    Fraction(f64),
    Duration(DurationSpec),
}

impl Default for ToleranceSpec {
    fn default() -> Self {
        ToleranceSpec::Fraction(0.0)
    }
}

impl Serialize for ToleranceSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ToleranceSpec::Fraction(f) => serializer.serialize_f64(*f),
            ToleranceSpec::Duration(d) => d.serialize(serializer),
        }
    }
}

/// By hand rather than `untagged`, so a bad value says what was expected.
impl<'de> Deserialize<'de> for ToleranceSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ToleranceSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a fraction such as 0.3 (30 % slower) or a duration such as 40ms")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ToleranceSpec, E> {
                Ok(ToleranceSpec::Fraction(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ToleranceSpec, E> {
                Ok(ToleranceSpec::Fraction(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ToleranceSpec, E> {
                Ok(ToleranceSpec::Fraction(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ToleranceSpec, E> {
                parse_duration(v)
                    .map(|d| ToleranceSpec::Duration(DurationSpec(d)))
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl JsonSchema for ToleranceSpec {
    fn schema_name() -> Cow<'static, str> {
        "Tolerance".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A fraction of stable's quantile (0.3: 30 % slower) or a duration on top of it (40ms).",
            "oneOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]+(ms|s|m|h)$" },
            ],
            "examples": [0.3, "40ms"],
        })
    }
}

mod defaults {
    use super::DurationSpec;

    pub fn false_alarm() -> f64 {
        0.05
    }
    pub fn miss() -> f64 {
        0.10
    }
    pub fn detect() -> f64 {
        2.0
    }
    pub fn quantile() -> f64 {
        0.99
    }
    pub fn enabled() -> bool {
        true
    }
    pub fn prometheus_timeout() -> DurationSpec {
        DurationSpec::from_secs(5)
    }
    pub fn decide_within() -> DurationSpec {
        DurationSpec::from_secs(600)
    }
}

// === model ===

/// A validated `analysis` with `compare`: what judges the canary against stable.
#[derive(Clone, Debug, PartialEq)]
pub struct Compare {
    /// The backends (indexes into the route's `backends`) whose requests, pooled, are the
    /// stable arm.
    pub stable: Vec<usize>,
    /// How `compare:` named them: `stable`, or one backend's upstream name.
    pub against: String,
    pub advance: Advance,
    /// For the whole rollout; each comparing step gets `false_alarm / comparing_steps`.
    pub false_alarm: f64,
    pub miss: f64,
    pub errors: Option<Rates>,
    pub latency: Option<Latency>,
    pub decide_within: Duration,
    pub max_canary_requests: Option<u64>,
    /// The steps whose canary share is strictly between 0 and 100 %: the ones that compare.
    pub comparing_steps: usize,
}

impl Compare {
    /// The false-alarm rate of one step's comparison.
    pub fn step_false_alarm(&self) -> f64 {
        self.false_alarm / self.comparing_steps.max(1) as f64
    }
}

/// A step compares when both arms get traffic.
pub fn compares(percent: u32) -> bool {
    percent > 0 && percent < 100
}

/// The two rate ratios a test tells apart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub margin: f64,
    pub detect: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub quantile: f64,
    pub tolerance: ToleranceSpec,
    pub rates: Rates,
}

// === validation ===

/// A route's `rollout.analysis` at `path`; `None` without `compare` or when a field is wrong
/// (each problem recorded). `canary` is the canary's index in `backends`, when it resolved.
pub(super) fn compare(
    diag: &mut Diagnostics,
    spec: &AnalysisSpec,
    path: &str,
    canary: Option<usize>,
    backends: &[Member],
    steps: &[u32],
) -> Option<Compare> {
    let errors_before = diag.errors.len();
    let Some(against) = &spec.compare else {
        let rest = AnalysisSpec {
            compare: None,
            source: None,
            ..spec.clone()
        };
        if rest != AnalysisSpec::default() {
            diag.error(
                path,
                "these settings judge the canary against stable: add `compare: stable` (or the \
                 name of the backend to compare with)",
            );
        }
        return None;
    };
    if spec.source.as_ref().is_some_and(|s| s.prometheus.is_some()) {
        diag.error(
            &format!("{path}.compare"),
            "the comparison with stable runs in one weir, on the requests it serves; a fleet's \
             rollout (`source.prometheus`) is judged by `weir rollout`: leave `compare` out",
        );
    }
    let stable =
        canary.and_then(|c| stable_arm(diag, against, &format!("{path}.compare"), c, backends));
    let comparing_steps = steps.iter().filter(|&&p| compares(p)).count();
    if comparing_steps == 0 && !steps.is_empty() {
        diag.error(
            &format!("{path}.compare"),
            "no step gives the canary a share between 0 and 100 %: there is nothing to compare",
        );
    }
    let mut probability = |v: f64, field: &str| {
        if !(v > 0.0 && v < 1.0) {
            diag.error(
                &format!("{path}.{field}"),
                format!("expected a probability strictly between 0 and 1, found {v}"),
            );
        }
    };
    probability(spec.false_alarm, "false_alarm");
    probability(spec.miss, "miss");
    if spec.latency.enabled {
        probability(spec.latency.quantile, "latency.quantile");
    }
    if spec.false_alarm + spec.miss >= 1.0 && spec.false_alarm > 0.0 && spec.miss > 0.0 {
        diag.error(
            &format!("{path}.miss"),
            format!(
                "false_alarm + miss must be below 1, found {} + {}",
                spec.false_alarm, spec.miss
            ),
        );
    }
    let errors = spec.errors.enabled.then(|| {
        rates(
            diag,
            spec.errors.margin,
            spec.errors.detect,
            &format!("{path}.errors"),
        )
    });
    let latency = spec.latency.enabled.then(|| {
        if let ToleranceSpec::Fraction(t) = spec.latency.tolerance
            && !(t >= 0.0 && t.is_finite())
        {
            diag.error(
                &format!("{path}.latency.tolerance"),
                format!(
                    "expected a fraction of 0 or more (0.3: 30 % slower) or a duration, found {t}"
                ),
            );
        }
        Latency {
            quantile: spec.latency.quantile,
            tolerance: spec.latency.tolerance,
            rates: rates(
                diag,
                spec.latency.margin,
                spec.latency.detect,
                &format!("{path}.latency"),
            ),
        }
    });
    if errors.is_none() && latency.is_none() {
        diag.error(path, "both tests are off: enable errors, latency or both");
    }
    if spec.decide_within.get().is_zero() {
        diag.error(
            &format!("{path}.decide_within"),
            "expected a positive duration",
        );
    }
    if spec.max_canary_requests == Some(0) {
        diag.error(
            &format!("{path}.max_canary_requests"),
            "expected at least 1 (leave it out for no limit)",
        );
    }
    if diag.errors.len() > errors_before {
        return None;
    }
    Some(Compare {
        stable: stable?,
        against: against.clone(),
        advance: spec.advance,
        false_alarm: spec.false_alarm,
        miss: spec.miss,
        errors,
        latency,
        decide_within: spec.decide_within.get(),
        max_canary_requests: spec.max_canary_requests,
        comparing_steps,
    })
}

/// One backend of the route, as the comparison's validation sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Member<'a> {
    /// Its upstream's name.
    pub upstream: &'a str,
    pub weight: u32,
}

/// The backends `compare:` names: every one but the canary for `stable`, else the one backend
/// of that upstream, which must not be the canary and must have a weight.
fn stable_arm(
    diag: &mut Diagnostics,
    against: &str,
    path: &str,
    canary: usize,
    backends: &[Member],
) -> Option<Vec<usize>> {
    let name = |i: usize| backends[i].upstream;
    if against == COMPARE_STABLE {
        return Some((0..backends.len()).filter(|&i| i != canary).collect());
    }
    if against == name(canary) {
        diag.error(
            path,
            format!(
                "`{against}` is the canary: compare it with `stable` (every other backend of \
                 the route) or with another backend"
            ),
        );
        return None;
    }
    match (0..backends.len()).find(|&i| name(i) == against) {
        Some(i) if backends[i].weight == 0 => {
            diag.error(
                path,
                format!(
                    "`{against}` has weight 0 in this route: it gets no traffic to compare with"
                ),
            );
            None
        }
        Some(i) => Some(vec![i]),
        None => {
            let others: Vec<&str> = (0..backends.len())
                .filter(|&i| i != canary)
                .map(name)
                .collect();
            diag.error(
                path,
                format!(
                    "`{against}` is not a backend of this route, expected `stable` or one of: {}",
                    others.join(", ")
                ),
            );
            None
        }
    }
}

/// A test's `margin` and `detect` under `path`.
fn rates(diag: &mut Diagnostics, margin: f64, detect: f64, path: &str) -> Rates {
    if !(margin >= 0.0 && margin.is_finite()) {
        diag.error(
            &format!("{path}.margin"),
            format!("expected 0 or more, found {margin}"),
        );
    } else if !(detect > 1.0 + margin && detect.is_finite()) {
        diag.error(
            &format!("{path}.detect"),
            format!(
                "expected a ratio above 1 + margin ({}), found {detect}",
                1.0 + margin
            ),
        );
    }
    Rates { margin, detect }
}
