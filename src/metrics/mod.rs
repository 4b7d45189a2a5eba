//! Metrics: the Prometheus families of SPEC.md (names defined here and nowhere else), handles
//! resolved per (route, backend) when a snapshot is built, and the sliding window behind `/stats`
//! and `weir_backend_success_ratio`.
//!
//! Recording a request costs a few atomic operations: the status-code counter is found by index
//! in a table of lazily created handles, the histogram handle is pre-resolved, and no label is
//! formatted on the request path.

pub mod probe;
mod window;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::StatusCode;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use probe::{Measurement, Probe};
pub use window::{LATENCY_BUCKETS_MS, WINDOW_SECS, Window, WindowStats, latency_bucket};

/// The process-wide registry and metric families.
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    weight: IntGaugeVec,
    success_ratio: GaugeVec,
    upstream_errors: IntCounterVec,
    pub reloads: IntCounterVec,
    pub last_reload_success: Gauge,
    pub rollout_state: IntGaugeVec,
    active_connections: IntGaugeVec,
    tls_errors: IntCounterVec,
    client_errors: IntCounterVec,
    mirror_requests: IntCounterVec,
    mirror_duration: HistogramVec,
    mirror_dropped: IntCounterVec,
    retries: IntCounterVec,
    ejections: IntCounterVec,
    ejected: IntGaugeVec,
    /// Start of the window clock: windows count whole seconds since this instant.
    epoch: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid"),
            )
        };
        let buckets: Vec<f64> = LATENCY_BUCKETS_MS.iter().map(|ms| ms / 1e3).collect();
        let histogram = |name: &str, help: &str| {
            register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.clone()),
                    &["route", "backend"],
                )
                .expect("valid"),
            )
        };
        Metrics {
            requests: counter(
                "weir_requests_total",
                "Requests answered, by route, backend and status code.",
                &["route", "backend", "code"],
            ),
            duration: histogram(
                "weir_request_duration_seconds",
                "Time from request to response head, by route and backend.",
            ),
            weight: gauge(
                "weir_backend_weight",
                "Configured or rollout-driven weight of a backend in a route.",
                &["route", "backend"],
            ),
            success_ratio: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "weir_backend_success_ratio",
                        "Share of requests below 500 from the upstream, last 60 s (NaN without requests).",
                    ),
                    &["route", "backend"],
                )
                .expect("valid"),
            ),
            upstream_errors: counter(
                "weir_upstream_errors_total",
                "Upstream failures by backend and kind (connect, timeout, reset, tls).",
                &["backend", "kind"],
            ),
            reloads: counter(
                "weir_config_reloads_total",
                "Config reload attempts by result.",
                &["result"],
            ),
            last_reload_success: register(
                &r,
                Gauge::new(
                    "weir_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last successful config reload.",
                )
                .expect("valid"),
            ),
            rollout_state: gauge(
                "weir_rollout_state",
                "Rollout state per route: 0 idle, 1 progressing, 2 promoted, 3 rolled_back.",
                &["route"],
            ),
            active_connections: gauge(
                "weir_active_connections",
                "Open client connections per listener.",
                &["listener"],
            ),
            tls_errors: counter(
                "weir_tls_handshake_errors_total",
                "TLS handshakes that failed (plaintext, bad hello, aborted) or timed out, per listener.",
                &["listener", "reason"],
            ),
            client_errors: counter(
                "weir_client_errors_total",
                "Requests that failed by the client's fault (framing, body, timeout, closed), per listener; never counted against a backend.",
                &["listener", "kind"],
            ),
            mirror_requests: counter(
                "weir_mirror_requests_total",
                "Shadow copies answered by the mirror upstream (answers discarded), by route, mirror backend and status code.",
                &["route", "backend", "code"],
            ),
            mirror_duration: histogram(
                "weir_mirror_request_duration_seconds",
                "Time from shadow copy to the mirror's response head, by route and mirror backend.",
            ),
            mirror_dropped: counter(
                "weir_mirror_dropped_total",
                "Shadow copies not sent: too many in flight (full) or a body over the limit (body_too_large).",
                &["route", "backend", "reason"],
            ),
            retries: counter(
                "weir_upstream_retries_total",
                "Tries after the first, by backend; result budget_exhausted counts retries the budget refused.",
                &["backend", "result"],
            ),
            ejections: counter(
                "weir_outlier_ejections_total",
                "Times an endpoint was ejected after consecutive failures.",
                &["backend", "endpoint"],
            ),
            ejected: gauge(
                "weir_outlier_ejected",
                "1 while an endpoint is ejected, else 0 (cleared when the next pick finds its ejection over).",
                &["backend", "endpoint"],
            ),
            registry: r,
            epoch: Instant::now(),
        }
    }

    /// Whole seconds since the window clock started, at `at`.
    pub fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_secs()
    }

    pub fn now_second(&self) -> u64 {
        self.second(Instant::now())
    }

    /// Resolves the handles of one (route, backend).
    pub fn backend(&self, route: &str, backend: &str) -> BackendMetrics {
        BackendMetrics {
            answers: Answers::new(&self.requests, &self.duration, route, backend),
            weight: self.weight.with_label_values(&[route, backend]),
            window: Window::default(),
        }
    }

    /// Resolves the handles of a route's mirror backend.
    pub fn mirror(&self, route: &str, backend: &str) -> MirrorMetrics {
        let dropped = |reason: &str| {
            self.mirror_dropped
                .with_label_values(&[route, backend, reason])
        };
        MirrorMetrics {
            answers: Answers::new(&self.mirror_requests, &self.mirror_duration, route, backend),
            full: dropped("full"),
            too_large: dropped("body_too_large"),
        }
    }

    /// Resolves the counters of one upstream and of each of its endpoints.
    pub fn upstream<'a>(
        &self,
        upstream: &str,
        endpoints: impl Iterator<Item = &'a str>,
    ) -> UpstreamMetrics {
        let kind = |k: &str| self.upstream_errors.with_label_values(&[upstream, k]);
        UpstreamMetrics {
            connect: kind("connect"),
            timeout: kind("timeout"),
            reset: kind("reset"),
            tls: kind("tls"),
            retried: self.retries.with_label_values(&[upstream, "retried"]),
            budget_exhausted: self
                .retries
                .with_label_values(&[upstream, "budget_exhausted"]),
            endpoints: endpoints
                .map(|e| EndpointMetrics {
                    ejections: self.ejections.with_label_values(&[upstream, e]),
                    ejected: self.ejected.with_label_values(&[upstream, e]),
                })
                .collect(),
        }
    }

    pub fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            active: self.active_connections.with_label_values(&[name]),
            tls_failed: self.tls_errors.with_label_values(&[name, "failed"]),
            tls_timeout: self.tls_errors.with_label_values(&[name, "timeout"]),
            client_errors: ClientErrors {
                by_kind: ClientErrorKind::ALL
                    .map(|k| self.client_errors.with_label_values(&[name, k.label()])),
            },
        }
    }

    /// Drops the series of a (route, backend) that left the config.
    pub fn forget_backend(&self, b: &BackendMetrics) {
        let labels = [&*b.answers.route, &*b.answers.backend];
        b.answers.forget(&self.duration);
        let _ = self.weight.remove_label_values(&labels);
        let _ = self.success_ratio.remove_label_values(&labels);
    }

    /// Drops the per-endpoint series of an endpoint that left `upstream`.
    pub fn forget_endpoint(&self, upstream: &str, endpoint: &str) {
        let _ = self.ejections.remove_label_values(&[upstream, endpoint]);
        let _ = self.ejected.remove_label_values(&[upstream, endpoint]);
    }

    /// Drops the series of a route's mirror that left the config.
    pub fn forget_mirror(&self, m: &MirrorMetrics) {
        let (route, backend) = (&*m.answers.route, &*m.answers.backend);
        m.answers.forget(&self.mirror_duration);
        for reason in ["full", "body_too_large"] {
            let _ = self
                .mirror_dropped
                .remove_label_values(&[route, backend, reason]);
        }
    }

    /// The text exposition. The success-ratio gauges are computed from the windows here, at
    /// scrape time, rather than on the request path.
    pub fn render<'a>(&self, backends: impl Iterator<Item = &'a BackendMetrics>) -> Vec<u8> {
        let now = self.now_second();
        for b in backends {
            let ratio = b.window.stats(now).success_rate().unwrap_or(f64::NAN);
            self.success_ratio
                .with_label_values(&[&*b.answers.route, &*b.answers.backend])
                .set(ratio);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to memory cannot fail");
        out
    }
}

/// Status codes 100..=599 have a counter slot each.
const CODES: usize = 500;

/// A counter per status code and a latency histogram for one (route, backend) of one pair of
/// families (the real traffic's, or the mirror's).
struct Answers {
    route: Arc<str>,
    backend: Arc<str>,
    requests: IntCounterVec,
    /// Counter per status code, created the first time the code is seen, so the exposition lists
    /// only codes that happened. The code text is the `StatusCode`'s static string.
    by_code: Box<[OnceLock<(&'static str, IntCounter)>]>,
    duration: Histogram,
}

impl Answers {
    fn new(requests: &IntCounterVec, duration: &HistogramVec, route: &str, backend: &str) -> Self {
        Answers {
            route: route.into(),
            backend: backend.into(),
            requests: requests.clone(),
            by_code: (0..CODES).map(|_| OnceLock::new()).collect(),
            duration: duration.with_label_values(&[route, backend]),
        }
    }

    fn record(&self, status: StatusCode, elapsed: Duration) {
        let index = usize::from(status.as_u16())
            .saturating_sub(100)
            .min(CODES - 1);
        let (_, counter) = self.by_code[index].get_or_init(|| {
            // `as_str` of a valid StatusCode is a static table entry.
            let code: &'static str = static_code(status.as_str());
            (
                code,
                self.requests
                    .with_label_values(&[&*self.route, &*self.backend, code]),
            )
        });
        counter.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    fn forget(&self, duration: &HistogramVec) {
        let _ = duration.remove_label_values(&[&*self.route, &*self.backend]);
        for code in self.by_code.iter().filter_map(OnceLock::get) {
            let _ = self
                .requests
                .remove_label_values(&[&*self.route, &*self.backend, code.0]);
        }
    }
}

/// The handles of one (route, backend), kept across reloads while the pair exists.
pub struct BackendMetrics {
    answers: Answers,
    pub weight: IntGauge,
    pub window: Window,
}

impl BackendMetrics {
    /// Records one answered request. `success` is false for 5xx and for responses weir made.
    pub fn record(&self, status: StatusCode, elapsed: Duration, second: u64, success: bool) {
        self.answers.record(status, elapsed);
        self.window.record(second, success, latency_bucket(elapsed));
    }

    pub fn stats(&self, now: u64) -> WindowStats {
        self.window.stats(now)
    }
}

/// Interns a status-code string (`"200"`) as `&'static str`; called once per code per backend.
fn static_code(code: &str) -> &'static str {
    static CODES_TEXT: OnceLock<Vec<String>> = OnceLock::new();
    let table = CODES_TEXT.get_or_init(|| (100..600).map(|c| c.to_string()).collect());
    let i: usize = code.parse::<usize>().map_or(0, |c| c.clamp(100, 599) - 100);
    &table[i]
}

/// The handles of a route's mirror backend. Shadow traffic has families of its own
/// (`weir_mirror_*`), so it never mixes with the real traffic's success rates and latencies that
/// `/stats` and a rollout's analysis read.
pub struct MirrorMetrics {
    answers: Answers,
    pub full: IntCounter,
    pub too_large: IntCounter,
}

impl MirrorMetrics {
    pub fn record(&self, status: StatusCode, elapsed: Duration) {
        self.answers.record(status, elapsed);
    }
}

/// Counters of one upstream: errors (`weir_upstream_errors_total{backend, kind}`), retries, and
/// per endpoint (in the upstream's endpoint order) ejections.
pub struct UpstreamMetrics {
    pub connect: IntCounter,
    pub timeout: IntCounter,
    pub reset: IntCounter,
    pub tls: IntCounter,
    pub retried: IntCounter,
    pub budget_exhausted: IntCounter,
    pub endpoints: Box<[EndpointMetrics]>,
}

pub struct EndpointMetrics {
    pub ejections: IntCounter,
    pub ejected: IntGauge,
}

/// The `kind` label of `weir_upstream_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Reset,
    Tls,
}

impl UpstreamMetrics {
    pub fn count(&self, kind: UpstreamErrorKind) {
        match kind {
            UpstreamErrorKind::Connect => self.connect.inc(),
            UpstreamErrorKind::Timeout => self.timeout.inc(),
            UpstreamErrorKind::Reset => self.reset.inc(),
            UpstreamErrorKind::Tls => self.tls.inc(),
        }
    }
}

/// The handles of one listener.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub active: IntGauge,
    pub tls_failed: IntCounter,
    pub tls_timeout: IntCounter,
    pub client_errors: ClientErrors,
}

/// Why a request failed by the client's fault: the `kind` label of `weir_client_errors_total`.
/// None of these counts against a backend (its metrics, outlier state or a rollout's analysis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientErrorKind {
    /// A request head weir refuses: ambiguous framing or authority, a forbidden method or upgrade.
    Framing,
    /// The request body broke while weir read or forwarded it (bad chunked framing, an abort).
    Body,
    /// The client did not send its head or body in time.
    Timeout,
    /// The client went away before its response ended.
    Closed,
}

impl ClientErrorKind {
    pub const ALL: [ClientErrorKind; 4] = [
        ClientErrorKind::Framing,
        ClientErrorKind::Body,
        ClientErrorKind::Timeout,
        ClientErrorKind::Closed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ClientErrorKind::Framing => "framing",
            ClientErrorKind::Body => "body",
            ClientErrorKind::Timeout => "timeout",
            ClientErrorKind::Closed => "closed",
        }
    }
}

/// A listener's `weir_client_errors_total` counters, one per kind, resolved once.
#[derive(Clone)]
pub struct ClientErrors {
    by_kind: [IntCounter; 4],
}

impl ClientErrors {
    pub fn count(&self, kind: ClientErrorKind) {
        self.by_kind[kind as usize].inc();
    }
}

/// A connection's place in `weir_active_connections`: counted while it lives.
pub struct ConnectionGauge(IntGauge);

impl ConnectionGauge {
    pub fn open(gauge: &IntGauge) -> ConnectionGauge {
        gauge.inc();
        ConnectionGauge(gauge.clone())
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_inclusive_upper_bounds() {
        assert_eq!(latency_bucket(Duration::from_micros(100)), 0);
        assert_eq!(latency_bucket(Duration::from_micros(500)), 0);
        assert_eq!(latency_bucket(Duration::from_micros(501)), 1);
        assert_eq!(latency_bucket(Duration::from_secs(30)), 31);
        assert_eq!(latency_bucket(Duration::from_secs(31)), 32);
    }

    #[test]
    fn client_error_series_exist_from_the_start_and_count_by_kind() {
        let m = Metrics::new();
        let l = m.listener("public");
        l.client_errors.count(ClientErrorKind::Body);
        let text = String::from_utf8(m.render(std::iter::empty())).unwrap();
        for (kind, n) in [("framing", 0), ("body", 1), ("timeout", 0), ("closed", 0)] {
            let line =
                format!("weir_client_errors_total{{kind=\"{kind}\",listener=\"public\"}} {n}");
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[test]
    fn status_codes_become_counters_only_when_seen() {
        let m = Metrics::new();
        let b = m.backend("app", "stable");
        b.record(StatusCode::OK, Duration::from_millis(3), 0, true);
        b.record(StatusCode::OK, Duration::from_millis(3), 0, true);
        b.record(StatusCode::BAD_GATEWAY, Duration::from_millis(3), 0, false);
        let text = String::from_utf8(m.render(std::iter::once(&b))).unwrap();
        assert!(
            text.contains("weir_requests_total{backend=\"stable\",code=\"200\",route=\"app\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("weir_requests_total{backend=\"stable\",code=\"502\",route=\"app\"} 1")
        );
        assert!(!text.contains("code=\"404\""));
        assert!(
            text.contains(
                "weir_request_duration_seconds_count{backend=\"stable\",route=\"app\"} 3"
            )
        );
    }
}
