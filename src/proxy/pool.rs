//! One pooled keep-alive client per upstream (plain HTTP, or HTTPS through rustls with ALPN),
//! round-robin over its endpoints, passive outlier ejection of failing endpoints, the retry
//! budget and the bound on shadow copies in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::Either;
use http::uri::Authority;
use http::uri::Scheme;
use http::{Request, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::conns::{self, Answer, Http1Pool, SendError};
use super::health::{self, CheckProtocol, CheckTls, EndpointHealth, HealthEvent, HttpProber};
use super::request::RequestBody;
use crate::config::{Limits, Outlier, Protocol, Upstream};
use crate::metrics::{Metrics, UpstreamErrorKind, UpstreamMetrics};
use crate::proxy::health::SlowStartSpec;

/// How long an idle upstream connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint, in each of weir's two queues (`conns`) and in hyper-util's
/// pool for HTTPS and HTTP/2 upstreams. A burst may open more; past it they close instead of
/// idling, which bounds memory after the burst (the role of nginx's `keepalive` directive).
/// Each request in flight to an HTTP/1.1 endpoint holds a connection, so below the endpoint's
/// usual concurrency the pool churns: at 128, h2c with 500 streams in flight (h2load -c50 -m10)
/// opened a new connection every 20 requests, and 512 served 14-24% more requests per second
/// at 12-20% less CPU each (two runs of `H2C=1 loadtest/ab.sh`).
///
/// The bound after a burst, per endpoint: up to 512 idle wires, each a socket and a read buffer
/// of about 16 KiB (`conns::READ_GROWTH`; more after a larger response head, up to the 64 KiB
/// limit): about 8 MiB, 2 MiB at 128; as many idle hyper connections; up to 1,024 file
/// descriptors. weir's wires have no idle timer: the upstream's keep-alive timeout closes them,
/// and the next request passes over the closed ones. The two queues are made in full: 24 KiB
/// (512 slots of a boxed `Wire`, 16 bytes, and of a hyper sender, 32), 16 KiB at 128 with the
/// `Wire` in the slot.
const POOL_MAX_IDLE_PER_ENDPOINT: usize = 512;
/// Shadow copies in flight to one upstream; past it new copies are dropped and counted.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 256;
/// A repeated ejection lasts `ejection` times the number of ejections in a row, up to this many.
const MAX_EJECTION_FACTOR: u32 = 10;

/// Retry budget, in tokens: each request through a route with retries deposits one, a retry
/// costs [`RETRY_COST`], so retries stay under 1/5 (20 %) of requests, plus a reserve that lets a
/// quiet upstream retry a little. Banked tokens are capped so a long calm does not pay for a
/// storm.
const RETRY_COST: u32 = 5;
const RETRY_RESERVE: u32 = 10 * RETRY_COST;
const RETRY_CAP: u32 = 100 * RETRY_COST;

pub struct UpstreamPool {
    pub name: Arc<str>,
    identity: String,
    connect_timeout: Duration,
    endpoints: Box<[Endpoint]>,
    next: AtomicUsize,
    outlier: Option<Outlier>,
    /// Active health checks and slow start: the table the pick reads and the task (spawned by
    /// [`UpstreamPool::new`] when the upstream has `health_check` or `slow_start`) writes.
    health: Arc<EndpointHealth>,
    /// The upstream has `health_check` or `slow_start`: the pick reads `health`. Without, the
    /// table is never written and the pick does not look at it.
    watched: bool,
    /// The upstream has `health_check`.
    checks: bool,
    slow_start: Option<SlowStartSpec>,
    /// The last request that wanted this upstream found no endpoint (logged once per change).
    unavailable: AtomicBool,
    /// The clock of ejection deadlines (milliseconds since this instant).
    epoch: Instant,
    retry_tokens: AtomicU32,
    mirrors_in_flight: AtomicUsize,
    client: UpstreamClient,
    /// `https` for upstreams with `tls`, else `http`.
    pub scheme: Scheme,
    /// The HTTP version spoken to the upstream; requests are rewritten to it.
    pub version: Version,
    pub metrics: UpstreamMetrics,
}

/// How requests reach the upstream's endpoints.
enum UpstreamClient {
    /// Plain HTTP/1.1: weir's own lock-free keep-alive pool.
    Http1(Http1Pool),
    /// TLS or HTTP/2: hyper-util's pooled client (ALPN, h2 multiplexing). Boxed: it is large,
    /// and the common case is the other variant.
    Pooled(Box<Client<HttpsConnector<HttpConnector>, RequestBody>>),
}

pub struct Endpoint {
    pub authority: Authority,
    /// Failures in a row since the last success (outlier ejection only).
    failures: AtomicU32,
    /// Ejections in a row, reset by a success after the endpoint came back.
    ejections: AtomicU32,
    /// Ejected until this many milliseconds after the pool's epoch; 0 when not ejected.
    ejected_until: AtomicU64,
}

/// What one try did, as outlier detection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Connect error, reset, timeout, or a 5xx answer.
    Failure,
}

impl UpstreamPool {
    pub fn new(upstream: &Upstream, limits: &Limits, metrics: &Metrics) -> UpstreamPool {
        UpstreamPool::replacing(upstream, limits, metrics, None)
    }

    /// A new pool for `upstream` that replaces `old` (the previous pool of the same name, when
    /// a reload changed its definition): it inherits what `old`'s health checks learned and its
    /// ramps ([`UpstreamPool::inherit`]) before its own health task starts.
    pub fn replacing(
        upstream: &Upstream,
        limits: &Limits,
        metrics: &Metrics,
        old: Option<&UpstreamPool>,
    ) -> UpstreamPool {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let (tls_config, scheme) = match &upstream.tls {
            Some(t) => ((*t.config).clone(), Scheme::HTTPS),
            // Never used for `http` URIs; the connector type is shared so pools are one type.
            None => (
                (*crate::tls::no_roots_client_config()).clone(),
                Scheme::HTTP,
            ),
        };
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http();
        let tls = match upstream.tls.as_ref().and_then(|t| t.server_name.clone()) {
            Some(name) => {
                tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => tls,
        };
        // HTTP/2 upstreams speak only h2; HTTP/1 upstreams over TLS take h2 when ALPN offers it.
        let connector = match upstream.protocol {
            Protocol::Http2 => tls.enable_http2().wrap_connector(connector),
            Protocol::Http1 => tls.enable_all_versions().wrap_connector(connector),
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_ENDPOINT)
            .timer(TokioTimer::new());
        let version = match upstream.protocol {
            Protocol::Http1 => Version::HTTP_11,
            Protocol::Http2 => {
                builder.http2_only(true);
                Version::HTTP_2
            }
        };
        let health = EndpointHealth::new(upstream.endpoints.len());
        let watched = upstream.health_check.is_some() || upstream.slow_start.is_some();
        let pool = UpstreamPool {
            name: upstream.name.clone(),
            identity: upstream.identity.clone(),
            connect_timeout: limits.connect_timeout,
            endpoints: upstream
                .endpoints
                .iter()
                .map(|a| Endpoint {
                    authority: a.clone(),
                    failures: AtomicU32::new(0),
                    ejections: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            outlier: upstream.outlier,
            health,
            watched,
            checks: upstream.health_check.is_some(),
            slow_start: upstream.slow_start.clone(),
            unavailable: AtomicBool::new(false),
            epoch: Instant::now(),
            retry_tokens: AtomicU32::new(RETRY_RESERVE),
            mirrors_in_flight: AtomicUsize::new(0),
            client: match (upstream.protocol, &upstream.tls) {
                (Protocol::Http1, None) => UpstreamClient::Http1(Http1Pool::new(
                    upstream.endpoints.len(),
                    POOL_MAX_IDLE_PER_ENDPOINT,
                    limits.connect_timeout,
                )),
                _ => UpstreamClient::Pooled(Box::new(builder.build(connector))),
            },
            version,
            scheme,
            metrics: metrics.upstream(
                &upstream.name,
                upstream.endpoints.iter().map(Authority::as_str),
            ),
        };
        if let Some(old) = old {
            pool.inherit(old);
        }
        if watched {
            spawn_health_task(upstream, &pool.health, metrics);
        }
        pool
    }

    /// Whether this pool serves exactly `upstream` as defined now.
    pub fn has_definition(&self, upstream: &Upstream, limits: &Limits) -> bool {
        self.identity == upstream.identity && self.connect_timeout == limits.connect_timeout
    }

    pub fn endpoint(&self, i: usize) -> &Authority {
        &self.endpoints[i].authority
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Authority> {
        self.endpoints.iter().map(|e| &e.authority)
    }

    /// The next endpoint in round-robin order that is not ejected, skipping `avoid` (the endpoint
    /// a retry moves away from) unless it is the only one left; `None` when every endpoint is
    /// ejected. Without outlier ejection: one relaxed atomic add, no lock, no clock read.
    pub fn pick(&self, avoid: Option<usize>) -> Option<usize> {
        let n = self.endpoints.len();
        // A retry takes the endpoint after the one that failed and leaves the shared rotation
        // alone, so the requests that follow still spread evenly.
        let start = match avoid {
            Some(a) => a + 1,
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        if self.watched {
            return self.pick_watched(start, avoid);
        }
        if self.outlier.is_none() {
            return Some(start % n);
        }
        let now = self.millis(Instant::now());
        let mut fallback = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !self.available(i, now) {
                continue;
            }
            if avoid == Some(i) {
                fallback = Some(i);
                continue;
            }
            self.note_available();
            return Some(i);
        }
        fallback
    }

    /// [`UpstreamPool::pick`] for an upstream with health checks or slow start: healthy (and not
    /// ejected) endpoints only, weighted by their slow-start factors while some ramp.
    fn pick_watched(&self, start: usize, avoid: Option<usize>) -> Option<usize> {
        let now = self.outlier.map(|_| self.millis(Instant::now()));
        let open = |i: usize| now.is_none_or(|now| self.available(i, now));
        let picked = self
            .health
            .pick(
                start,
                |i| avoid != Some(i) && open(i),
                super::draw::random_below,
            )
            .or_else(|| avoid.filter(|&a| self.health.is_healthy(a) && open(a)));
        if picked.is_some() {
            self.note_available();
        }
        picked
    }

    /// A pick found an endpoint: logs the upstream's return once, after
    /// [`UpstreamPool::note_unavailable`]. One relaxed load otherwise.
    fn note_available(&self) {
        if self.unavailable.load(Ordering::Relaxed) {
            self.unavailable.store(false, Ordering::Relaxed);
            tracing::info!(
                upstream = &*self.name,
                "upstream has an endpoint to send to again"
            );
        }
    }

    /// Whether some endpoint may take a request now (healthy and not ejected): whether a route
    /// may send this upstream its share. Read only when another backend's pick found nothing.
    pub fn has_endpoint(&self) -> bool {
        if !self.watched && self.outlier.is_none() {
            return true;
        }
        let now = self.millis(Instant::now());
        (0..self.endpoints.len()).any(|i| {
            (!self.watched || self.health.is_healthy(i)) && {
                let until = self.endpoints[i].ejected_until.load(Ordering::Relaxed);
                until == 0 || now >= until
            }
        })
    }

    /// A request the weights sent here found no endpoint: logged once until one is back.
    pub fn note_unavailable(&self, route: &str) {
        if !self.unavailable.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                upstream = &*self.name,
                route,
                "upstream has no endpoint to send to: its share goes to the route's other backends"
            );
        }
    }

    /// Whether the upstream has active health checks (`health_check`).
    pub fn checks_health(&self) -> bool {
        self.checks
    }

    /// The health table (read by tests).
    pub fn health(&self) -> &Arc<EndpointHealth> {
        &self.health
    }

    /// Carries what `old` (the pool this one replaces, same upstream name) learned into this new
    /// pool: the standing of endpoints in both (when this pool checks health) and their ramps
    /// (when it has slow start); with slow start, endpoints new here start a ramp, unless `old`
    /// had no endpoint at all.
    fn inherit(&self, old: &UpstreamPool) {
        for (to, e) in self.endpoints.iter().enumerate() {
            match old.endpoints().position(|a| *a == e.authority) {
                Some(from) => {
                    if self.watched && old.watched && !old.health.is_healthy(from) {
                        self.health.set_unhealthy(to);
                    }
                    let f = old.health.factor(from);
                    if self.slow_start.is_some() && old.watched && f < health::FULL {
                        self.health.begin_ramp(to, f);
                    }
                }
                None => {
                    if let Some(ss) = &self.slow_start
                        && !old.endpoints.is_empty()
                    {
                        self.health
                            .begin_ramp(to, health::ramp_factor(Duration::ZERO, ss));
                    }
                }
            }
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        // Never 0, which means "not ejected".
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// Whether endpoint `i` may take requests; an ejection that is over is cleared here.
    fn available(&self, i: usize, now: u64) -> bool {
        let e = &self.endpoints[i];
        let until = e.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if now < until {
            return false;
        }
        if e.ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.metrics.endpoints[i].ejected.set(0);
            tracing::info!(upstream = &*self.name, endpoint = %e.authority, "endpoint back from ejection");
            if let Some(ss) = &self.slow_start {
                self.health
                    .begin_ramp(i, health::ramp_factor(Duration::ZERO, ss));
            }
        }
        true
    }

    /// Passive outlier detection: counts failures in a row per endpoint and ejects one that
    /// reaches `consecutive_failures`, for `ejection` times its ejections in a row (at most
    /// [`MAX_EJECTION_FACTOR`] times). A success clears both counts. Nothing without `outlier`.
    pub fn report(&self, i: usize, outcome: Outcome) {
        let Some(outlier) = self.outlier else {
            return;
        };
        let e = &self.endpoints[i];
        match outcome {
            Outcome::Success => {
                // Stores only on a change, so a healthy endpoint's counters stay read-only.
                if e.failures.load(Ordering::Relaxed) != 0 {
                    e.failures.store(0, Ordering::Relaxed);
                }
                if e.ejections.load(Ordering::Relaxed) != 0
                    && e.ejected_until.load(Ordering::Relaxed) == 0
                {
                    e.ejections.store(0, Ordering::Relaxed);
                }
            }
            Outcome::Failure => {
                let failures = e.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures < outlier.consecutive_failures
                    || e.ejected_until.load(Ordering::Relaxed) != 0
                {
                    return;
                }
                let times =
                    (e.ejections.fetch_add(1, Ordering::Relaxed) + 1).min(MAX_EJECTION_FACTOR);
                let period = outlier.ejection * times;
                let until = self.millis(Instant::now()) + period.as_millis() as u64;
                if e.ejected_until
                    .compare_exchange(0, until, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    e.failures.store(0, Ordering::Relaxed);
                    let m = &self.metrics.endpoints[i];
                    m.ejections.inc();
                    m.ejected.set(1);
                    tracing::warn!(
                        upstream = &*self.name,
                        endpoint = %e.authority,
                        failures,
                        ejection = ?period,
                        "endpoint ejected after consecutive failures"
                    );
                }
            }
        }
    }

    /// Closes the idle connections of weir's own HTTP/1.1 pool (a retired upstream's, see
    /// `drain::unused_upstreams`); connections in flight finish their request. hyper-util's
    /// pooled client (TLS, HTTP/2) has no such call: its idle connections close after
    /// [`POOL_IDLE_TIMEOUT`].
    pub fn close_idle(&self) {
        if let UpstreamClient::Http1(pool) = &self.client {
            pool.close_idle();
        }
    }

    /// A request through a route with retries: adds to the retry budget.
    pub fn deposit_retry_token(&self) {
        if self.retry_tokens.load(Ordering::Relaxed) < RETRY_CAP {
            self.retry_tokens.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the cost of one retry from the budget; `false` (and counted) when it is spent.
    pub fn withdraw_retry(&self) -> bool {
        let taken = self
            .retry_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                t.checked_sub(RETRY_COST)
            })
            .is_ok();
        if taken {
            self.metrics.retried.inc();
        } else {
            self.metrics.budget_exhausted.inc();
        }
        taken
    }

    /// A place for one more shadow copy in flight, released when the guard drops; `None` when
    /// [`MAX_MIRRORS_IN_FLIGHT`] are out already.
    pub fn mirror_slot(self: &Arc<Self>) -> Option<MirrorSlot> {
        self.mirrors_in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_MIRRORS_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| MirrorSlot(self.clone()))
    }

    /// Whether requests go out in origin form (`/path?query`, weir's own HTTP/1.1 pool) rather
    /// than absolute form (`http://endpoint/path`, hyper-util's client).
    pub fn origin_form(&self) -> bool {
        matches!(self.client, UpstreamClient::Http1(_))
    }

    /// Sends `req` to endpoint `endpoint`; with weir's own pool, the connection comes back with
    /// the response, to be returned when its body ends. `tunnel`: the request asks for an
    /// upgrade that weir will tunnel.
    ///
    /// Not an `async fn`: it hands back the chosen client's future itself (hyper-util's mapped,
    /// not wrapped), so the request and that future are not copied into one more future.
    pub fn send(
        &self,
        endpoint: usize,
        req: Request<RequestBody>,
        tunnel: bool,
    ) -> impl Future<Output = Result<Answer, SendError>> + Send + '_ {
        match &self.client {
            UpstreamClient::Http1(pool) => {
                Either::Left(pool.send(endpoint, self.endpoint(endpoint), req, tunnel))
            }
            UpstreamClient::Pooled(client) => Either::Right(client.request(req).map(|r| match r {
                Ok(r) => Ok(Answer::Hyper(r, None)),
                // A TLS handshake failure is a connect error to hyper-util; rustls, down its
                // chain of causes, says which.
                Err(e) if e.is_connect() => match conns::error_kind(&e) {
                    Some(UpstreamErrorKind::Tls) => Err(SendError::Tls(e.into())),
                    _ => Err(SendError::Connect(e.into())),
                },
                Err(e) => Err(SendError::after_connect(e.into())),
            })),
        }
    }
}

pub struct MirrorSlot(Arc<UpstreamPool>);

impl MirrorSlot {
    pub fn pool(&self) -> &Arc<UpstreamPool> {
        &self.0
    }
}

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.0.mirrors_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Spawns the health task of `upstream` (active checks and/or slow start), which holds the table
/// weakly and so ends when the pool goes. Its observer logs changes of standing and feeds
/// `weir_endpoint_healthy` and `weir_health_checks_total`. Outside a runtime (a pool built by
/// `weir check` or a benchmark) there is nothing to spawn on and the table stays as it is.
fn spawn_health_task(upstream: &Upstream, table: &Arc<EndpointHealth>, metrics: &Metrics) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let checks = upstream.health_check.clone();
    let prober = HttpProber::new(
        &upstream.endpoints,
        checks
            .as_ref()
            .unwrap_or(&health::HealthCheckSpec::default()),
        match upstream.protocol {
            Protocol::Http1 => CheckProtocol::Http1,
            Protocol::Http2 => CheckProtocol::Http2,
        },
        upstream.tls.as_ref().map(|t| CheckTls {
            config: t.config.clone(),
            server_name: t.server_name.clone(),
        }),
    );
    let handles: Box<[_]> = match &checks {
        Some(_) => upstream
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let m = metrics.endpoint_health(&upstream.name, e.as_str());
                m.healthy.set(i64::from(table.is_healthy(i)));
                m
            })
            .collect(),
        None => Box::default(),
    };
    let name = upstream.name.clone();
    let endpoints: Box<[Authority]> = upstream.endpoints.clone().into();
    let observe = move |event: HealthEvent| match event {
        HealthEvent::Checked { endpoint, result } => {
            if let Some(m) = handles.get(endpoint) {
                match &result {
                    Ok(()) => m.passed.inc(),
                    Err(_) => m.failed.inc(),
                }
            }
            if let Err(e) = result {
                tracing::debug!(upstream = &*name, endpoint = %endpoints[endpoint], error = %e, "health check failed");
            }
        }
        HealthEvent::Changed { endpoint, change } => {
            if let Some(m) = handles.get(endpoint) {
                m.healthy.set(i64::from(change.healthy));
            }
            if change.healthy {
                tracing::info!(upstream = &*name, endpoint = %endpoints[endpoint], passed = change.streak, "endpoint passes its health checks again");
            } else {
                tracing::warn!(upstream = &*name, endpoint = %endpoints[endpoint], failed = change.streak, "endpoint failed its health checks: no requests until it passes again");
            }
        }
        HealthEvent::Ramped { endpoint } => {
            tracing::debug!(upstream = &*name, endpoint = %endpoints[endpoint], "endpoint reached its full share");
        }
    };
    runtime.spawn(health::run(
        Arc::new(prober),
        checks,
        upstream.slow_start.clone(),
        Arc::downgrade(table),
        observe,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upstream `app` (its YAML lines after `name: app`) of a minimal config, its limits,
    /// and a registry.
    fn upstream(lines: &str) -> (Upstream, Limits, Metrics) {
        let yaml = format!(
            "listeners: [{{ name: main, address: 127.0.0.1:0 }}]\nupstreams:\n  - name: app\n{lines}routes:\n  - name: r\n    backends: [{{ upstream: app, weight: 1 }}]\n"
        );
        let config = crate::config::load_str(&yaml, "t.yaml", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        (config.upstreams[0].clone(), config.limits, Metrics::new())
    }

    #[tokio::test]
    async fn an_endpoint_back_from_an_ejection_ramps_up_with_slow_start() {
        let (u, limits, metrics) = upstream(
            "    endpoints: [127.0.0.1:1, 127.0.0.1:2]\n    outlier: { consecutive_failures: 1, ejection: 50ms }\n    slow_start: { window: 1h, min_weight_percent: 20 }\n",
        );
        let pool = UpstreamPool::new(&u, &limits, &metrics);
        pool.report(0, Outcome::Failure);
        for _ in 0..10 {
            assert_eq!(pool.pick(None), Some(1), "endpoint 0 is ejected");
        }
        assert_eq!(pool.health().factor(0), health::FULL);
        tokio::time::sleep(Duration::from_millis(60)).await;
        // The first pick after the ejection ends clears it and starts the ramp at 20 %.
        while pool.pick(None) != Some(0) {}
        assert!(pool.health().ramping());
        assert!(
            pool.health().factor(0) < health::FULL / 2,
            "{}",
            pool.health().factor(0)
        );
        assert_eq!(pool.health().factor(1), health::FULL);
    }

    #[test]
    fn a_pool_replacing_another_keeps_its_failing_endpoints_out_and_ramps_new_ones() {
        // No runtime: no health task runs, so the tables hold exactly what `replacing` set.
        let checks = "    health_check: { path: /healthz }\n    slow_start: { window: 30s }\n";
        let (old_u, limits, metrics) = upstream(&format!(
            "    endpoints: [127.0.0.1:1, 127.0.0.1:2]\n{checks}"
        ));
        let old = UpstreamPool::new(&old_u, &limits, &metrics);
        old.health().set_unhealthy(0);
        let (new_u, ..) = upstream(&format!(
            "    endpoints: [127.0.0.1:1, 127.0.0.1:3]\n{checks}"
        ));
        let new = UpstreamPool::replacing(&new_u, &limits, &metrics, Some(&old));
        assert!(!new.health().is_healthy(0), "still failing its checks");
        assert!(new.health().is_healthy(1));
        assert_eq!(new.health().factor(0), health::FULL);
        assert_eq!(
            new.health().factor(1),
            health::ramp_factor(Duration::ZERO, new_u.slow_start.as_ref().unwrap()),
            "the new endpoint starts its ramp"
        );
        assert!(new.has_endpoint());
        for _ in 0..20 {
            assert_eq!(new.pick(None), Some(1));
        }
        new.health().set_unhealthy(1);
        assert!(!new.has_endpoint());
        assert_eq!(new.pick(None), None);
    }

    #[test]
    fn without_checks_or_slow_start_the_pick_never_reads_the_health_table() {
        let (u, limits, metrics) = upstream("    endpoints: [127.0.0.1:1, 127.0.0.1:2]\n");
        let pool = UpstreamPool::new(&u, &limits, &metrics);
        // A table nobody writes: even marked failing, the plain round robin goes on.
        pool.health().set_unhealthy(0);
        let picks: Vec<_> = (0..4).map(|_| pool.pick(None)).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(0), Some(1)]);
        assert!(pool.has_endpoint());
    }
}
