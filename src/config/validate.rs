//! From a decoded [`ConfigSpec`] to a typed [`Config`] that the rest of weir relies on without
//! checking again: unique names, resolved upstream references, parsed addresses, weights whose
//! sum is positive. Every problem is collected; nothing here touches the network or the clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;

use super::load::{BrokenNames, ConfigError, Diagnostics};
use super::schema::*;

/// A validated configuration. `spec` is the effective file (defaults filled in); the other
/// fields are its parsed, cross-referenced form.
#[derive(Clone, Debug)]
pub struct Config {
    pub spec: ConfigSpec,
    pub base_dir: PathBuf,
    /// Other files this config read (certificates, keys, CA files): a change of any of them is a
    /// change of the config, and the watcher watches them too.
    pub files: Vec<PathBuf>,
    pub listeners: Vec<Listener>,
    pub admin_address: SocketAddr,
    /// The bearer token of the admin API (`admin.token_file` / `admin.token_env`), if set.
    pub admin_token: Option<super::AdminToken>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub limits: Limits,
    /// Where rollouts save their progress, to resume after a restart.
    pub rollout_state: Option<PathBuf>,
    /// The compiled `policies`; every candidate must pass them.
    pub policies: Option<Arc<crate::policy::Policies>>,
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
}

/// A route's automated rollout: weir drives the weight of `backends[canary]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollout {
    /// Index into the route's `backends`.
    pub canary: usize,
    pub plan: crate::rollout::Plan,
    pub webhooks: Vec<Webhook>,
    pub confirm: Option<http::Uri>,
    /// The canary upstream's name and endpoints: a rollout restarts when they change.
    pub definition: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    pub url: http::Uri,
    /// The events sent; empty: all.
    pub on: Vec<crate::rollout::EventKind>,
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
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
}

/// hyper's HTTP/1 read buffer, which bounds the request head, cannot be smaller than this.
const MIN_HEADER_BYTES: usize = 8192;

pub(super) fn validate(
    spec: ConfigSpec,
    broken_upstreams: &BrokenNames,
    base_dir: &Path,
    diag: &mut Diagnostics,
) -> Option<Config> {
    let mut listeners = Vec::new();
    if spec.listeners.is_empty() && diag.errors.is_empty() {
        diag.error("listeners", "at least one listener is needed");
    }
    let mut listener_names = HashMap::new();
    let mut files = Vec::new();
    for (i, l) in spec.listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        unique(diag, &mut listener_names, &l.name, &path, "listener");
        let tls = l
            .tls
            .as_ref()
            .and_then(|t| listener_tls(diag, t, &format!("{path}.tls"), base_dir, &mut files));
        match l.address.parse::<SocketAddr>() {
            Ok(address) => listeners.push(Listener {
                name: l.name.as_str().into(),
                address,
                tls,
            }),
            Err(_) => diag.error(
                &format!("{path}.address"),
                format!(
                    "expected an IP address and port such as 127.0.0.1:8080, found `{}`",
                    l.address
                ),
            ),
        }
    }

    let admin_address = match spec.admin.address.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            diag.error(
                "admin.address",
                format!(
                    "expected an IP address and port such as 127.0.0.1:9901, found `{}`",
                    spec.admin.address
                ),
            );
            None
        }
    };

    if spec.admin.history == 0 {
        diag.error("admin.history", "expected at least 1");
    }
    let admin_token = match super::admin_token::read(&spec.admin, base_dir) {
        Ok((token, file)) => {
            files.extend(file);
            token
        }
        Err(e) => {
            diag.error(e.field, e.message);
            None
        }
    };

    let mut upstreams = Vec::new();
    let mut upstream_index = HashMap::new();
    for (i, u) in spec.upstreams.iter().enumerate() {
        let path = format!("upstreams[{i}]");
        if !unique(diag, &mut upstream_index, &u.name, &path, "upstream") {
            continue;
        }
        if u.endpoints.is_empty() {
            diag.error(
                &format!("{path}.endpoints"),
                "expected at least one endpoint",
            );
        }
        let mut endpoints = Vec::new();
        for (j, e) in u.endpoints.iter().enumerate() {
            match parse_endpoint(e) {
                Some(a) => endpoints.push(a),
                None => diag.error(
                    &format!("{path}.endpoints[{j}]"),
                    format!("expected HOST:PORT such as 127.0.0.1:9001, found `{e}`"),
                ),
            }
        }
        let mut identity = format!("{:?}", u);
        let tls = u.tls.as_ref().and_then(|t| {
            let ca = t.ca.as_ref().map(|ca| base_dir.join(ca));
            if let Some(ca) = &ca {
                files.push(ca.clone());
                if let Ok(bytes) = std::fs::read(ca) {
                    identity.push_str(&crate::reload::revision::sha256_hex(&bytes));
                }
            }
            let server_name = match &t.server_name {
                None => None,
                Some(n) => match rustls_pki_types::ServerName::try_from(n.clone()) {
                    Ok(name) => Some(name),
                    Err(_) => {
                        diag.error(
                            &format!("{path}.tls.server_name"),
                            format!("expected a DNS name or IP address, found `{n}`"),
                        );
                        return None;
                    }
                },
            };
            match crate::tls::client_config(ca.as_deref()) {
                Ok(config) => Some(UpstreamTls {
                    config,
                    server_name,
                }),
                Err(e) => {
                    diag.error(&format!("{path}.tls.ca"), e.to_string());
                    None
                }
            }
        });
        let outlier = u.outlier.as_ref().map(|o| {
            if o.consecutive_failures == 0 {
                diag.error(
                    &format!("{path}.outlier.consecutive_failures"),
                    "expected at least 1",
                );
            }
            if o.ejection.get().is_zero() {
                diag.error(
                    &format!("{path}.outlier.ejection"),
                    "expected a positive duration",
                );
            }
            Outlier {
                consecutive_failures: o.consecutive_failures,
                ejection: o.ejection.get(),
            }
        });
        upstream_index.insert(u.name.clone(), upstreams.len());
        upstreams.push(Upstream {
            name: u.name.as_str().into(),
            endpoints,
            protocol: u.protocol,
            tls,
            spec: u.clone(),
            identity,
            outlier,
        });
    }

    let mut routes = Vec::new();
    let mut route_names = HashMap::new();
    for (i, r) in spec.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        unique(diag, &mut route_names, &r.name, &path, "route");
        let matcher = RouteMatch {
            host: host_match(
                diag,
                r.match_.host.as_deref(),
                &format!("{path}.match.host"),
            ),
            path_prefix: path_prefix(
                diag,
                r.match_.path_prefix.as_deref(),
                &format!("{path}.match.path_prefix"),
            ),
        };
        if r.backends.is_empty() {
            diag.error(&format!("{path}.backends"), "expected at least one backend");
        }
        let mut backends = Vec::new();
        let mut seen = HashMap::new();
        for (j, b) in r.backends.iter().enumerate() {
            let bpath = format!("{path}.backends[{j}]");
            unique(diag, &mut seen, &b.upstream, &bpath, "backend upstream");
            match upstream_index.get(&b.upstream) {
                Some(&upstream) => backends.push(Backend {
                    upstream,
                    weight: b.weight,
                }),
                None if broken_upstreams.contains(&b.upstream) => {}
                None => diag.error(
                    &format!("{bpath}.upstream"),
                    format!(
                        "unknown upstream `{}`{}",
                        b.upstream,
                        known(&upstream_index)
                    ),
                ),
            }
        }
        let total: u64 = r.backends.iter().map(|b| u64::from(b.weight)).sum();
        if !r.backends.is_empty() && total == 0 {
            diag.error(
                &format!("{path}.backends"),
                "the weights sum to 0: at least one backend needs a positive weight",
            );
        }
        if r.timeout.get().is_zero() {
            diag.error(&format!("{path}.timeout"), "expected a positive duration");
        }
        let rollout = r
            .rollout
            .as_ref()
            .and_then(|ro| rollout(diag, ro, &format!("{path}.rollout"), &backends, &upstreams));
        let mirror = r.mirror.as_ref().and_then(|m| {
            let mpath = format!("{path}.mirror");
            if !(m.percent > 0.0 && m.percent <= 100.0) {
                diag.error(
                    &format!("{mpath}.percent"),
                    format!(
                        "expected a percentage above 0 and at most 100, found {}",
                        m.percent
                    ),
                );
            }
            let upstream =
                upstream_ref(diag, &upstream_index, broken_upstreams, &m.upstream, &mpath)?;
            Some(Mirror {
                upstream,
                percent: m.percent,
            })
        });
        let retries = r
            .retries
            .as_ref()
            .map(|rt| retries(diag, rt, &format!("{path}.retries")));
        if r.pick == Pick::RoundRobin {
            let weights: Vec<u32> = r.backends.iter().map(|b| b.weight).collect();
            let cycle = crate::proxy::split::round_robin_cycle(&weights);
            if cycle > crate::proxy::split::MAX_ROUND_ROBIN_CYCLE {
                diag.error(
                    &format!("{path}.pick"),
                    format!(
                        "round_robin needs weights whose sum divided by their greatest common divisor is at most {}; these give {cycle} (scale them down, e.g. 90/10 rather than 900001/99999)",
                        crate::proxy::split::MAX_ROUND_ROBIN_CYCLE
                    ),
                );
            }
        }
        let sticky = r.sticky.as_ref().and_then(|st| {
            let spath = format!("{path}.sticky");
            match (&st.header, &st.cookie) {
                (Some(h), None) => {
                    header_name(diag, h, &format!("{spath}.header")).map(StickyKey::Header)
                }
                (None, Some(c)) if !c.is_empty() => Some(StickyKey::Cookie(c.clone())),
                _ => {
                    diag.error(
                        &spath,
                        "expected exactly one of `header` or `cookie`, with a name",
                    );
                    None
                }
            }
        });
        let mut overrides = Vec::new();
        for (j, o) in r.overrides.iter().enumerate() {
            let opath = format!("{path}.overrides[{j}]");
            let upstream =
                upstream_ref(diag, &upstream_index, broken_upstreams, &o.upstream, &opath);
            let expect = |v: &MatchValue| match v {
                MatchValue::Exact(s) => Expect::Equals(s.clone()),
                MatchValue::Present { present } => Expect::Present(*present),
            };
            let m = &o.match_;
            let mut conditions = Vec::new();
            for (name, v) in &m.header {
                if let Some(h) = header_name(diag, name, &format!("{opath}.match.header.{name}")) {
                    conditions.push(Condition::Header(h, expect(v)));
                }
            }
            conditions.extend(
                m.cookie
                    .iter()
                    .map(|(n, v)| Condition::Cookie(n.clone(), expect(v))),
            );
            conditions.extend(
                m.query
                    .iter()
                    .map(|(n, v)| Condition::Query(n.clone(), expect(v))),
            );
            if m.header.is_empty() && m.cookie.is_empty() && m.query.is_empty() {
                diag.error(
                    &format!("{opath}.match"),
                    "expected at least one of `header`, `cookie` or `query`",
                );
            }
            if let Some(upstream) = upstream {
                overrides.push(Override {
                    conditions,
                    upstream,
                });
            }
        }
        routes.push(Route {
            name: r.name.as_str().into(),
            matcher,
            backends,
            timeout: r.timeout.get(),
            pick: r.pick,
            sticky,
            overrides,
            mirror,
            retries,
            rollout,
        });
    }

    let policies = policies(diag, &spec.policies, base_dir, &mut files);
    let rollout_state = spec.rollout_state.as_ref().map(|p| base_dir.join(p));

    let l = &spec.limits;
    if l.max_header_bytes < MIN_HEADER_BYTES {
        diag.error(
            "limits.max_header_bytes",
            format!(
                "expected at least {MIN_HEADER_BYTES}, found {}",
                l.max_header_bytes
            ),
        );
    }
    for (field, d) in [
        ("header_read_timeout", l.header_read_timeout),
        ("idle_timeout", l.idle_timeout),
        ("connect_timeout", l.connect_timeout),
    ] {
        if d.get().is_zero() {
            diag.error(&format!("limits.{field}"), "expected a positive duration");
        }
    }
    let limits = Limits {
        header_read_timeout: l.header_read_timeout.get(),
        max_header_bytes: l.max_header_bytes,
        idle_timeout: l.idle_timeout.get(),
        connect_timeout: l.connect_timeout.get(),
        drain_timeout: l.drain_timeout.get(),
    };

    if !diag.errors.is_empty() {
        return None;
    }
    Some(Config {
        spec,
        base_dir: base_dir.to_path_buf(),
        files,
        listeners,
        admin_address: admin_address?,
        admin_token,
        upstreams,
        routes,
        limits,
        rollout_state,
        policies,
    })
}

impl Config {
    /// Runs the policies (if any) on this config, replacing `previous`.
    pub fn check_policies(&self, previous: Option<&ConfigSpec>) -> Result<(), super::ConfigErrors> {
        match &self.policies {
            Some(p) => p.check(&self.spec, previous),
            None => Ok(()),
        }
    }
}

/// Reads and compiles the policy files; each file is watched with the config.
fn policies(
    diag: &mut Diagnostics,
    names: &[String],
    base_dir: &Path,
    files: &mut Vec<PathBuf>,
) -> Option<Arc<crate::policy::Policies>> {
    if names.is_empty() {
        return None;
    }
    let mut sources = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let path = base_dir.join(name);
        files.push(path.clone());
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((path.display().to_string(), text)),
            Err(e) => diag.error(
                &format!("policies[{i}]"),
                format!("cannot read the policy file {}: {e}", path.display()),
            ),
        }
    }
    if sources.len() < names.len() {
        return None;
    }
    let shown: Vec<String> = sources.iter().map(|(n, _)| n.clone()).collect();
    let (line, column) = diag.locate("policies");
    let origin = (diag.file().to_owned(), line, column);
    match crate::policy::Policies::compile(sources, origin) {
        Ok(p) => Some(Arc::new(p)),
        Err(errors) => {
            for e in errors {
                let i = shown.iter().position(|n| *n == e.file).unwrap_or(0);
                diag.errors.push(ConfigError {
                    file: e.file,
                    line: e.line,
                    column: e.column,
                    path: format!("policies[{i}]"),
                    message: format!("invalid Rego: {}", e.message),
                });
            }
            None
        }
    }
}

/// Loads a listener's certificates; each problem is reported at the field that names the file.
fn listener_tls(
    diag: &mut Diagnostics,
    tls: &ListenerTlsSpec,
    path: &str,
    base_dir: &Path,
    files: &mut Vec<PathBuf>,
) -> Option<Arc<rustls::ServerConfig>> {
    if tls.certificates.is_empty() {
        diag.error(
            &format!("{path}.certificates"),
            "expected at least one certificate",
        );
        return None;
    }
    let mut keys = Vec::new();
    for (j, c) in tls.certificates.iter().enumerate() {
        let (cert, key) = (base_dir.join(&c.cert), base_dir.join(&c.key));
        files.push(cert.clone());
        files.push(key.clone());
        match crate::tls::certified_key(&cert, &key) {
            Ok(k) => keys.push(k),
            Err(e) => {
                let field = match &e {
                    crate::tls::TlsError::Read { file, .. } if *file == key => "key",
                    crate::tls::TlsError::NoKey { .. } | crate::tls::TlsError::Key { .. } => "key",
                    _ => "cert",
                };
                diag.error(&format!("{path}.certificates[{j}].{field}"), e.to_string());
            }
        }
    }
    (keys.len() == tls.certificates.len()).then(|| crate::tls::server_config(keys))
}

fn header_name(diag: &mut Diagnostics, name: &str, path: &str) -> Option<http::HeaderName> {
    match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            diag.error(path, format!("`{name}` is not a valid header name"));
            None
        }
    }
}

/// Records `name` and reports a duplicate; returns whether it was new.
fn unique(
    diag: &mut Diagnostics,
    seen: &mut HashMap<String, usize>,
    name: &str,
    path: &str,
    what: &str,
) -> bool {
    if name.is_empty() {
        diag.error(
            &format!("{path}.name"),
            format!("a {what} name must not be empty"),
        );
        return false;
    }
    if seen.contains_key(name) {
        diag.error(
            path,
            format!("duplicate {what} `{name}`: names must be unique"),
        );
        return false;
    }
    seen.insert(name.to_owned(), seen.len());
    true
}

/// Resolves the `upstream:` field under `path`; an unknown name is reported there (unless the
/// upstream is defined but broken, which was reported already).
fn upstream_ref(
    diag: &mut Diagnostics,
    index: &HashMap<String, usize>,
    broken: &BrokenNames,
    name: &str,
    path: &str,
) -> Option<usize> {
    match index.get(name) {
        Some(&u) => Some(u),
        None if broken.contains(name) => None,
        None => {
            diag.error(
                &format!("{path}.upstream"),
                format!("unknown upstream `{name}`{}", known(index)),
            );
            None
        }
    }
}

fn rollout(
    diag: &mut Diagnostics,
    spec: &RolloutSpec,
    path: &str,
    backends: &[Backend],
    upstreams: &[Upstream],
) -> Option<Rollout> {
    let errors_before = diag.errors.len();
    let name = |b: &Backend| upstreams[b.upstream].name.clone();
    let canary = backends.iter().position(|b| *name(b) == *spec.canary);
    if canary.is_none() {
        let names: Vec<String> = backends.iter().map(|b| name(b).to_string()).collect();
        diag.error(
            &format!("{path}.canary"),
            format!(
                "`{}` is not a backend of this route, expected one of: {}",
                spec.canary,
                names.join(", ")
            ),
        );
    }
    if spec.steps.is_empty() {
        diag.error(&format!("{path}.steps"), "expected at least one step");
    }
    for (i, w) in spec.steps.iter().enumerate() {
        if *w > 100 || (i > 0 && *w <= spec.steps[i - 1]) {
            diag.error(
                &format!("{path}.steps[{i}]"),
                format!("expected increasing percentages from 0 to 100, found {w}"),
            );
        }
    }
    if spec.interval.get().is_zero() {
        diag.error(&format!("{path}.interval"), "expected a positive duration");
    }
    let fraction = |diag: &mut Diagnostics, v: f64, field: &str| {
        if !(0.0..=1.0).contains(&v) {
            diag.error(
                &format!("{path}.{field}"),
                format!("expected a fraction from 0 to 1 such as 0.99, found {v}"),
            );
        }
    };
    fraction(
        diag,
        spec.thresholds.success_rate,
        "thresholds.success_rate",
    );
    if let Some(rate) = spec.fast_fail.success_rate {
        fraction(diag, rate, "fast_fail.success_rate");
    }
    if spec
        .thresholds
        .p99_latency
        .is_some_and(|d| d.get().is_zero())
    {
        diag.error(
            &format!("{path}.thresholds.p99_latency"),
            "expected a positive duration",
        );
    }
    if spec.max_failed_checks == 0 {
        diag.error(&format!("{path}.max_failed_checks"), "expected at least 1");
    }
    if spec.fast_fail.min_requests == 0 {
        diag.error(
            &format!("{path}.fast_fail.min_requests"),
            "expected at least 1",
        );
    }
    if let Some(c) = canary
        && !backends
            .iter()
            .enumerate()
            .any(|(i, b)| i != c && b.weight > 0)
    {
        diag.error(
            path,
            "a rollout needs another backend with a positive weight to roll back to",
        );
    }
    let url = |diag: &mut Diagnostics, text: &str, field: String| match text.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {
            Some(u)
        }
        _ => {
            diag.error(
                &field,
                format!("expected an http:// or https:// URL, found `{text}`"),
            );
            None
        }
    };
    let mut webhooks = Vec::new();
    for (i, w) in spec.webhooks.iter().enumerate() {
        let wpath = format!("{path}.webhooks[{i}]");
        let target = url(diag, &w.url, format!("{wpath}.url"));
        let mut on = Vec::new();
        for (j, e) in w.on.iter().enumerate() {
            match crate::rollout::EventKind::ALL
                .iter()
                .find(|k| k.name() == e)
            {
                Some(k) => on.push(*k),
                None => diag.error(
                    &format!("{wpath}.on[{j}]"),
                    format!(
                        "unknown event `{e}`, expected one of: started, step, promoted, rolled_back"
                    ),
                ),
            }
        }
        if let Some(url) = target {
            webhooks.push(Webhook { url, on });
        }
    }
    let confirm = spec
        .confirm
        .as_ref()
        .and_then(|c| url(diag, &c.url, format!("{path}.confirm.url")));
    if diag.errors.len() > errors_before {
        return None;
    }
    let canary = canary?;
    let upstream = &upstreams[backends[canary].upstream];
    let endpoints: Vec<&str> = upstream.endpoints.iter().map(|e| e.as_str()).collect();
    Some(Rollout {
        canary,
        plan: crate::rollout::Plan {
            steps: spec.steps.clone(),
            interval: spec.interval.get(),
            min_requests: spec.min_requests,
            success_rate: spec.thresholds.success_rate,
            p99: spec.thresholds.p99_latency.map(|d| d.get()),
            max_failed_checks: spec.max_failed_checks,
            fast_fail: spec.fast_fail.enabled.then(|| crate::rollout::FastFail {
                min_requests: spec.fast_fail.min_requests,
                success_rate: spec
                    .fast_fail
                    .success_rate
                    .unwrap_or(spec.thresholds.success_rate / 2.0),
            }),
        },
        webhooks,
        confirm,
        definition: format!("{} {}", upstream.name, endpoints.join(",")),
    })
}

fn retries(diag: &mut Diagnostics, spec: &RetriesSpec, path: &str) -> Retries {
    if spec.attempts == 0 || spec.attempts > MAX_RETRY_ATTEMPTS {
        diag.error(
            &format!("{path}.attempts"),
            format!(
                "expected 1 to {MAX_RETRY_ATTEMPTS} retries, found {}",
                spec.attempts
            ),
        );
    }
    let mut r = Retries {
        attempts: spec.attempts,
        on_connect: false,
        on_reset: false,
        on_status: Vec::new(),
    };
    for (i, on) in spec.on.iter().enumerate() {
        let status = match on {
            RetryOnSpec::Name(n) if n == "connect" => {
                r.on_connect = true;
                continue;
            }
            RetryOnSpec::Name(n) if n == "reset" => {
                r.on_reset = true;
                continue;
            }
            RetryOnSpec::Name(n) => n.parse::<u16>().ok(),
            RetryOnSpec::Status(s) => Some(*s),
        };
        match status {
            Some(s) if (500..600).contains(&s) => r.on_status.push(s),
            _ => diag.error(
                &format!("{path}.on[{i}]"),
                format!(
                    "expected `connect`, `reset` or a 5xx status code such as \"503\", found `{}`",
                    match on {
                        RetryOnSpec::Name(n) => n.clone(),
                        RetryOnSpec::Status(s) => s.to_string(),
                    }
                ),
            ),
        }
    }
    r
}

fn known(index: &HashMap<String, usize>) -> String {
    if index.is_empty() {
        return String::from(" (no upstreams are defined)");
    }
    let mut names: Vec<&str> = index.keys().map(String::as_str).collect();
    names.sort_unstable();
    format!(", expected one of: {}", names.join(", "))
}

fn parse_endpoint(text: &str) -> Option<Authority> {
    let authority: Authority = text.parse().ok()?;
    let bare = authority.as_str().contains('@');
    (authority.port_u16().is_some() && !bare && !authority.host().is_empty()).then_some(authority)
}

fn host_match(diag: &mut Diagnostics, host: Option<&str>, path: &str) -> HostMatch {
    let Some(host) = host else {
        return HostMatch::Any;
    };
    let lower = host.to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if let Some(rest) = lower.strip_prefix("*.") {
        if valid(rest) {
            return HostMatch::Suffix(lower[1..].into());
        }
    } else if valid(&lower) {
        return HostMatch::Exact(lower.into());
    }
    diag.error(
        path,
        format!("expected a host name such as app.example.com or *.example.com, found `{host}`"),
    );
    HostMatch::Any
}

fn path_prefix(diag: &mut Diagnostics, prefix: Option<&str>, path: &str) -> PathPrefix {
    let Some(prefix) = prefix else {
        return PathPrefix(None);
    };
    if !prefix.starts_with('/') {
        diag.error(
            path,
            format!("expected a path starting with `/`, found `{prefix}`"),
        );
        return PathPrefix(None);
    }
    let trimmed = prefix.trim_end_matches('/');
    PathPrefix((!trimmed.is_empty()).then(|| trimmed.into()))
}
