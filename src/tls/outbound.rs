//! The HTTP client of weir's own outbound calls (webhooks, the fleet's Prometheus queries, OTLP
//! span export): `http` or `https` to any host, trusting the system's roots.

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type OutboundClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// The HTTP versions an outbound client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    Http1,
    /// HTTP/2 only (gRPC): h2 over TLS, h2c prior knowledge over plain HTTP.
    Http2,
    /// Whatever ALPN settles over TLS; HTTP/1.1 over plain HTTP.
    Both,
}

/// A pooled client for `purpose` (named in the warning below) with `connect_timeout`. Without
/// system roots, `https` calls fail and are reported by the caller; `http` ones still work, and
/// the missing roots are logged once here rather than stopping weir.
pub fn outbound_client<B>(
    purpose: &str,
    connect_timeout: Duration,
    versions: Versions,
) -> OutboundClient<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let tls = super::client_config(None).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no TLS roots for https {purpose}");
        super::no_roots_client_config()
    });
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http();
    let connector = match versions {
        Versions::Http1 => builder.enable_http1().wrap_connector(http),
        Versions::Http2 => builder.enable_http2().wrap_connector(http),
        Versions::Both => builder.enable_http1().enable_http2().wrap_connector(http),
    };
    let mut client = Client::builder(TokioExecutor::new());
    if versions == Versions::Http2 {
        client.http2_only(true);
    }
    client.build(connector)
}
