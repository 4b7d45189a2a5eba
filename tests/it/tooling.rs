//! The tooling around the binary: the JSON Schema of the config (committed, generated from the
//! serde types, and every shipped config valid against it), `weir check --format json`, shell
//! completions, the man page and `weir --version`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn weir(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Every config file the project ships: the examples under config/ and those of the
/// Kubernetes overlays.
pub fn shipped_configs() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root().join("config"), root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && std::fs::read_to_string(&path)
                    .unwrap()
                    .contains("# yaml-language-server: $schema=")
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn the_committed_json_schema_is_what_the_config_types_generate() {
    let committed_path = root().join("config/weir.schema.json");
    let generated = weir::config::config_schema();
    if std::env::var_os("WEIR_UPDATE_SCHEMA").is_some() {
        std::fs::write(&committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "config/weir.schema.json is stale: run `WEIR_UPDATE_SCHEMA=1 cargo test --test it \
         tooling::the_committed_json_schema` and commit it"
    );
}

#[test]
fn every_shipped_config_names_the_schema_and_validates_against_it() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("config/weir.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let configs = shipped_configs();
    assert!(configs.len() >= 4, "{configs:?}");
    for path in configs {
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        // The reference is relative to the file, as yaml-language-server resolves it.
        let target = first.trim_start_matches("# yaml-language-server: $schema=");
        let schema_file = path.parent().unwrap().join(target);
        assert!(
            schema_file.canonicalize().ok()
                == root().join("config/weir.schema.json").canonicalize().ok(),
            "{}: the first line must point at config/weir.schema.json, found {first}",
            path.display()
        );
        let value: Value = serde_yaml::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

#[test]
fn the_schema_refuses_what_weir_refuses_at_the_field_level() {
    let schema: Value = serde_json::from_str(&weir::config::config_schema()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let ok = "listeners: [{ name: main, address: 127.0.0.1:8080 }]\n";
    for (bad, why) in [
        ("upstreams: []\n", "listeners is required"),
        (
            "listeners: [{ name: main, address: x }]\nroutse: []\n",
            "an unknown top-level key",
        ),
        (
            "listeners: [{ name: main, address: x, tsl: {} }]\n",
            "an unknown listener key",
        ),
        (
            "listeners: [{ name: main, address: x }]\nlimits: { idle_timeout: 10 days }\n",
            "a duration without a unit weir knows",
        ),
        (
            "listeners: [{ name: main, address: x }]\nroutes: [{ name: r, pick: fastest, backends: [] }]\n",
            "an unknown pick",
        ),
        (
            "listeners: [{ name: main, address: x }]\nadmin: { reads: everyone }\n",
            "an unknown admin.reads",
        ),
    ] {
        let value: Value = serde_yaml::from_str(bad).unwrap();
        assert!(!validator.is_valid(&value), "accepted {why}: {bad}");
    }
    assert!(validator.is_valid(&serde_yaml::from_str::<Value>(ok).unwrap()));
}

fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("weir.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn check_format_json_reports_routes_and_shares_of_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "listeners: [{ name: main, address: 127.0.0.1:8080 }]
upstreams:
  - { name: stable, endpoints: [127.0.0.1:9001] }
  - { name: canary, endpoints: [127.0.0.1:9002] }
routes:
  - name: app
    backends: [{ upstream: stable, weight: 3 }, { upstream: canary, weight: 1 }]
    rollout: { canary: canary, steps: [5, 100] }
",
    );
    let (code, stdout, stderr) = weir(&[
        "check",
        "--format",
        "json",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["stage"], Value::Null);
    assert_eq!(v["errors"], serde_json::json!([]));
    assert_eq!(v["config"], path.to_str().unwrap());
    let app = &v["routes"][0];
    assert_eq!(app["name"], "app");
    assert_eq!(
        app["backends"][0],
        serde_json::json!({ "upstream": "stable", "weight": 3, "share": 0.75 })
    );
    assert_eq!(app["backends"][1]["share"], 0.25);
    assert_eq!(app["rollout"]["steps"], serde_json::json!([5, 100]));
    assert_eq!(app["rollout"]["interval"], "30s", "defaults are filled in");
}

#[test]
fn check_format_json_lists_every_error_with_its_location_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "listeners: [{ name: main, address: 127.0.0.1:8080 }]
upstreams:
  - { name: a, endpoints: [127.0.0.1:9001] }
routes:
  - { name: r, backends: [{ upstream: b, weight: 1 }] }
  - { name: s, backends: [{ upstream: a, weight: 0 }] }
",
    );
    let (code, stdout, _) = weir(&[
        "check",
        "--format",
        "json",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["stage"], "validation");
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v:#}");
    assert_eq!(
        errors[0],
        serde_json::json!({
            "file": path.to_str().unwrap(), "line": 5, "column": 29,
            "path": "routes[0].backends[0].upstream",
            "message": "unknown upstream `b`, expected one of: a",
        })
    );
    assert_eq!(errors[1]["path"], "routes[1].backends");
}

#[test]
fn check_format_json_names_the_policies_stage_for_a_denial() {
    let dir = tempfile::tempdir().unwrap();
    let policy = root().join("config/policies/admin_loopback.rego");
    let path = write_config(
        dir.path(),
        &format!(
            "listeners: [{{ name: main, address: 127.0.0.1:8080 }}]
admin: {{ address: 0.0.0.0:9901 }}
upstreams: [{{ name: a, endpoints: [127.0.0.1:9001] }}]
routes: [{{ name: r, backends: [{{ upstream: a, weight: 1 }}] }}]
policies: [\"{}\"]
",
            policy.display()
        ),
    );
    let (code, stdout, _) = weir(&[
        "check",
        "--format",
        "json",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["stage"], "policies");
    assert!(
        v["errors"][0]["message"].as_str().unwrap().contains(
            "the admin address 0.0.0.0:9901 is not loopback and the admin API has no token"
        ),
        "{v:#}"
    );
}

#[test]
fn version_names_the_git_commit_it_was_built_from() {
    let (code, stdout, _) = weir(&["--version"]);
    assert_eq!(code, Some(0));
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root())
        .output()
        .expect("git is installed");
    let head = String::from_utf8(head.stdout).unwrap();
    let head = head.trim();
    assert_eq!(head.len(), 40, "the tests run in a Git checkout");
    assert_eq!(
        stdout,
        format!("weir {} (commit {head})\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(weir::GIT_COMMIT, head);
}

#[test]
fn bash_completion_completes_subcommands_and_check_flags() {
    let (code, script, _) = weir(&["completions", "bash"]);
    assert_eq!(code, Some(0));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weir.bash");
    std::fs::write(&file, script).unwrap();
    // Load the script into a real bash and ask its completion function, as a shell does on Tab.
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}; \
             _weir weir '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display(),
            words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words.len() - 1,
            line.len(),
            words[words.len() - 1],
            words[words.len().saturating_sub(2)],
        );
        let out = Command::new("bash")
            .args(["--norc", "-c", &program])
            .output()
            .expect("bash is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let subcommands = complete("weir ");
    for s in ["run", "check", "demo", "completions", "man"] {
        assert!(subcommands.lines().any(|l| l == s), "{s} in {subcommands}");
    }
    let flags = complete("weir check --");
    for f in ["--config", "--previous", "--format"] {
        assert!(flags.lines().any(|l| l == f), "{f} in {flags}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (code, script, _) = weir(&["completions", shell]);
        assert_eq!(code, Some(0));
        assert!(script.contains("check"), "{shell}");
    }
}

#[test]
fn the_man_page_renders_with_every_subcommand_and_option() {
    let (code, roff, _) = weir(&["man"]);
    assert_eq!(code, Some(0));
    assert!(roff.contains(".TH weir 1"), "{roff}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weir.1");
    std::fs::write(&file, &roff).unwrap();
    // groff renders it as man does, warning about any malformed request.
    let out = Command::new("groff")
        .args(["-man", "-Tascii", "-P-cbou", "-ww"])
        .arg(&file)
        .output()
        .expect("groff is installed (apt-get install groff-base)");
    let text = String::from_utf8_lossy(&out.stdout);
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && warnings.is_empty(), "{warnings}");
    for expected in [
        "WEIR RUN",
        "WEIR CHECK",
        "WEIR DEMO",
        "WEIR COMPLETIONS",
        "WEIR MAN",
        "--format",
        "--previous",
        "--threads",
        "--upstreams",
        "--duration",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}
