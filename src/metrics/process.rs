//! Metrics that need no request: `weir_build_info{version,commit}` and the process's own
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_threads`, `process_start_time_seconds`: the
//! names every Prometheus client library uses, so stock dashboards and alerts work).
//!
//! The process metrics are read from `/proc/self` when Prometheus scrapes, by a [`Collector`] of
//! our own: the prometheus crate's `process` feature would do the same through the `procfs`
//! crate and its dependencies, for five numbers. On systems without `/proc` they are absent.

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge, IntGaugeVec, Opts, Registry};

/// The Git commit weir was built from: `WEIR_GIT_COMMIT` at build time (set by `build.rs` from
/// Git, or by the Docker build), or `unknown`.
pub const COMMIT: &str = match option_env!("WEIR_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// Registers `weir_build_info` and the process metrics into `registry`.
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    let build = IntGaugeVec::new(
        Opts::new(
            "weir_build_info",
            "Always 1; its labels name the weir version and the Git commit it was built from.",
        ),
        &["version", "commit"],
    )?;
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION"), COMMIT])
        .set(1);
    registry.register(Box::new(build))?;
    registry.register(Box::new(ProcessCollector::new()?))
}

/// Reads `/proc/self` at each scrape.
pub struct ProcessCollector {
    cpu: Counter,
    resident: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    threads: IntGauge,
    start_time: Gauge,
    descs: Vec<Desc>,
    /// A scrape sets the counters from one reading: two scrapes at once must not interleave.
    /// Scrapes only, never the request path.
    reading: Mutex<()>,
}

impl ProcessCollector {
    pub fn new() -> prometheus::Result<ProcessCollector> {
        let cpu = Counter::new(
            "process_cpu_seconds_total",
            "User and system CPU time spent, in seconds.",
        )?;
        let resident = IntGauge::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )?;
        let virtual_memory = IntGauge::new(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )?;
        let open_fds = IntGauge::new("process_open_fds", "Number of open file descriptors.")?;
        let max_fds = IntGauge::new(
            "process_max_fds",
            "Maximum number of open file descriptors (the soft limit).",
        )?;
        let threads = IntGauge::new("process_threads", "Number of OS threads in the process.")?;
        let start_time = Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
        )?;
        let mut descs = Vec::new();
        for c in [
            &cpu as &dyn Collector,
            &resident,
            &virtual_memory,
            &open_fds,
            &max_fds,
            &threads,
            &start_time,
        ] {
            descs.extend(c.desc().into_iter().cloned());
        }
        if let Some(t) = linux::start_time() {
            start_time.set(t);
        }
        Ok(ProcessCollector {
            cpu,
            resident,
            virtual_memory,
            open_fds,
            max_fds,
            threads,
            start_time,
            descs,
            reading: Mutex::new(()),
        })
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stat) = linux::stat() else {
            return Vec::new();
        };
        let mut families = Vec::new();
        let seen = self.cpu.get();
        if stat.cpu_seconds > seen {
            self.cpu.inc_by(stat.cpu_seconds - seen);
        }
        families.extend(self.cpu.collect());
        self.resident.set(stat.resident_bytes as i64);
        families.extend(self.resident.collect());
        self.virtual_memory.set(stat.virtual_bytes as i64);
        families.extend(self.virtual_memory.collect());
        self.threads.set(stat.threads as i64);
        families.extend(self.threads.collect());
        if let Some(n) = linux::open_fds() {
            self.open_fds.set(n as i64);
            families.extend(self.open_fds.collect());
        }
        if let Some(n) = linux::max_fds() {
            self.max_fds.set(n as i64);
            families.extend(self.max_fds.collect());
        }
        if self.start_time.get() > 0.0 {
            families.extend(self.start_time.collect());
        }
        families
    }
}

/// What `/proc/self/stat` says, in units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub cpu_seconds: f64,
    pub virtual_bytes: u64,
    pub resident_bytes: u64,
    pub threads: u64,
    /// Clock ticks after boot.
    pub start_ticks: u64,
}

/// Parses the text of `/proc/PID/stat`; `None` when it is not one. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself, so fields are counted after the
/// last `)`.
pub fn parse_stat(text: &str, ticks_per_second: f64, page_size: u64) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field N of proc(5) is at index N - 3 here (field 3, the state, is first).
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime) = (field(14)?, field(15)?);
    Some(Stat {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page_size),
    })
}

/// Parses `btime` (boot time, Unix seconds) from the text of `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{Stat, parse_boot_time, parse_stat};

    fn ticks_per_second() -> f64 {
        // SAFETY: sysconf only reads a system constant.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 { t as f64 } else { 100.0 }
    }

    fn page_size() -> u64 {
        // SAFETY: sysconf only reads a system constant.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 { p as u64 } else { 4096 }
    }

    pub fn stat() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        parse_stat(&text, ticks_per_second(), page_size())
    }

    pub fn start_time() -> Option<f64> {
        let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
        Some(boot as f64 + stat()?.start_ticks as f64 / ticks_per_second())
    }

    pub fn open_fds() -> Option<usize> {
        // The directory's own descriptor, open while it is read, is counted too, as every client
        // library does.
        Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
    }

    pub fn max_fds() -> Option<u64> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the struct we pass.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        // rlim_t is 64 bits here but 32 on some 32-bit targets.
        #[allow(clippy::unnecessary_cast)]
        (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as u64)
    }
}

#[cfg(not(target_os = "linux"))]
mod linux {
    use super::Stat;
    pub fn stat() -> Option<Stat> {
        None
    }
    pub fn start_time() -> Option<f64> {
        None
    }
    pub fn open_fds() -> Option<usize> {
        None
    }
    pub fn max_fds() -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, TextEncoder};

    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_the_name_parses() {
        // proc(5) fields; the name is "we ir) (x".
        let text = "4242 (we ir) (x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 7 0 \
                    123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let stat = parse_stat(text, 100.0, 4096).unwrap();
        assert_eq!(
            stat,
            Stat {
                cpu_seconds: 3.0,
                virtual_bytes: 104_857_600,
                resident_bytes: 2560 * 4096,
                threads: 7,
                start_ticks: 123_456,
            }
        );
        assert_eq!(parse_stat("no parenthesis", 100.0, 4096), None);
        assert_eq!(parse_stat("1 (x) S 1", 100.0, 4096), None);
    }

    #[test]
    fn boot_time_is_read_from_proc_stat() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1795892137\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_795_892_137));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn build_info_and_process_metrics_are_exported_with_live_values() {
        let registry = Registry::new();
        register(&registry).unwrap();
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .unwrap_or_else(|| panic!("{name} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(text.contains(&format!(
            "weir_build_info{{commit=\"{COMMIT}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 7.0,
            "{started}"
        );
    }
}
