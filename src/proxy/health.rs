//! Active health checks and slow start of an upstream's endpoints, and what a route does when a
//! backend has no endpoint to send to.
//!
//! - [`EndpointHealth`] is the table the request path reads: per endpoint a `healthy` flag and a
//!   slow-start factor, all relaxed atomics. [`EndpointHealth::pick`] chooses an endpoint with no
//!   lock and no clock: round robin over healthy endpoints, or, while some endpoint ramps up, a
//!   draw weighted by the factors.
//! - [`run`] is the task (one per upstream) that owns the clock: it probes every endpoint each
//!   `interval`, turns results into `healthy` flips through [`Tracker`] (the thresholds, pure),
//!   and moves the factors of ramping endpoints along [`ramp_factor`] (the curve, pure).
//!   [`HttpProber`] is the probe: an HTTP `GET` on a fresh connection (HTTP/1.1, h2c, or either
//!   over TLS).
//! - [`live_pick`] (pure) moves a route's draw off backends with no endpoint to send to, in
//!   proportion to the other backends' weights.
//!
//! The task holds only a `Weak` reference to the table: when the last snapshot using the pool
//! goes, the table goes, and the task ends at its next wake-up.

use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, header};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;

// === specs ===

/// `upstreams[].health_check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// Path (and query) of the `GET`, e.g. `/healthz`.
    pub path: String,
    /// Default 5s: time between the starts of two checks of an endpoint.
    pub interval: Duration,
    /// Default 1s: connect, TLS and the response head must fit in it.
    pub timeout: Duration,
    /// Default 2: passing checks in a row that bring an unhealthy endpoint back.
    pub healthy_threshold: u32,
    /// Default 3: failing checks in a row that take a healthy endpoint out.
    pub unhealthy_threshold: u32,
    /// Default `[200..=399]` (Kubernetes' httpGet probe): statuses that pass.
    pub expected_statuses: Vec<RangeInclusive<u16>>,
    /// `Host` of the check; default: the endpoint's `HOST:PORT`.
    pub host: Option<String>,
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        HealthCheckSpec {
            path: "/healthz".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_statuses: vec![200..=399],
            host: None,
        }
    }
}

/// `upstreams[].slow_start`: Envoy's slow start. An endpoint that joins (new in a reload, back
/// from an ejection or from failed health checks) takes a growing share over `window`: its
/// factor is `max(min_weight_percent / 100, (t / window) ^ (1 / aggression))`.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowStartSpec {
    pub window: Duration,
    /// Default 1.0 (linear); above 1 ramps faster early, below 1 slower.
    pub aggression: f64,
    /// Default 10: the share an endpoint starts with, in percent of a full one.
    pub min_weight_percent: u32,
}

impl SlowStartSpec {
    pub fn new(window: Duration) -> SlowStartSpec {
        SlowStartSpec {
            window,
            aggression: 1.0,
            min_weight_percent: 10,
        }
    }
}

/// What is wrong with a health check or slow start; `field` names the field in its block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    #[error("`{0}` is not a path: it must start with `/`")]
    Path(String),
    #[error("must be at least 10ms")]
    TooShort(&'static str),
    #[error("must be at least 1")]
    Threshold(&'static str),
    #[error("`{0}` is not a status range between 100 and 599")]
    Status(String),
    #[error("`{0}` is not a valid Host")]
    Host(String),
    #[error("must be above 0")]
    Aggression,
    #[error("must be between 1 and 100")]
    MinWeight,
}

impl HealthError {
    pub fn field(&self) -> &'static str {
        match self {
            HealthError::Path(_) => "path",
            HealthError::TooShort(f) | HealthError::Threshold(f) => f,
            HealthError::Status(_) => "expected_statuses",
            HealthError::Host(_) => "host",
            HealthError::Aggression => "aggression",
            HealthError::MinWeight => "min_weight_percent",
        }
    }
}

/// Shortest interval, timeout and window weir accepts: a check every few milliseconds would be
/// load, not a check.
const MIN_PERIOD: Duration = Duration::from_millis(10);

impl HealthCheckSpec {
    pub fn validate(&self) -> Vec<HealthError> {
        let mut errors = Vec::new();
        if !self.path.starts_with('/') || self.path.parse::<PathAndQuery>().is_err() {
            errors.push(HealthError::Path(self.path.clone()));
        }
        for (field, d) in [("interval", self.interval), ("timeout", self.timeout)] {
            if d < MIN_PERIOD {
                errors.push(HealthError::TooShort(field));
            }
        }
        for (field, t) in [
            ("healthy_threshold", self.healthy_threshold),
            ("unhealthy_threshold", self.unhealthy_threshold),
        ] {
            if t == 0 {
                errors.push(HealthError::Threshold(field));
            }
        }
        for r in &self.expected_statuses {
            if *r.start() < 100 || *r.end() > 599 || r.start() > r.end() {
                errors.push(HealthError::Status(format!("{}-{}", r.start(), r.end())));
            }
        }
        if let Some(h) = self
            .host
            .as_ref()
            .filter(|h| h.parse::<Authority>().is_err())
        {
            errors.push(HealthError::Host(h.clone()));
        }
        errors
    }
}

impl SlowStartSpec {
    pub fn validate(&self) -> Vec<HealthError> {
        let mut errors = Vec::new();
        if self.window < MIN_PERIOD {
            errors.push(HealthError::TooShort("window"));
        }
        if !(self.aggression > 0.0 && self.aggression.is_finite()) {
            errors.push(HealthError::Aggression);
        }
        if !(1..=100).contains(&self.min_weight_percent) {
            errors.push(HealthError::MinWeight);
        }
        errors
    }
}

// === thresholds (pure) ===

/// One endpoint's standing between checks: healthy or not, and how many results in a row
/// disagree with that.
///
/// An endpoint starts healthy and unchecked; its first result decides at once (a new endpoint
/// that is down is out after one check, not three; one that is up needs no warm-up). After that,
/// `unhealthy_threshold` failures in a row take it out and `healthy_threshold` passes in a row
/// bring it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tracker {
    checked: bool,
    unhealthy: bool,
    /// Results in a row that disagree with the current standing.
    streak: u32,
}

/// A change of an endpoint's standing, and the results in a row that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub healthy: bool,
    pub streak: u32,
}

impl Tracker {
    pub fn healthy(&self) -> bool {
        !self.unhealthy
    }

    pub fn observe(
        &mut self,
        passed: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<Change> {
        if !self.checked {
            self.checked = true;
            self.streak = 0;
            if passed == self.healthy() {
                return None;
            }
            self.unhealthy = !passed;
            return Some(Change {
                healthy: passed,
                streak: 1,
            });
        }
        if passed == self.healthy() {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let threshold = if passed {
            healthy_threshold
        } else {
            unhealthy_threshold
        };
        if self.streak < threshold {
            return None;
        }
        let streak = self.streak;
        self.unhealthy = !passed;
        self.streak = 0;
        Some(Change {
            healthy: passed,
            streak,
        })
    }
}

// === the slow-start curve (pure) ===

/// A factor of 1000 is a full endpoint.
pub const FULL: u32 = 1000;

/// The factor (per mille) of an endpoint `elapsed` into its ramp.
pub fn ramp_factor(elapsed: Duration, spec: &SlowStartSpec) -> u32 {
    if elapsed >= spec.window {
        return FULL;
    }
    let t = elapsed.as_secs_f64() / spec.window.as_secs_f64();
    let curve = t.powf(1.0 / spec.aggression);
    let min = f64::from(spec.min_weight_percent.min(100)) / 100.0;
    ((curve.max(min) * f64::from(FULL)).round() as u32).clamp(1, FULL)
}

// === the table the request path reads ===

struct EndpointState {
    healthy: AtomicBool,
    /// Slow-start factor, per mille; [`FULL`] when not ramping.
    factor: AtomicU32,
    /// Set by [`EndpointHealth::begin_ramp`], taken by the task.
    ramp_requested: AtomicBool,
}

/// Health and slow-start state of one upstream's endpoints, shared by its pool (reads, on the
/// request path) and its [`run`] task (writes). Relaxed atomics throughout: a request that sees
/// a flip a moment late sends one request the old way, which is what a passive check would do
/// anyway.
pub struct EndpointHealth {
    endpoints: Box<[EndpointState]>,
    healthy: AtomicUsize,
    /// Some endpoint's factor is below [`FULL`]: picks weigh factors.
    ramping: AtomicBool,
    wake: Arc<Notify>,
}

impl EndpointHealth {
    /// `n` endpoints, all healthy and at full weight.
    pub fn new(n: usize) -> Arc<EndpointHealth> {
        Arc::new(EndpointHealth {
            endpoints: (0..n)
                .map(|_| EndpointState {
                    healthy: AtomicBool::new(true),
                    factor: AtomicU32::new(FULL),
                    ramp_requested: AtomicBool::new(false),
                })
                .collect(),
            healthy: AtomicUsize::new(n),
            ramping: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
        })
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn is_healthy(&self, i: usize) -> bool {
        self.endpoints[i].healthy.load(Ordering::Relaxed)
    }

    /// Whether any endpoint passes its health checks (without checks: whether there is one).
    pub fn any_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) > 0
    }

    pub fn factor(&self, i: usize) -> u32 {
        self.endpoints[i].factor.load(Ordering::Relaxed)
    }

    pub fn ramping(&self) -> bool {
        self.ramping.load(Ordering::Relaxed)
    }

    /// Marks endpoint `i` as failing its checks (a new pool inheriting an old one's standing).
    pub fn set_unhealthy(&self, i: usize) {
        self.set_healthy(i, false);
    }

    fn set_healthy(&self, i: usize, healthy: bool) {
        if self.endpoints[i].healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                self.healthy.fetch_add(1, Ordering::Relaxed);
            } else {
                self.healthy.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts endpoint `i`'s slow start at `min_factor` (per mille) right away and asks the task
    /// to ramp it up. Called off the request path's common case: when an ejection ends, or by
    /// phase 2's pool for endpoints new in a reload. Only for an upstream with `slow_start`, whose
    /// task does the ramping (a task without slow start puts the factor back to full).
    pub fn begin_ramp(&self, i: usize, min_factor: u32) {
        let e = &self.endpoints[i];
        e.factor.store(min_factor.clamp(1, FULL), Ordering::Relaxed);
        self.ramping.store(true, Ordering::Relaxed);
        e.ramp_requested.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Copies the standing of endpoint `from` of `old` to endpoint `to` of this table: a reload
    /// that rebuilds a pool keeps what its checks learned about endpoints it still has.
    pub fn inherit(&self, to: usize, old: &EndpointHealth, from: usize) {
        self.set_healthy(to, old.is_healthy(from));
        let f = old.factor(from);
        self.endpoints[to].factor.store(f, Ordering::Relaxed);
        if f < FULL {
            self.begin_ramp(to, f);
        }
    }

    /// The endpoint for the next request: `start` is the pool's round-robin position,
    /// `available(i)` the pool's own say (not ejected, not the endpoint a retry avoids), `draw(n)`
    /// a random number below `n`. Without a ramp: the first healthy, available endpoint from
    /// `start` (one relaxed load each). During a ramp: a draw weighted by the factors. `None` when
    /// no endpoint is healthy and available.
    pub fn pick(
        &self,
        start: usize,
        available: impl Fn(usize) -> bool,
        draw: impl FnOnce(u64) -> u64,
    ) -> Option<usize> {
        let n = self.endpoints.len();
        let usable = |i: usize| self.is_healthy(i) && available(i);
        if !self.ramping() {
            return (0..n).map(|k| (start + k) % n).find(|&i| usable(i));
        }
        let total: u64 = (0..n)
            .filter(|&i| usable(i))
            .map(|i| u64::from(self.factor(i)))
            .sum();
        if total == 0 {
            return None;
        }
        let mut d = draw(total);
        let mut last = None;
        for i in (0..n).filter(|&i| usable(i)) {
            let f = u64::from(self.factor(i));
            if d < f {
                return Some(i);
            }
            d -= f;
            last = Some(i);
        }
        // The task moved a factor between the two passes: the draw ran past the end.
        last
    }
}

// === routes: no endpoint, no share (pure) ===

/// The backend for `draw` (below the sum of `weights`, the backends' in route order) when only
/// backends with `live(b)` may take requests: the draw is scaled onto the live backends'
/// weights, so each live backend gets the share `weight / live weight`, and draws keep their
/// order (a sticky key keeps its place among the live backends). `None` when no backend with
/// weight is live. `weights` is walked up to three times and never collected: a fallback
/// allocates nothing.
///
/// Phase 2 calls it only when the backend the weights picked has no endpoint to send to, so a
/// route whose backends are all up pays nothing.
pub fn live_pick(
    weights: impl Iterator<Item = u32> + Clone,
    draw: u64,
    live: impl Fn(usize) -> bool,
) -> Option<usize> {
    let total: u64 = weights.clone().map(u64::from).sum();
    let live_total: u64 = weights
        .clone()
        .enumerate()
        .filter(|&(b, _)| live(b))
        .map(|(_, w)| u64::from(w))
        .sum();
    if live_total == 0 || total == 0 {
        return None;
    }
    let mut d =
        ((u128::from(draw.min(total - 1)) * u128::from(live_total)) / u128::from(total)) as u64;
    for (b, w) in weights.enumerate() {
        if w == 0 || !live(b) {
            continue;
        }
        if d < u64::from(w) {
            return Some(b);
        }
        d -= u64::from(w);
    }
    None
}

// === the task ===

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckFailure {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("no response within the timeout")]
    Timeout,
    #[error("unexpected status {0}")]
    Status(u16),
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
}

/// What the task reports: each result, and each change of standing.
#[derive(Debug)]
pub enum HealthEvent {
    Checked {
        endpoint: usize,
        result: Result<(), CheckFailure>,
    },
    Changed {
        endpoint: usize,
        change: Change,
    },
    /// An endpoint reached its full share.
    Ramped {
        endpoint: usize,
    },
}

/// Checks one endpoint. Implemented by [`HttpProber`]; the task's scheduling tests use a probe
/// that needs no socket.
pub trait Prober: Send + Sync + 'static {
    fn probe(&self, endpoint: usize) -> impl Future<Output = Result<(), CheckFailure>> + Send;
}

/// How often a ramp's factors move: 50 steps per window, between 10 ms and 1 s apart.
fn ramp_tick(window: Duration) -> Duration {
    (window / 50).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Without checks or ramps, the task still wakes this often to notice that its table is gone.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// The task of one upstream: probes every endpoint each `checks.interval` (all at once, each
/// under `checks.timeout`), applies thresholds, ramps factors, and reports to `observe`. Ends
/// when `health` is dropped.
pub async fn run<P: Prober>(
    prober: Arc<P>,
    checks: Option<HealthCheckSpec>,
    slow_start: Option<SlowStartSpec>,
    health: Weak<EndpointHealth>,
    observe: impl Fn(HealthEvent) + Send + 'static,
) {
    let (n, wake) = match health.upgrade() {
        Some(h) => (h.len(), h.wake.clone()),
        None => return,
    };
    // An endpoint the table already has as failing (inherited from the pool this one replaced)
    // needs `healthy_threshold` passes to come back, as it would have in the old task.
    let mut trackers: Vec<Tracker> = match health.upgrade() {
        Some(h) => (0..n)
            .map(|i| match h.is_healthy(i) {
                true => Tracker::default(),
                false => Tracker {
                    checked: true,
                    unhealthy: true,
                    streak: 0,
                },
            })
            .collect(),
        None => return,
    };
    let mut ramps: Vec<Option<Instant>> = vec![None; n];
    let mut next_check = checks.as_ref().map(|_| Instant::now());
    loop {
        let Some(h) = health.upgrade() else {
            return;
        };
        let now = Instant::now();
        if let Some(spec) = &slow_start {
            for (i, ramp) in ramps.iter_mut().enumerate() {
                if h.endpoints[i].ramp_requested.swap(false, Ordering::Relaxed) {
                    *ramp = Some(now);
                }
            }
            for (i, ramp) in ramps.iter_mut().enumerate() {
                let Some(started) = *ramp else { continue };
                let f = ramp_factor(now - started, spec);
                h.endpoints[i].factor.store(f, Ordering::Relaxed);
                if f == FULL {
                    *ramp = None;
                    observe(HealthEvent::Ramped { endpoint: i });
                }
            }
            if ramps.iter().all(Option::is_none) {
                h.ramping.store(false, Ordering::Relaxed);
            }
        } else {
            // Ramps asked for without slow start configured end at once.
            for e in h.endpoints.iter() {
                e.ramp_requested.store(false, Ordering::Relaxed);
                e.factor.store(FULL, Ordering::Relaxed);
            }
            h.ramping.store(false, Ordering::Relaxed);
        }
        if let (Some(spec), Some(due)) = (&checks, next_check.filter(|due| *due <= now)) {
            drop(h);
            let results = probe_all(&prober, n, spec.timeout).await;
            let Some(h) = health.upgrade() else {
                return;
            };
            for (i, result) in results {
                let passed = result.is_ok();
                observe(HealthEvent::Checked {
                    endpoint: i,
                    result,
                });
                if let Some(change) =
                    trackers[i].observe(passed, spec.healthy_threshold, spec.unhealthy_threshold)
                {
                    h.set_healthy(i, change.healthy);
                    if let (true, Some(ss)) = (change.healthy, &slow_start) {
                        h.begin_ramp(i, ramp_factor(Duration::ZERO, ss));
                        h.endpoints[i]
                            .ramp_requested
                            .store(false, Ordering::Relaxed);
                        ramps[i] = Some(Instant::now());
                    }
                    observe(HealthEvent::Changed {
                        endpoint: i,
                        change,
                    });
                }
            }
            // The next check starts one interval after this one started; a round that took
            // longer than the interval is followed by the next one at once, never by two.
            next_check = Some((due + spec.interval).max(Instant::now()));
            continue;
        }
        let ramp_due = slow_start
            .as_ref()
            .filter(|_| ramps.iter().any(Option::is_some))
            .map(|ss| now + ramp_tick(ss.window));
        drop(h);
        let until = [next_check, ramp_due]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + IDLE_WAKE)
            .min(now + IDLE_WAKE);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = wake.notified() => {}
        }
    }
}

async fn probe_all<P: Prober>(
    prober: &Arc<P>,
    n: usize,
    timeout: Duration,
) -> Vec<(usize, Result<(), CheckFailure>)> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let p = prober.clone();
        set.spawn(async move {
            let result = match tokio::time::timeout(timeout, p.probe(i)).await {
                Ok(r) => r,
                Err(_) => Err(CheckFailure::Timeout),
            };
            (i, result)
        });
    }
    let mut results = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        // A probe cannot panic on a peer's answer; if one did, its endpoint keeps its standing.
        if let Ok(r) = joined {
            results.push(r);
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results
}

// === the HTTP probe ===

/// The HTTP version a check speaks: an upstream's `protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckProtocol {
    Http1,
    /// h2c prior knowledge, or h2 by ALPN over TLS.
    Http2,
}

/// TLS for checks of an upstream with `tls`.
#[derive(Clone, Debug)]
pub struct CheckTls {
    pub config: Arc<rustls::ClientConfig>,
    /// The name to verify; default: the endpoint's host.
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
}

/// A `GET` of the check path on a new connection per check, so a check proves that the
/// endpoint accepts connections, not that one old connection still works.
pub struct HttpProber {
    endpoints: Box<[Authority]>,
    path: PathAndQuery,
    host: Option<HeaderValue>,
    statuses: Box<[RangeInclusive<u16>]>,
    protocol: CheckProtocol,
    tls: Option<(
        tokio_rustls::TlsConnector,
        Option<rustls::pki_types::ServerName<'static>>,
    )>,
}

const USER_AGENT: &str = concat!("weir-health-check/", env!("CARGO_PKG_VERSION"));

impl HttpProber {
    /// `spec` must have passed [`HealthCheckSpec::validate`].
    pub fn new(
        endpoints: &[Authority],
        spec: &HealthCheckSpec,
        protocol: CheckProtocol,
        tls: Option<CheckTls>,
    ) -> HttpProber {
        HttpProber {
            endpoints: endpoints.into(),
            path: spec
                .path
                .parse()
                .unwrap_or_else(|_| PathAndQuery::from_static("/")),
            host: spec
                .host
                .as_ref()
                .and_then(|h| HeaderValue::from_str(h).ok()),
            statuses: spec.expected_statuses.clone().into(),
            protocol,
            tls: tls.map(|t| {
                let mut config = (*t.config).clone();
                config.alpn_protocols = vec![match protocol {
                    CheckProtocol::Http1 => b"http/1.1".to_vec(),
                    CheckProtocol::Http2 => b"h2".to_vec(),
                }];
                (
                    tokio_rustls::TlsConnector::from(Arc::new(config)),
                    t.server_name,
                )
            }),
        }
    }

    async fn exchange<I>(&self, io: I, authority: &Authority) -> Result<u16, CheckFailure>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let host = self
            .host
            .clone()
            .or_else(|| HeaderValue::from_str(authority.as_str()).ok())
            .unwrap_or(HeaderValue::from_static("localhost"));
        let io = TokioIo::new(io);
        let response = match self.protocol {
            CheckProtocol::Http1 => {
                let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                let req = Request::get(self.path.as_str())
                    .header(header::HOST, host)
                    .header(header::USER_AGENT, USER_AGENT)
                    .header(header::CONNECTION, "close")
                    .body(Empty::<Bytes>::new())
                    .expect("a valid path and headers");
                send.send_request(req).await?
            }
            CheckProtocol::Http2 => {
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                let uri = http::Uri::builder()
                    .scheme(if self.tls.is_some() { "https" } else { "http" })
                    .authority(host.as_bytes())
                    .path_and_query(self.path.clone())
                    .build()
                    .unwrap_or_else(|_| http::Uri::from_static("/"));
                let req = Request::get(uri)
                    .header(header::USER_AGENT, USER_AGENT)
                    .body(Empty::<Bytes>::new())
                    .expect("a valid URI and headers");
                send.send_request(req).await?
            }
        };
        Ok(response.status().as_u16())
    }
}

impl Prober for HttpProber {
    async fn probe(&self, endpoint: usize) -> Result<(), CheckFailure> {
        let authority = &self.endpoints[endpoint];
        let stream = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .map_err(CheckFailure::Connect)?;
        let _ = stream.set_nodelay(true);
        let status = match &self.tls {
            None => self.exchange(stream, authority).await?,
            Some((connector, name)) => {
                let name = match name {
                    Some(n) => n.clone(),
                    None => rustls::pki_types::ServerName::try_from(authority.host().to_string())
                        .map_err(|e| {
                        CheckFailure::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                    })?,
                };
                let tls = connector
                    .connect(name, stream)
                    .await
                    .map_err(CheckFailure::Tls)?;
                self.exchange(tls, authority).await?
            }
        };
        if self.statuses.iter().any(|r| r.contains(&status)) {
            Ok(())
        } else {
            Err(CheckFailure::Status(status))
        }
    }
}

#[cfg(test)]
mod tests;
