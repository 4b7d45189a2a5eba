//! One pooled keep-alive client per upstream (plain HTTP, or HTTPS through rustls with ALPN),
//! and round-robin over its endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use http::uri::Scheme;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Limits, Protocol, Upstream};
use crate::metrics::{Metrics, UpstreamMetrics};

/// How long an idle upstream connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint. A burst may open more; past it they close instead of
/// idling, which bounds memory after the burst (the role of nginx's `keepalive` directive).
const POOL_MAX_IDLE_PER_ENDPOINT: usize = 128;

pub struct UpstreamPool {
    pub name: Arc<str>,
    identity: String,
    connect_timeout: Duration,
    endpoints: Box<[Authority]>,
    next: AtomicUsize,
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
    /// `https` for upstreams with `tls`, else `http`.
    pub scheme: Scheme,
    /// The HTTP version spoken to the upstream; requests are rewritten to it.
    pub version: Version,
    pub metrics: UpstreamMetrics,
}

impl UpstreamPool {
    pub fn new(upstream: &Upstream, limits: &Limits, metrics: &Metrics) -> UpstreamPool {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let (tls_config, scheme) = match &upstream.tls {
            Some(t) => ((*t.config).clone(), Scheme::HTTPS),
            // Never used for `http` URIs; the connector type is shared so pools are one type.
            None => ((*plain_client_config()).clone(), Scheme::HTTP),
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
        UpstreamPool {
            name: upstream.name.clone(),
            identity: upstream.identity.clone(),
            connect_timeout: limits.connect_timeout,
            endpoints: upstream.endpoints.clone().into(),
            next: AtomicUsize::new(0),
            client: builder.build(connector),
            version,
            scheme,
            metrics: metrics.upstream(&upstream.name),
        }
    }

    /// Whether this pool serves exactly `upstream` as defined now.
    pub fn has_definition(&self, upstream: &Upstream, limits: &Limits) -> bool {
        self.identity == upstream.identity && self.connect_timeout == limits.connect_timeout
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

fn plain_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Arc::new(
                rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        })
        .clone()
}
