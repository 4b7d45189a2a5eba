//! Metrics: the Prometheus families of SPEC.md (names defined here and nowhere else), handles
//! resolved per (route, backend) when a snapshot is built, and the sliding window behind `/stats`
//! and `weir_backend_success_ratio`.
//!
//! Recording a request costs a few atomic operations: the status-code counter is found by index
//! in a table of lazily created handles, the histogram handle is pre-resolved, and no label is
//! formatted on the request path.

mod outcome;
pub mod probe;
pub mod process;
pub mod telemetry;
mod window;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::StatusCode;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use outcome::{RolloutFamilies, STATUS_GENERATION};

/// `weir_responses_total{route, backend, outcome}`: each judged response once, `success` or
/// `failure`; the counter a fleet's rollout sums over replicas (docs/FLEET.md).
pub const OUTCOMES: &str = "weir_responses_total";
pub use probe::{ArmCounters, ArmCounts, Measurement, Probe};
pub use window::{LATENCY_BUCKETS_MS, WINDOW_SECS, Window, WindowStats, latency_bucket};

/// The process-wide registry and metric families.
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    head_duration: HistogramVec,
    responses: IntCounterVec,
    grpc_responses: IntCounterVec,
    weight: IntGaugeVec,
    success_ratio: GaugeVec,
    upstream_errors: IntCounterVec,
    pub reloads: IntCounterVec,
    pub last_reload_success: Gauge,
    /// `weir_config_last_reload_successful`: 1 when the last attempt applied, 0 when refused.
    pub last_reload_successful: IntGauge,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    /// The access log's and span export's counters (`telemetry.rs`).
    pub telemetry: telemetry::Telemetry,
    pub rollout_state: IntGaugeVec,
    active_connections: IntGaugeVec,
    tls_errors: IntCounterVec,
    client_errors: IntCounterVec,
    accept_errors: IntCounterVec,
    mirror_requests: IntCounterVec,
    mirror_duration: HistogramVec,
    mirror_dropped: IntCounterVec,
    retries: IntCounterVec,
    ejections: IntCounterVec,
    ejected: IntGaugeVec,
    endpoint_healthy: IntGaugeVec,
    health_checks: IntCounterVec,
    backend_unavailable: IntCounterVec,
    drained_connections: IntCounterVec,
    /// The families a fleet's rollout reads and the rollout checks (`outcome.rs`).
    pub rollout: RolloutFamilies,
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
                "Time from request to the end of the response (last byte, trailers, or the cut), by route and backend.",
            ),
            head_duration: histogram(
                "weir_response_head_duration_seconds",
                "Time from request to the response head, by route and backend.",
            ),
            responses: counter(
                OUTCOMES,
                "Responses judged when they ended, by route, backend and outcome (success, failure); what the success ratio and rollouts count.",
                &["route", "backend", "outcome"],
            ),
            grpc_responses: counter(
                "weir_grpc_responses_total",
                "gRPC responses by route, backend and grpc_status (0 to 16, or other: missing or unreadable).",
                &["route", "backend", "grpc_status"],
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
                "Upstream failures by backend and kind (connect, timeout, reset, tls, protocol).",
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
            last_reload_successful: register(
                &r,
                IntGauge::new(
                    "weir_config_last_reload_successful",
                    "1 when the last config reload attempt applied, 0 when it was refused (the running config is older than the file).",
                )
                .expect("valid"),
            ),
            request_bytes: counter(
                "weir_request_bytes_total",
                "Request body bytes received from clients and sent to a backend, by route and backend (counted once, however many tries).",
                &["route", "backend"],
            ),
            response_bytes: counter(
                "weir_response_bytes_total",
                "Response body bytes a backend's upstream sent that weir passed to clients, by route and backend.",
                &["route", "backend"],
            ),
            telemetry: telemetry::Telemetry::register(&r).expect("metric names are unique and valid"),
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
            accept_errors: counter(
                "weir_accept_errors_total",
                "Failed accepts (out of file descriptors, say) per listener; the listener pauses and retries.",
                &["listener"],
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
            endpoint_healthy: gauge(
                "weir_endpoint_healthy",
                "1 while an endpoint passes its active health checks, else 0 (upstreams with health_check only).",
                &["upstream", "endpoint"],
            ),
            health_checks: counter(
                "weir_health_checks_total",
                "Active health checks by result (passed, failed).",
                &["upstream", "endpoint", "result"],
            ),
            backend_unavailable: counter(
                "weir_backend_unavailable_total",
                "Requests the weights sent to a backend with no endpoint to send to, which went to another backend of the route or got a 503.",
                &["route", "backend"],
            ),
            drained_connections: counter(
                "weir_drained_connections_total",
                "Client connections closed gracefully because a backend that served them retired.",
                &["listener"],
            ),
            rollout: RolloutFamilies::new(&r),
            registry: {
                process::register(&r).expect("metric names are unique and valid");
                r
            },
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
        let outcome = |o: &str| self.responses.with_label_values(&[route, backend, o]);
        BackendMetrics {
            answers: Answers::new(&self.requests, &self.duration, route, backend),
            head_duration: self.head_duration.with_label_values(&[route, backend]),
            successes: outcome("success"),
            failures: outcome("failure"),
            grpc: self.grpc_responses.clone(),
            by_grpc_status: std::array::from_fn(|_| OnceLock::new()),
            weight: self.weight.with_label_values(&[route, backend]),
            request_bytes: self.request_bytes.with_label_values(&[route, backend]),
            response_bytes: self.response_bytes.with_label_values(&[route, backend]),
            unavailable: self
                .backend_unavailable
                .with_label_values(&[route, backend]),
            window: Window::default(),
            epoch: self.epoch,
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
            protocol: kind("protocol"),
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
            accept_errors: self.accept_errors.with_label_values(&[name]),
            drained: self.drained_connections.with_label_values(&[name]),
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
        let _ = self.head_duration.remove_label_values(&labels);
        for outcome in ["success", "failure"] {
            let _ = self
                .responses
                .remove_label_values(&[labels[0], labels[1], outcome]);
        }
        for (i, slot) in b.by_grpc_status.iter().enumerate() {
            if slot.get().is_some() {
                let _ = self.grpc_responses.remove_label_values(&[
                    labels[0],
                    labels[1],
                    GRPC_STATUS_LABELS[i],
                ]);
            }
        }
        let _ = self.weight.remove_label_values(&labels);
        let _ = self.success_ratio.remove_label_values(&labels);
        let _ = self.request_bytes.remove_label_values(&labels);
        let _ = self.response_bytes.remove_label_values(&labels);
        let _ = self.backend_unavailable.remove_label_values(&labels);
    }

    /// Resolves the health-check handles of one endpoint of an upstream with `health_check`.
    pub fn endpoint_health(&self, upstream: &str, endpoint: &str) -> EndpointHealthMetrics {
        let result = |r: &str| {
            self.health_checks
                .with_label_values(&[upstream, endpoint, r])
        };
        EndpointHealthMetrics {
            healthy: self
                .endpoint_healthy
                .with_label_values(&[upstream, endpoint]),
            passed: result("passed"),
            failed: result("failed"),
        }
    }

    /// Drops the per-endpoint series of an endpoint that left `upstream`.
    pub fn forget_endpoint(&self, upstream: &str, endpoint: &str) {
        let _ = self.ejections.remove_label_values(&[upstream, endpoint]);
        let _ = self.ejected.remove_label_values(&[upstream, endpoint]);
        self.forget_endpoint_health(upstream, endpoint);
    }

    /// Drops the health-check series of an endpoint whose upstream no longer checks it.
    pub fn forget_endpoint_health(&self, upstream: &str, endpoint: &str) {
        let _ = self
            .endpoint_healthy
            .remove_label_values(&[upstream, endpoint]);
        for result in ["passed", "failed"] {
            let _ = self
                .health_checks
                .remove_label_values(&[upstream, endpoint, result]);
        }
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

/// Status codes 100..=999 (all that HTTP's three digits and `http::StatusCode` allow, 6xx to 9xx
/// included: an upstream may send them) have a counter slot each.
const CODES: usize = 900;

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

/// The `grpc_status` label values: the codes 0 to 16, then `other` (missing or unreadable).
const GRPC_STATUS_LABELS: [&str; 18] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "other",
];

/// The `grpc_status` slot of a `grpc-status` value: its code, or 17 (`other`).
pub fn grpc_status_slot(code: Option<u8>) -> usize {
    match code {
        Some(c) if c <= 16 => usize::from(c),
        _ => 17,
    }
}

/// How one response ended, as its backend's metrics record it.
#[derive(Clone, Copy, Debug)]
pub struct Ended {
    pub status: StatusCode,
    /// From the request to the response head.
    pub head: Duration,
    /// From the request to the end of the response.
    pub total: Duration,
    /// When it ended.
    pub at: Instant,
    pub success: bool,
    /// The `grpc_status` slot of a gRPC response ([`grpc_status_slot`]); `None` for others.
    pub grpc: Option<usize>,
}

/// The handles of one (route, backend), kept across reloads while the pair exists.
pub struct BackendMetrics {
    answers: Answers,
    head_duration: Histogram,
    successes: IntCounter,
    failures: IntCounter,
    grpc: IntCounterVec,
    /// `weir_grpc_responses_total` per slot, created the first time the status is seen, so a
    /// route without gRPC exports none of the 18 series.
    by_grpc_status: [OnceLock<IntCounter>; 18],
    pub weight: IntGauge,
    /// `weir_request_bytes_total`: the client's request body bytes sent to this backend.
    pub request_bytes: IntCounter,
    /// `weir_response_bytes_total`: this backend's response body bytes passed to clients.
    pub response_bytes: IntCounter,
    /// `weir_backend_unavailable_total`: requests the weights sent here while it had no endpoint.
    pub unavailable: IntCounter,
    pub window: Window,
    /// The window clock's start ([`Metrics::second`]).
    epoch: Instant,
}

impl BackendMetrics {
    /// Records one response that ended (or that weir made). `success` is false for 5xx, for
    /// responses weir made, for a failing gRPC status and for a cut body. Returns the latency
    /// bucket of `total`, for a rollout's probe.
    pub fn record(&self, e: &Ended) -> usize {
        self.answers.record(e.status, e.total);
        self.head_duration.observe(e.head.as_secs_f64());
        let bucket = latency_bucket(e.total);
        let second = e.at.saturating_duration_since(self.epoch).as_secs();
        self.window.record(second, e.success, bucket);
        if e.success {
            self.successes.inc();
        } else {
            self.failures.inc();
        }
        if let Some(slot) = e.grpc {
            self.by_grpc_status[slot]
                .get_or_init(|| {
                    self.grpc.with_label_values(&[
                        &*self.answers.route,
                        &*self.answers.backend,
                        GRPC_STATUS_LABELS[slot],
                    ])
                })
                .inc();
        }
        bucket
    }

    pub fn stats(&self, now: u64) -> WindowStats {
        self.window.stats(now)
    }
}

/// Interns a status-code string (`"200"`) as `&'static str`; called once per code per backend.
fn static_code(code: &str) -> &'static str {
    static CODES_TEXT: OnceLock<Vec<String>> = OnceLock::new();
    let table = CODES_TEXT.get_or_init(|| (100..1000).map(|c| c.to_string()).collect());
    let i: usize = code.parse::<usize>().map_or(0, |c| c.clamp(100, 999) - 100);
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
    pub protocol: IntCounter,
    pub retried: IntCounter,
    pub budget_exhausted: IntCounter,
    pub endpoints: Box<[EndpointMetrics]>,
}

pub struct EndpointMetrics {
    pub ejections: IntCounter,
    pub ejected: IntGauge,
}

/// The active health checks' handles of one endpoint (`weir_endpoint_healthy`,
/// `weir_health_checks_total`).
pub struct EndpointHealthMetrics {
    pub healthy: IntGauge,
    pub passed: IntCounter,
    pub failed: IntCounter,
}

/// The `kind` label of `weir_upstream_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Reset,
    Tls,
    /// The upstream broke HTTP's framing rules: a malformed head, Content-Length with
    /// Transfer-Encoding, a bad chunk.
    Protocol,
}

impl UpstreamMetrics {
    pub fn count(&self, kind: UpstreamErrorKind) {
        match kind {
            UpstreamErrorKind::Connect => self.connect.inc(),
            UpstreamErrorKind::Timeout => self.timeout.inc(),
            UpstreamErrorKind::Reset => self.reset.inc(),
            UpstreamErrorKind::Tls => self.tls.inc(),
            UpstreamErrorKind::Protocol => self.protocol.inc(),
        }
    }
}

/// The handles of one listener.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub active: IntGauge,
    pub tls_failed: IntCounter,
    pub tls_timeout: IntCounter,
    pub accept_errors: IntCounter,
    /// `weir_drained_connections_total`.
    pub drained: IntCounter,
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
        let ended = |status, success| Ended {
            status,
            head: Duration::from_millis(1),
            total: Duration::from_millis(3),
            at: Instant::now(),
            success,
            grpc: None,
        };
        b.record(&ended(StatusCode::OK, true));
        b.record(&ended(StatusCode::OK, true));
        b.record(&ended(StatusCode::BAD_GATEWAY, false));
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
        assert!(text.contains(
            "weir_responses_total{backend=\"stable\",outcome=\"failure\",route=\"app\"} 1"
        ));
        assert!(!text.contains("weir_grpc_responses_total{"), "{text}");
    }

    #[test]
    fn grpc_statuses_become_counters_only_when_seen_and_leave_with_the_backend() {
        let m = Metrics::new();
        let b = m.backend("rpc", "canary");
        for code in [Some(14), Some(14), Some(0), None, Some(99)] {
            b.record(&Ended {
                status: StatusCode::OK,
                head: Duration::from_millis(1),
                total: Duration::from_millis(2),
                at: Instant::now(),
                success: code == Some(0),
                grpc: Some(grpc_status_slot(code)),
            });
        }
        let text = String::from_utf8(m.render(std::iter::once(&b))).unwrap();
        let series = |status: &str| {
            format!(
                "weir_grpc_responses_total{{backend=\"canary\",grpc_status=\"{status}\",route=\"rpc\"}}"
            )
        };
        assert!(text.contains(&format!("{} 2", series("14"))), "{text}");
        assert!(text.contains(&format!("{} 1", series("0"))));
        assert!(text.contains(&format!("{} 2", series("other"))));
        assert!(!text.contains(&series("13")));
        m.forget_backend(&b);
        let text = String::from_utf8(m.render(std::iter::empty())).unwrap();
        assert!(!text.contains("grpc_status="), "{text}");
        assert!(!text.contains("outcome="), "{text}");
    }

    #[test]
    fn status_codes_past_599_keep_their_own_number() {
        let m = Metrics::new();
        let b = m.backend("app", "stable");
        for code in [599, 600, 999] {
            b.record(&Ended {
                status: StatusCode::from_u16(code).unwrap(),
                head: Duration::ZERO,
                total: Duration::ZERO,
                at: Instant::now(),
                success: true,
                grpc: None,
            });
        }
        let text = String::from_utf8(m.render(std::iter::once(&b))).unwrap();
        for code in ["599", "600", "999"] {
            let line = format!(
                "weir_requests_total{{backend=\"stable\",code=\"{code}\",route=\"app\"}} 1"
            );
            assert!(text.contains(&line), "{code}: {text}");
        }
    }
}
