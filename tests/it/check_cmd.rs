//! `weir check` as CI in a GitOps repository runs it.

use std::process::Command;

fn weir_check(yaml: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr)
        .unwrap()
        .replace(path.to_str().unwrap(), "F");
    let stdout = String::from_utf8(out.stdout)
        .unwrap()
        .replace(path.to_str().unwrap(), "F");
    (out.status.code(), stdout, stderr)
}

#[test]
fn a_valid_file_prints_the_routes_with_weights_and_shares() {
    let yaml = "\
listeners: [{ name: main, address: 127.0.0.1:8080 }]
upstreams:
  - { name: app-stable, endpoints: [127.0.0.1:9001] }
  - { name: app-canary, endpoints: [127.0.0.1:9101] }
routes:
  - name: app
    backends:
      - { upstream: app-stable, weight: 90 }
      - { upstream: app-canary, weight: 10 }
";
    let (code, stdout, _) = weir_check(yaml);
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout,
        "F: valid\n\
         route  backend     weight  share\n\
         app    app-stable      90  90.0%\n\
         \x20      app-canary      10  10.0%\n"
    );
}

#[test]
fn an_invalid_file_exits_one_listing_every_error() {
    let yaml = "\
listeners: [{ name: main, address: 127.0.0.1:8080 }]
upstreams:
  - { name: a, endpoints: [127.0.0.1:9001] }
routes:
  - { name: r, backends: [{ upstream: b, weight: 1 }] }
  - { name: s, backends: [{ upstream: a, weight: 0 }] }
";
    let (code, stdout, stderr) = weir_check(yaml);
    assert_eq!(code, Some(1));
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "F:5:29: routes[0].backends[0].upstream: unknown upstream `b`, expected one of: a\n\
         F:6:16: routes[1].backends: the weights sum to 0: at least one backend needs a positive weight\n\
         F: 2 error(s)\n"
    );
}

#[test]
fn a_missing_file_exits_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", "--config", "/nonexistent/weir.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
}

#[test]
fn a_route_with_a_rollout_says_who_drives_its_weights() {
    let yaml = "\
listeners: [{ name: main, address: 127.0.0.1:8080 }]
upstreams:
  - { name: stable, endpoints: [127.0.0.1:9001] }
  - { name: canary, endpoints: [127.0.0.1:9002] }
routes:
  - name: app
    backends: [{ upstream: stable, weight: 100 }, { upstream: canary, weight: 0 }]
    rollout: { canary: canary, steps: [5, 25, 100], interval: 1m }
";
    let (code, stdout, _) = weir_check(yaml);
    assert_eq!(code, Some(0));
    assert!(
        stdout.ends_with(
            "app: rollout of canary through 5%, 25%, 100%, one check per 60s; weir drives these weights\n"
        ),
        "{stdout}"
    );
}

#[test]
fn routes_whose_file_order_differs_from_gateway_api_precedence_get_a_hint_and_still_pass() {
    let yaml = "\
listeners: [{ name: main, address: 127.0.0.1:8080 }]
upstreams:
  - { name: a, endpoints: [127.0.0.1:9001] }
routes:
  - { name: api, match: { path_prefix: /api }, backends: [{ upstream: a, weight: 1 }] }
  - name: users
    match: { path: { type: Exact, value: /api/users } }
    backends: [{ upstream: a, weight: 1 }]
  - name: posts
    match: { path_prefix: /posts, method: POST }
    backends: [{ upstream: a, weight: 1 }]
  - { name: other, match: { path_prefix: /other }, backends: [{ upstream: a, weight: 1 }] }
";
    let (code, stdout, stderr) = weir_check(yaml);
    assert_eq!(code, Some(0), "{stderr}");
    let hints: Vec<&str> = stdout.lines().filter(|l| l.starts_with("hint: ")).collect();
    // `posts` and `other` have disjoint prefixes: no hint for them.
    assert_eq!(
        hints,
        [
            "hint: routes[0] `api` comes before routes[1] `users` and both can match one request: weir sends it to `api` (the first in file order), Gateway API to `users` (its match ranks higher); move `users` up for Gateway API's choice"
        ]
    );
    // In Gateway API's order there is nothing to say.
    let api =
        "  - { name: api, match: { path_prefix: /api }, backends: [{ upstream: a, weight: 1 }] }\n";
    let reordered = yaml.replacen(api, "", 1) + api;
    let (code, stdout, _) = weir_check(&reordered);
    assert_eq!(code, Some(0));
    assert!(!stdout.contains("hint:"), "{stdout}");
}
