//! Which failed tries are tried again: idempotent methods only, with a body weir holds in full
//! (nothing of the answer has reached the client yet, since weir sends the response head only
//! after the last try), on the conditions the route names.

use http::Response;

use super::body::UpstreamBody;
use super::forward::ProxyError;
use crate::config::Retries;

pub use super::request::idempotent;

/// Whether the outcome of a try is one the route retries.
pub fn wanted(retries: &Retries, result: &Result<Response<UpstreamBody>, ProxyError>) -> bool {
    match result {
        // Validation admits only 5xx codes here.
        Ok(r) => retries.on_status.contains(&r.status().as_u16()),
        // Nothing reached the upstream's application: a handshake failure is a connect failure.
        Err(ProxyError::Connect { .. } | ProxyError::Tls { .. }) => retries.on_connect,
        Err(ProxyError::Reset { .. }) => retries.on_reset,
        Err(_) => false,
    }
}
