//! One rollout for the whole fleet (docs/FLEET.md). `weir rollout` judges each rollout on
//! fleet-wide metrics from Prometheus and records every decision as a commit to the status file
//! in the config's Git repository; every replica reads that file with its config and serves what
//! it says.
//!
//! This file is the pure core, data in and data out like [`super::Rollouts`]: [`decide`] takes a
//! route's entry in the status, what the controller observed (readiness of the replicas, local
//! fast-fails, the interval's measurement) and the time, and says what [`Change`] to make;
//! [`apply`] makes it on a [`FleetStatus`] (and, for a promotion, on the config's text), or says
//! that the status moved under it (another controller decided first). The same one-rollout
//! state machine (`machine`) judges each measurement. The rest is I/O: `git` (the clone,
//! commits, pushes), `prometheus` (the queries), `promote` (the promotion's edit of the YAML
//! text), `controller` (the loop that reads the clock and carries changes out).

pub mod controller;
pub mod git;
pub mod prometheus;
pub mod promote;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::machine::{Next, Phase, Progress, Verdict, weights};
use crate::config::{
    self, Config, FleetStatus, PrometheusSource, RouteStatus, StatusMeasurement, StatusPhase,
    rfc3339,
};
use crate::metrics::Measurement;

/// One route with a fleet rollout, as the controller sees it in the config.
#[derive(Clone, Debug)]
pub struct FleetRoute {
    pub index: usize,
    pub name: String,
    pub rollout: config::Rollout,
    pub source: PrometheusSource,
    /// The backends' names (their upstreams') and configured weights, in file order.
    pub backends: Vec<(String, u32)>,
}

impl FleetRoute {
    /// The routes of `config` whose rollout is judged on Prometheus.
    pub fn of(config: &Config) -> Vec<FleetRoute> {
        config
            .routes
            .iter()
            .enumerate()
            .filter_map(|(index, r)| {
                let rollout = r.rollout.clone()?;
                let source = rollout.plan.source.clone()?;
                let backends = r
                    .backends
                    .iter()
                    .map(|b| (config.upstreams[b.upstream].name.to_string(), b.weight))
                    .collect();
                Some(FleetRoute {
                    index,
                    name: r.name.to_string(),
                    rollout,
                    source,
                    backends,
                })
            })
            .collect()
    }

    pub fn canary(&self) -> &str {
        &self.backends[self.rollout.canary].0
    }

    /// The PromQL this route's rollout is judged on.
    pub fn queries(&self) -> Queries {
        Queries::new(&self.source.selector, &self.name, self.canary())
    }

    /// The route's weights in `progress`, by backend name.
    fn weights(&self, progress: &Progress, released: bool) -> BTreeMap<String, u32> {
        let configured: Vec<u32> = self.backends.iter().map(|b| b.1).collect();
        let w = if released && progress.phase == Phase::Promoted {
            configured
        } else {
            weights(
                &configured,
                self.rollout.canary,
                progress.canary_weight(&self.rollout.plan),
            )
        };
        self.backends
            .iter()
            .zip(w)
            .map(|((name, _), w)| (name.clone(), w))
            .collect()
    }
}

/// The queries of one route, as `weir check` prints them and the controller sends them. `{W}`
/// in a windowed query stands for the interval in seconds (`30s`), and `{G}` for the
/// generation every replica must serve.
#[derive(Clone, Debug, PartialEq)]
pub struct Queries {
    pub requests: String,
    pub failures: String,
    pub p99: String,
    pub replicas_up: String,
    pub replicas_serving: String,
    pub fast_failed: String,
}

/// A label value as a PromQL string literal.
fn quoted(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Queries {
    pub fn new(selector: &str, route: &str, canary: &str) -> Queries {
        let sel = |more: &str| {
            let mut parts: Vec<String> = Vec::new();
            if !selector.is_empty() {
                parts.push(selector.to_owned());
            }
            if !more.is_empty() {
                parts.push(more.to_owned());
            }
            format!("{{{}}}", parts.join(","))
        };
        let backend = format!("route={},backend={}", quoted(route), quoted(canary));
        let outcomes = crate::metrics::OUTCOMES;
        Queries {
            requests: format!("sum(increase({outcomes}{}[{{W}}]))", sel(&backend)),
            failures: format!(
                "sum(increase({outcomes}{}[{{W}}]))",
                sel(&format!("{backend},outcome=\"failure\""))
            ),
            p99: format!(
                "histogram_quantile(0.99, sum by (le) (increase(weir_request_duration_seconds_bucket{}[{{W}}])))",
                sel(&backend)
            ),
            replicas_up: format!("count(up{} == 1)", sel("")),
            replicas_serving: format!(
                "count({}{} >= {{G}})",
                crate::metrics::STATUS_GENERATION,
                sel("")
            ),
            fast_failed: format!(
                "count(weir_rollout_state{} == 3)",
                sel(&format!("route={}", quoted(route)))
            ),
        }
    }

    /// `query` with its window set to `window` (whole seconds, at least one).
    pub fn windowed(query: &str, window: Duration) -> String {
        query.replace("{W}", &format!("{}s", window.as_secs().max(1)))
    }

    /// `query` with its generation set to `generation`.
    pub fn at_generation(query: &str, generation: u64) -> String {
        query.replace("{G}", &generation.to_string())
    }
}

/// What the controller observed of one route's current step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Every replica that is up serves the route's step (the status generation that set it).
    pub ready: bool,
    /// When the interval began (the first time `ready` was seen for this step).
    pub since: Option<SystemTime>,
    /// Replicas whose own fast-fail rolled the canary back.
    pub fast_failed: u64,
    /// The measurement of an interval that ended, fleet-wide.
    pub measurement: Option<Measurement>,
}

/// A decision to record in the status (and, for a promotion, in the config).
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A rollout the status does not know (a new canary definition): at its first step.
    Start,
    /// An interval's check, on the entry of `generation`.
    Judge {
        generation: u64,
        measurement: Measurement,
    },
    /// Replicas rolled the canary back on their own.
    FastFail { generation: u64, replicas: u64 },
    /// No decision for `progress_deadline`.
    Deadline { generation: u64 },
    /// An operator's command (`weir rollout ACTION ROUTE`).
    Manual(super::Action),
}

/// What [`apply`] made of a change.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The event recorded (`started`, `step`, `failed_check`, `promoted`, `rolled_back`,
    /// `paused`, `resumed`).
    pub event: &'static str,
    /// The commit message's subject and body.
    pub message: String,
    /// The check's verdict, when the change was a check (`passed`, `failed`, `skipped`).
    pub check: Option<&'static str>,
    /// The promotion: the stable's upstream takes the canary's definition.
    pub promote: bool,
}

/// Why a change was not applied.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum NotApplied {
    /// The route's entry changed since the change was decided: decide again.
    #[error("the status moved since the decision")]
    Stale,
    /// Nothing to record (a skipped check, a pause of a paused rollout).
    #[error("nothing to record")]
    Nothing(Option<&'static str>),
    /// An operator's command that does not fit the rollout's state.
    #[error("{0}")]
    Refused(String),
}

/// The route's entry in `status`, when it is about the route's current canary definition.
pub fn entry<'a>(status: &'a FleetStatus, route: &FleetRoute) -> Option<&'a RouteStatus> {
    status
        .routes
        .get(&route.name)
        .filter(|e| e.definition == route.rollout.definition)
}

fn progress_of(e: &RouteStatus) -> Progress {
    Progress {
        phase: match e.phase {
            StatusPhase::Progressing => Phase::Progressing,
            StatusPhase::Promoted => Phase::Promoted,
            StatusPhase::RolledBack => Phase::RolledBack,
        },
        step: e.step,
        failed_checks: e.failed_checks,
    }
}

fn phase_of(p: Phase) -> StatusPhase {
    match p {
        Phase::Progressing => StatusPhase::Progressing,
        Phase::Promoted => StatusPhase::Promoted,
        Phase::RolledBack => StatusPhase::RolledBack,
    }
}

/// The change to make for `route` now, if any. `obs` is what the controller saw of the entry's
/// step; `now` the wall-clock time.
pub fn decide(
    status: &FleetStatus,
    route: &FleetRoute,
    obs: &Observation,
    now: SystemTime,
) -> Option<Change> {
    let Some(e) = entry(status, route) else {
        return Some(Change::Start);
    };
    if e.phase != StatusPhase::Progressing || e.paused {
        return None;
    }
    let generation = e.generation;
    if obs.fast_failed > 0 && obs.ready {
        return Some(Change::FastFail {
            generation,
            replicas: obs.fast_failed,
        });
    }
    if let Some(m) = obs.measurement {
        return Some(Change::Judge {
            generation,
            measurement: m,
        });
    }
    let deadline = route.rollout.plan.progress_deadline?;
    let at = humantime::parse_rfc3339(&e.at).ok()?;
    (now.duration_since(at).unwrap_or_default() >= deadline)
        .then_some(Change::Deadline { generation })
}

/// Makes `change` in `status` for `route` at `now`: the route's entry changes and the file's
/// generation grows by one. `Err(Stale)` when the change was decided on an entry that is no
/// longer there (another controller moved first: decide again).
pub fn apply(
    status: &mut FleetStatus,
    route: &FleetRoute,
    change: &Change,
    now: SystemTime,
) -> Result<Applied, NotApplied> {
    let plan = &route.rollout.plan;
    let current = entry(status, route).cloned();
    let expected = match change {
        Change::Judge { generation, .. }
        | Change::FastFail { generation, .. }
        | Change::Deadline { generation } => Some(*generation),
        Change::Start | Change::Manual(_) => None,
    };
    if let Some(g) = expected
        && current.as_ref().map(|e| e.generation) != Some(g)
    {
        return Err(NotApplied::Stale);
    }
    let mut progress = current.as_ref().map_or_else(Progress::start, progress_of);
    let mut paused = current.as_ref().is_some_and(|e| e.paused);
    let mut measurement = None;
    let mut check = None;
    let (event, reason): (&'static str, String) = match change {
        Change::Start => {
            if current.is_some() {
                return Err(NotApplied::Stale);
            }
            ("started", String::from("a new canary definition"))
        }
        Change::Judge { measurement: m, .. } => {
            if progress.phase != Phase::Progressing || paused {
                return Err(NotApplied::Stale);
            }
            let (verdict, next) = progress.check(plan, m);
            check = Some(verdict.result());
            measurement = Some(StatusMeasurement {
                requests: m.requests,
                failures: m.failures,
                p99_ms: m.p99.map(|d| d.as_secs_f64() * 1e3),
            });
            match (&verdict, next) {
                (Verdict::Skipped(_), _) => return Err(NotApplied::Nothing(check)),
                (Verdict::Failed(reason), Next::Stay) => ("failed_check", reason.clone()),
                (_, next) => {
                    let e = progress
                        .apply(plan, next)
                        .ok_or(NotApplied::Nothing(check))?;
                    (e.kind.name(), e.reason)
                }
            }
        }
        Change::FastFail { replicas, .. } => {
            let reason = format!("fast-fail on {replicas} replica(s)");
            progress.apply(plan, Next::RollBack(reason.clone()));
            ("rolled_back", reason)
        }
        Change::Deadline { .. } => {
            let deadline = plan.progress_deadline.unwrap_or_default();
            let reason = format!(
                "progress deadline: no decision for {}",
                crate::observe::human::duration(deadline)
            );
            progress.apply(plan, Next::RollBack(reason.clone()));
            ("rolled_back", reason)
        }
        Change::Manual(action) => {
            if progress.phase != Phase::Progressing {
                return Err(NotApplied::Refused(format!(
                    "the rollout of route `{}` has ended ({:?})",
                    route.name, progress.phase
                )));
            }
            match action {
                super::Action::Pause if paused => return Err(NotApplied::Nothing(None)),
                super::Action::Resume if !paused => return Err(NotApplied::Nothing(None)),
                super::Action::Pause => {
                    paused = true;
                    ("paused", String::from("paused by an operator"))
                }
                super::Action::Resume => {
                    paused = false;
                    ("resumed", String::from("resumed by an operator"))
                }
                super::Action::Promote => {
                    paused = false;
                    progress.apply(plan, Next::Promote);
                    ("promoted", String::from("promoted by an operator"))
                }
                super::Action::Abort => {
                    paused = false;
                    let reason = String::from("aborted by an operator");
                    progress.apply(plan, Next::RollBack(reason.clone()));
                    ("rolled_back", reason)
                }
            }
        }
    };
    let promote = progress.phase == Phase::Promoted;
    status.generation += 1;
    let canary_weight = progress.canary_weight(plan);
    let weights = route.weights(&progress, promote);
    status.routes.insert(
        route.name.clone(),
        RouteStatus {
            definition: route.rollout.definition.clone(),
            phase: phase_of(progress.phase),
            step: progress.step,
            failed_checks: progress.failed_checks,
            paused,
            released: promote,
            generation: status.generation,
            canary_weight,
            weights,
            event: event.to_owned(),
            reason: reason.clone(),
            at: rfc3339(now),
            measurement,
        },
    );
    let detail = match &status.routes[&route.name].measurement {
        Some(m) => format!(
            "\n\nmeasured: {} canary requests, {} failures, p99 {}",
            m.requests,
            m.failures,
            m.p99_ms.map_or("n/a".to_owned(), |p| format!("{p:.1} ms"))
        ),
        None => String::new(),
    };
    let message = format!(
        "rollout {}: {event}, step {}, canary {}% ({})\n\n{reason}{detail}\n\nstatus generation {}",
        route.name,
        progress.step,
        canary_weight,
        route.canary(),
        status.generation
    );
    Ok(Applied {
        event,
        message,
        check,
        promote,
    })
}

#[cfg(test)]
mod tests;
