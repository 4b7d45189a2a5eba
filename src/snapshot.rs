//! The [`Snapshot`]: everything a request needs from one config, resolved in advance (routes
//! with their matchers and weight tables, upstream pools). The running snapshot lives in an
//! `ArcSwap`; a request loads it once and keeps that `Arc` to its end, so a reload never changes
//! a request midway.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, GrpcCodes, Retries, RouteMatch};
use crate::metrics::{BackendMetrics, Metrics, Probe};
use crate::observe::access::AccessLog;
use crate::observe::span_export::SpanExport;
use crate::observe::trace_context::Sampler;
use crate::proxy::affinity::Affinity;
use crate::proxy::drain::{self, DrainLog, RouteWeights};
use crate::proxy::filters::{BackendHeader, RouteFilters};
use crate::proxy::mirror::RouteMirror;
use crate::proxy::pool::UpstreamPool;
use crate::proxy::split::{Override, Table};

pub struct Snapshot {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub routes: Box<[Route]>,
    pub pools: Box<[Arc<UpstreamPool>]>,
    /// The access log's queue when the config has one (set by the control task, which opens
    /// its file); shared with the previous snapshot while the section is unchanged.
    pub access_log: Option<Arc<AccessLog>>,
    /// Trace context and span export, when the config has a `tracing` section (set by the
    /// control task).
    pub tracer: Option<Tracer>,
    /// Retirements so far (a backend's weight going to 0), for the drain of the client
    /// connections they served (`proxy::drain`).
    pub drain: DrainLog,
}

/// What a request needs for its trace: the sampler of the traces weir starts, and where sampled
/// spans go (`None`: propagate only).
#[derive(Clone)]
pub struct Tracer {
    pub sampler: Sampler,
    pub export: Option<Arc<SpanExport>>,
}

pub struct Route {
    pub name: Arc<str>,
    pub matcher: RouteMatch,
    /// The configured backends in file order, then (with weight 0, never picked by weight) the
    /// upstreams only an override sends to.
    pub backends: Box<[Backend]>,
    /// How a request picks among `backends`.
    pub split: Table,
    pub timeout: Duration,
    pub mirror: Option<RouteMirror>,
    pub retries: Option<Retries>,
    /// The `Upgrade` protocols this route tunnels.
    pub upgrades: Box<[Box<str>]>,
    /// The `grpc-status` codes that count as failures of a backend.
    pub grpc_failures: GrpcCodes,
    /// Gateway API matches and filters and the session affinity; `None` for a route that uses
    /// none of them, which then costs what it cost before they existed.
    pub gateway: Option<Box<RouteGateway>>,
}

/// A route's gateway features for one snapshot.
pub struct RouteGateway {
    /// The compiled matches (and the config's filters), shared with the config.
    pub config: Arc<crate::config::Gateway>,
    /// The route's and each backend's filters, and `x-weir-backend` over every backend
    /// (override-only ones included) when the route asks for it.
    pub filters: RouteFilters,
    /// The cookies of this rollout (generation: the canary's definition).
    pub affinity: Option<Affinity>,
}

impl RouteGateway {
    fn new(g: &Arc<crate::config::Gateway>, route: &str, backends: &[Backend]) -> RouteGateway {
        let names: Vec<&str> = backends.iter().map(|b| &**b.name()).collect();
        let affinity = g.affinity.as_ref().and_then(|a| {
            // Validation ran the same build (its errors depend on the spec and the canary only).
            Affinity::new(&a.spec, route, a.generation.as_bytes(), &names, a.canary).ok()
        });
        RouteGateway {
            config: g.clone(),
            filters: RouteFilters {
                route: g.filters.clone(),
                backends: g.backend_filters.clone(),
                backend_header: g
                    .backend_header
                    .then(|| BackendHeader::new(names.iter().copied())),
            },
            affinity,
        }
    }
}

/// What a route with a running rollout takes instead of its file's weights: the weights of its
/// configured backends, the probe its canary (index `canary`) feeds while it is judged, and,
/// when the rollout compares the canary with stable, the one probe the `stable` backends feed
/// together. The control task makes it from the rollouts' decisions.
#[derive(Clone)]
pub struct Steering {
    pub weights: Vec<u32>,
    pub canary: usize,
    pub probe: Option<Arc<Probe>>,
    pub stable: Vec<usize>,
    pub stable_probe: Option<Arc<Probe>>,
}

/// An upstream with a weight inside a route.
pub struct Backend {
    pub pool: Arc<UpstreamPool>,
    pub weight: u32,
    /// Handles of this (route, backend), shared with the previous snapshot when the pair existed.
    pub metrics: Arc<BackendMetrics>,
    /// The canary of a running rollout, or a backend it is compared with: its requests are
    /// measured for the analysis.
    pub probe: Option<Arc<Probe>>,
    /// This (route, backend)'s bit in a connection's `Served` (`drain::backend_bit`).
    pub drain_bit: u64,
}

impl Backend {
    pub fn name(&self) -> &Arc<str> {
        &self.pool.name
    }
}

impl Snapshot {
    /// Builds the snapshot for `config`. Pools of upstreams whose definition did not change since
    /// `previous` are shared with it, so their idle connections survive a reload; a changed
    /// upstream gets a new pool while requests in flight finish on the old one.
    ///
    /// Metric handles are resolved here, once per (route, backend); the series of pairs that
    /// left the config are dropped.
    ///
    /// A route in `steering` (a running rollout) takes its weights from there, and its canary
    /// backend gets the rollout's probe.
    pub fn build(
        config: Arc<Config>,
        previous: Option<&Snapshot>,
        metrics: &Arc<Metrics>,
        steering: &HashMap<Arc<str>, Steering>,
    ) -> Snapshot {
        let limits = config.limits;
        let pools: Box<[Arc<UpstreamPool>]> = config
            .upstreams
            .iter()
            .map(|u| {
                previous
                    .and_then(|p| p.pools.iter().find(|pool| pool.has_definition(u, &limits)))
                    .cloned()
                    .unwrap_or_else(|| {
                        let old = previous.and_then(|p| p.pools.iter().find(|p| p.name == u.name));
                        Arc::new(UpstreamPool::replacing(
                            u,
                            &limits,
                            metrics,
                            old.map(|p| &**p),
                        ))
                    })
            })
            .collect();
        let backend = |route: &str, upstream: usize, weight: u32| {
            let pool = pools[upstream].clone();
            let metrics = previous
                .and_then(|p| p.backend(route, &pool.name))
                .map(|old| old.metrics.clone())
                .unwrap_or_else(|| Arc::new(metrics.backend(route, &pool.name)));
            metrics.weight.set(i64::from(weight));
            Backend {
                drain_bit: drain::backend_bit(route, &pool.name),
                pool,
                weight,
                metrics,
                probe: None,
            }
        };
        let routes: Box<[Route]> = config
            .routes
            .iter()
            .map(|r| {
                let steer = steering.get(&r.name);
                let mut backends: Vec<Backend> = r
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let weight = steer.map_or(b.weight, |s| s.weights[i]);
                        let mut backend = backend(&r.name, b.upstream, weight);
                        backend.probe = steer.and_then(|s| match i {
                            i if i == s.canary => s.probe.clone(),
                            i if s.stable.contains(&i) => s.stable_probe.clone(),
                            _ => None,
                        });
                        backend
                    })
                    .collect();
                let overrides = r
                    .overrides
                    .iter()
                    .map(|o| {
                        let name = &config.upstreams[o.upstream].name;
                        let index = match backends.iter().position(|b| b.name() == name) {
                            Some(i) => i,
                            None => {
                                backends.push(backend(&r.name, o.upstream, 0));
                                backends.len() - 1
                            }
                        };
                        Override {
                            conditions: o.conditions.clone().into(),
                            backend: index,
                        }
                    })
                    .collect();
                let mirror = r.mirror.map(|m| {
                    let pool = pools[m.upstream].clone();
                    let handles = previous
                        .and_then(|p| p.mirror(&r.name, &pool.name))
                        .map(|old| old.metrics.clone())
                        .unwrap_or_else(|| Arc::new(metrics.mirror(&r.name, &pool.name)));
                    RouteMirror::new(pool, m.percent, handles)
                });
                let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
                let split = Table::new(&weights, overrides, r.sticky.clone(), r.pick)
                    .expect("validation refuses routes whose weights sum to 0");
                if let Some(cycle) = split.round_robin_fallback() {
                    tracing::warn!(route = &*r.name, cycle, "round_robin needs a cycle of at most 65536 picks and these rollout weights give more: picking at random, with the same shares on average");
                }
                let gateway = r
                    .gateway
                    .as_ref()
                    .map(|g| Box::new(RouteGateway::new(g, &r.name, &backends)));
                Route {
                    name: r.name.clone(),
                    matcher: r.matcher.clone(),
                    backends: backends.into(),
                    split,
                    timeout: r.timeout,
                    mirror,
                    retries: r.retries.clone(),
                    upgrades: r.upgrades.clone(),
                    grpc_failures: r.grpc_failures,
                    gateway,
                }
            })
            .collect();
        if let Some(previous) = previous {
            for old in previous.pools.iter() {
                for endpoint in old.endpoints() {
                    let kept = pools
                        .iter()
                        .find(|p| p.name == old.name && p.endpoints().any(|e| e == endpoint));
                    match kept {
                        None => metrics.forget_endpoint(&old.name, endpoint.as_str()),
                        // Health checks turned off: their series go, the endpoint's others stay.
                        Some(p) if old.checks_health() && !p.checks_health() => {
                            metrics.forget_endpoint_health(&old.name, endpoint.as_str());
                        }
                        Some(_) => {}
                    }
                }
            }
            for r in previous.routes.iter() {
                for b in r.backends.iter() {
                    let kept = routes.iter().any(|n| {
                        n.name == r.name && n.backends.iter().any(|nb| nb.name() == b.name())
                    });
                    if !kept {
                        metrics.forget_backend(&b.metrics);
                    }
                }
                if let Some(m) = &r.mirror {
                    let kept = routes.iter().any(|n| {
                        n.name == r.name
                            && n.mirror
                                .as_ref()
                                .is_some_and(|nm| nm.pool.name == m.pool.name)
                    });
                    if !kept {
                        metrics.forget_mirror(&m.metrics);
                    }
                }
            }
        }
        let drain = match previous {
            Some(p) if config.limits.drain_on_retire => {
                let (old, new) = (p.route_weights(), route_weights(&routes));
                // The idle pooled connections to an upstream no route sends to by weight any
                // more close now, so the retired version sees weir's connections go.
                for name in drain::unused_upstreams(&old, &new) {
                    if let Some(pool) = pools.iter().find(|p| &*p.name == name) {
                        pool.close_idle();
                    }
                }
                p.drain.after(drain::retired(&old, &new).1)
            }
            Some(p) => p.drain.clone(),
            None => DrainLog::default(),
        };
        Snapshot {
            config,
            metrics: metrics.clone(),
            routes,
            pools,
            access_log: None,
            tracer: None,
            drain,
        }
    }

    /// Each route's backends and weights, for `drain::retired`.
    fn route_weights(&self) -> Vec<RouteWeights<'_>> {
        route_weights(&self.routes)
    }

    /// The mirror of the route called `route`, when it copies to `upstream`.
    fn mirror(&self, route: &str, upstream: &str) -> Option<&RouteMirror> {
        self.routes
            .iter()
            .find(|r| &*r.name == route)?
            .mirror
            .as_ref()
            .filter(|m| &*m.pool.name == upstream)
    }

    /// The backend called `backend` in the route called `route`.
    pub fn backend(&self, route: &str, backend: &str) -> Option<&Backend> {
        self.routes
            .iter()
            .find(|r| &*r.name == route)?
            .backends
            .iter()
            .find(|b| &**b.name() == backend)
    }
}

fn route_weights(routes: &[Route]) -> Vec<RouteWeights<'_>> {
    routes
        .iter()
        .map(|r| RouteWeights {
            route: &r.name,
            backends: r.backends.iter().map(|b| (&**b.name(), b.weight)).collect(),
        })
        .collect()
}
