//! The controller's Git: its own clone of the config's repository, brought up to date from the
//! remote, and commits pushed back. `git` runs as a child process through `tokio::process`
//! (never on a runtime worker thread, never through a shell), with no terminal prompt and a
//! deadline; its errors say which command failed and what it printed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The longest one `git` command may take (a fetch or push over a slow link included).
pub const GIT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("git {command} took longer than {GIT_TIMEOUT:?}")]
    Timeout { command: String },
    #[error("git {command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("{0} is not inside a Git work tree")]
    NotARepository(PathBuf),
}

/// What a push came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The remote branch now has the commit.
    Done,
    /// Refused as non-fast-forward: someone pushed first. Fetch, re-read, decide again.
    Rejected,
}

/// A clone the controller owns: `root` is its work tree, `remote` and `branch` what it follows.
#[derive(Clone, Debug)]
pub struct Repo {
    pub root: PathBuf,
    pub remote: String,
    pub branch: String,
    /// `Name <email>` of the controller's commits.
    pub author: String,
}

/// Runs `git ARGS` in `dir`; its standard output, or an error with its standard error.
pub async fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let command = args.join(" ");
    let child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| GitError::Spawn {
            command: command.clone(),
            source,
        })?;
    let out = match tokio::time::timeout(GIT_TIMEOUT, child.wait_with_output()).await {
        Err(_) => return Err(GitError::Timeout { command }),
        Ok(Err(source)) => return Err(GitError::Spawn { command, source }),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        // Both streams: `push --porcelain` says `[rejected]` on its standard output.
        let stderr = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )
        .trim()
        .to_owned();
        Err(GitError::Failed { command, stderr })
    }
}

/// The top of the work tree that holds `dir`.
pub async fn toplevel(dir: &Path) -> Result<PathBuf, GitError> {
    match git(dir, &["rev-parse", "--show-toplevel"]).await {
        Ok(out) => Ok(PathBuf::from(out.trim())),
        Err(_) => Err(GitError::NotARepository(dir.to_path_buf())),
    }
}

impl Repo {
    /// The clone at `workdir`, made from `url` (branch `branch`) when it is not there yet.
    pub async fn clone_into(
        url: &str,
        workdir: &Path,
        remote: &str,
        branch: &str,
        author: &str,
    ) -> Result<Repo, GitError> {
        if !workdir.join(".git").exists() {
            if let Some(parent) = workdir.parent() {
                let _ = tokio::fs::create_dir_all(parent).await;
            }
            let parent = workdir.parent().unwrap_or(Path::new("."));
            let target = workdir.to_string_lossy();
            git(
                parent,
                &[
                    "clone", "--quiet", "--origin", remote, "--branch", branch, "--", url, &target,
                ],
            )
            .await?;
        }
        Ok(Repo {
            root: toplevel(workdir).await?,
            remote: remote.to_owned(),
            branch: branch.to_owned(),
            author: author.to_owned(),
        })
    }

    /// Brings the work tree to the remote branch's newest commit, dropping anything local (a
    /// commit whose push was refused included). The commit it is at.
    pub async fn sync(&self) -> Result<String, GitError> {
        git(
            &self.root,
            &["fetch", "--quiet", &self.remote, &self.branch],
        )
        .await?;
        git(&self.root, &["reset", "--quiet", "--hard", "FETCH_HEAD"]).await?;
        Ok(git(&self.root, &["rev-parse", "HEAD"])
            .await?
            .trim()
            .to_owned())
    }

    /// Commits `files` (already written in the work tree) with `message`, and pushes the commit
    /// to the remote branch. `Rejected` when the remote moved first.
    pub async fn commit_and_push(
        &self,
        files: &[&Path],
        message: &str,
    ) -> Result<Pushed, GitError> {
        let mut add = vec!["add", "--"];
        let names: Vec<String> = files
            .iter()
            .map(|f| f.to_string_lossy().into_owned())
            .collect();
        add.extend(names.iter().map(String::as_str));
        git(&self.root, &add).await?;
        let (name, email) = split_author(&self.author);
        let name_cfg = format!("user.name={name}");
        let email_cfg = format!("user.email={email}");
        git(
            &self.root,
            &[
                "-c",
                &name_cfg,
                "-c",
                &email_cfg,
                "commit",
                "--quiet",
                "--no-verify",
                "-m",
                message,
            ],
        )
        .await?;
        let refspec = format!("HEAD:refs/heads/{}", self.branch);
        match git(&self.root, &["push", "--porcelain", &self.remote, &refspec]).await {
            Ok(_) => Ok(Pushed::Done),
            Err(GitError::Failed { stderr, .. }) if rejected(&stderr) => Ok(Pushed::Rejected),
            Err(e) => Err(e),
        }
    }

    /// The commit subjects of the remote branch as this clone last fetched it, newest first.
    pub async fn subjects(&self) -> Result<Vec<String>, GitError> {
        let out = git(&self.root, &["log", "--format=%s", "FETCH_HEAD"]).await?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

/// A push refused because the remote branch has commits this one lacks.
fn rejected(output: &str) -> bool {
    output.contains("[rejected]")
        || output.contains("Updates were rejected")
        || output.contains("non-fast-forward")
        || output.contains("fetch first")
        || output.contains("[remote rejected]") && output.contains("cannot lock ref")
}

/// `Name <email>` as its two parts.
fn split_author(author: &str) -> (&str, &str) {
    match author.split_once('<') {
        Some((name, rest)) => (name.trim(), rest.trim_end_matches('>').trim()),
        None => (author.trim(), "weir-rollout@localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_push_is_told_from_other_failures() {
        assert!(rejected(
            "To /tmp/r.git\n!\tHEAD:refs/heads/main\t[rejected] (fetch first)\nDone"
        ));
        assert!(rejected("! [rejected] HEAD -> main (non-fast-forward)"));
        assert!(!rejected("fatal: could not read from remote repository"));
        assert_eq!(split_author("weir rollout <w@x>"), ("weir rollout", "w@x"));
    }
}
