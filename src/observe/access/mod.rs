//! The access log: one [`AccessRecord`] per request, handed on the request path to a bounded queue
//! ([`AccessLog::log`], a lock-free `try_send`, dropped and counted when full), formatted and
//! written by a background thread ([`writer`]) as flat JSON or Envoy-like text ([`format`]), to
//! stderr, stdout or a file.
//!
//! Reloading swaps the writer: a config whose `access_log` section changed builds a new
//! [`AccessLog`] (opening the new file then, so a path that cannot be opened is a config error);
//! the old one's thread ends once the last snapshot holding it is gone and its queue is written.
//! An unchanged section keeps the running writer ([`AccessLog::keep_or_start`]).
//!
//! [`ResponseFlags`] say why weir itself answered, or what went wrong around the upstream's
//! answer, in Envoy's short codes (the table is in docs/OPERATIONS.md).

pub mod format;
mod record;
pub mod writer;

use std::sync::Arc;

use prometheus::IntCounter;
use tokio::sync::mpsc;

pub use record::{
    AccessLogCounters, AccessLogError, AccessLogSettings, AccessRecord, Format, Output, QUEUE,
    ResponseFlags,
};

/// A running access log: the queue's sending end. Cheap to share (`Arc`); the writer thread ends
/// when the last `AccessLog` is dropped, after writing what was queued.
pub struct AccessLog {
    settings: AccessLogSettings,
    queue: mpsc::Sender<AccessRecord>,
    dropped_full: IntCounter,
    done: writer::Done,
}

impl AccessLog {
    /// Opens the output and starts the writer thread.
    pub fn start(
        settings: AccessLogSettings,
        counters: AccessLogCounters,
    ) -> Result<AccessLog, AccessLogError> {
        let (queue, records) = mpsc::channel(QUEUE);
        let dropped_full = counters.dropped_full.clone();
        let done = writer::Done::default();
        writer::spawn(&settings, records, counters, done.clone())?;
        Ok(AccessLog {
            settings,
            queue,
            dropped_full,
            done,
        })
    }

    /// The running access log when its settings are unchanged, or a new one (for a reload).
    pub fn keep_or_start(
        running: Option<&Arc<AccessLog>>,
        settings: &AccessLogSettings,
        counters: &AccessLogCounters,
    ) -> Result<Arc<AccessLog>, AccessLogError> {
        match running {
            Some(log) if log.settings == *settings => Ok(log.clone()),
            _ => AccessLog::start(settings.clone(), counters.clone()).map(Arc::new),
        }
    }

    /// Queues a record; never waits. A full queue drops the record and counts it.
    pub fn log(&self, record: AccessRecord) {
        if self.queue.try_send(record).is_err() {
            self.dropped_full.inc();
        }
    }

    pub fn settings(&self) -> &AccessLogSettings {
        &self.settings
    }

    /// What tells when this log's writer has written everything and ended: keep it, drop every
    /// `AccessLog`, then [`writer::Done::wait`] (at exit, so queued lines are not lost).
    pub fn done(&self) -> writer::Done {
        self.done.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::format::tests::record;
    use super::*;

    fn counters() -> AccessLogCounters {
        let c = |name: &str| IntCounter::new(name, "test").unwrap();
        AccessLogCounters {
            written: c("written"),
            dropped_full: c("dropped_full"),
            dropped_write_error: c("dropped_write_error"),
        }
    }

    fn file_settings(path: &std::path::Path, format: Format) -> AccessLogSettings {
        AccessLogSettings {
            format,
            output: Output::File(path.to_path_buf()),
        }
    }

    /// Logs `n` records numbered by `bytes_sent`, then closes the log and waits for its writer.
    fn write(log: AccessLog, n: u64) {
        let done = log.done();
        for i in 0..n {
            let mut r = record();
            r.bytes_sent = i;
            log.log(r);
        }
        drop(log);
        assert!(done.wait(Duration::from_secs(30)), "the writer ended");
    }

    fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn a_json_log_written_to_a_file_reads_back_one_object_per_line_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let c = counters();
        let log = AccessLog::start(file_settings(&path, Format::Json), c.clone()).unwrap();
        write(log, 3_000);
        let got = lines(&path);
        assert_eq!(got.len(), 3_000);
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v["bytes_sent"], i as u64);
            assert_eq!(v["route"], "app");
            assert_eq!(v["duration_ms"], 12.5);
            assert_eq!(v["request_id"], "919108f7-52d1-4320-9bac-f847db4148a8");
            assert!(v["time"].as_str().unwrap().ends_with('Z'));
        }
        assert_eq!(c.written.get(), 3_000);
        assert_eq!(c.dropped_full.get() + c.dropped_write_error.get(), 0);
    }

    #[test]
    fn a_reload_that_keeps_the_settings_keeps_the_writer_and_a_new_path_starts_another() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        let c = counters();
        let running =
            Arc::new(AccessLog::start(file_settings(&a, Format::Json), c.clone()).unwrap());
        let same =
            AccessLog::keep_or_start(Some(&running), &file_settings(&a, Format::Json), &c).unwrap();
        assert!(Arc::ptr_eq(&running, &same));
        let text =
            AccessLog::keep_or_start(Some(&running), &file_settings(&a, Format::Text), &c).unwrap();
        assert!(!Arc::ptr_eq(&running, &text));
        let other =
            AccessLog::keep_or_start(Some(&running), &file_settings(&b, Format::Json), &c).unwrap();
        let done = [running.done(), text.done(), other.done()];
        running.log(record());
        text.log(record());
        other.log(record());
        drop((running, same, text, other));
        assert!(done.iter().all(|d| d.wait(Duration::from_secs(30))));
        let a_text = std::fs::read_to_string(&a).unwrap();
        assert_eq!(a_text.lines().count(), 2, "{a_text}");
        assert!(a_text.lines().any(|l| l.starts_with('{')));
        assert!(a_text.lines().any(|l| l.starts_with('[')));
        assert_eq!(lines(&b).len(), 1);
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("access.log");
        let err = AccessLog::start(file_settings(&path, Format::Json), counters())
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing-dir/access.log"), "{err}");
    }

    #[test]
    fn a_rotated_file_is_reopened_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let rotated = dir.path().join("access.log.1");
        let log = AccessLog::start(file_settings(&path, Format::Json), counters()).unwrap();
        let done = log.done();
        log.log(record());
        // Wait until the line is written, then rotate as logrotate does (rename, no copy).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&path).map_or(0, |m| m.len()) == 0 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::rename(&path, &rotated).unwrap();
        // The writer checks for rotation at most once a second.
        std::thread::sleep(Duration::from_millis(1_100));
        log.log(record());
        drop(log);
        assert!(done.wait(Duration::from_secs(30)));
        assert_eq!(lines(&rotated).len(), 1);
        assert_eq!(
            lines(&path).len(),
            1,
            "the new file at the path got the next line"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        // A log whose writer never reads: the queue fills, then every record is dropped and
        // counted, and `log` returns at once.
        let (queue, _unread) = mpsc::channel(QUEUE);
        let c = counters();
        let log = AccessLog {
            settings: AccessLogSettings::default(),
            queue,
            dropped_full: c.dropped_full.clone(),
            done: writer::Done::default(),
        };
        for _ in 0..QUEUE + 500 {
            log.log(record());
        }
        assert_eq!(c.dropped_full.get(), 500);
    }

    #[test]
    fn response_flags_print_as_envoys_short_codes() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        assert_eq!(ResponseFlags::NO_ROUTE.to_string(), "NR");
        let mut f = ResponseFlags::RETRY_LIMIT_EXCEEDED;
        f.insert(ResponseFlags::UPSTREAM_CONNECT_FAILURE);
        assert_eq!(f.to_string(), "UF,URX");
        assert!(f.contains(ResponseFlags::UPSTREAM_CONNECT_FAILURE));
        let all = ResponseFlags::TABLE
            .iter()
            .fold(ResponseFlags::NONE, |acc, (flag, _)| acc | *flag);
        assert_eq!(all.to_string(), "NR,UH,UF,UT,UR,UPE,URX,DC,DR,DPE,SI");
    }
}
