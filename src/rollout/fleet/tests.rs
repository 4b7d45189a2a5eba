//! The fleet core's decisions, without Git or Prometheus: a status, an observation and a time go
//! in; a change and the new status come out.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::rollout::Action;

fn config(rollout: &str) -> Config {
    let yaml = format!(
        "listeners: [{{ name: main, address: 127.0.0.1:0 }}]\nupstreams:\n  - {{ name: stable, endpoints: [127.0.0.1:1] }}\n  - {{ name: canary, endpoints: [127.0.0.1:2] }}\nroutes:\n  - name: app\n    rollout: {{ canary: canary, interval: 30s, min_requests: 5, analysis: {{ source: {{ prometheus: {{ url: \"http://127.0.0.1:9\", selector: 'job=\"weir\"' }} }} }}, {rollout} }}\n    backends: [{{ upstream: stable, weight: 90 }}, {{ upstream: canary, weight: 10 }}]\nfleet: {{ status: status.json }}\n"
    );
    config::load_str(&yaml, "t.yaml", Path::new("/nonexistent")).unwrap()
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn measured(requests: u64, failures: u64) -> Measurement {
    Measurement {
        requests,
        failures,
        p99: Some(Duration::from_millis(3)),
    }
}

/// Runs `changes` through `decide`'s inputs and `apply`, one interval apart; returns the events
/// recorded (`-` for nothing) and the final status.
fn check(rollout: &str, inputs: Vec<Observation>) -> (Vec<String>, FleetStatus) {
    let c = config(rollout);
    let route = &FleetRoute::of(&c)[0];
    let mut status = FleetStatus::default();
    let mut events = Vec::new();
    for (i, obs) in inputs.into_iter().enumerate() {
        let now = at(30 * i as u64);
        let event = match decide(&status, route, &obs, now) {
            None => "-".to_owned(),
            Some(change) => match apply(&mut status, route, &change, now) {
                Ok(a) => a.event.to_owned(),
                Err(e) => format!("({e})"),
            },
        };
        events.push(event);
    }
    (events, status)
}

fn judged(m: Measurement) -> Observation {
    Observation {
        ready: true,
        measurement: Some(m),
        ..Observation::default()
    }
}

#[test]
fn a_healthy_fleet_steps_then_promotes_with_one_generation_per_decision() {
    let (events, status) = check(
        "steps: [20, 100]",
        vec![
            Observation::default(),
            judged(measured(50, 0)),
            judged(measured(2, 0)),
            judged(measured(50, 0)),
        ],
    );
    assert_eq!(
        events,
        ["started", "step", "(nothing to record)", "promoted"]
    );
    let e = &status.routes["app"];
    assert_eq!(status.generation, 3);
    assert_eq!(
        (e.phase, e.step, e.released),
        (StatusPhase::Promoted, 1, true)
    );
    // Promoted and released: the file's weights, whose canary the promotion commit sets to 0.
    assert_eq!(e.weights["stable"], 90);
}

#[test]
fn failed_checks_are_recorded_and_the_last_one_rolls_back() {
    let (events, status) = check(
        "steps: [20, 100], max_failed_checks: 2",
        vec![
            Observation::default(),
            judged(measured(50, 10)),
            judged(measured(50, 10)),
        ],
    );
    assert_eq!(events, ["started", "failed_check", "rolled_back"]);
    assert_eq!(status.routes["app"].canary_weight, 0);
    assert_eq!(status.routes["app"].weights["stable"], 100);
}

#[test]
fn a_replicas_fast_fail_rolls_the_fleet_back_once_it_serves_the_step() {
    let ff = |ready| Observation {
        ready,
        fast_failed: 2,
        ..Observation::default()
    };
    let (events, status) = check(
        "steps: [20, 100]",
        vec![Observation::default(), ff(false), ff(true)],
    );
    assert_eq!(events, ["started", "-", "rolled_back"]);
    assert_eq!(status.routes["app"].reason, "fast-fail on 2 replica(s)");
}

#[test]
fn a_decision_on_a_status_that_moved_is_stale_and_never_steps_twice() {
    let c = config("steps: [20, 50, 100]");
    let route = &FleetRoute::of(&c)[0];
    let mut status = FleetStatus::default();
    apply(&mut status, route, &Change::Start, at(0)).unwrap();
    let generation = status.routes["app"].generation;
    let judge = Change::Judge {
        generation,
        measurement: measured(50, 0),
    };
    // Two controllers judged the same interval: the first commit wins ...
    let mut first = status.clone();
    assert_eq!(
        apply(&mut first, route, &judge, at(30)).unwrap().event,
        "step"
    );
    // ... and the second, re-applied on the fetched status, finds it moved.
    let mut second = first.clone();
    assert_eq!(
        apply(&mut second, route, &judge, at(31)),
        Err(NotApplied::Stale)
    );
    assert_eq!(second, first);
    assert_eq!(first.routes["app"].step, 1);
    // A second start is stale as well.
    assert_eq!(
        apply(&mut first, route, &Change::Start, at(32)),
        Err(NotApplied::Stale)
    );
}

#[test]
fn the_progress_deadline_rolls_back_a_rollout_that_stalls() {
    let (events, status) = check(
        "steps: [20, 100], progress_deadline: 60s",
        vec![
            Observation::default(),
            judged(measured(1, 0)),
            Observation {
                ready: true,
                ..Observation::default()
            },
        ],
    );
    assert_eq!(events, ["started", "(nothing to record)", "rolled_back"]);
    assert!(status.routes["app"].reason.starts_with("progress deadline"));
}

#[test]
fn operators_pause_resume_promote_and_abort() {
    let c = config("steps: [20, 100]");
    let route = &FleetRoute::of(&c)[0];
    let mut status = FleetStatus::default();
    apply(&mut status, route, &Change::Start, at(0)).unwrap();
    let manual = |s: &mut FleetStatus, a| apply(s, route, &Change::Manual(a), at(5));
    assert_eq!(manual(&mut status, Action::Pause).unwrap().event, "paused");
    assert_eq!(
        manual(&mut status, Action::Pause),
        Err(NotApplied::Nothing(None))
    );
    // A paused rollout is not judged.
    assert_eq!(
        decide(&status, route, &judged(measured(50, 0)), at(30)),
        None
    );
    assert_eq!(
        manual(&mut status, Action::Resume).unwrap().event,
        "resumed"
    );
    let mut aborted = status.clone();
    assert_eq!(
        manual(&mut aborted, Action::Abort).unwrap().event,
        "rolled_back"
    );
    assert!(matches!(
        manual(&mut aborted, Action::Promote),
        Err(NotApplied::Refused(_))
    ));
    let promoted = manual(&mut status, Action::Promote).unwrap();
    assert!(promoted.promote);
    assert_eq!(status.routes["app"].reason, "promoted by an operator");
}

#[test]
fn the_queries_sum_over_the_selected_replicas() {
    let c = config("steps: [20, 100]");
    let q = FleetRoute::of(&c)[0].queries();
    assert_eq!(
        Queries::windowed(&q.requests, Duration::from_secs(30)),
        "sum(increase(weir_responses_total{job=\"weir\",route=\"app\",backend=\"canary\"}[30s]))"
    );
    assert_eq!(
        Queries::at_generation(&q.replicas_serving, 7),
        "count(weir_fleet_status_generation{job=\"weir\"} >= 7)"
    );
    assert_eq!(q.replicas_up, "count(up{job=\"weir\"} == 1)");
    assert_eq!(
        Queries::new("", "a\"b", "c").fast_failed,
        "count(weir_rollout_state{route=\"a\\\"b\"} == 3)"
    );
}
