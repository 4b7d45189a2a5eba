//! Rego policies: each shipped example lets a compliant change through and refuses a violating
//! one, at reload and in `weir check --previous`; a broken policy is refused with its location;
//! a changed policy file is a changed config.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/policies")
        .join(name)
}

/// A config over `stable` and `canary` (canary at `canary_weight` of 100) that runs `policies`.
fn with_policies(policies: &[PathBuf], canary_weight: u32, extra: &str) -> String {
    let listed: Vec<String> = policies
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n\
         upstreams:\n  - {{ name: stable, endpoints: [127.0.0.1:9] }}\n  - {{ name: canary, endpoints: [127.0.0.1:9] }}\n\
         routes:\n  - name: app\n    backends:\n      - {{ upstream: stable, weight: {} }}\n      - {{ upstream: canary, weight: {canary_weight} }}\n{extra}\
         policies: [{}]\n",
        100 - canary_weight,
        listed.join(", ")
    )
}

/// `weir check --config NEW --previous OLD`: exit code and stderr.
fn check(new: &str, previous: Option<&str>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (new_path, old_path) = (dir.path().join("new.yaml"), dir.path().join("old.yaml"));
    std::fs::write(&new_path, new).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(["check", "--config"]).arg(&new_path);
    if let Some(old) = previous {
        std::fs::write(&old_path, old).unwrap();
        cmd.arg("--previous").arg(&old_path);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

/// Starts weir on `old`, then reloads `new`; returns the reload's error text (None: applied).
async fn reload(old: &str, new: &str) -> (Weir, Option<String>) {
    let w = weir(old).await;
    std::fs::write(&w.path, new).unwrap();
    let result = crate::support::reload(&w).await;
    (w, result.err())
}

/// For one shipped policy: `good` passes after `base`, `bad` is refused with `message`, at
/// reload and by `weir check`.
async fn policy_case(base: &str, good: &str, bad: &str, message: &str) {
    let (code, stderr) = check(good, Some(base));
    assert_eq!(code, Some(0), "{stderr}");
    let (_, refused) = reload(base, good).await;
    assert_eq!(refused, None);

    let (code, stderr) = check(bad, Some(base));
    assert_eq!(code, Some(1));
    assert!(stderr.contains(message), "{stderr}");
    let (w, refused) = reload(base, bad).await;
    let refused = refused.expect("the violating change is refused");
    assert!(
        refused.contains(&format!("policies: denied: {message}")),
        "{refused}"
    );
    // The running config stays and says why the change was refused.
    let config = get(&http1_client(), w.admin, "/config").await;
    let config: Value = serde_json::from_slice(&config.body).unwrap();
    assert_eq!(config["last_reload"]["result"], "failure");
    assert!(
        config["last_reload"]["error"]
            .as_str()
            .unwrap()
            .contains(message)
    );
    assert_eq!(
        config["revision"]["sha256"],
        weir::reload::revision::sha256_hex(base.as_bytes()),
        "the running config is still the one before the refused change"
    );
    let failures = metric(&w, "weir_config_reloads_total", &[("result", "failure")]).await;
    assert_eq!(failures, 1.0);
}

#[tokio::test]
async fn weight_step_limits_a_rise_to_twenty_points_per_change() {
    let p = [shipped("weight_step.rego")];
    policy_case(
        &with_policies(&p, 10, ""),
        &with_policies(&p, 30, ""),
        &with_policies(&p, 31, ""),
        "route app: canary would go from 10% to 31% of the traffic, more than 20 points in one change (use a rollout)",
    )
    .await;
    // Lowering the canary is always allowed, and without a previous config nothing is compared.
    assert_eq!(
        check(&with_policies(&p, 0, ""), Some(&with_policies(&p, 50, ""))).0,
        Some(0)
    );
    assert_eq!(check(&with_policies(&p, 90, ""), None).0, Some(0));
}

#[tokio::test]
async fn public_listeners_need_tls() {
    let p = [shipped("public_listeners_tls.rego")];
    let base = with_policies(&p, 10, "");
    policy_case(
        &base,
        &with_policies(&p, 20, ""),
        &base.replace("address: 127.0.0.1:0\nadmin", "address: 0.0.0.0:0\nadmin"),
        "listener main on 0.0.0.0:0 is reachable from the network and has no tls",
    )
    .await;
}

#[tokio::test]
async fn upstreams_need_their_minimum_of_endpoints() {
    // Raised to 2 for the test: weir already refuses an upstream without endpoints.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("upstream_endpoints.rego");
    let text = std::fs::read_to_string(shipped("upstream_endpoints.rego")).unwrap();
    assert!(text.contains("min_endpoints := 1"));
    std::fs::write(
        &policy,
        text.replace("min_endpoints := 1", "min_endpoints := 2"),
    )
    .unwrap();
    let p = [policy];
    let two = |yaml: String| yaml.replace("[127.0.0.1:9]", "[127.0.0.1:9, 127.0.0.2:9]");
    policy_case(
        &two(with_policies(&p, 10, "")),
        &two(with_policies(&p, 20, "")),
        &two(with_policies(&p, 20, "")).replacen("[127.0.0.1:9, 127.0.0.2:9]", "[127.0.0.1:9]", 1),
        "upstream stable has 1 endpoint(s), fewer than 2",
    )
    .await;
}

#[tokio::test]
async fn a_rollout_starts_at_ten_percent_at_most() {
    let p = [shipped("rollout_first_step.rego")];
    let rollout = |first: u32| {
        format!("    rollout: {{ canary: canary, steps: [{first}, 50, 100], interval: 1h }}\n")
    };
    policy_case(
        &with_policies(&p, 10, ""),
        &with_policies(&p, 10, &rollout(10)),
        &with_policies(&p, 10, &rollout(25)),
        "route app: the rollout's first step is 25%, more than 10%",
    )
    .await;
}

#[tokio::test]
async fn the_admin_address_stays_on_loopback() {
    let p = [shipped("admin_loopback.rego")];
    let base = with_policies(&p, 10, "");
    policy_case(
        &base,
        &with_policies(&p, 20, ""),
        &base.replace(
            "admin:\n  address: 127.0.0.1:0",
            "admin:\n  address: 0.0.0.0:0",
        ),
        "the admin address 0.0.0.0:0 is not loopback",
    )
    .await;
}

#[tokio::test]
async fn weir_refuses_to_start_on_a_config_its_policies_deny() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    let p = [shipped("rollout_first_step.rego")];
    std::fs::write(
        &path,
        with_policies(
            &p,
            10,
            "    rollout: { canary: canary, steps: [50, 100] }\n",
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("the rollout's first step is 50%"),
        "{stderr}"
    );
}

#[test]
fn a_broken_policy_is_refused_at_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("broken.rego");
    std::fs::write(
        &policy,
        "package weir\n\nimport rego.v1\n\ndeny contains msg if {\n\tmsg := 1 +\n}\n",
    )
    .unwrap();
    let (code, stderr) = check(&with_policies(std::slice::from_ref(&policy), 10, ""), None);
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with(&format!(
            "{}:6:9: policies[0]: invalid Rego: expecting `}}` while parsing set",
            policy.display()
        )),
        "{stderr}"
    );
    let missing = dir.path().join("missing.rego");
    let (code, stderr) = check(&with_policies(&[missing], 10, ""), None);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("policies[0]: cannot read the policy file"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_changed_policy_file_is_a_changed_config() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("cap.rego");
    let cap = |n: u32| {
        format!(
            "package weir\n\nimport rego.v1\n\ndeny contains msg if {{\n\tsome r in input.config.routes\n\tr.backends[1].weight > {n}\n\tmsg := \"canary over {n}\"\n}}\n"
        )
    };
    std::fs::write(&policy, cap(50)).unwrap();
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let p = [policy.clone()];
    // The poll off: the watcher alone must see both changes.
    let yaml = |w: u32| {
        with_policies(&p, w, "reload: { poll_interval: 0s }\n")
            .replace(
                "stable, endpoints: [127.0.0.1:9]",
                &format!("stable, endpoints: [\"{}\"]", stable.address),
            )
            .replace(
                "canary, endpoints: [127.0.0.1:9]",
                &format!("canary, endpoints: [\"{}\"]", canary.address),
            )
    };
    let w = weir_in(dir, &yaml(10)).await;
    std::fs::write(&w.path, yaml(60)).unwrap();
    // The watcher tries the file and the policy refuses it; the split stays 90/10.
    for _ in 0..200 {
        if w.running.reloader.record().history.len() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = w.running.reloader.record().last().error.clone();
    assert!(
        last.clone()
            .unwrap_or_default()
            .contains("denied: canary over 50"),
        "{last:?}"
    );
    // Loosening the policy alone lets the same file through.
    std::fs::write(&policy, cap(70)).unwrap();
    for _ in 0..200 {
        if w.running.reloader.snapshots.load().routes[0].backends[1].weight == 60 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the loosened policy did not let the change through");
}
