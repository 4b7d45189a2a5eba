//! Names the Git commit weir is built from, for `weir --version` (SPEC.md) and the build info.
//!
//! In order: the `WEIR_GIT_COMMIT` environment variable (a Docker build has no `.git`: the
//! Dockerfile passes its `GIT_COMMIT` build argument through it), then `git rev-parse HEAD` in the
//! source tree, then `unknown` (a source tarball). The build script reruns when HEAD or the branch
//! it points to moves, so a new commit is a new version string.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=WEIR_GIT_COMMIT");
    let from_env = std::env::var("WEIR_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    let commit = match from_env {
        Some(c) => c,
        None => {
            let commit = git(&["rev-parse", "HEAD"]);
            if commit.is_some() {
                // HEAD, the branch it names, packed-refs and refs/heads (where a packed branch's
                // next commit appears as a new file): any of them moving may be a new commit.
                // In a worktree they live in two directories; `--git-path` finds each.
                let mut watched = vec![
                    "HEAD".to_owned(),
                    "packed-refs".to_owned(),
                    "refs/heads".to_owned(),
                ];
                watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
                for name in watched {
                    if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
                        let path = PathBuf::from(path);
                        if path.exists() {
                            println!("cargo:rerun-if-changed={}", path.display());
                        }
                    }
                }
            }
            commit.unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=WEIR_GIT_COMMIT={commit}");
    // Without a rerun-if-changed line cargo would rerun this script on every file change.
    println!("cargo:rerun-if-changed=build.rs");
}
