//! A route's gateway fields (issue 23, docs/GATEWAY.md): `match` beyond host and `path_prefix`
//! (method, path, headers, query parameters, gRPC method; a list of matches), `filters` on the
//! route and on each backend, `backend_header` and `session_affinity`. Checked and compiled once
//! here, with every error under its field path; the snapshot shares the compiled matchers and
//! clones the compiled filters.

use super::diag::Diagnostics;
use super::model::{
    Backend, Gateway, Matches, PathPrefix, Rollout, RouteAffinity, RouteMatch, Upstream,
};
use super::schema::{
    FiltersSpec, GrpcMethodMatchSpec, HeaderFilterSpec, MatchSpec, MatchesSpec, PathMatchType,
    PathModifierSpec, PinSpec, RedirectFilterSpec, RouteSpec, SameSiteSpec, SessionAffinitySpec,
    ValueMatchSpec, ValueMatchType,
};
use crate::proxy::affinity::{Affinity, AffinitySpec, Pin, SameSite};
use crate::proxy::filters::{self, FilterError, Filters};
use crate::proxy::matching::{self, RouteMatcher};

/// The path of element `j` of `match`.
fn element_path(r: &RouteSpec, path: &str, j: usize) -> String {
    match r.match_ {
        MatchesSpec::One(_) => format!("{path}.match"),
        MatchesSpec::Any(_) => format!("{path}.match[{j}]"),
    }
}

/// Whether `r` uses any gateway field.
fn used(r: &RouteSpec) -> bool {
    let extra = |m: &MatchSpec| {
        m.method.is_some()
            || m.path.is_some()
            || !m.headers.is_empty()
            || !m.query_params.is_empty()
            || m.grpc.is_some()
    };
    matches!(r.match_, MatchesSpec::Any(_))
        || r.match_.as_slice().iter().any(extra)
        || r.filters.is_some()
        || r.backends.iter().any(|b| b.filters.is_some())
        || r.backend_header
        || r.session_affinity.is_some()
}

/// Each element's host and `path_prefix`, checked by `bound` (the existing `match` checks).
pub(super) fn bounds(
    diag: &mut Diagnostics,
    r: &RouteSpec,
    path: &str,
    mut bound: impl FnMut(&mut Diagnostics, &MatchSpec, &str) -> RouteMatch,
) -> Vec<RouteMatch> {
    if r.match_.as_slice().is_empty() {
        diag.error(
            &format!("{path}.match"),
            "expected at least one match (leave `match` out to match every request)",
        );
    }
    r.match_
        .as_slice()
        .iter()
        .enumerate()
        .map(|(j, m)| bound(diag, m, &element_path(r, path, j)))
        .collect()
}

/// The route's gateway fields, checked and compiled; `None` when it uses none (or has errors,
/// which are recorded).
pub(super) fn route(
    diag: &mut Diagnostics,
    r: &RouteSpec,
    path: &str,
    bounds: Vec<RouteMatch>,
    backends: &[Backend],
    upstreams: &[Upstream],
    rollout: Option<&Rollout>,
) -> Option<Gateway> {
    if !used(r) {
        return None;
    }
    let errors_before = diag.errors.len();
    let matches = matches(diag, r, path, bounds);
    let filters = r
        .filters
        .as_ref()
        .map(|f| compile_filters(diag, f, &format!("{path}.filters")))
        .unwrap_or_default();
    let backend_filters: Box<[Filters]> = r
        .backends
        .iter()
        .enumerate()
        .map(|(k, b)| {
            b.filters
                .as_ref()
                .map(|f| compile_filters(diag, f, &format!("{path}.backends[{k}].filters")))
                .unwrap_or_default()
        })
        .collect();
    if let Some(m) = &matches {
        let lacking = (0..m.bounds.len()).find(|&j| m.prefix(j).is_none());
        let needs = std::iter::once((format!("{path}.filters"), r.filters.as_ref()))
            .chain(
                r.backends
                    .iter()
                    .enumerate()
                    .map(|(k, b)| (format!("{path}.backends[{k}].filters"), b.filters.as_ref())),
            )
            .find_map(|(at, f)| prefix_field(f?).map(|field| format!("{at}.{field}")));
        if let (Some(j), Some(at)) = (lacking, needs) {
            diag.error(
                &at,
                format!(
                    "replace_prefix_match needs a PathPrefix (`path_prefix`, or a `path` of type PathPrefix) on every match of the route; {} has none",
                    element_path(r, path, j)
                ),
            );
        }
    }
    if r.filters.as_ref().is_some_and(|f| f.redirect.is_some()) {
        let with = [
            (r.rollout.is_some(), "a rollout"),
            (r.sticky.is_some(), "sticky"),
            (r.session_affinity.is_some(), "session_affinity"),
            (r.mirror.is_some(), "a mirror"),
        ];
        if let Some((_, what)) = with.iter().find(|(on, _)| *on) {
            diag.error(
                &format!("{path}.filters.redirect"),
                format!(
                    "a route that redirects every request sends none to its backends, so it cannot have {what}"
                ),
            );
        }
    }
    let affinity = r.session_affinity.as_ref().and_then(|a| {
        affinity(
            diag,
            a,
            &r.name,
            &format!("{path}.session_affinity"),
            backends,
            upstreams,
            rollout,
        )
    });
    if diag.errors.len() > errors_before {
        return None;
    }
    Some(Gateway {
        matches: matches?,
        filters,
        backend_filters,
        backend_header: r.backend_header,
        affinity,
    })
}

fn matches(
    diag: &mut Diagnostics,
    r: &RouteSpec,
    path: &str,
    bounds: Vec<RouteMatch>,
) -> Option<Matches> {
    let elements = r.match_.as_slice();
    let mut specs = Vec::with_capacity(elements.len());
    let mut prefixes = Vec::with_capacity(elements.len());
    for (j, m) in elements.iter().enumerate() {
        let at = element_path(r, path, j);
        if m.path.is_some() && m.path_prefix.is_some() {
            diag.error(
                &format!("{at}.path"),
                "give either `path` or `path_prefix` (its short form), not both",
            );
        }
        if m.grpc.is_some() && m.path_prefix.is_some() {
            diag.error(
                &format!("{at}.grpc"),
                "a match has either a path or a gRPC method, not both (`path_prefix` is a path)",
            );
        }
        let spec = match_spec(m);
        prefixes.push(match (&spec.path, &bounds.get(j).map(|b| &b.path_prefix)) {
            (Some(matching::PathSpec::Prefix(p)), _) => Some(p.trim_end_matches('/').into()),
            (None, Some(PathPrefix(Some(p)))) => Some(p.clone()),
            // `path_prefix: /` (stored as no prefix) still is a PathPrefix.
            (None, Some(PathPrefix(None))) if m.path_prefix.is_some() => Some("".into()),
            _ => None,
        });
        specs.push(spec);
    }
    let matcher = match RouteMatcher::new(&specs) {
        Ok(m) => m,
        Err(errors) => {
            for (j, e) in errors {
                diag.error(
                    &format!("{}.{}", element_path(r, path, j), e.field()),
                    e.to_string(),
                );
            }
            return None;
        }
    };
    Some(Matches {
        bounds: bounds.into(),
        matcher,
        prefixes: prefixes.into(),
    })
}

/// The config's match mapped to `proxy::matching`'s spec (host and `path_prefix` stay with the
/// route's [`RouteMatch`]).
fn match_spec(m: &MatchSpec) -> matching::MatchSpec {
    let value = |v: &ValueMatchSpec| matching::ValueSpec {
        name: v.name.clone(),
        value: v.value.clone(),
        regex: v.type_ == ValueMatchType::RegularExpression,
    };
    matching::MatchSpec {
        method: m.method.clone(),
        path: m.path.as_ref().map(|p| match p.type_ {
            PathMatchType::Exact => matching::PathSpec::Exact(p.value.clone()),
            PathMatchType::PathPrefix => matching::PathSpec::Prefix(p.value.clone()),
            PathMatchType::RegularExpression => matching::PathSpec::Regex(p.value.clone()),
        }),
        headers: m.headers.iter().map(value).collect(),
        query_params: m.query_params.iter().map(value).collect(),
        grpc: m
            .grpc
            .as_ref()
            .map(|g: &GrpcMethodMatchSpec| matching::GrpcSpec {
                service: g.service.clone(),
                method: g.method.clone(),
                regex: g.type_ == ValueMatchType::RegularExpression,
            }),
    }
}

/// The field of `f` that needs a PathPrefix, relative to the filters block.
fn prefix_field(f: &FiltersSpec) -> Option<&'static str> {
    let prefix = |p: &Option<PathModifierSpec>| {
        p.as_ref()
            .is_some_and(|p| p.replace_prefix_match.is_some() && p.replace_full_path.is_none())
    };
    if f.rewrite.as_ref().is_some_and(|r| prefix(&r.path)) {
        Some("rewrite.path.replace_prefix_match")
    } else if f.redirect.as_ref().is_some_and(|r| prefix(&r.path)) {
        Some("redirect.path.replace_prefix_match")
    } else {
        None
    }
}

fn compile_filters(diag: &mut Diagnostics, f: &FiltersSpec, at: &str) -> Filters {
    let before = diag.errors.len();
    let path = |diag: &mut Diagnostics, p: &Option<PathModifierSpec>, at: String| {
        let p = p.as_ref()?;
        match (&p.replace_full_path, &p.replace_prefix_match) {
            (Some(full), None) => Some(filters::PathModifierSpec::ReplaceFullPath(full.clone())),
            (None, Some(prefix)) => Some(filters::PathModifierSpec::ReplacePrefixMatch(
                prefix.clone(),
            )),
            _ => {
                diag.error(
                    &at,
                    "expected exactly one of replace_full_path and replace_prefix_match",
                );
                None
            }
        }
    };
    let headers = |h: &HeaderFilterSpec| filters::HeaderModifierSpec {
        set: h
            .set
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect(),
        add: h
            .add
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect(),
        remove: h.remove.clone(),
    };
    let redirect = f.redirect.as_ref().map(|r: &RedirectFilterSpec| {
        filters::RedirectSpec {
            scheme: r.scheme.clone(),
            hostname: r.hostname.clone(),
            path: path(diag, &r.path, format!("{at}.redirect.path")),
            // Out of range is refused by `Redirect::new`, as 0 is.
            port: r.port.map(|p| u16::try_from(p).unwrap_or(0)),
            status_code: r.status_code,
        }
    });
    let rewrite = f.rewrite.as_ref().map(|r| filters::RewriteSpec {
        hostname: r.hostname.clone(),
        path: path(diag, &r.path, format!("{at}.rewrite.path")),
    });
    let spec = filters::FilterSpec {
        request_headers: f.request_headers.as_ref().map(headers),
        response_headers: f.response_headers.as_ref().map(headers),
        redirect,
        rewrite,
    };
    match Filters::new(&spec, at) {
        Ok(compiled) if diag.errors.len() == before => compiled,
        Ok(_) => Filters::default(),
        Err(errors) => {
            for e in errors {
                diag.error(&filter_field(&e, at), e.to_string());
            }
            Filters::default()
        }
    }
}

/// `FilterError::field` is absolute (it was given `at`) for most errors and relative to the
/// filters block for the few that are not about one named header or path.
fn filter_field(e: &FilterError, at: &str) -> String {
    match e {
        FilterError::RedirectAndRewrite
        | FilterError::Scheme { .. }
        | FilterError::Port
        | FilterError::Status { .. } => format!("{at}.{}", e.field()),
        _ => e.field(),
    }
}

fn affinity(
    diag: &mut Diagnostics,
    a: &SessionAffinitySpec,
    route: &str,
    at: &str,
    backends: &[Backend],
    upstreams: &[Upstream],
    rollout: Option<&Rollout>,
) -> Option<RouteAffinity> {
    let names: Vec<&str> = backends
        .iter()
        .map(|b| &*upstreams[b.upstream].name)
        .collect();
    let canary = match &a.canary {
        Some(name) => match names.iter().position(|n| n == name) {
            Some(i) => Some(i),
            None => {
                diag.error(
                    &format!("{at}.canary"),
                    format!(
                        "`{name}` is not a backend of this route, expected one of: {}",
                        names.join(", ")
                    ),
                );
                return None;
            }
        },
        None => rollout.map(|r| r.canary),
    };
    if let (Some(r), Some(c)) = (rollout, canary)
        && r.canary != c
    {
        diag.error(
            &format!("{at}.canary"),
            "the route's rollout has another canary: leave `canary` out, or name the rollout's",
        );
        return None;
    }
    let spec = AffinitySpec {
        name: a.name.clone(),
        max_age: a.max_age.get(),
        domain: a.domain.clone(),
        path: a.path.clone(),
        secure: a.secure,
        http_only: a.http_only,
        same_site: match a.same_site {
            SameSiteSpec::Strict => SameSite::Strict,
            SameSiteSpec::Lax => SameSite::Lax,
            SameSiteSpec::None => SameSite::None,
        },
        pin: match a.pin {
            PinSpec::Canary => Pin::Canary,
            PinSpec::All => Pin::All,
        },
    };
    // A dry run for its errors; the snapshot builds it again with the override-only backends.
    if let Err(errors) = Affinity::new(&spec, route, b"", &names, canary) {
        for e in errors {
            diag.error(&format!("{at}.{}", e.field()), e.to_string());
        }
        return None;
    }
    let generation = match (rollout, canary) {
        (Some(r), _) => r.definition.clone(),
        (None, Some(c)) => definition(&upstreams[backends[c].upstream]),
        (None, None) => String::new(),
    };
    Some(RouteAffinity {
        spec,
        canary,
        generation,
    })
}

/// An upstream's name and endpoints, as `Rollout::definition` writes them.
fn definition(u: &Upstream) -> String {
    let endpoints: Vec<&str> = u.endpoints.iter().map(|e| e.as_str()).collect();
    format!("{} {}", u.name, endpoints.join(","))
}

/// `weir check`'s hints (docs/GATEWAY.md, Precedence): pairs of routes that can match the same
/// request where weir's rule (the first route in file order) and Gateway API's ranking (exact
/// path, longest prefix, method, most headers, most query parameters) choose differently. Only
/// pairs in which a route uses gateway fields: for plain host and prefix routes SPEC.md's rule is
/// the only one a user expects. One hint per pair of routes.
pub fn precedence_hints(config: &super::model::Config) -> Vec<String> {
    let mut owners = Vec::new();
    let mut specs = Vec::new();
    for (i, r) in config.spec.routes.iter().enumerate() {
        for m in r.match_.as_slice() {
            let mut spec = match_spec(m);
            if spec.path.is_none()
                && let Some(p) = &m.path_prefix
            {
                spec.path = Some(matching::PathSpec::Prefix(p.clone()));
            }
            owners.push(i);
            specs.push((m.host.clone(), spec));
        }
    }
    let matches: Vec<(Option<&str>, &matching::MatchSpec)> =
        specs.iter().map(|(h, s)| (h.as_deref(), s)).collect();
    let routes = &config.spec.routes;
    let mut pairs: Vec<(usize, usize)> = matching::precedence_inversions(&matches)
        .into_iter()
        .map(|(earlier, later)| (owners[earlier], owners[later]))
        .filter(|&(e, l)| e != l && (used(&routes[e]) || used(&routes[l])))
        .collect();
    pairs.dedup();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
        .into_iter()
        .map(|(e, l)| {
            let (en, ln) = (&routes[e].name, &routes[l].name);
            format!(
                "routes[{e}] `{en}` comes before routes[{l}] `{ln}` and both can match one request: weir sends it to `{en}` (the first in file order), Gateway API to `{ln}` (its match ranks higher); move `{ln}` up for Gateway API's choice"
            )
        })
        .collect()
}
