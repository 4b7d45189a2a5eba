//! The access log's writer: a thread of its own (file writes block, and must never block a
//! runtime thread that serves requests) that takes every record waiting in the queue, formats the
//! batch into one buffer and writes it with one `write_all`, so lines from two writers appending
//! to one file during a reload stay whole.
//!
//! A file output is reopened when the file at its path is no longer the one it has open (moved
//! away or deleted by logrotate's default `create` mode), checked at most once a second. The
//! thread ends when every [`super::AccessLog`] holding its queue is gone, after writing the rest.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::record::{
    AccessLogCounters, AccessLogError, AccessLogSettings, AccessRecord, Format, Output,
};

/// The most records written in one batch (and so the largest buffer: about 500 bytes each).
const MAX_BATCH: usize = 1_024;
/// How often a file output checks whether its path was rotated.
const ROTATION_CHECK: Duration = Duration::from_secs(1);
/// At most one warning per this interval while writes fail.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Tells when a writer thread has written everything and ended (for a clean exit).
#[derive(Clone, Default)]
pub struct Done(Arc<(Mutex<bool>, Condvar)>);

impl Done {
    fn set(&self) {
        let (lock, cvar) = &*self.0;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
    }

    /// Waits until the writer ended, at most `timeout`; whether it did. Control plane only (it
    /// blocks): called once at exit, after the last snapshot is gone.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (lock, cvar) = &*self.0;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = cvar
            .wait_timeout_while(guard, timeout, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }
}

pub(super) fn spawn(
    settings: &AccessLogSettings,
    records: mpsc::Receiver<AccessRecord>,
    counters: AccessLogCounters,
    done: Done,
) -> Result<(), AccessLogError> {
    let sink = Sink::open(&settings.output)?;
    let format = settings.format;
    std::thread::Builder::new()
        .name("weir-access-log".into())
        .spawn(move || {
            run(format, sink, records, &counters);
            done.set();
        })
        .map_err(AccessLogError::Thread)?;
    Ok(())
}

fn run(
    format: Format,
    mut sink: Sink,
    mut records: mpsc::Receiver<AccessRecord>,
    counters: &AccessLogCounters,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut last_warning: Option<Instant> = None;
    let mut unreported = 0u64;
    while let Some(first) = records.blocking_recv() {
        // One clock reading per batch turns each record's `Instant` into wall-clock time, so
        // the request path never reads the wall clock.
        let (wall, mono) = (SystemTime::now(), Instant::now());
        let mut next = Some(first);
        let mut lines = 0u64;
        while let Some(record) = next {
            let age = mono.saturating_duration_since(record.started);
            let time = wall.checked_sub(age).unwrap_or(wall);
            super::format::write_line(format, &record, time, &mut buf);
            lines += 1;
            next = if lines < MAX_BATCH as u64 {
                records.try_recv().ok()
            } else {
                None
            };
        }
        match sink.write(&buf) {
            Ok(()) => counters.written.inc_by(lines),
            Err(e) => {
                counters.dropped_write_error.inc_by(lines);
                unreported += lines;
                if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        output = %sink.describe(),
                        error = %e,
                        lines = unreported,
                        "access log lines lost: the write failed"
                    );
                    last_warning = Some(Instant::now());
                    unreported = 0;
                }
            }
        }
        buf.clear();
        if buf.capacity() > 1024 * 1024 {
            buf.shrink_to(64 * 1024);
        }
    }
}

enum Sink {
    Stderr,
    Stdout,
    File {
        path: PathBuf,
        file: File,
        identity: Option<(u64, u64)>,
        checked: Instant,
    },
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Device and inode: what tells that the path now names another file.
fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

impl Sink {
    fn open(output: &Output) -> Result<Sink, AccessLogError> {
        Ok(match output {
            Output::Stderr => Sink::Stderr,
            Output::Stdout => Sink::Stdout,
            Output::File(path) => {
                let open_error = |source| AccessLogError::Open {
                    path: path.clone(),
                    source,
                };
                let file = open_append(path).map_err(open_error)?;
                let identity = file.metadata().ok().as_ref().and_then(identity);
                Sink::File {
                    path: path.clone(),
                    file,
                    identity,
                    checked: Instant::now(),
                }
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            Sink::Stderr => "stderr".into(),
            Sink::Stdout => "stdout".into(),
            Sink::File { path, .. } => path.display().to_string(),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stderr => io::stderr().lock().write_all(buf),
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Sink::File {
                path,
                file,
                identity: id,
                checked,
            } => {
                if checked.elapsed() >= ROTATION_CHECK {
                    *checked = Instant::now();
                    let current = std::fs::metadata(&*path).ok().as_ref().and_then(identity);
                    if current.is_none() || current != *id {
                        // Rotated or deleted: start the file anew at its path. When that fails
                        // (directory gone), keep writing where we were and say so.
                        match open_append(path) {
                            Ok(f) => {
                                *id = f.metadata().ok().as_ref().and_then(identity);
                                *file = f;
                            }
                            Err(e) => tracing::warn!(
                                path = %path.display(),
                                error = %e,
                                "cannot reopen the rotated access log; writing to the old file"
                            ),
                        }
                    }
                }
                file.write_all(buf)
            }
        }
    }
}
