//! The rollout's own series: the checks each rollout made, the progress deadlines that expired,
//! and the generation of the fleet's rollout status this replica serves. The outcomes a fleet's
//! rollout sums over replicas are `weir_responses_total` ([`super::OUTCOMES`]), recorded with
//! the other per-backend handles when a response ends.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// `weir_fleet_status_generation`: the generation of the rollout status file served.
pub const STATUS_GENERATION: &str = "weir_fleet_status_generation";

/// The families of this file, registered once with the process's registry.
pub struct RolloutFamilies {
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
}
