//! Noticing that the config file changed, however it reached the disk: written in place,
//! renamed over, deleted and recreated, or swapped in through a symlink (a Kubernetes ConfigMap's
//! `..data`, a git-sync worktree link).
//!
//! inotify watches on the file itself die when the file is renamed over, and a symlink swap
//! never names the file, so weir watches directories, non-recursively: the file's parent, the
//! parent of its canonical path, and the directory holding every symlink met on the way to it.
//! That set is recomputed after each change (a swap can move the target elsewhere). Events are not
//! filtered by name; a burst is debounced, the file re-read, and its hash decides whether anything
//! changed. A poll of the hash (every 2 s by default, `reload.poll_interval`) catches filesystems
//! that send no events; it hashes the bytes of the file and of everything the file reads, and
//! parses nothing when they are unchanged.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::handle::{Read, Reloader};
use super::read::attempt_of;

/// Quiet time after the last event before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest a stream of events can delay a read.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);
/// A file that does not parse is read again after this long; only bytes that stay the same are
/// refused, so a write seen half done is not recorded as a bad config.
const SETTLE: Duration = Duration::from_millis(250);
const SETTLE_TRIES: usize = 4;
/// Symlink hops followed when collecting directories to watch.
const MAX_HOPS: usize = 16;

/// Watches `reloader`'s file until `stop` turns true. Without a file (the demo) it returns at once.
pub async fn run(reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
    let Some(path) = reloader.path().map(Path::to_path_buf) else {
        return;
    };
    let (tx, mut events) = mpsc::channel::<()>(1);
    // notify calls back on its own thread; a full channel already means "look again".
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| changes_content(&e.kind)) {
            let _ = tx.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the file watcher; only the poll (reload.poll_interval) and SIGHUP reload");
            None
        }
    };
    let mut watched = BTreeSet::new();
    if let Some(w) = &mut watcher {
        rewatch(w, &mut watched, &path, &reloader);
    }
    // The poll's period comes from the running config (`reload.poll_interval`; off at 0s).
    let next_poll = |reloader: &Reloader| {
        let every = reloader.snapshots.load().config.poll_interval;
        every.map(|d| tokio::time::Instant::now() + d)
    };
    // One look right after the watches are set, even with the poll off: a change made between
    // the initial load and now sent its events to no watch.
    let mut poll_at = Some(tokio::time::Instant::now());
    loop {
        let poll = async {
            match poll_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            Some(()) = events.recv() => {
                // Wait for a quiet moment, but not forever: a file rewritten without pause is
                // still read every MAX_DEBOUNCE.
                let burst = tokio::time::Instant::now();
                while burst.elapsed() < MAX_DEBOUNCE
                    && tokio::time::timeout(DEBOUNCE, events.recv()).await.is_ok_and(|e| e.is_some())
                {}
                if let Some(read) = settled_read(&reloader).await {
                    submit(&reloader, read).await;
                }
                if let Some(w) = &mut watcher {
                    rewatch(w, &mut watched, &path, &reloader);
                }
            }
            _ = poll => {
                // A poll can land in the middle of a write as an event can.
                if let Some(read) = settled_read(&reloader).await {
                    submit(&reloader, read).await;
                }
                if let Some(w) = &mut watcher {
                    rewatch(w, &mut watched, &path, &reloader);
                }
                poll_at = next_poll(&reloader);
            }
        }
    }
}

/// Whether an event can change what the file reads. Opening, reading and closing a file
/// unwritten are not: without this filter any reader of the file (weir itself included) would
/// keep the debounce from ever settling.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Hands a read to the control task; a refusal is logged and recorded there.
async fn submit(reloader: &Reloader, read: Read) {
    let _ = reloader.submit_read(read).await;
}

/// Reads the file unless it is the attempt last made (then `None`); while it does not parse and
/// its bytes keep changing, waits and reads again. Bad bytes are returned (to be refused) only
/// once two reads agree on them.
async fn settled_read(reloader: &Arc<Reloader>) -> Option<Read> {
    let off_runtime = |first: bool| {
        let r = reloader.clone();
        async move {
            let read = move || if first { r.read_if_changed() } else { r.read() };
            tokio::task::spawn_blocking(read)
                .await
                .expect("reading a config file does not panic")
        }
    };
    let mut read = off_runtime(true).await?;
    for _ in 0..SETTLE_TRIES {
        if read.result.is_ok() {
            return Some(read);
        }
        tokio::time::sleep(SETTLE).await;
        let next = off_runtime(false).await?;
        let stable = attempt_of(&next.result) == attempt_of(&read.result);
        read = next;
        if stable {
            return Some(read);
        }
    }
    // Still being written: a refusal now could be of half a file. The writer's next event
    // brings another look.
    read.result.is_ok().then_some(read)
}

/// Makes the watched set equal to [`directories_to_watch`] of `path` and of the files the
/// running config names (certificates, CA files).
fn rewatch(
    watcher: &mut RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    path: &Path,
    reloader: &Reloader,
) {
    let mut wanted = directories_to_watch(path);
    for file in reloader.snapshots.load().config.inputs.iter() {
        if let Some(file) = file.path() {
            wanted.extend(directories_to_watch(file));
        }
    }
    for gone in watched.difference(&wanted) {
        let _ = watcher.unwatch(gone);
    }
    let mut now = BTreeSet::new();
    for dir in wanted {
        if watched.contains(&dir) || watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok() {
            now.insert(dir);
        } else {
            tracing::debug!(dir = %dir.display(), "cannot watch directory");
        }
    }
    *watched = now;
}

/// The directories whose entries decide what `path` reads: its parent, its canonical parent,
/// and the directory of each symlink on the way (following link targets, bounded).
pub fn directories_to_watch(path: &Path) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    if let Some(parent) = absolute.parent() {
        dirs.insert(parent.to_path_buf());
    }
    if let Ok(canonical) = std::fs::canonicalize(&absolute)
        && let Some(parent) = canonical.parent()
    {
        dirs.insert(parent.to_path_buf());
    }
    let mut pending = vec![absolute];
    let mut hops = 0;
    while let Some(p) = pending.pop() {
        let mut prefix = PathBuf::new();
        for component in p.components() {
            match component {
                Component::ParentDir => {
                    prefix.pop();
                    continue;
                }
                Component::CurDir => continue,
                c => prefix.push(c),
            }
            let is_link =
                std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink());
            if !is_link {
                continue;
            }
            let Some(dir) = prefix.parent() else { continue };
            dirs.insert(dir.to_path_buf());
            if hops < MAX_HOPS
                && let Ok(target) = std::fs::read_link(&prefix)
            {
                hops += 1;
                // The rest of the path after this link, appended to the link's target.
                let rest = p.strip_prefix(&prefix).unwrap_or(Path::new(""));
                pending.push(dir.join(target).join(rest));
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_configmap_layout_watches_the_mount_directory() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("..2026_01")).unwrap();
        std::fs::write(root.join("..2026_01/weir.yaml"), "x").unwrap();
        symlink("..2026_01", root.join("..data")).unwrap();
        symlink("..data/weir.yaml", root.join("weir.yaml")).unwrap();
        let dirs = directories_to_watch(&root.join("weir.yaml"));
        assert!(dirs.contains(&root));
        assert!(dirs.contains(&root.join("..2026_01")));
    }

    #[test]
    fn a_git_sync_link_watches_the_directory_holding_the_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join(".worktrees/abc")).unwrap();
        std::fs::write(root.join(".worktrees/abc/weir.yaml"), "x").unwrap();
        symlink(".worktrees/abc", root.join("link")).unwrap();
        let dirs = directories_to_watch(&root.join("link/weir.yaml"));
        assert!(dirs.contains(&root), "{dirs:?}");
        assert!(dirs.contains(&root.join(".worktrees/abc")), "{dirs:?}");
    }
}
