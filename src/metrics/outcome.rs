//! The series a fleet's rollout is judged on, summed over every replica by Prometheus
//! (docs/FLEET.md): each (route, backend)'s outcomes as counters (a success ratio needs
//! failures as a counter, which `weir_requests_total{code}` is not once success is decided by
//! more than the status code), the checks each rollout made, the progress deadlines that
//! expired, and the generation of the fleet's rollout status this replica serves.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// `weir_backend_outcomes_total{route, backend, outcome}`: `success` or `failure`, decided as
/// `weir_backend_success_ratio` decides it.
pub const OUTCOMES: &str = "weir_backend_outcomes_total";
/// `weir_fleet_status_generation`: the generation of the rollout status file served.
pub const STATUS_GENERATION: &str = "weir_fleet_status_generation";

/// The families of this file, registered once with the process's registry.
pub struct RolloutFamilies {
    outcomes: IntCounterVec,
    /// `weir_rollout_checks_total{route, result}` (passed, failed, skipped).
    pub checks: IntCounterVec,
    /// `weir_rollout_deadline_exceeded_total{route}`.
    pub deadline_exceeded: IntCounterVec,
    pub status_generation: IntGauge,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

impl RolloutFamilies {
    pub fn new(r: &Registry) -> RolloutFamilies {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid"),
            )
        };
        RolloutFamilies {
            outcomes: counter(
                OUTCOMES,
                "Requests by route, backend and outcome (success, failure), as the success ratio counts them.",
                &["route", "backend", "outcome"],
            ),
            checks: counter(
                "weir_rollout_checks_total",
                "Rollout checks by route and result (passed, failed, skipped).",
                &["route", "result"],
            ),
            deadline_exceeded: counter(
                "weir_rollout_deadline_exceeded_total",
                "Rollouts rolled back because they made no progress within progress_deadline.",
                &["route"],
            ),
            status_generation: register(
                r,
                IntGauge::new(
                    STATUS_GENERATION,
                    "Generation of the fleet's rollout status file this replica serves (0 without one).",
                )
                .expect("valid"),
            ),
        }
    }

    /// The outcome counters of one (route, backend), resolved once.
    pub fn outcomes(&self, route: &str, backend: &str) -> Outcomes {
        Outcomes {
            success: self
                .outcomes
                .with_label_values(&[route, backend, "success"]),
            failure: self
                .outcomes
                .with_label_values(&[route, backend, "failure"]),
        }
    }

    /// Drops the outcome series of a (route, backend) that left the config.
    pub fn forget(&self, route: &str, backend: &str) {
        for outcome in ["success", "failure"] {
            let _ = self
                .outcomes
                .remove_label_values(&[route, backend, outcome]);
        }
    }
}

/// The pre-resolved outcome counters of one (route, backend): one relaxed add per request.
pub struct Outcomes {
    success: IntCounter,
    failure: IntCounter,
}

impl Outcomes {
    pub fn record(&self, success: bool) {
        if success {
            self.success.inc();
        } else {
            self.failure.inc();
        }
    }
}
