//! One pooled keep-alive client per upstream, and round-robin over its endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Limits, Protocol, Upstream, UpstreamSpec};
use crate::metrics::{Metrics, UpstreamMetrics};

/// How long an idle upstream connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

pub struct UpstreamPool {
    pub name: Arc<str>,
    spec: UpstreamSpec,
    connect_timeout: Duration,
    endpoints: Box<[Authority]>,
    next: AtomicUsize,
    client: Client<HttpConnector, Incoming>,
    /// The HTTP version spoken to the upstream; requests are rewritten to it.
    pub version: Version,
    pub metrics: UpstreamMetrics,
}

impl UpstreamPool {
    pub fn new(upstream: &Upstream, limits: &Limits, metrics: &Metrics) -> UpstreamPool {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.connect_timeout));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .timer(TokioTimer::new());
        let version = match upstream.protocol {
            Protocol::Http1 => Version::HTTP_11,
            Protocol::Http2 => {
                builder.http2_only(true);
                Version::HTTP_2
            }
        };
        UpstreamPool {
            name: upstream.name.clone(),
            spec: upstream.spec.clone(),
            connect_timeout: limits.connect_timeout,
            endpoints: upstream.endpoints.clone().into(),
            next: AtomicUsize::new(0),
            client: builder.build(connector),
            version,
            metrics: metrics.upstream(&upstream.name),
        }
    }

    /// Whether this pool serves exactly `upstream` as defined now.
    pub fn has_definition(&self, upstream: &Upstream, limits: &Limits) -> bool {
        self.spec == upstream.spec && self.connect_timeout == limits.connect_timeout
    }

    /// The next endpoint in round-robin order. One relaxed atomic add; no lock.
    pub fn next_endpoint(&self) -> &Authority {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.endpoints[i % self.endpoints.len()]
    }

    pub async fn send(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(req).await
    }
}
