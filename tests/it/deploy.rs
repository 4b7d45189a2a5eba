//! What weir ships for deployment, checked from the inside: the configs of the Kubernetes
//! manifests are valid for weir itself (with the files and variables their pods provide), the
//! policy copies match the originals, and the container image's default config serves from
//! outside the container. `deploy/check.sh` checks the manifests themselves (kustomize,
//! Kubernetes schemas, hadolint).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tls::Pki;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The configs under deploy/kubernetes, one per kustomization that ships one.
fn kubernetes_configs() -> Vec<PathBuf> {
    crate::tooling::shipped_configs()
        .into_iter()
        .filter(|p| p.starts_with(root().join("deploy/kubernetes")))
        .collect()
}

#[test]
fn the_policy_copies_for_kustomize_match_config_policies() {
    let copies = root().join("deploy/kubernetes/components/policies");
    let mut compared = 0;
    for entry in std::fs::read_dir(&copies).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rego") {
            let original = root()
                .join("config/policies")
                .join(path.file_name().unwrap());
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                std::fs::read_to_string(&original).unwrap(),
                "{} differs from {}: copy it again",
                path.display(),
                original.display()
            );
            compared += 1;
        }
    }
    assert!(compared >= 4, "{compared}");
}

/// `weir check` on each Kubernetes config, laid out as its pod sees it: the policies beside
/// it (the component merges them into the same ConfigMap), `tls/tls.crt` and `tls/tls.key`
/// from the Secret weir-tls, and WEIR_ADMIN_TOKEN from the Secret weir-admin.
#[test]
fn every_kubernetes_config_passes_weir_check_as_its_pod_sees_it() {
    let configs = kubernetes_configs();
    assert!(configs.len() >= 3, "{configs:?}");
    let pki = Pki::new();
    let leaf = pki.leaf(&["app.example.com"]);
    for config in configs {
        let pod = tempfile::tempdir().unwrap();
        for entry in
            std::fs::read_dir(root().join("deploy/kubernetes/components/policies")).unwrap()
        {
            let path = entry.unwrap().path();
            std::fs::copy(&path, pod.path().join(path.file_name().unwrap())).unwrap();
        }
        std::fs::create_dir(pod.path().join("tls")).unwrap();
        std::fs::write(pod.path().join("tls/tls.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(pod.path().join("tls/tls.key"), &leaf.key_pem).unwrap();
        let file = pod.path().join("weir.yaml");
        std::fs::copy(&config, &file).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["check", "--config"])
            .arg(&file)
            .env("WEIR_ADMIN_TOKEN", "a-token-of-at-least-16-characters")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_image_config_listens_on_every_interface_and_passes_weir_check() {
    let path = root().join("config/container.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        value["listeners"][0]["address"].as_str(),
        Some("0.0.0.0:8080")
    );
    assert_eq!(value["admin"]["address"].as_str(), Some("0.0.0.0:9901"));
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Dockerfile copies this file as the default, and the build context lets it in.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY config/container.yaml /etc/weir/weir.yaml"));
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for needed in [
        "!Cargo.toml",
        "!Cargo.lock",
        "!build.rs",
        "!src/",
        "!config/container.yaml",
        "!LICENSE",
        "!.cargo/",
    ] {
        assert!(ignore.lines().any(|l| l == needed), "{needed}");
    }
}

#[test]
fn the_license_file_matches_cargo_toml() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("license = \"Apache-2.0\""));
    let license = std::fs::read_to_string(root().join("LICENSE")).unwrap();
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
}
