//! Every config error names file, line, column and field path, and says what was expected.
//! One table: each bad snippet with the exact messages it must produce.

use std::path::Path;

const GOOD: &str = "\
listeners:
  - name: main
    address: 127.0.0.1:8080
upstreams:
  - name: stable
    endpoints: [127.0.0.1:9001]
  - name: canary
    endpoints: [127.0.0.1:9101]
routes:
  - name: app
    backends:
      - { upstream: stable, weight: 90 }
      - { upstream: canary, weight: 10 }
";

/// The messages `yaml` produces (empty when it is valid).
fn errors_of(yaml: &str) -> Vec<String> {
    match weir::config::load_str(yaml, "t.yaml", Path::new(".")) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn check(yaml: &str, expected: &[&str]) {
    assert_eq!(errors_of(yaml), expected, "for:\n{yaml}");
}

#[test]
fn the_example_shape_is_valid() {
    check(GOOD, &[]);
}

#[test]
fn shipped_example_configs_are_valid() {
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            if let Err(e) = weir::config::load_file(&path) {
                panic!("{}:\n{e}", path.display());
            }
        }
    }
}

#[test]
fn bad_files_are_refused_with_located_messages() {
    let cases: &[(&str, &[&str])] = &[
        (
            "listeners: [",
            &["t.yaml:1:13: invalid YAML: did not find expected node content"],
        ),
        (
            "",
            &[
                "t.yaml:1:1: the file is empty: expected a mapping with listeners, upstreams and routes",
            ],
        ),
        (
            &GOOD.replace("weight: 10", "weight: -1"),
            &[
                "t.yaml:13:29: routes[0].backends[1].weight: invalid value: integer `-1`, expected u32",
            ],
        ),
        (
            &GOOD.replace("weight: 10", "weight: ten"),
            &[
                "t.yaml:13:29: routes[0].backends[1].weight: invalid type: string \"ten\", expected u32",
            ],
        ),
        (
            &GOOD
                .replace("weight: 90", "weight: 0")
                .replace("weight: 10", "weight: 0"),
            &[
                "t.yaml:11:5: routes[0].backends: the weights sum to 0: at least one backend needs a positive weight",
            ],
        ),
        (
            &GOOD.replace("upstream: canary", "upstream: canry"),
            &[
                "t.yaml:13:11: routes[0].backends[1].upstream: unknown upstream `canry`, expected one of: canary, stable",
            ],
        ),
        (
            &GOOD.replace("    backends:", "    bakends:"),
            &[
                "t.yaml:11:5: routes[0].bakends: unknown field `bakends`, expected one of `name`, `match`, `backends`, `timeout`, `sticky`, `overrides`, `mirror`, `pick`, `retries`, `rollout`, `upgrades`, `grpc`, `filters`, `backend_header`, `session_affinity`",
            ],
        ),
        (
            &(GOOD.to_owned() + "extra: 1\n"),
            &[
                "t.yaml:14:1: extra: unknown field `extra`, expected one of `listeners`, `admin`, `upstreams`, `routes`, `policies`, `limits`, `rollout_state`, `reload`, `fleet`, `access_log`, `tracing`",
            ],
        ),
        (
            &GOOD.replace("address: 127.0.0.1:8080", "address: localhost"),
            &[
                "t.yaml:3:5: listeners[0].address: expected an IP address and port such as 127.0.0.1:8080, found `localhost`",
            ],
        ),
        (
            &GOOD.replace("[127.0.0.1:9101]", "[\"127.0.0.1\"]"),
            &[
                "t.yaml:8:17: upstreams[1].endpoints[0]: expected HOST:PORT such as 127.0.0.1:9001, found `127.0.0.1`",
            ],
        ),
        (
            &GOOD
                .replace("name: canary", "name: stable")
                .replace("upstream: canary", "upstream: stable"),
            &[
                "t.yaml:7:5: upstreams[1]: duplicate upstream `stable`: names must be unique",
                "t.yaml:13:11: routes[0].backends[1]: duplicate backend upstream `stable`: names must be unique",
            ],
        ),
        (
            &(GOOD.to_owned() + "    timeout: soon\n"),
            &[
                "t.yaml:14:5: routes[0].timeout: invalid value: string \"soon\", expected a duration such as 250ms, 15s or 2m",
            ],
        ),
        (
            &(GOOD.to_owned() + "    match: { host: \"exa mple.com\", path_prefix: api }\n"),
            &[
                "t.yaml:14:14: routes[0].match.host: expected a host name such as app.example.com or *.example.com, found `exa mple.com`",
                "t.yaml:14:36: routes[0].match.path_prefix: expected a path starting with `/`, found `api`",
            ],
        ),
        (
            &(GOOD.to_owned() + "limits:\n  max_header_bytes: 100\n"),
            &["t.yaml:15:3: limits.max_header_bytes: expected at least 8192, found 100"],
        ),
        (
            &(GOOD.to_owned() + "    grpc: { failure_codes: [UNAVAILABLE, internal, 17, OK, Busy] }\n"),
            &[
                "t.yaml:14:52: routes[0].grpc.failure_codes[2]: expected a gRPC status code from 1 to 16 or its name (CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED), found `17`",
                "t.yaml:14:56: routes[0].grpc.failure_codes[3]: OK (0) is a success and cannot be a failure code",
                "t.yaml:14:60: routes[0].grpc.failure_codes[4]: expected a gRPC status code from 1 to 16 or its name (CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED), found `Busy`",
            ],
        ),
        (
            &(GOOD.to_owned() + "limits:\n  write_stall_timeout: 0s\n"),
            &["t.yaml:15:3: limits.write_stall_timeout: expected a positive duration"],
        ),
        (
            &(GOOD.to_owned() + "    mirror: { upstream: shadow, percent: 150 }\n"),
            &[
                "t.yaml:14:15: routes[0].mirror.upstream: unknown upstream `shadow`, expected one of: canary, stable",
                "t.yaml:14:33: routes[0].mirror.percent: expected a percentage above 0 and at most 100, found 150",
            ],
        ),
        (
            &(GOOD.to_owned() + "    retries: { attempts: 0, on: [connect, \"418\", 503, timeout] }\n"),
            &[
                "t.yaml:14:16: routes[0].retries.attempts: expected 1 to 5 retries, found 0",
                "t.yaml:14:43: routes[0].retries.on[1]: expected `connect`, `reset` or a 5xx status code such as \"503\", found `418`",
                "t.yaml:14:55: routes[0].retries.on[3]: expected `connect`, `reset` or a 5xx status code such as \"503\", found `timeout`",
            ],
        ),
        (
            &GOOD.replace(
                "endpoints: [127.0.0.1:9101]",
                "endpoints: [127.0.0.1:9101]\n    outlier: { consecutive_failures: 0, ejection: 0s }",
            ),
            &[
                "t.yaml:9:16: upstreams[1].outlier.consecutive_failures: expected at least 1",
                "t.yaml:9:41: upstreams[1].outlier.ejection: expected a positive duration",
            ],
        ),
        (
            &GOOD.replace(
                "endpoints: [127.0.0.1:9101]",
                "endpoints: [127.0.0.1:9101]\n    health_check: { path: healthz, interval: 5ms, timeout: 2s, healthy_threshold: 0, unhealthy_threshold: 0, expected_statuses: [200-99, 700, x], host: \"a b\" }",
            ),
            &[
                "t.yaml:9:21: upstreams[1].health_check.path: `healthz` is not a path: it must start with `/`",
                "t.yaml:9:36: upstreams[1].health_check.interval: must be at least 10ms",
                "t.yaml:9:51: upstreams[1].health_check.timeout: must not exceed the interval (5ms): a check would still run when the next starts",
                "t.yaml:9:64: upstreams[1].health_check.healthy_threshold: must be at least 1",
                "t.yaml:9:86: upstreams[1].health_check.unhealthy_threshold: must be at least 1",
                "t.yaml:9:130: upstreams[1].health_check.expected_statuses[0]: `200-99` is not a status range between 100 and 599",
                "t.yaml:9:138: upstreams[1].health_check.expected_statuses[1]: `700` is not a status code between 100 and 599",
                "t.yaml:9:143: upstreams[1].health_check.expected_statuses[2]: expected a status code such as 200 or a range such as 200-399, found `x`",
                "t.yaml:9:147: upstreams[1].health_check.host: `a b` is not a valid Host",
            ],
        ),
        (
            &GOOD.replace(
                "endpoints: [127.0.0.1:9101]",
                "endpoints: [127.0.0.1:9101]\n    health_check: { path: /healthz, interval: 1s, timeout: 2s, expected_statuses: [] }",
            ),
            &[
                "t.yaml:9:51: upstreams[1].health_check.timeout: must not exceed the interval (1s): a check would still run when the next starts",
                "t.yaml:9:64: upstreams[1].health_check.expected_statuses: expected at least one status code or range",
            ],
        ),
        (
            &GOOD.replace(
                "endpoints: [127.0.0.1:9101]",
                "endpoints: [127.0.0.1:9101]\n    slow_start: { window: 1ms, aggression: 0, min_weight_percent: 0 }",
            ),
            &[
                "t.yaml:9:19: upstreams[1].slow_start.window: must be at least 10ms",
                "t.yaml:9:32: upstreams[1].slow_start.aggression: must be above 0",
                "t.yaml:9:47: upstreams[1].slow_start.min_weight_percent: must be between 1 and 100",
            ],
        ),
        (
            &GOOD.replace(
                "endpoints: [127.0.0.1:9101]",
                "endpoints: [127.0.0.1:9101]\n    health_check: { interval: 1s }",
            ),
            &[
                "t.yaml:9:5: upstreams[1].health_check: missing field `path`",
            ],
        ),
        (
            &(GOOD.to_owned() + "limits: { drain_on_retire: maybe }\n"),
            &[
                "t.yaml:14:11: limits.drain_on_retire: invalid type: string \"maybe\", expected a boolean",
            ],
        ),
        (
            &(GOOD.to_owned()
                + "    rollout: { canary: nowhere, steps: [50, 20, 150], interval: 0s, thresholds: { success_rate: 1.5 }, webhooks: [{ url: \"ftp://x\", on: [done] }] }\n"),
            &[
                "t.yaml:14:16: routes[0].rollout.canary: `nowhere` is not a backend of this route, expected one of: stable, canary",
                "t.yaml:14:45: routes[0].rollout.steps[1]: expected increasing percentages from 0 to 100, found 20",
                "t.yaml:14:49: routes[0].rollout.steps[2]: expected increasing percentages from 0 to 100, found 150",
                "t.yaml:14:55: routes[0].rollout.interval: expected a positive duration",
                "t.yaml:14:83: routes[0].rollout.thresholds.success_rate: expected a fraction from 0 to 1 such as 0.99, found 1.5",
                "t.yaml:14:117: routes[0].rollout.webhooks[0].url: expected an http:// or https:// URL, found `ftp://x`",
                "t.yaml:14:138: routes[0].rollout.webhooks[0].on[0]: unknown event `done`, expected one of: started, step, promoted, rolled_back",
            ],
        ),
        (
            &(GOOD.to_owned()
                + "    rollout: { canary: canary, steps: [10, 100], progress_deadline: 1s, analysis: { source: { prometheus: { url: \"ftp://p\", selector: 'job=\"a\"} or vector(1)' } } } }\n"
                + "fleet: { status: s.json, sync_interval: 0s, git: { branch: \"-x\", author: nobody } }\n"),
            &[
                "t.yaml:14:50: routes[0].rollout.progress_deadline: expected at least one interval",
                "t.yaml:14:109: routes[0].rollout.analysis.source.prometheus.url: expected an http:// or https:// URL, found `ftp://p`",
                "t.yaml:14:125: routes[0].rollout.analysis.source.prometheus.selector: expected label matchers such as job=\"weir\", found `job=\"a\"} or vector(1)`",
                "t.yaml:15:26: fleet.sync_interval: expected a positive duration",
                "t.yaml:15:52: fleet.git.branch: expected a Git branch name, found `-x`",
                "t.yaml:15:66: fleet.git.author: expected `Name <email>`, found `nobody`",
            ],
        ),
        (
            &(GOOD.to_owned()
                + "    rollout: { canary: canary, steps: [10, 100], analysis: { source: { prometheus: { url: \"http://p:9090\" } } } }\n"),
            &[
                "t.yaml:14:72: routes[0].rollout.analysis.source.prometheus: a Prometheus source needs a top-level `fleet` block (weir rollout judges the fleet)",
            ],
        ),
        (
            &(GOOD.replace("weight: 90", "weight: 0")
                + "    rollout: { canary: canary, steps: [10, 100] }\n"),
            &[
                "t.yaml:14:5: routes[0].rollout: a rollout needs another backend with a positive weight to roll back to",
            ],
        ),
        (
            &(GOOD.to_owned() + "    upgrades: [websocket, h2c, \"a b\"]\n"),
            &[
                "t.yaml:14:27: routes[0].upgrades[1]: `h2c` cannot be tunnelled: clients that want HTTP/2 connect with it directly",
                "t.yaml:14:32: routes[0].upgrades[2]: `a b` is not a protocol name (a token such as `websocket`)",
            ],
        ),
        (
            &(GOOD.to_owned() + "limits:\n  max_headers: 4\n"),
            &["t.yaml:15:3: limits.max_headers: expected 8 to 4096, found 4"],
        ),
        (
            &(GOOD.to_owned() + "    sticky: { header: x-user, cookie: session }\n"),
            &[
                "t.yaml:14:5: routes[0].sticky: expected exactly one of `header` or `cookie`, with a name",
            ],
        ),
        (
            &(GOOD.to_owned()
                + "    overrides: [{ match: { header: { x-canary: always } }, upstream: nowhere }]\n"),
            &[
                "t.yaml:14:60: routes[0].overrides[0].upstream: unknown upstream `nowhere`, expected one of: canary, stable",
            ],
        ),
        (
            &GOOD
                .replace("weight: 90", "weight: 900001")
                .replace("weight: 10 }", "weight: 99999 }")
                .replace("    backends:", "    pick: round_robin\n    backends:"),
            &[
                "t.yaml:11:5: routes[0].pick: round_robin needs weights whose sum divided by their greatest common divisor is at most 65536; these give 1000000 (scale them down, e.g. 90/10 rather than 900001/99999)",
            ],
        ),
    ];
    // Every row is checked before failing, so one run shows every mismatch.
    let mismatches: Vec<String> = cases
        .iter()
        .filter(|(yaml, expected)| errors_of(yaml) != *expected)
        .map(|(yaml, expected)| {
            format!("{yaml}\n  want {expected:?}\n  got  {:?}", errors_of(yaml))
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let yaml = "\
listeners:
  - name: main
    address: nowhere
upstreams:
  - name: a
    endpoints: []
  - name: b
    endpoints: [127.0.0.1:1]
    protocl: http2
routes:
  - name: r1
    backends: [{ upstream: a, weight: 0 }]
  - name: r2
    backends: [{ upstream: missing, weight: 1 }]
  - name: r3
    backends: [{ upstream: b, weight: 1 }]
";
    check(
        yaml,
        &[
            "t.yaml:3:5: listeners[0].address: expected an IP address and port such as 127.0.0.1:8080, found `nowhere`",
            "t.yaml:6:5: upstreams[0].endpoints: expected at least one endpoint",
            "t.yaml:9:5: upstreams[1].protocl: unknown field `protocl`, expected one of `name`, `endpoints`, `protocol`, `tls`, `outlier`, `health_check`, `slow_start`",
            "t.yaml:12:5: routes[0].backends: the weights sum to 0: at least one backend needs a positive weight",
            "t.yaml:14:18: routes[1].backends[0].upstream: unknown upstream `missing`, expected one of: a",
        ],
    );
}

#[test]
fn a_missing_file_is_an_error() {
    let err = weir::config::load_file(Path::new("/nonexistent/weir.yaml")).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(
        err.to_string()
            .starts_with("/nonexistent/weir.yaml:1:1: cannot read the config file:"),
        "{err}"
    );
}

#[test]
fn each_error_keeps_its_own_index_whatever_failed_before_it() {
    // routes[0] does not decode (a negative weight); routes[1] is still routes[1], at its line.
    let yaml = GOOD.to_owned()
        + "  - name: second\n    backends:\n      - { upstream: nowhere, weight: 1 }\n";
    check(
        &yaml.replace("weight: 10", "weight: -1"),
        &[
            "t.yaml:13:29: routes[0].backends[1].weight: invalid value: integer `-1`, expected u32",
            "t.yaml:16:11: routes[1].backends[0].upstream: unknown upstream `nowhere`, expected one of: canary, stable",
        ],
    );
    // The same for listeners and upstreams after a broken one.
    let yaml = GOOD
        .replace(
            "  - name: main\n",
            "  - name: broken\n    address: 1\n    extra: 1\n  - name: main\n",
        )
        .replace("address: 127.0.0.1:8080", "address: nowhere");
    check(
        &yaml,
        &[
            "t.yaml:3:5: listeners[0].address: invalid type: integer `1`, expected a string",
            "t.yaml:4:5: listeners[0].extra: unknown field `extra`, expected one of `name`, `address`, `tls`",
            "t.yaml:6:5: listeners[1].address: expected an IP address and port such as 127.0.0.1:8080, found `nowhere`",
        ],
    );
}

#[test]
fn every_decode_error_inside_one_element_is_reported() {
    let yaml = GOOD
        .replace("weight: 90", "weight: ninety")
        .replace("weight: 10", "weight: -1")
        + "    timeout: soon\n    pick: sometimes\n    colour: blue\n";
    check(
        &yaml,
        &[
            "t.yaml:12:29: routes[0].backends[0].weight: invalid type: string \"ninety\", expected u32",
            "t.yaml:13:29: routes[0].backends[1].weight: invalid value: integer `-1`, expected u32",
            "t.yaml:14:5: routes[0].timeout: invalid value: string \"soon\", expected a duration such as 250ms, 15s or 2m",
            "t.yaml:15:5: routes[0].pick: unknown variant `sometimes`, expected `random` or `round_robin`",
            "t.yaml:16:5: routes[0].colour: unknown field `colour`, expected one of `name`, `match`, `backends`, `timeout`, `sticky`, `overrides`, `mirror`, `pick`, `retries`, `rollout`, `upgrades`, `grpc`, `filters`, `backend_header`, `session_affinity`",
        ],
    );
    // A missing required field is reported too, unless a misspelled one explains it.
    check(
        &GOOD.replace("{ upstream: canary, weight: 10 }", "{ upstream: canary }"),
        &["t.yaml:13:11: routes[0].backends[1]: missing field `weight`"],
    );
}

#[test]
fn hostile_nesting_is_refused_with_its_location_before_any_recursive_parse() {
    for levels in [5_000, 20_000] {
        let yaml = "- ".repeat(levels) + "x\n";
        check(
            &yaml,
            &["t.yaml:1:129: the YAML nests deeper than 64 levels; weir refuses it unread"],
        );
    }
    let flow = GOOD.to_owned() + "limits: " + &"[".repeat(200) + &"]".repeat(200) + "\n";
    check(
        &flow,
        &["t.yaml:14:72: the YAML nests deeper than 64 levels; weir refuses it unread"],
    );
}

#[test]
fn a_bad_access_log_section_is_refused_where_it_is_written() {
    check(
        &(GOOD.to_owned() + "access_log:\n  format: xml\n"),
        &["t.yaml:15:3: access_log.format: unknown variant `xml`, expected `json` or `text`"],
    );
    check(
        &(GOOD.to_owned() + "access_log:\n  path: \"\"\n"),
        &[
            "t.yaml:15:3: access_log.path: expected `stderr`, `stdout` or a file path, found an empty string",
        ],
    );
    check(
        &(GOOD.to_owned() + "access_log:\n  path: logs/\n"),
        &["t.yaml:15:3: access_log.path: expected a file path, found the directory `logs/`"],
    );
    check(
        &(GOOD.to_owned() + "access_log:\n  enabled: maybe\n"),
        &["t.yaml:15:3: access_log.enabled: invalid type: string \"maybe\", expected a boolean"],
    );
    check(
        &(GOOD.to_owned() + "access_log:\n  fromat: json\n"),
        &[
            "t.yaml:15:3: access_log.fromat: unknown field `fromat`, expected one of `enabled`, `format`, `path`",
        ],
    );
    for good in [
        "access_log: {}\n",
        "access_log: { enabled: false, path: \"\" }\n",
        "access_log: { format: text, path: stdout }\n",
        "access_log: { path: /var/log/weir/access.log }\n",
    ] {
        check(&(GOOD.to_owned() + good), &[]);
    }
}

#[test]
fn a_bad_tracing_section_is_refused_where_it_is_written() {
    check(
        &(GOOD.to_owned() + "tracing:\n  sampling: 1.5\n"),
        &["t.yaml:15:3: tracing.sampling: expected a share from 0 to 1, found 1.5"],
    );
    check(
        &(GOOD.to_owned() + "tracing:\n  otlp:\n    endpoint: collector:4317\n"),
        &[
            "t.yaml:16:5: tracing.otlp.endpoint: expected an http:// or https:// address with a host, found `collector:4317`",
        ],
    );
    check(
        &(GOOD.to_owned() + "tracing:\n  otlp:\n    endpoint: http://c:4318\n    protocol: http\n"),
        &[
            "t.yaml:17:5: tracing.otlp.protocol: unknown variant `http`, expected `grpc` or `http/protobuf`",
        ],
    );
    for good in [
        "tracing: {}\n",
        "tracing: { sampling: 0.1, otlp: { endpoint: \"http://otel:4317\" } }\n",
        "tracing: { otlp: { endpoint: \"https://otel:4318\", protocol: http/protobuf, timeout: 5s, headers: { x-api-key: k } } }\n",
    ] {
        check(&(GOOD.to_owned() + good), &[]);
    }
}

#[test]
fn bad_comparison_settings_are_refused_with_located_messages() {
    let rollout = |analysis: &str| {
        GOOD.to_owned()
            + &format!(
                "    rollout: {{ canary: canary, steps: [10, 100], analysis: {analysis} }}\n"
            )
    };
    check(&rollout("{ compare: stable }"), &[]);
    check(
        &rollout("{ compare: canary }"),
        &[
            "t.yaml:14:62: routes[0].rollout.analysis.compare: `canary` is the canary: compare it with `stable` (every other backend of the route) or with another backend",
        ],
    );
    check(
        &rollout("{ compare: nowhere }"),
        &[
            "t.yaml:14:62: routes[0].rollout.analysis.compare: `nowhere` is not a backend of this route, expected `stable` or one of: stable",
        ],
    );
    check(
        &rollout("{ miss: 0.2 }"),
        &[
            "t.yaml:14:50: routes[0].rollout.analysis: these settings judge the canary against stable: add `compare: stable` (or the name of the backend to compare with)",
        ],
    );
    check(
        &rollout(
            "{ compare: stable, false_alarm: 0, miss: 1.5, errors: { margin: -1 }, latency: { quantile: 1, tolerance: -0.5, detect: 1 }, decide_within: 0s, max_canary_requests: 0 }",
        ),
        &[
            "t.yaml:14:79: routes[0].rollout.analysis.false_alarm: expected a probability strictly between 0 and 1, found 0",
            "t.yaml:14:95: routes[0].rollout.analysis.miss: expected a probability strictly between 0 and 1, found 1.5",
            "t.yaml:14:116: routes[0].rollout.analysis.errors.margin: expected 0 or more, found -1",
            "t.yaml:14:141: routes[0].rollout.analysis.latency.quantile: expected a probability strictly between 0 and 1, found 1",
            "t.yaml:14:154: routes[0].rollout.analysis.latency.tolerance: expected a fraction of 0 or more (0.3: 30 % slower) or a duration, found -0.5",
            "t.yaml:14:171: routes[0].rollout.analysis.latency.detect: expected a ratio above 1 + margin (1), found 1",
            "t.yaml:14:184: routes[0].rollout.analysis.decide_within: expected a positive duration",
            "t.yaml:14:203: routes[0].rollout.analysis.max_canary_requests: expected at least 1 (leave it out for no limit)",
        ],
    );
    check(
        &rollout("{ compare: stable, errors: { enabled: false }, latency: { enabled: false } }"),
        &[
            "t.yaml:14:50: routes[0].rollout.analysis: both tests are off: enable errors, latency or both",
        ],
    );
    check(
        &rollout("{ compare: stable }").replace("[10, 100]", "[100]"),
        &[
            "t.yaml:14:58: routes[0].rollout.analysis.compare: no step gives the canary a share between 0 and 100 %: there is nothing to compare",
        ],
    );
    // A fleet's rollout is judged by `weir rollout` on Prometheus: no replica compares alone.
    check(
        &(rollout("{ compare: stable, source: { prometheus: { url: \"http://p:9090\" } } }")
            + "fleet: { status: s.json }\n"),
        &[
            "t.yaml:14:62: routes[0].rollout.analysis.compare: the comparison with stable runs in one weir, on the requests it serves; a fleet's rollout (`source.prometheus`) is judged by `weir rollout`: leave `compare` out",
        ],
    );
}

/// The gateway fields of a route (docs/GATEWAY.md): matches, filters, backend filters and
/// session affinity, each error at its field.
#[test]
fn bad_gateway_fields_are_refused_with_located_messages() {
    let before_backends =
        |text: &str| GOOD.replacen("    backends:", &format!("{text}\n    backends:"), 1);
    let cases: &[(String, &[&str])] = &[
        (
            before_backends("    match: { path: { type: Exact, value: /a }, path_prefix: /b }"),
            &["t.yaml:11:14: routes[0].match.path: give either `path` or `path_prefix` (its short form), not both"],
        ),
        (
            before_backends("    match: { method: get }"),
            &["t.yaml:11:14: routes[0].match.method: methods are case-sensitive: `get` is not `GET`"],
        ),
        (
            before_backends("    match: { path: { type: RegularExpression, value: '/v(' } }"),
            &["t.yaml:11:47: routes[0].match.path.value: `/v(` is not a valid regular expression: unclosed group"],
        ),
        (
            before_backends("    match: { path: { type: Fuzzy, value: /a } }"),
            &["t.yaml:11:22: routes[0].match.path.type: unknown variant `Fuzzy`, expected one of `Exact`, `PathPrefix`, `RegularExpression`"],
        ),
        (
            before_backends("    match: { headers: [{ name: 'bad name', value: x }] }"),
            &["t.yaml:11:26: routes[0].match.headers[0].name: `bad name` is not a valid header name"],
        ),
        (
            before_backends("    match: [{ host: a.example }, { query_params: [{ name: a, value: b }, { name: a, value: c }] }]"),
            &["t.yaml:11:76: routes[0].match[1].query_params[1].name: query parameter `a` is matched twice"],
        ),
        (
            before_backends("    match: [{ host: 'bad host!' }]"),
            &["t.yaml:11:15: routes[0].match[0].host: expected a host name such as app.example.com or *.example.com, found `bad host!`"],
        ),
        (
            before_backends("    match: []"),
            &["t.yaml:11:5: routes[0].match: expected at least one match (leave `match` out to match every request)"],
        ),
        (
            before_backends("    match: 5"),
            &["t.yaml:11:5: routes[0].match: invalid type: integer `5`, expected a match (a mapping) or a list of matches"],
        ),
        (
            before_backends("    match: { grpc: {} }"),
            &["t.yaml:11:14: routes[0].match.grpc: a gRPC match needs a service, a method, or both"],
        ),
        (
            before_backends("    match: { grpc: { service: a.B }, path_prefix: /x }"),
            &["t.yaml:11:14: routes[0].match.grpc: a match has either a path or a gRPC method, not both (`path_prefix` is a path)"],
        ),
        (
            before_backends("    filters: { request_headers: { set: [{ name: host, value: x }] } }"),
            &["t.yaml:11:43: routes[0].filters.request_headers.set[0].name: header `host` is weir's to manage and cannot be modified (use a rewrite's `hostname`)"],
        ),
        (
            before_backends("    filters: { response_headers: { remove: [x-b, x-b] } }"),
            &["t.yaml:11:50: routes[0].filters.response_headers.remove[1]: header `x-b` is modified twice in one filter"],
        ),
        (
            before_backends("    filters: { redirect: { scheme: ftp, port: 70000, status_code: 200 } }"),
            &[
                "t.yaml:11:28: routes[0].filters.redirect.scheme: scheme must be `http` or `https`, found `ftp`",
                "t.yaml:11:41: routes[0].filters.redirect.port: port must be between 1 and 65535",
                "t.yaml:11:54: routes[0].filters.redirect.status_code: status code must be 301, 302, 303, 307 or 308, found 200",
            ],
        ),
        (
            before_backends("    filters: { redirect: { path: { replace_full_path: /a, replace_prefix_match: /b } } }"),
            &["t.yaml:11:28: routes[0].filters.redirect.path: expected exactly one of replace_full_path and replace_prefix_match"],
        ),
        (
            before_backends("    filters: { rewrite: { hostname: 'a:80' }, redirect: {} }"),
            &[
                "t.yaml:11:27: routes[0].filters.rewrite.hostname: `a:80` is not a valid hostname (letters, digits, `-` and `.`, no port)",
                "t.yaml:11:47: routes[0].filters.redirect: a redirect and a rewrite cannot be used together",
            ],
        ),
        (
            before_backends("    match: { path: { type: Exact, value: /a } }\n    filters: { rewrite: { path: { replace_prefix_match: /b } } }"),
            &["t.yaml:12:35: routes[0].filters.rewrite.path.replace_prefix_match: replace_prefix_match needs a PathPrefix (`path_prefix`, or a `path` of type PathPrefix) on every match of the route; routes[0].match has none"],
        ),
        (
            GOOD.replace(
                "    backends:\n      - { upstream: stable, weight: 90 }",
                "    match: [{ path: { type: PathPrefix, value: /a/ } }, { method: GET }]\n    backends:\n      - { upstream: stable, weight: 90, filters: { redirect: { path: { replace_prefix_match: /x } } } }",
            ),
            &["t.yaml:13:72: routes[0].backends[0].filters.redirect.path.replace_prefix_match: replace_prefix_match needs a PathPrefix (`path_prefix`, or a `path` of type PathPrefix) on every match of the route; routes[0].match[1] has none"],
        ),
        (
            before_backends("    sticky: { header: x-user }\n    filters: { redirect: { hostname: b.example } }"),
            &["t.yaml:12:16: routes[0].filters.redirect: a route that redirects every request sends none to its backends, so it cannot have sticky"],
        ),
        (
            GOOD.replace(
                "{ upstream: canary, weight: 10 }",
                "{ upstream: canary, weight: 10, filters: { request_headers: { remove: [connection] } } }",
            ),
            &["t.yaml:13:80: routes[0].backends[1].filters.request_headers.remove[0]: header `connection` is weir's to manage and cannot be modified (it describes the connection, not the message)"],
        ),
        (
            before_backends("    session_affinity: {}"),
            &["t.yaml:11:5: routes[0].session_affinity.canary: pin: canary needs a canary: name one, or give the route a rollout"],
        ),
        (
            before_backends("    session_affinity: { canary: nope }"),
            &["t.yaml:11:25: routes[0].session_affinity.canary: `nope` is not a backend of this route, expected one of: stable, canary"],
        ),
        (
            before_backends("    session_affinity: { canary: canary, name: 'a b', max_age: 0s, domain: 'x..y', path: nope, same_site: none }"),
            &[
                "t.yaml:11:41: routes[0].session_affinity.name: `a b` is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)",
                "t.yaml:11:54: routes[0].session_affinity.max_age: max_age must be at least 1s",
                "t.yaml:11:67: routes[0].session_affinity.domain: `x..y` is not a valid cookie domain",
                "t.yaml:11:83: routes[0].session_affinity.path: `nope` is not a valid cookie path: it must start with `/` and hold no `;` or control characters",
                "t.yaml:11:95: routes[0].session_affinity.same_site: same_site: none needs secure: true (browsers drop the cookie otherwise)",
            ],
        ),
        (
            before_backends("    session_affinity: { canary: canary, pin: some }"),
            &["t.yaml:11:41: routes[0].session_affinity.pin: unknown variant `some`, expected `canary` or `all`"],
        ),
        (
            before_backends("    backend_header: yes"),
            &["t.yaml:11:5: routes[0].backend_header: invalid type: string \"yes\", expected a boolean"],
        ),
    ];
    for (yaml, expected) in cases {
        check(yaml, expected);
    }
    // What the rules allow: `path_prefix: /` is a PathPrefix, and each element of a list may
    // give its prefix either way.
    check(
        &before_backends(
            "    match: { path_prefix: / }\n    filters: { rewrite: { path: { replace_prefix_match: /b } } }",
        ),
        &[],
    );
    check(
        &before_backends(
            "    match: [{ path: { type: PathPrefix, value: /a/ } }, { path_prefix: /c, method: GET }]\n    filters: { rewrite: { path: { replace_prefix_match: /b } } }",
        ),
        &[],
    );
}
