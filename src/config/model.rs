//! The validated configuration: the types the rest of weir relies on without checking again
//! (unique names, resolved upstream indexes, parsed addresses, weights whose sum is positive),
//! and the few rules about weights that both validation and the data plane apply.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use serde::{Deserialize, Serialize};

use super::admin_token::AdminToken;
use super::diag::ConfigErrors;
use super::files::Input;
use super::policy::Policies;
use super::schema::{ConfigSpec, Pick, Protocol, UpstreamSpec};

/// A validated configuration. `spec` is the effective file (defaults filled in); the other
/// fields are its parsed, cross-referenced form.
#[derive(Clone, Debug)]
pub struct Config {
    pub spec: ConfigSpec,
    pub base_dir: PathBuf,
    /// What this config read besides its own file (certificates, keys, CA files, policy files,
    /// the system's trust store): a change of any of them is a change of the config, and the
    /// watcher watches the files' directories too.
    pub inputs: Vec<Input>,
    pub listeners: Vec<Listener>,
    pub admin_address: SocketAddr,
    /// The bearer token of the admin API (`admin.token_file` / `admin.token_env`), if set.
    pub admin_token: Option<AdminToken>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub limits: Limits,
    /// Where rollouts save their progress, to resume after a restart.
    pub rollout_state: Option<PathBuf>,
    /// How often the watcher hashes the file as a fallback; `None`: never.
    pub poll_interval: Option<Duration>,
    /// The `policies`, read; every candidate must pass them.
    pub policies: Option<Arc<Policies>>,
    /// The `fleet` block: the rollout status this replica follows, and the controller's Git.
    pub fleet: Option<Fleet>,
    /// The `access_log` section, when it is there and enabled.
    pub access_log: Option<AccessLog>,
    /// The `tracing` section.
    pub tracing: Option<Tracing>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tracing {
    pub sampling: f64,
    pub otlp: Option<Otlp>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Otlp {
    pub endpoint: http::Uri,
    pub protocol: super::schema::OtlpProtocol,
    pub timeout: Duration,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub service_name: String,
}

/// Where access log lines go and how they read. The file is opened by the control task when the
/// config is applied (`observe::access`); an error there is reported at `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLog {
    pub format: super::schema::AccessLogFormat,
    pub output: AccessLogOutput,
    /// Where `access_log.path` is written, for the error of a file that cannot be opened.
    pub at: super::diag::ConfigError,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogOutput {
    Stderr,
    Stdout,
    File(PathBuf),
}

/// One rollout for the whole fleet: replicas follow `status` (read with the config), and
/// `weir rollout` writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    /// The status file's path (absolute, or relative to the working directory).
    pub status_file: PathBuf,
    /// The status file as read with this config (empty, generation 0, when it does not exist).
    pub status: Arc<super::status::FleetStatus>,
    pub sync_interval: Duration,
    pub git: super::schema::GitSpec,
}

#[derive(Clone, Debug)]
pub struct Listener {
    pub name: Arc<str>,
    pub address: SocketAddr,
    /// The TLS server config, with its certificates loaded; `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Listeners are the same listener when name and address are: TLS settings apply on reload.
impl PartialEq for Listener {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.address == other.address
    }
}

#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub endpoints: Vec<Authority>,
    pub protocol: Protocol,
    pub tls: Option<UpstreamTls>,
    /// The definition as written (with the CA file's hash); an unchanged definition keeps its
    /// connection pool on reload.
    pub spec: UpstreamSpec,
    pub identity: String,
    pub outlier: Option<Outlier>,
    /// Active health checks (`health_check`), validated.
    pub health_check: Option<crate::proxy::health::HealthCheckSpec>,
    /// Slow start (`slow_start`), validated.
    pub slow_start: Option<crate::proxy::health::SlowStartSpec>,
}

/// Passive outlier ejection: an endpoint failing `consecutive_failures` times in a row (connect
/// error, reset, timeout or 5xx) is left out for `ejection` (longer on repeated ejections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub ejection: Duration,
}

#[derive(Clone, Debug)]
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    /// The name to send as SNI and verify the certificate against; default: the endpoint host.
    pub server_name: Option<rustls_pki_types::ServerName<'static>>,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub matcher: RouteMatch,
    pub backends: Vec<Backend>,
    pub timeout: Duration,
    pub pick: Pick,
    pub sticky: Option<StickyKey>,
    pub overrides: Vec<Override>,
    pub mirror: Option<Mirror>,
    pub retries: Option<Retries>,
    pub rollout: Option<Rollout>,
    /// The `Upgrade` protocols tunnelled, lower case (`websocket` by default).
    pub upgrades: Box<[Box<str>]>,
    /// The `grpc-status` codes that count as failures of the backend.
    pub grpc_failures: GrpcCodes,
    /// The gateway fields (Gateway API matches and filters, `backend_header`,
    /// `session_affinity`), compiled; `None` when the route uses none of them.
    pub gateway: Option<Arc<Gateway>>,
}

/// What a route uses of the gateway features (issue 23, docs/GATEWAY.md), checked and compiled by
/// `config::gateway`; `None` in [`Route`] when it uses none.
#[derive(Debug)]
pub struct Gateway {
    pub matches: Matches,
    /// The route's own filters.
    pub filters: crate::proxy::filters::Filters,
    /// Each configured backend's filters, in file order.
    pub backend_filters: Box<[crate::proxy::filters::Filters]>,
    /// `backend_header: true`.
    pub backend_header: bool,
    pub affinity: Option<RouteAffinity>,
}

/// The elements of `match`, each a host and path prefix (as today) plus a compiled
/// [`crate::proxy::matching::Matcher`] for the rest: the route matches when any element does.
#[derive(Debug)]
pub struct Matches {
    /// Host and `path_prefix` of each element.
    pub bounds: Box<[RouteMatch]>,
    /// Element `i`'s method, path, headers, query parameters and gRPC method.
    pub matcher: crate::proxy::matching::RouteMatcher,
    /// Element `i`'s `PathPrefix` (from `path_prefix` or a `path` of type `PathPrefix`) without
    /// its trailing `/` (`""` for `/`): what `replace_prefix_match` replaces.
    pub prefixes: Box<[Option<Box<str>>]>,
}

impl Matches {
    /// The prefix a `replace_prefix_match` replaces when element `i` matched.
    pub fn prefix(&self, i: usize) -> Option<&str> {
        self.prefixes.get(i).and_then(|p| p.as_deref())
    }
}

/// `session_affinity`, checked: the spec and the canary's index among the configured backends.
/// The snapshot builds the `Affinity` with the rollout's generation.
#[derive(Clone, Debug)]
pub struct RouteAffinity {
    pub spec: crate::proxy::affinity::AffinitySpec,
    pub canary: Option<usize>,
    /// What identifies the rollout the pins belong to: the canary upstream's name and endpoints
    /// (`Rollout::definition`), so a new canary gets new cookie values and an old cookie never
    /// pins it; empty without a canary (`pin: all` on a route without rollout).
    pub generation: String,
}

/// The gRPC status codes by number, as the gRPC specification names them.
pub const GRPC_CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `UNKNOWN`: what a gRPC client makes of a status it cannot read, or of none at all.
pub const GRPC_UNKNOWN: u8 = 2;

/// A set of gRPC status codes (0 to 16), one bit each: copied, never allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcCodes(u32);

impl GrpcCodes {
    pub const EMPTY: GrpcCodes = GrpcCodes(0);

    /// The failures of Envoy's and Linkerd's success rates: UNKNOWN, DEADLINE_EXCEEDED,
    /// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. The others (NOT_FOUND,
    /// INVALID_ARGUMENT, ...) say the client asked for something it could not have.
    pub const DEFAULT_FAILURES: GrpcCodes =
        GrpcCodes(1 << 2 | 1 << 4 | 1 << 12 | 1 << 13 | 1 << 14 | 1 << 15);

    /// The set with `code` added; a code past 16 adds nothing.
    pub fn with(self, code: u8) -> GrpcCodes {
        match code {
            0..=16 => GrpcCodes(self.0 | 1 << code),
            _ => self,
        }
    }

    pub fn contains(self, code: u8) -> bool {
        code <= 16 && self.0 & (1 << code) != 0
    }
}

impl Default for GrpcCodes {
    fn default() -> Self {
        GrpcCodes::DEFAULT_FAILURES
    }
}

/// A route's automated rollout: weir drives the weight of `backends[canary]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollout {
    /// Index into the route's `backends`.
    pub canary: usize,
    pub plan: Plan,
    pub webhooks: Vec<Webhook>,
    pub confirm: Option<http::Uri>,
    /// `analysis.compare`: the canary judged against stable (`None`: thresholds only).
    pub compare: Option<super::analysis::Compare>,
    /// The canary upstream's name and endpoints: a rollout restarts when they change.
    pub definition: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    pub url: http::Uri,
    /// The events sent; empty: all.
    pub on: Vec<EventKind>,
}

/// A shadow copy of `percent` % of a route's requests goes to `upstream` (an index into
/// `Config::upstreams`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mirror {
    pub upstream: usize,
    pub percent: f64,
}

/// When a failed try of an idempotent request is tried again, on another endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retries {
    pub attempts: u32,
    pub on_connect: bool,
    pub on_reset: bool,
    /// 5xx status codes that are retried.
    pub on_status: Vec<u16>,
}

/// At most this many retries per request: more only multiplies the load on a failing upstream.
pub const MAX_RETRY_ATTEMPTS: u32 = 5;

/// Where a route's sticky key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StickyKey {
    Header(http::HeaderName),
    Cookie(String),
}

/// Requests meeting every condition go to `upstream` (an index into `Config::upstreams`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub conditions: Vec<Condition>,
    pub upstream: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    Header(http::HeaderName, Expect),
    Cookie(String, Expect),
    Query(String, Expect),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Equals(String),
    Present(bool),
}

/// An upstream with a weight inside a route. `upstream` indexes `Config::upstreams`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub upstream: usize,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    pub host: HostMatch,
    pub path_prefix: PathPrefix,
}

/// Host names are stored lower-case; `Suffix` holds the dot, as in `.example.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(Box<str>),
    Suffix(Box<str>),
}

/// A path prefix without its trailing slash; `None` matches every path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPrefix(pub Option<Box<str>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
    pub write_stall_timeout: Duration,
    /// `limits.drain_on_retire`.
    pub drain_on_retire: bool,
}

impl Config {
    /// Runs the policies (if any) on this config, replacing `previous`.
    pub fn check_policies(&self, previous: Option<&ConfigSpec>) -> Result<(), ConfigErrors> {
        match &self.policies {
            Some(p) => p.check(&self.spec, previous),
            None => Ok(()),
        }
    }
}

// === rollouts ===

/// What a rollout does, from the route's `rollout:` block.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Canary percent at each step, increasing.
    pub steps: Vec<u32>,
    pub interval: Duration,
    /// Fewer canary requests in an interval: the check is skipped.
    pub min_requests: u64,
    pub success_rate: f64,
    pub p99: Option<Duration>,
    pub max_failed_checks: u32,
    pub fast_fail: Option<FastFail>,
    /// No progress for this long rolls the rollout back.
    pub progress_deadline: Option<Duration>,
    /// Where measurements come from; `None`: in-process.
    pub source: Option<PrometheusSource>,
}

/// A Prometheus server that scrapes every replica of a fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusSource {
    pub url: http::Uri,
    /// Label matchers (`job="weir"`) added to every query.
    pub selector: String,
    pub timeout: Duration,
}

/// Roll back at once, mid-interval, when at least `min_requests` canary requests of the interval
/// succeeded less often than `success_rate`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FastFail {
    pub min_requests: u64,
    pub success_rate: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Started,
    Step,
    Promoted,
    RolledBack,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Started,
        EventKind::Step,
        EventKind::Promoted,
        EventKind::RolledBack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Step => "step",
            EventKind::Promoted => "promoted",
            EventKind::RolledBack => "rolled_back",
        }
    }
}

// === weights ===

/// The longest cycle `pick: round_robin` precomputes (entries of 4 bytes). Validation refuses
/// configured weights whose cycle is longer; the data plane falls back to random picks when a
/// rollout's weights make it longer (see `proxy::split::Table`).
pub const MAX_ROUND_ROBIN_CYCLE: u64 = 65_536;

/// The greatest common divisor (0 with 0 is 0).
pub fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The length of one smooth round-robin cycle: the weight sum divided by the weights' gcd.
pub fn round_robin_cycle(weights: &[u32]) -> u64 {
    let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w)));
    weights.iter().map(|&w| u64::from(w)).sum::<u64>() / g.max(1)
}

/// A backend's share of its route: its weight over the sum of the route's weights (0 when the
/// sum is 0, which validation refuses).
pub fn share(weight: u32, weights: impl IntoIterator<Item = u32>) -> f64 {
    let total: u64 = weights.into_iter().map(u64::from).sum();
    if total == 0 {
        0.0
    } else {
        f64::from(weight) / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_and_shares() {
        assert_eq!(round_robin_cycle(&[900, 100]), 10);
        assert_eq!(round_robin_cycle(&[7, 0, 3]), 10);
        assert_eq!(round_robin_cycle(&[0, 0]), 0);
        assert_eq!(share(10, [90, 10]), 0.1);
        assert_eq!(share(0, [0, 0]), 0.0);
    }
}
