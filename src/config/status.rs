//! The fleet's rollout status file (`fleet.status`): the decisions of `weir rollout`, kept in
//! the config's Git repository and read by every replica as part of its config. Pure data: the
//! controller (`rollout::fleet`) writes it, `config::files` reads its bytes with the config, and
//! [`FleetStatus::parse`] turns them into what `Rollouts` follows.
//!
//! It is JSON, one object per route, written with sorted keys and two-space indents so that each
//! decision is a small, reviewable diff.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole status file. `generation` grows by one with every decision the controller commits;
/// each replica exports the generation it serves (`weir_fleet_status_generation`), which is how
/// the controller knows that every replica serves a step before it judges it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetStatus {
    pub generation: u64,
    #[serde(default)]
    pub routes: BTreeMap<String, RouteStatus>,
}

/// Where one route's rollout stands, and the decision that put it there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteStatus {
    /// The canary definition (upstream name and endpoints) this status is about: a config whose
    /// canary differs starts a new rollout, whatever this says.
    pub definition: String,
    pub phase: StatusPhase,
    /// Index into the rollout's `steps`.
    pub step: usize,
    #[serde(default)]
    pub failed_checks: u32,
    /// Held by `weir rollout pause`: no checks, the step's weights stay.
    #[serde(default)]
    pub paused: bool,
    /// Promoted, and the promotion commit made the canary's definition the stable's: replicas
    /// serve the file's own weights (the canary's at 0).
    #[serde(default)]
    pub released: bool,
    /// The file's generation when this route last changed.
    pub generation: u64,
    /// What the decision gave the canary, in percent (for readers; replicas compute weights).
    pub canary_weight: u32,
    /// The route's weights after the decision, by backend (for readers).
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// `started`, `step`, `promoted`, `rolled_back`, `failed_check`, `paused`, `resumed`.
    pub event: String,
    pub reason: String,
    /// RFC 3339, when the decision was made.
    pub at: String,
    /// The measurement the decision was made on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<StatusMeasurement>,
}

/// The fleet-wide measurement behind a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusMeasurement {
    pub requests: u64,
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusPhase {
    Progressing,
    Promoted,
    RolledBack,
}

/// The largest status file weir reads (it holds one small object per route).
pub const MAX_STATUS_BYTES: u64 = 1024 * 1024;

impl FleetStatus {
    /// Parses a status file's bytes; an empty file is an empty status (generation 0).
    pub fn parse(bytes: &[u8]) -> Result<FleetStatus, serde_json::Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(FleetStatus::default());
        }
        serde_json::from_slice(bytes)
    }

    /// The file's bytes: pretty JSON with a final newline, stable field order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a status always serializes");
        bytes.push(b'\n');
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_file_round_trips_and_an_empty_one_is_generation_zero() {
        assert_eq!(FleetStatus::parse(b" \n").unwrap(), FleetStatus::default());
        let mut s = FleetStatus {
            generation: 3,
            ..FleetStatus::default()
        };
        s.routes.insert(
            "app".into(),
            RouteStatus {
                definition: "canary 127.0.0.1:1".into(),
                phase: StatusPhase::Progressing,
                step: 1,
                failed_checks: 0,
                paused: false,
                released: false,
                generation: 3,
                canary_weight: 50,
                weights: [("stable".into(), 50), ("canary".into(), 50)].into(),
                event: "step".into(),
                reason: "the previous step passed its check".into(),
                at: "2026-11-28T22:00:00Z".into(),
                measurement: None,
            },
        );
        assert_eq!(FleetStatus::parse(&s.to_bytes()).unwrap(), s);
        let e = FleetStatus::parse(br#"{"generation": 1, "extra": 2}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
    }
}
