//! From a decoded [`ConfigSpec`] to a typed [`Config`]: one pure function per section
//! (listeners, admin, upstreams, routes and their parts, rollout, policies, limits), each
//! recording every problem it finds. The files the spec names were read before (see
//! `config::files`); nothing here reads a file, opens a socket or reads the clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::uri::Authority;

use super::decode::{BrokenNames, Parsed};
use super::diag::Diagnostics;
use super::files::{Files, sha256_hex};
use super::model::*;
use super::policy::Policies;
use super::schema::*;
use super::status::FleetStatus;

/// hyper's HTTP/1 read buffer, which bounds the request head, cannot be smaller than this.
const MIN_HEADER_BYTES: usize = 8192;
/// `limits.max_headers`: hyper parses heads with an array of this many fields.
const MIN_HEADERS: usize = 8;
const MAX_HEADERS: usize = 4096;

/// Validates `spec`, whose files are in `files`; `None` when any error was recorded.
pub(super) fn validate(
    spec: ConfigSpec,
    parsed: &Parsed,
    files: &Files,
    base_dir: &Path,
    diag: &mut Diagnostics,
) -> Option<Config> {
    let listeners = listeners(diag, &spec.listeners, &parsed.listeners, files, base_dir);
    let admin_address = admin(diag, &spec.admin);
    let admin_token = match super::admin_token::token(&spec.admin, files, base_dir) {
        Ok(token) => token,
        Err(e) => {
            diag.error(e.field, e.message);
            None
        }
    };
    let upstreams = upstreams(diag, &spec.upstreams, &parsed.upstreams, files, base_dir);
    let refs = Refs {
        index: upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.to_string(), i))
            .collect(),
        broken: &parsed.broken_upstreams,
        upstreams: &upstreams,
    };
    let routes = routes(diag, &spec.routes, &parsed.routes, &refs);
    let policies = policies(diag, &spec.policies, files, base_dir);
    let limits = limits(diag, &spec.limits);
    let fleet = spec
        .fleet
        .as_ref()
        .and_then(|f| fleet(diag, f, files, base_dir));
    fleet_rollouts(diag, &spec);
    let access_log = spec
        .access_log
        .as_ref()
        .and_then(|a| access_log(diag, a, base_dir));
    let tracing = spec.tracing.as_ref().and_then(|t| tracing(diag, t));
    if !diag.errors.is_empty() {
        return None;
    }
    Some(Config {
        rollout_state: spec.rollout_state.as_ref().map(|p| base_dir.join(p)),
        poll_interval: Some(spec.reload.poll_interval.get()).filter(|d| !d.is_zero()),
        spec,
        base_dir: base_dir.to_path_buf(),
        inputs: files.inputs().to_vec(),
        listeners,
        admin_address: admin_address?,
        admin_token,
        upstreams,
        routes,
        limits,
        policies,
        fleet,
        access_log,
        tracing,
    })
}

/// The `tracing` section.
fn tracing(diag: &mut Diagnostics, spec: &TracingSpec) -> Option<Tracing> {
    let mut ok = true;
    if !(0.0..=1.0).contains(&spec.sampling) {
        diag.error(
            "tracing.sampling",
            format!("expected a share from 0 to 1, found {}", spec.sampling),
        );
        ok = false;
    }
    let otlp = match &spec.otlp {
        None => None,
        Some(o) => {
            let endpoint = match o.endpoint.parse::<http::Uri>() {
                Ok(u)
                    if matches!(u.scheme_str(), Some("http" | "https"))
                        && u.host().is_some_and(|h| !h.is_empty()) =>
                {
                    Some(u)
                }
                _ => {
                    diag.error(
                        "tracing.otlp.endpoint",
                        format!(
                            "expected an http:// or https:// address with a host, found `{}`",
                            o.endpoint
                        ),
                    );
                    None
                }
            };
            let mut headers = Vec::new();
            for (name, value) in &o.headers {
                match (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_str(value),
                ) {
                    (Ok(n), Ok(v)) => headers.push((n, v)),
                    _ => {
                        diag.error(
                            &format!("tracing.otlp.headers.{name}"),
                            "expected a valid HTTP header name and a visible ASCII value",
                        );
                        ok = false;
                    }
                }
            }
            if o.timeout.get().is_zero() {
                diag.error("tracing.otlp.timeout", "expected a duration above 0");
                ok = false;
            }
            endpoint.map(|endpoint| Otlp {
                endpoint,
                protocol: o.protocol,
                timeout: o.timeout.get(),
                headers,
                service_name: o.service_name.clone(),
            })
        }
    };
    if spec.otlp.is_some() && otlp.is_none() {
        ok = false;
    }
    ok.then_some(Tracing {
        sampling: spec.sampling,
        otlp,
    })
}

/// The `access_log` section: `None` when it is turned off.
fn access_log(
    diag: &mut Diagnostics,
    spec: &super::schema::AccessLogSpec,
    base_dir: &Path,
) -> Option<super::model::AccessLog> {
    use super::model::AccessLogOutput;
    if !spec.enabled {
        return None;
    }
    let output = match spec.path.as_str() {
        "stderr" => AccessLogOutput::Stderr,
        "stdout" => AccessLogOutput::Stdout,
        "" => {
            diag.error(
                "access_log.path",
                "expected `stderr`, `stdout` or a file path, found an empty string",
            );
            return None;
        }
        p if p.ends_with('/') => {
            diag.error(
                "access_log.path",
                format!("expected a file path, found the directory `{p}`"),
            );
            return None;
        }
        p => AccessLogOutput::File(base_dir.join(p)),
    };
    let (line, column) = diag.locate("access_log.path");
    Some(super::model::AccessLog {
        format: spec.format,
        output,
        at: super::diag::ConfigError {
            file: diag.file().to_owned(),
            line,
            column,
            path: "access_log.path".to_owned(),
            message: String::new(),
        },
    })
}

/// The index in the file of the spec's `i`-th element (elements that did not decode are not in
/// the spec, and the ones after them keep their own index).
fn file_index(indexes: &[usize], i: usize) -> usize {
    indexes.get(i).copied().unwrap_or(i)
}

// === listeners and admin ===

fn listeners(
    diag: &mut Diagnostics,
    specs: &[ListenerSpec],
    indexes: &[usize],
    files: &Files,
    base_dir: &Path,
) -> Vec<Listener> {
    if specs.is_empty() && diag.errors.is_empty() {
        diag.error("listeners", "at least one listener is needed");
    }
    let mut names = HashMap::new();
    let mut listeners = Vec::new();
    for (i, l) in specs.iter().enumerate() {
        let path = format!("listeners[{}]", file_index(indexes, i));
        unique(diag, &mut names, &l.name, &path, "listener");
        let tls = l
            .tls
            .as_ref()
            .and_then(|t| listener_tls(diag, t, &format!("{path}.tls"), files, base_dir));
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
    listeners
}

/// A listener's certificates; each problem is reported at the field that names the file.
fn listener_tls(
    diag: &mut Diagnostics,
    tls: &ListenerTlsSpec,
    path: &str,
    files: &Files,
    base_dir: &Path,
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
        let loaded = files.tls_file(&cert).and_then(|c_pem| {
            let k_pem = files.tls_file(&key)?;
            crate::tls::certified_key_pem(c_pem, k_pem, &cert, &key)
        });
        match loaded {
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

fn admin(diag: &mut Diagnostics, spec: &AdminSpec) -> Option<SocketAddr> {
    if spec.history == 0 {
        diag.error("admin.history", "expected at least 1");
    }
    match spec.address.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            diag.error(
                "admin.address",
                format!(
                    "expected an IP address and port such as 127.0.0.1:9901, found `{}`",
                    spec.address
                ),
            );
            None
        }
    }
}

// === upstreams ===

fn upstreams(
    diag: &mut Diagnostics,
    specs: &[UpstreamSpec],
    indexes: &[usize],
    files: &Files,
    base_dir: &Path,
) -> Vec<Upstream> {
    let mut names = HashMap::new();
    let mut upstreams = Vec::new();
    for (i, u) in specs.iter().enumerate() {
        let path = format!("upstreams[{}]", file_index(indexes, i));
        if unique(diag, &mut names, &u.name, &path, "upstream") {
            upstreams.push(upstream(diag, u, &path, files, base_dir));
        }
    }
    upstreams
}

fn upstream(
    diag: &mut Diagnostics,
    u: &UpstreamSpec,
    path: &str,
    files: &Files,
    base_dir: &Path,
) -> Upstream {
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
    let mut identity = format!("{u:?}");
    let tls = u.tls.as_ref().and_then(|t| {
        upstream_tls(
            diag,
            t,
            &format!("{path}.tls"),
            files,
            base_dir,
            &mut identity,
        )
    });
    let outlier = u.outlier.as_ref().map(|o| outlier(diag, o, path));
    let health_check = u
        .health_check
        .as_ref()
        .map(|h| health_check(diag, h, &format!("{path}.health_check")));
    let slow_start = u
        .slow_start
        .as_ref()
        .map(|s| slow_start(diag, s, &format!("{path}.slow_start")));
    Upstream {
        name: u.name.as_str().into(),
        endpoints,
        protocol: u.protocol,
        tls,
        spec: u.clone(),
        identity,
        outlier,
        health_check,
        slow_start,
    }
}

/// `upstreams[i].health_check`, checked by `HealthCheckSpec::validate` (errors under `path`).
fn health_check(
    diag: &mut Diagnostics,
    h: &HealthCheckConfigSpec,
    path: &str,
) -> crate::proxy::health::HealthCheckSpec {
    let mut expected_statuses = Vec::new();
    for (k, s) in h.expected_statuses.iter().enumerate() {
        let range = match s {
            StatusSpec::Code(c) => Some(*c..=*c),
            StatusSpec::Range(r) => match r.split_once('-') {
                Some((lo, hi)) => lo.trim().parse().ok().zip(hi.trim().parse().ok()),
                None => r.trim().parse().ok().map(|c| (c, c)),
            }
            .map(|(lo, hi)| lo..=hi),
        };
        match range {
            Some(r) if *r.start() < 100 || *r.end() > 599 || r.start() > r.end() => diag.error(
                &format!("{path}.expected_statuses[{k}]"),
                match r.start() == r.end() {
                    true => format!("`{}` is not a status code between 100 and 599", r.start()),
                    false => format!(
                        "`{}-{}` is not a status range between 100 and 599",
                        r.start(),
                        r.end()
                    ),
                },
            ),
            Some(r) => expected_statuses.push(r),
            None => diag.error(
                &format!("{path}.expected_statuses[{k}]"),
                format!(
                    "expected a status code such as 200 or a range such as 200-399, found `{}`",
                    match s {
                        StatusSpec::Code(c) => c.to_string(),
                        StatusSpec::Range(r) => r.clone(),
                    }
                ),
            ),
        }
    }
    if h.expected_statuses.is_empty() {
        diag.error(
            &format!("{path}.expected_statuses"),
            "expected at least one status code or range",
        );
    }
    let spec = crate::proxy::health::HealthCheckSpec {
        path: h.path.clone(),
        interval: h.interval.get(),
        timeout: h.timeout.get(),
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
        expected_statuses,
        host: h.host.clone(),
    };
    for e in spec.validate() {
        diag.error(&format!("{path}.{}", e.field()), e.to_string());
    }
    if spec.timeout > spec.interval {
        diag.error(
            &format!("{path}.timeout"),
            format!(
                "must not exceed the interval ({:?}): a check would still run when the next starts",
                spec.interval
            ),
        );
    }
    spec
}

/// `upstreams[i].slow_start`, checked by `SlowStartSpec::validate` (errors under `path`).
fn slow_start(
    diag: &mut Diagnostics,
    s: &SlowStartConfigSpec,
    path: &str,
) -> crate::proxy::health::SlowStartSpec {
    let spec = crate::proxy::health::SlowStartSpec {
        window: s.window.get(),
        aggression: s.aggression,
        min_weight_percent: s.min_weight_percent,
    };
    for e in spec.validate() {
        diag.error(&format!("{path}.{}", e.field()), e.to_string());
    }
    spec
}

/// TLS to an upstream: its CA file (whose content joins the upstream's `identity`, so a
/// changed CA is a changed upstream) or the system's roots, and the name to verify.
fn upstream_tls(
    diag: &mut Diagnostics,
    t: &UpstreamTlsSpec,
    path: &str,
    files: &Files,
    base_dir: &Path,
    identity: &mut String,
) -> Option<UpstreamTls> {
    let server_name = match &t.server_name {
        None => None,
        Some(n) => match rustls_pki_types::ServerName::try_from(n.clone()) {
            Ok(name) => Some(name),
            Err(_) => {
                diag.error(
                    &format!("{path}.server_name"),
                    format!("expected a DNS name or IP address, found `{n}`"),
                );
                return None;
            }
        },
    };
    let roots = match &t.ca {
        Some(ca) => {
            let ca = base_dir.join(ca);
            files.tls_file(&ca).and_then(|pem| {
                identity.push_str(&sha256_hex(pem));
                crate::tls::ca_roots(pem, &ca)
            })
        }
        None => files.system_roots(),
    };
    match roots {
        Ok(roots) => Some(UpstreamTls {
            config: crate::tls::client_config_with(roots),
            server_name,
        }),
        Err(e) => {
            diag.error(&format!("{path}.ca"), e.to_string());
            None
        }
    }
}

fn outlier(diag: &mut Diagnostics, o: &OutlierSpec, path: &str) -> Outlier {
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
}

fn parse_endpoint(text: &str) -> Option<Authority> {
    let authority: Authority = text.parse().ok()?;
    let bare = authority.as_str().contains('@');
    (authority.port_u16().is_some() && !bare && !authority.host().is_empty()).then_some(authority)
}

// === routes ===

/// What a route's parts look up: upstreams by name, and the names of upstreams that did not
/// decode (a reference to one is not reported again).
struct Refs<'a> {
    index: HashMap<String, usize>,
    broken: &'a BrokenNames,
    upstreams: &'a [Upstream],
}

impl Refs<'_> {
    /// Resolves the `upstream:` field under `path`; an unknown name is reported there.
    fn upstream(&self, diag: &mut Diagnostics, name: &str, path: &str) -> Option<usize> {
        match self.index.get(name) {
            Some(&u) => Some(u),
            None if self.broken.contains(name) => None,
            None => {
                diag.error(
                    &format!("{path}.upstream"),
                    format!("unknown upstream `{name}`{}", self.known()),
                );
                None
            }
        }
    }

    fn known(&self) -> String {
        if self.index.is_empty() {
            return String::from(" (no upstreams are defined)");
        }
        let mut names: Vec<&str> = self.index.keys().map(String::as_str).collect();
        names.sort_unstable();
        format!(", expected one of: {}", names.join(", "))
    }
}

fn routes(
    diag: &mut Diagnostics,
    specs: &[RouteSpec],
    indexes: &[usize],
    refs: &Refs,
) -> Vec<Route> {
    let mut names = HashMap::new();
    let mut routes = Vec::new();
    for (i, r) in specs.iter().enumerate() {
        let path = format!("routes[{}]", file_index(indexes, i));
        unique(diag, &mut names, &r.name, &path, "route");
        routes.push(route(diag, r, &path, refs));
    }
    routes
}

fn route(diag: &mut Diagnostics, r: &RouteSpec, path: &str, refs: &Refs) -> Route {
    let bounds = super::gateway::bounds(diag, r, path, |diag, m, at| RouteMatch {
        host: host_match(diag, m.host.as_deref(), &format!("{at}.host")),
        path_prefix: path_prefix(diag, m.path_prefix.as_deref(), &format!("{at}.path_prefix")),
    });
    let matcher = bounds.first().cloned().unwrap_or(RouteMatch {
        host: HostMatch::Any,
        path_prefix: PathPrefix(None),
    });
    let backends = backends(diag, &r.backends, path, refs);
    if r.timeout.get().is_zero() {
        diag.error(&format!("{path}.timeout"), "expected a positive duration");
    }
    let rollout = r.rollout.as_ref().and_then(|ro| {
        rollout(
            diag,
            ro,
            &format!("{path}.rollout"),
            &backends,
            refs.upstreams,
        )
    });
    let mirror = r
        .mirror
        .as_ref()
        .and_then(|m| mirror(diag, m, &format!("{path}.mirror"), refs));
    let retries = r
        .retries
        .as_ref()
        .map(|rt| retries(diag, rt, &format!("{path}.retries")));
    if r.pick == Pick::RoundRobin {
        round_robin(diag, &r.backends, path);
    }
    let sticky = r
        .sticky
        .as_ref()
        .and_then(|st| sticky(diag, st, &format!("{path}.sticky")));
    let overrides = r
        .overrides
        .iter()
        .enumerate()
        .filter_map(|(j, o)| override_(diag, o, &format!("{path}.overrides[{j}]"), refs))
        .collect();
    let gateway = super::gateway::route(
        diag,
        r,
        path,
        bounds,
        &backends,
        refs.upstreams,
        rollout.as_ref(),
    )
    .map(Arc::new);
    Route {
        name: r.name.as_str().into(),
        matcher,
        gateway,
        backends,
        timeout: r.timeout.get(),
        pick: r.pick,
        sticky,
        overrides,
        mirror,
        retries,
        rollout,
        upgrades: upgrades(diag, &r.upgrades, &format!("{path}.upgrades")),
        grpc_failures: r.grpc.as_ref().map_or(GrpcCodes::DEFAULT_FAILURES, |g| {
            grpc_failures(
                diag,
                &g.failure_codes,
                &format!("{path}.grpc.failure_codes"),
            )
        }),
    }
}

/// Protocol names as `Upgrade` carries them; `h2c` is refused (an HTTP/1.1 connection stays
/// HTTP/1.1 through weir).
fn upgrades(diag: &mut Diagnostics, names: &[String], path: &str) -> Box<[Box<str>]> {
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            diag.error(
                &format!("{path}[{i}]"),
                format!("`{name}` is not a protocol name (a token such as `websocket`)"),
            );
        } else if name.eq_ignore_ascii_case("h2c") {
            diag.error(
                &format!("{path}[{i}]"),
                "`h2c` cannot be tunnelled: clients that want HTTP/2 connect with it directly",
            );
        } else {
            out.push(name.to_ascii_lowercase().into_boxed_str());
        }
    }
    out.into()
}

/// The codes of `grpc.failure_codes`: names as the gRPC specification spells them (any case) or
/// numbers; OK (0) is never a failure.
fn grpc_failures(diag: &mut Diagnostics, specs: &[GrpcCodeSpec], path: &str) -> GrpcCodes {
    let mut codes = GrpcCodes::EMPTY;
    for (i, spec) in specs.iter().enumerate() {
        let code = match spec {
            GrpcCodeSpec::Number(n) => u8::try_from(*n).ok().filter(|n| *n <= 16),
            GrpcCodeSpec::Name(name) => GRPC_CODE_NAMES
                .iter()
                .position(|known| known.eq_ignore_ascii_case(name))
                .and_then(|c| u8::try_from(c).ok()),
        };
        match code {
            Some(0) => diag.error(
                &format!("{path}[{i}]"),
                "OK (0) is a success and cannot be a failure code",
            ),
            Some(c) => codes = codes.with(c),
            None => diag.error(
                &format!("{path}[{i}]"),
                format!(
                    "expected a gRPC status code from 1 to 16 or its name ({}), found `{}`",
                    GRPC_CODE_NAMES[1..].join(", "),
                    match spec {
                        GrpcCodeSpec::Number(n) => n.to_string(),
                        GrpcCodeSpec::Name(n) => n.clone(),
                    }
                ),
            ),
        }
    }
    codes
}

fn backends(
    diag: &mut Diagnostics,
    specs: &[BackendSpec],
    path: &str,
    refs: &Refs,
) -> Vec<Backend> {
    if specs.is_empty() {
        diag.error(&format!("{path}.backends"), "expected at least one backend");
    }
    let mut backends = Vec::new();
    let mut seen = HashMap::new();
    for (j, b) in specs.iter().enumerate() {
        let bpath = format!("{path}.backends[{j}]");
        unique(diag, &mut seen, &b.upstream, &bpath, "backend upstream");
        if let Some(upstream) = refs.upstream(diag, &b.upstream, &bpath) {
            backends.push(Backend {
                upstream,
                weight: b.weight,
            });
        }
    }
    let total: u64 = specs.iter().map(|b| u64::from(b.weight)).sum();
    if !specs.is_empty() && total == 0 {
        diag.error(
            &format!("{path}.backends"),
            "the weights sum to 0: at least one backend needs a positive weight",
        );
    }
    backends
}

fn round_robin(diag: &mut Diagnostics, specs: &[BackendSpec], path: &str) {
    let weights: Vec<u32> = specs.iter().map(|b| b.weight).collect();
    let cycle = round_robin_cycle(&weights);
    if cycle > MAX_ROUND_ROBIN_CYCLE {
        diag.error(
            &format!("{path}.pick"),
            format!(
                "round_robin needs weights whose sum divided by their greatest common divisor is at most {MAX_ROUND_ROBIN_CYCLE}; these give {cycle} (scale them down, e.g. 90/10 rather than 900001/99999)",
            ),
        );
    }
}

fn mirror(diag: &mut Diagnostics, m: &MirrorSpec, path: &str, refs: &Refs) -> Option<Mirror> {
    if !(m.percent > 0.0 && m.percent <= 100.0) {
        diag.error(
            &format!("{path}.percent"),
            format!(
                "expected a percentage above 0 and at most 100, found {}",
                m.percent
            ),
        );
    }
    let upstream = refs.upstream(diag, &m.upstream, path)?;
    Some(Mirror {
        upstream,
        percent: m.percent,
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

fn sticky(diag: &mut Diagnostics, st: &StickySpec, path: &str) -> Option<StickyKey> {
    match (&st.header, &st.cookie) {
        (Some(h), None) => header_name(diag, h, &format!("{path}.header")).map(StickyKey::Header),
        (None, Some(c)) if !c.is_empty() => Some(StickyKey::Cookie(c.clone())),
        _ => {
            diag.error(
                path,
                "expected exactly one of `header` or `cookie`, with a name",
            );
            None
        }
    }
}

fn override_(
    diag: &mut Diagnostics,
    o: &OverrideSpec,
    path: &str,
    refs: &Refs,
) -> Option<Override> {
    let upstream = refs.upstream(diag, &o.upstream, path);
    let expect = |v: &MatchValue| match v {
        MatchValue::Exact(s) => Expect::Equals(s.clone()),
        MatchValue::Present { present } => Expect::Present(*present),
    };
    let m = &o.match_;
    let mut conditions = Vec::new();
    for (name, v) in &m.header {
        if let Some(h) = header_name(diag, name, &format!("{path}.match.header.{name}")) {
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
            &format!("{path}.match"),
            "expected at least one of `header`, `cookie` or `query`",
        );
    }
    Some(Override {
        conditions,
        upstream: upstream?,
    })
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

// === rollout ===

/// A route's `rollout:`; `None` when any of its fields is wrong.
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
    rollout_plan(diag, spec, path);
    let compare = spec.analysis.as_ref().and_then(|a| {
        let path = format!("{path}.analysis");
        let members: Vec<super::analysis::Member> = backends
            .iter()
            .map(|b| super::analysis::Member {
                upstream: &upstreams[b.upstream].name,
                weight: b.weight,
            })
            .collect();
        super::analysis::compare(diag, a, &path, canary, &members, &spec.steps)
    });
    let source = prometheus_source(diag, spec, path);
    if spec
        .progress_deadline
        .is_some_and(|d| d.get() < spec.interval.get())
    {
        diag.error(
            &format!("{path}.progress_deadline"),
            "expected at least one interval",
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
    let webhooks = webhooks(diag, &spec.webhooks, path);
    let confirm = spec
        .confirm
        .as_ref()
        .and_then(|c| url(diag, &c.url, &format!("{path}.confirm.url")));
    if diag.errors.len() > errors_before {
        return None;
    }
    let canary = canary?;
    let upstream = &upstreams[backends[canary].upstream];
    let endpoints: Vec<&str> = upstream.endpoints.iter().map(|e| e.as_str()).collect();
    let mut plan = plan(spec);
    plan.source = source?;
    Some(Rollout {
        canary,
        plan,
        webhooks,
        confirm,
        compare,
        definition: format!("{} {}", upstream.name, endpoints.join(",")),
    })
}

/// The checks of a rollout's steps, interval and thresholds.
fn rollout_plan(diag: &mut Diagnostics, spec: &RolloutSpec, path: &str) {
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
    let mut fraction = |v: f64, field: &str| {
        if !(0.0..=1.0).contains(&v) {
            diag.error(
                &format!("{path}.{field}"),
                format!("expected a fraction from 0 to 1 such as 0.99, found {v}"),
            );
        }
    };
    fraction(spec.thresholds.success_rate, "thresholds.success_rate");
    if let Some(rate) = spec.fast_fail.success_rate {
        fraction(rate, "fast_fail.success_rate");
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
}

/// The plan of a valid `rollout:` block.
fn plan(spec: &RolloutSpec) -> Plan {
    Plan {
        steps: spec.steps.clone(),
        interval: spec.interval.get(),
        min_requests: spec.min_requests,
        success_rate: spec.thresholds.success_rate,
        p99: spec.thresholds.p99_latency.map(|d| d.get()),
        max_failed_checks: spec.max_failed_checks,
        fast_fail: spec.fast_fail.enabled.then(|| FastFail {
            min_requests: spec.fast_fail.min_requests,
            success_rate: spec
                .fast_fail
                .success_rate
                .unwrap_or(spec.thresholds.success_rate / 2.0),
        }),
        progress_deadline: spec.progress_deadline.map(|d| d.get()),
        source: None,
    }
}

/// A rollout's `analysis.source.prometheus`, when it has one.
fn prometheus_source(
    diag: &mut Diagnostics,
    spec: &RolloutSpec,
    path: &str,
) -> Option<Option<PrometheusSource>> {
    let Some(p) = spec
        .analysis
        .as_ref()
        .and_then(|a| a.source.as_ref())
        .and_then(|s| s.prometheus.as_ref())
    else {
        return Some(None);
    };
    let path = format!("{path}.analysis.source.prometheus");
    let url = url(diag, &p.url, &format!("{path}.url"));
    let mut ok = url.is_some();
    if p.timeout.get().is_zero() {
        diag.error(&format!("{path}.timeout"), "expected a positive duration");
        ok = false;
    }
    if let Err(e) = selector(&p.selector) {
        diag.error(&format!("{path}.selector"), e);
        ok = false;
    }
    ok.then(|| {
        Some(PrometheusSource {
            url: url.expect("checked above"),
            selector: p
                .selector
                .trim()
                .trim_matches(|c| c == '{' || c == '}')
                .trim()
                .to_owned(),
            timeout: p.timeout.get(),
        })
    })
}

/// Checks a selector: label matchers as PromQL writes them inside braces (`job="weir",
/// namespace=~"prod-.*"`), with or without the braces. Refuses what would break out of them.
fn selector(text: &str) -> Result<(), String> {
    let inner = text.trim().trim_start_matches('{').trim_end_matches('}');
    let mut quoted = false;
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '{' | '}' | '[' | ']' | '(' | ')' if !quoted => {
                return Err(format!(
                    "expected label matchers such as job=\"weir\", found `{text}`"
                ));
            }
            _ => {}
        }
    }
    if quoted {
        return Err(format!("an unclosed quote in `{text}`"));
    }
    Ok(())
}

fn webhooks(diag: &mut Diagnostics, specs: &[WebhookSpec], path: &str) -> Vec<Webhook> {
    let mut webhooks = Vec::new();
    for (i, w) in specs.iter().enumerate() {
        let wpath = format!("{path}.webhooks[{i}]");
        let target = url(diag, &w.url, &format!("{wpath}.url"));
        let mut on = Vec::new();
        for (j, e) in w.on.iter().enumerate() {
            match EventKind::ALL.iter().find(|k| k.name() == e) {
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
    webhooks
}

fn url(diag: &mut Diagnostics, text: &str, path: &str) -> Option<http::Uri> {
    match text.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {
            Some(u)
        }
        _ => {
            diag.error(
                path,
                format!("expected an http:// or https:// URL, found `{text}`"),
            );
            None
        }
    }
}

// === fleet ===

/// The `fleet` block, with its status file read (a missing file is an empty status: the
/// controller has not written one yet).
fn fleet(
    diag: &mut Diagnostics,
    spec: &FleetSpec,
    files: &Files,
    base_dir: &Path,
) -> Option<Fleet> {
    let status_file = base_dir.join(&spec.status);
    let status = match files.get(&status_file) {
        Ok(bytes) => match FleetStatus::parse(bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                diag.error(
                    "fleet.status",
                    format!(
                        "the rollout status file {} is not a valid status: {e}",
                        status_file.display()
                    ),
                );
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(FleetStatus::default()),
        Err(e) => {
            diag.error(
                "fleet.status",
                format!(
                    "cannot read the rollout status file {}: {e}",
                    status_file.display()
                ),
            );
            None
        }
    };
    if spec.sync_interval.get().is_zero() {
        diag.error("fleet.sync_interval", "expected a positive duration");
    }
    for (field, value) in [("remote", &spec.git.remote), ("branch", &spec.git.branch)] {
        if value.is_empty() || value.starts_with('-') || value.contains(char::is_whitespace) {
            diag.error(
                &format!("fleet.git.{field}"),
                format!("expected a Git {field} name, found `{value}`"),
            );
        }
    }
    if !spec.git.author.contains('<') || !spec.git.author.ends_with('>') {
        diag.error(
            "fleet.git.author",
            format!("expected `Name <email>`, found `{}`", spec.git.author),
        );
    }
    Some(Fleet {
        status_file,
        status: Arc::new(status?),
        sync_interval: spec.sync_interval.get(),
        git: spec.git.clone(),
    })
}

/// A Prometheus source is for a fleet, and a fleet's rollouts need one: the controller judges
/// them on fleet-wide metrics, and a replica alone sees only its own traffic.
fn fleet_rollouts(diag: &mut Diagnostics, spec: &ConfigSpec) {
    for (i, r) in spec.routes.iter().enumerate() {
        let Some(ro) = &r.rollout else { continue };
        let prometheus = ro
            .analysis
            .as_ref()
            .and_then(|a| a.source.as_ref())
            .and_then(|s| s.prometheus.as_ref());
        let path = format!("routes[{i}].rollout");
        match (prometheus.is_some(), spec.fleet.is_some()) {
            (true, false) => diag.error(
                &format!("{path}.analysis.source.prometheus"),
                "a Prometheus source needs a top-level `fleet` block (weir rollout judges the fleet)",
            ),
            (false, true) => diag.error(
                &format!("{path}.analysis.source"),
                "with a `fleet` block, every rollout needs `analysis.source.prometheus`: one replica sees only its own traffic",
            ),
            _ => {}
        }
    }
}

// === policies and limits ===

/// The policy files' sources. They are compiled when the config is checked against them, in
/// the policy sandbox.
fn policies(
    diag: &mut Diagnostics,
    names: &[String],
    files: &Files,
    base_dir: &Path,
) -> Option<Arc<Policies>> {
    if names.is_empty() {
        return None;
    }
    let mut sources = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let path = base_dir.join(name);
        let text = files
            .get(&path)
            .and_then(|b| String::from_utf8(b.to_vec()).map_err(std::io::Error::other));
        match text {
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
    let (line, column) = diag.locate("policies");
    let origin = (diag.file().to_owned(), line, column);
    Some(Arc::new(Policies::new(sources, origin)))
}

fn limits(diag: &mut Diagnostics, l: &LimitsSpec) -> Limits {
    if l.max_header_bytes < MIN_HEADER_BYTES {
        diag.error(
            "limits.max_header_bytes",
            format!(
                "expected at least {MIN_HEADER_BYTES}, found {}",
                l.max_header_bytes
            ),
        );
    }
    if !(MIN_HEADERS..=MAX_HEADERS).contains(&l.max_headers) {
        diag.error(
            "limits.max_headers",
            format!(
                "expected {MIN_HEADERS} to {MAX_HEADERS}, found {}",
                l.max_headers
            ),
        );
    }
    for (field, d) in [
        ("header_read_timeout", l.header_read_timeout),
        ("idle_timeout", l.idle_timeout),
        ("connect_timeout", l.connect_timeout),
        ("write_stall_timeout", l.write_stall_timeout),
    ] {
        if d.get().is_zero() {
            diag.error(&format!("limits.{field}"), "expected a positive duration");
        }
    }
    Limits {
        header_read_timeout: l.header_read_timeout.get(),
        max_header_bytes: l.max_header_bytes,
        max_headers: l.max_headers,
        idle_timeout: l.idle_timeout.get(),
        connect_timeout: l.connect_timeout.get(),
        drain_timeout: l.drain_timeout.get(),
        write_stall_timeout: l.write_stall_timeout.get(),
        drain_on_retire: l.drain_on_retire,
    }
}

// === helpers ===

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
