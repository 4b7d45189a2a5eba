//! The serde types that mirror the YAML file (SPEC.md, "Configuration"). Defaults are filled in
//! here, so serializing a parsed file gives the effective configuration that `/config` shows and
//! that policies see. Semantic checks live in `validate`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::DurationSpec;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    pub name: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTlsSpec>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsSpec {
    pub certificates: Vec<CertificateSpec>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    pub cert: String,
    pub key: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// How many reload attempts `/history` keeps (an extension of SPEC.md).
    #[serde(default = "default_history")]
    pub history: usize,
    /// A file holding the bearer token that state-changing admin calls (`POST /reload`) need;
    /// relative to the config file. Re-read on every reload, and a change of it is a reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// The name of an environment variable holding that token (instead of `token_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// `open` (default): reads need no token. `token`: every path but `/healthz` and `/readyz`
    /// needs it too.
    #[serde(default)]
    pub reads: AdminReads,
}

/// Who may read the admin API (`/`, `/metrics`, `/stats`, `/config`, `/history`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdminReads {
    /// Anyone who reaches the admin address.
    #[default]
    Open,
    /// Only callers with the bearer token (`/healthz` and `/readyz` stay open for probes).
    Token,
}

impl Default for AdminSpec {
    fn default() -> Self {
        AdminSpec {
            address: default_admin_address(),
            history: default_history(),
            token_file: None,
            token_env: None,
            reads: AdminReads::default(),
        }
    }
}

fn default_history() -> usize {
    100
}

fn default_admin_address() -> String {
    "127.0.0.1:9901".to_owned()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http1,
    Http2,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub name: String,
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierSpec>,
    /// Active health checks of every endpoint (docs/GATEWAY.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfigSpec>,
    /// An endpoint that joins takes a growing share over a window (docs/GATEWAY.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStartConfigSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSpec {
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierSpec {
    pub consecutive_failures: u32,
    pub ejection: DurationSpec,
}

/// `upstreams[].health_check`: an HTTP `GET` of `path` on every endpoint each `interval`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfigSpec {
    pub path: String,
    #[serde(default = "defaults::health_interval")]
    pub interval: DurationSpec,
    #[serde(default = "defaults::health_timeout")]
    pub timeout: DurationSpec,
    #[serde(default = "defaults::healthy_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "defaults::unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Status codes (`200`) or ranges (`"200-399"`) that pass.
    #[serde(default = "defaults::expected_statuses")]
    pub expected_statuses: Vec<StatusSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A status code that passes a health check: a number, or a `LOW-HIGH` range.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u16),
    Range(String),
}

/// `upstreams[].slow_start`: Envoy's slow start.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowStartConfigSpec {
    pub window: DurationSpec,
    #[serde(default = "defaults::aggression")]
    pub aggression: f64,
    #[serde(default = "defaults::min_weight_percent")]
    pub min_weight_percent: u32,
}

// `UpstreamSpec` is `Eq` and `Hash` (its debug form is its identity); `aggression` is compared
// and hashed by its bits.
impl Eq for SlowStartConfigSpec {}

impl std::hash::Hash for SlowStartConfigSpec {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.window.hash(state);
        self.aggression.to_bits().hash(state);
        self.min_weight_percent.hash(state);
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    #[serde(default, rename = "match")]
    pub match_: MatchesSpec,
    pub backends: Vec<BackendSpec>,
    #[serde(default = "default_route_timeout")]
    pub timeout: DurationSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickySpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<OverrideSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorSpec>,
    #[serde(default)]
    pub pick: Pick,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetriesSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    /// The `Upgrade` protocols tunnelled to the upstream; any other `Upgrade` is dropped and the
    /// request goes on as a plain one. `h2c` is never tunnelled.
    #[serde(default = "defaults::upgrades")]
    pub upgrades: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcSpec>,
    /// Gateway API's HTTPRoute filters for every request of the route (docs/GATEWAY.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<FiltersSpec>,
    /// `x-weir-backend: <upstream>` on every response of the route, naming the backend that
    /// served (or was chosen for) it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backend_header: bool,
    /// Canary session affinity: a cookie that keeps a client on the backend the weights gave it
    /// for the rest of the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinitySpec>,
}

/// Gateway API's HTTPRoute filters, on a route or on one of its backends.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FiltersSpec {
    /// `RequestHeaderModifier`: headers changed before the request goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderFilterSpec>,
    /// `ResponseHeaderModifier`: headers changed before the response goes to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderFilterSpec>,
    /// `URLRewrite`: the host and path the upstream sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RewriteFilterSpec>,
    /// `RequestRedirect`: weir answers with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectFilterSpec>,
}

/// Header changes: `remove`, then `set` (replaces every value), then `add` (appends a line).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderFilterSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderPairSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderPairSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderPairSpec {
    pub name: String,
    pub value: String,
}

/// Gateway API's `HTTPPathModifier`: exactly one of the two.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathModifierSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// Replaces the matched `PathPrefix` (whole segments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewriteFilterSpec {
    /// The `Host` the upstream sees (`x-forwarded-host` keeps the client's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifierSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectFilterSpec {
    /// `http` or `https`; default: the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Default: the request's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Default: the configured scheme's well-known port, else the port the client addressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifierSpec>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

/// Canary session affinity (Flagger style), docs/GATEWAY.md.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionAffinitySpec {
    /// The cookie's name.
    #[serde(default = "defaults::affinity_cookie")]
    pub name: String,
    /// A pin lasts at most this long.
    #[serde(default = "defaults::affinity_max_age")]
    pub max_age: DurationSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default = "defaults::affinity_path")]
    pub path: String,
    #[serde(default)]
    pub secure: bool,
    #[serde(default = "defaults::enabled")]
    pub http_only: bool,
    #[serde(default)]
    pub same_site: SameSiteSpec,
    /// `canary`: only clients sent to the canary get a cookie; `all`: every client.
    #[serde(default)]
    pub pin: PinSpec,
    /// The canary upstream; default: the route's rollout canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SameSiteSpec {
    Strict,
    #[default]
    Lax,
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PinSpec {
    #[default]
    Canary,
    All,
}

/// How a route judges gRPC calls, which report failures as HTTP 200 with a `grpc-status`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcSpec {
    /// The `grpc-status` codes that count as failures of the backend, by name (`UNAVAILABLE`)
    /// or number (`14`). Default: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
    /// UNAVAILABLE, DATA_LOSS.
    #[serde(default = "defaults::grpc_failure_codes")]
    pub failure_codes: Vec<GrpcCodeSpec>,
}

/// A gRPC status code, written as its name (`UNAVAILABLE`) or its number (`14`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum GrpcCodeSpec {
    Number(u32),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub canary: String,
    pub steps: Vec<u32>,
    #[serde(default = "defaults::rollout_interval")]
    pub interval: DurationSpec,
    #[serde(default = "defaults::min_requests")]
    pub min_requests: u64,
    #[serde(default)]
    pub thresholds: ThresholdsSpec,
    #[serde(default = "defaults::max_failed_checks")]
    pub max_failed_checks: u32,
    #[serde(default)]
    pub fast_fail: FastFailSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<ConfirmSpec>,
    /// A rollout that cannot progress (its checks skipped for too few requests, or, in a fleet,
    /// its step not yet served by every replica) for this long ends rolled back. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<DurationSpec>,
    /// How the canary is judged besides the thresholds: where the measurements come from
    /// (`source`), and against stable (`compare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<super::analysis::AnalysisSpec>,
}

/// `analysis.source`, kept with the rest of the `analysis` block.
pub use super::analysis::{PrometheusSpec, SourceSpec};

/// One rollout for the whole fleet (docs/FLEET.md): the status file every replica follows, and
/// how `weir rollout` keeps it in Git.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// The rollout status file, relative to the config file, in the same Git repository.
    pub status: String,
    /// How often the controller fetches the repository and queries Prometheus.
    #[serde(default = "defaults::sync_interval")]
    pub sync_interval: DurationSpec,
    #[serde(default)]
    pub git: GitSpec,
}

/// The Git side of the controller.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitSpec {
    /// The remote the controller pushes to.
    #[serde(default = "defaults::git_remote")]
    pub remote: String,
    #[serde(default = "defaults::git_branch")]
    pub branch: String,
    /// The repository to clone into `workdir` (default: the remote's URL in the config's own
    /// work tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The controller's own clone (`weir rollout --workdir` overrides it); without either, the
    /// controller works in the config file's own work tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The author and committer of the controller's commits.
    #[serde(default = "defaults::git_author")]
    pub author: String,
}

impl Default for GitSpec {
    fn default() -> Self {
        GitSpec {
            remote: defaults::git_remote(),
            branch: defaults::git_branch(),
            url: None,
            workdir: None,
            author: defaults::git_author(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsSpec {
    #[serde(default = "defaults::success_rate")]
    pub success_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_latency: Option<DurationSpec>,
}

impl Default for ThresholdsSpec {
    fn default() -> Self {
        ThresholdsSpec {
            success_rate: defaults::success_rate(),
            p99_latency: None,
        }
    }
}

/// Fast-fail: roll back mid-interval when at least `min_requests` canary requests of the interval
/// succeed less often than `success_rate` (default: half of `thresholds.success_rate`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FastFailSpec {
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
    #[serde(default = "defaults::fast_fail_min_requests")]
    pub min_requests: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
}

impl Default for FastFailSpec {
    fn default() -> Self {
        FastFailSpec {
            enabled: true,
            min_requests: defaults::fast_fail_min_requests(),
            success_rate: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub url: String,
    /// Events to send (`started`, `step`, `promoted`, `rolled_back`); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmSpec {
    pub url: String,
}

fn default_route_timeout() -> DurationSpec {
    DurationSpec::from_secs(30)
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Gateway API's method match: exact and case-sensitive (`GET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Gateway API's path match (`Exact`, `PathPrefix` or `RegularExpression`); excludes
    /// `path_prefix` (its short form) and `grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatchSpec>,
    /// Header conditions; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
    /// Query parameter conditions (percent-decoded); all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatchSpec>,
    /// GRPCRoute's method match: the request path `/service/method`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcMethodMatchSpec>,
}

/// A route's `match`: one match, or a list of them (the route matches when any one does, as
/// Gateway API's `matches`).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum MatchesSpec {
    One(MatchSpec),
    Any(Vec<MatchSpec>),
}

impl Default for MatchesSpec {
    fn default() -> Self {
        MatchesSpec::One(MatchSpec::default())
    }
}

impl MatchesSpec {
    /// The matches, in order (one for the single form).
    pub fn as_slice(&self) -> &[MatchSpec] {
        match self {
            MatchesSpec::One(m) => std::slice::from_ref(m),
            MatchesSpec::Any(list) => list,
        }
    }
}

/// Decoded by the YAML node's kind (a mapping or a list) rather than by trying each variant, so
/// an error inside a match keeps its field path and its own message.
impl<'de> Deserialize<'de> for MatchesSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = MatchesSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a match (a mapping) or a list of matches")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<MatchesSpec, A::Error> {
                MatchSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(MatchesSpec::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<MatchesSpec, A::Error> {
                Vec::<MatchSpec>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(MatchesSpec::Any)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Gateway API's `HTTPPathMatch`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathMatchSpec {
    #[serde(default, rename = "type")]
    pub type_: PathMatchType,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum PathMatchType {
    /// The whole path, as sent.
    Exact,
    /// Whole segments, a trailing `/` ignored.
    #[default]
    PathPrefix,
    /// A regular expression (RE2 syntax) that must match the whole path.
    RegularExpression,
}

/// Gateway API's `HTTPHeaderMatch` / `HTTPQueryParamMatch`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchSpec {
    pub name: String,
    #[serde(default, rename = "type")]
    pub type_: ValueMatchType,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ValueMatchType {
    #[default]
    Exact,
    /// A regular expression (RE2 syntax) that must match the whole value.
    RegularExpression,
}

/// GRPCRoute's `GRPCMethodMatch`: at least one of `service` and `method`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcMethodMatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, rename = "type")]
    pub type_: ValueMatchType,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub upstream: String,
    pub weight: u32,
    /// Filters for the requests sent to this backend, after the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<FiltersSpec>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StickySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideSpec {
    #[serde(rename = "match")]
    pub match_: OverrideMatchSpec,
    pub upstream: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideMatchSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, MatchValue>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cookie: BTreeMap<String, MatchValue>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, MatchValue>,
}

/// An override condition's value: an exact value, or `{present: true|false}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum MatchValue {
    Exact(String),
    Present { present: bool },
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorSpec {
    pub upstream: String,
    pub percent: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    #[default]
    Random,
    RoundRobin,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetriesSpec {
    /// Retries after the first try (as Istio's `retries.attempts`).
    pub attempts: u32,
    #[serde(default = "defaults::retry_on")]
    pub on: Vec<RetryOnSpec>,
}

/// A retry condition: `connect`, `reset`, or a 5xx status code, written as a number or a string.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RetryOnSpec {
    Status(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: DurationSpec,
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// The most header fields a request head may have (more: 431).
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: DurationSpec,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: DurationSpec,
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: DurationSpec,
    /// A response that waits this long for the client to read it (a stalled HTTP/1.1 reader, a
    /// zero HTTP/2 window) closes the client connection, as nginx's `send_timeout`.
    #[serde(default = "defaults::write_stall_timeout")]
    pub write_stall_timeout: DurationSpec,
    /// When a backend retires (its weight goes to 0: a promotion or a rollback), close the client
    /// connections it served, gracefully (docs/GATEWAY.md).
    #[serde(default = "defaults::enabled")]
    pub drain_on_retire: bool,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            header_read_timeout: defaults::header_read_timeout(),
            max_header_bytes: defaults::max_header_bytes(),
            max_headers: defaults::max_headers(),
            idle_timeout: defaults::idle_timeout(),
            connect_timeout: defaults::connect_timeout(),
            drain_timeout: defaults::drain_timeout(),
            write_stall_timeout: defaults::write_stall_timeout(),
            drain_on_retire: true,
        }
    }
}

mod defaults {
    use super::{DurationSpec, GrpcCodeSpec, RetryOnSpec, StatusSpec};

    pub fn health_interval() -> DurationSpec {
        DurationSpec::from_secs(5)
    }
    pub fn health_timeout() -> DurationSpec {
        DurationSpec::from_secs(1)
    }
    pub fn healthy_threshold() -> u32 {
        2
    }
    pub fn unhealthy_threshold() -> u32 {
        3
    }
    pub fn expected_statuses() -> Vec<StatusSpec> {
        vec![StatusSpec::Range("200-399".to_owned())]
    }
    pub fn aggression() -> f64 {
        1.0
    }
    pub fn min_weight_percent() -> u32 {
        10
    }

    pub fn sampling() -> f64 {
        1.0
    }
    pub fn otlp_timeout() -> DurationSpec {
        DurationSpec::from_secs(10)
    }
    pub fn service_name() -> String {
        "weir".to_owned()
    }
    pub fn access_log_path() -> String {
        "stderr".to_owned()
    }
    pub fn rollout_interval() -> DurationSpec {
        DurationSpec::from_secs(30)
    }
    pub fn min_requests() -> u64 {
        50
    }
    pub fn success_rate() -> f64 {
        0.99
    }
    pub fn max_failed_checks() -> u32 {
        3
    }
    pub fn affinity_cookie() -> String {
        "weir-affinity".to_owned()
    }

    pub fn affinity_max_age() -> DurationSpec {
        DurationSpec::from_secs(24 * 3600)
    }

    pub fn affinity_path() -> String {
        "/".to_owned()
    }

    pub fn enabled() -> bool {
        true
    }
    pub fn fast_fail_min_requests() -> u64 {
        20
    }

    pub fn retry_on() -> Vec<RetryOnSpec> {
        vec![
            RetryOnSpec::Name("connect".into()),
            RetryOnSpec::Name("reset".into()),
        ]
    }

    pub fn header_read_timeout() -> DurationSpec {
        DurationSpec::from_secs(10)
    }
    pub fn max_header_bytes() -> usize {
        65_536
    }
    pub fn max_headers() -> usize {
        100
    }
    pub fn upgrades() -> Vec<String> {
        vec!["websocket".to_owned()]
    }
    pub fn idle_timeout() -> DurationSpec {
        DurationSpec::from_secs(60)
    }
    pub fn connect_timeout() -> DurationSpec {
        DurationSpec::from_secs(2)
    }
    pub fn drain_timeout() -> DurationSpec {
        DurationSpec::from_secs(30)
    }
    pub fn write_stall_timeout() -> DurationSpec {
        DurationSpec::from_secs(60)
    }
    pub fn grpc_failure_codes() -> Vec<GrpcCodeSpec> {
        [
            "UNKNOWN",
            "DEADLINE_EXCEEDED",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
        ]
        .map(|n| GrpcCodeSpec::Name(n.into()))
        .to_vec()
    }
    pub fn poll_interval() -> DurationSpec {
        DurationSpec::from_secs(2)
    }
    pub fn sync_interval() -> DurationSpec {
        DurationSpec::from_secs(10)
    }
    pub fn git_remote() -> String {
        "origin".to_owned()
    }
    pub fn git_branch() -> String {
        "main".to_owned()
    }
    pub fn git_author() -> String {
        "weir rollout <weir-rollout@localhost>".to_owned()
    }
}

/// How weir notices that the config changed (an extension of SPEC.md, which has the 2 s poll).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadSpec {
    /// How often the file (and every file it reads) is hashed, as a fallback for filesystems
    /// that send no change events; `0s` turns the poll off and leaves the file watcher and
    /// SIGHUP.
    #[serde(default = "defaults::poll_interval")]
    pub poll_interval: DurationSpec,
}

impl Default for ReloadSpec {
    fn default() -> Self {
        ReloadSpec {
            poll_interval: defaults::poll_interval(),
        }
    }
}

/// The whole file with defaults filled in. Its JSON form is `/config`'s `config` and the
/// `input.config` that policies see. `load` decodes it section by section; the `schemars`
/// attributes tell the JSON Schema (config/weir.schema.json) which sections may be left out.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[schemars(
    title = "weir configuration",
    description = "The YAML file `weir run --config` serves (docs/CONFIGURATION.md).",
    deny_unknown_fields
)]
pub struct ConfigSpec {
    pub listeners: Vec<ListenerSpec>,
    #[schemars(default)]
    pub admin: AdminSpec,
    #[schemars(default)]
    pub upstreams: Vec<UpstreamSpec>,
    #[schemars(default)]
    pub routes: Vec<RouteSpec>,
    #[schemars(default)]
    pub policies: Vec<String>,
    #[schemars(default)]
    pub limits: LimitsSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_state: Option<String>,
    #[schemars(default)]
    pub reload: ReloadSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetSpec>,
    /// One line per request (docs/OPERATIONS.md, Access log); absent: the `weir::access` line
    /// through `RUST_LOG`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogSpec>,
    /// W3C Trace Context and OTLP span export (docs/OPERATIONS.md, Traces); absent: weir
    /// leaves `traceparent` alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
}

/// Trace context: weir continues a caller's trace or starts one, and names its own span as the
/// upstream's parent.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingSpec {
    /// The share of the traces weir starts that are sampled, 0 to 1; a caller's sampled flag
    /// decides for its own traces.
    #[serde(default = "defaults::sampling")]
    pub sampling: f64,
    /// Where sampled spans are exported; absent: context is propagated, nothing exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpSpec>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpSpec {
    /// `http://HOST:PORT` or `https://HOST:PORT` (system roots).
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Each export request must be answered within this.
    #[serde(default = "defaults::otlp_timeout")]
    pub timeout: DurationSpec,
    /// Sent with every export (an API key, a tenant).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The `service.name` resource attribute.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (the collector's port 4317).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// The access log: where each request's line goes, and in which format.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSpec {
    /// `false` turns the log off (and the `weir::access` line of `RUST_LOG` with it).
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
    /// `json` (one flat object per line) or `text` (Envoy's default line, then weir's fields).
    #[serde(default)]
    pub format: AccessLogFormat,
    /// `stderr`, `stdout`, or a file appended to (relative to the config file's directory),
    /// reopened when logrotate moves it away.
    #[serde(default = "defaults::access_log_path")]
    pub path: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    #[default]
    Json,
    Text,
}

/// The top-level keys, in the order `load` reports them when one is unknown.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listeners",
    "admin",
    "upstreams",
    "routes",
    "policies",
    "limits",
    "rollout_state",
    "reload",
    "fleet",
    "access_log",
    "tracing",
];
