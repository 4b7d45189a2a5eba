//! Where a config came from: the sha256 of its bytes, and the Git commit it was read from when
//! the file lies in a Git work tree, found by reading `.git` directly (no `git` process). A
//! git-sync checkout, where `.git` is a file pointing at a worktree directory, works too.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Input;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    /// Of the config file's bytes.
    pub sha256: String,
    pub git_commit: Option<String>,
    pub loaded_at: SystemTime,
    /// What makes this attempt different from another: the file's sha256 and the content of
    /// what it read besides itself (certificates, policies). Not shown; compared on reload.
    pub identity: String,
    /// What the file read besides itself (known also for a refused file that got that far).
    pub inputs: Vec<Input>,
}

pub use crate::config::{rfc3339, sha256_hex};

/// The commit checked out in the Git work tree that holds `file`, if any. Symlinks are resolved
/// first, so a file reached through git-sync's link is found in the worktree it points to.
pub fn git_commit(file: &Path) -> Option<String> {
    let canonical = fs::canonicalize(file).ok()?;
    for dir in canonical.ancestors().skip(1) {
        let dotgit = dir.join(".git");
        let gitdir = if dotgit.is_dir() {
            dotgit
        } else if dotgit.is_file() {
            let text = fs::read_to_string(&dotgit).ok()?;
            let target = text.trim().strip_prefix("gitdir:")?.trim();
            dir.join(target)
        } else {
            continue;
        };
        return head_commit(&gitdir);
    }
    None
}

fn is_commit(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn head_commit(gitdir: &Path) -> Option<String> {
    let head = fs::read_to_string(gitdir.join("HEAD")).ok()?;
    let head = head.trim();
    if is_commit(head) {
        return Some(head.to_owned());
    }
    let name = head.strip_prefix("ref:")?.trim();
    // A linked worktree keeps its own HEAD but shares refs with the main repository.
    let common: PathBuf = match fs::read_to_string(gitdir.join("commondir")) {
        Ok(rel) => gitdir.join(rel.trim()),
        Err(_) => gitdir.to_path_buf(),
    };
    for base in [gitdir, common.as_path()] {
        if let Ok(text) = fs::read_to_string(base.join(name)) {
            let text = text.trim();
            if is_commit(text) {
                return Some(text.to_owned());
            }
        }
    }
    let packed = fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (commit, refname) = line.split_once(' ')?;
        (refname == name && is_commit(commit)).then(|| commit.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_lower_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn reads_a_branch_a_packed_ref_and_a_worktree_pointer() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let git = repo.join(".git");
        fs::create_dir_all(git.join("refs/heads")).unwrap();
        fs::write(repo.join("weir.yaml"), "x").unwrap();
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(git.join("refs/heads/main"), format!("{a}\n")).unwrap();
        assert_eq!(git_commit(&repo.join("weir.yaml")), Some(a.clone()));

        fs::remove_file(git.join("refs/heads/main")).unwrap();
        fs::write(
            git.join("packed-refs"),
            format!("# pack-refs\n{b} refs/heads/main\n"),
        )
        .unwrap();
        assert_eq!(git_commit(&repo.join("weir.yaml")), Some(b.clone()));

        // git-sync: a worktree whose `.git` is a file naming its gitdir, with a detached HEAD.
        let wt = dir.path().join("worktrees/abc");
        let wt_git = git.join("worktrees/abc");
        fs::create_dir_all(&wt).unwrap();
        fs::create_dir_all(&wt_git).unwrap();
        fs::write(wt.join(".git"), format!("gitdir: {}\n", wt_git.display())).unwrap();
        fs::write(wt_git.join("HEAD"), format!("{a}\n")).unwrap();
        fs::write(wt.join("weir.yaml"), "x").unwrap();
        assert_eq!(git_commit(&wt.join("weir.yaml")), Some(a));

        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("weir.yaml"), "x").unwrap();
        assert_eq!(git_commit(&outside.path().join("weir.yaml")), None);
    }
}
