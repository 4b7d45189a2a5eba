//! Which failed tries are tried again: idempotent methods only, with a body weir holds in full
//! (nothing of the answer has reached the client yet, since weir sends the response head only
//! after the last try), on the conditions the route names.

use http::{Method, Response};

use super::body::UpstreamBody;
use super::forward::ProxyError;
use crate::config::Retries;

/// A request that may be sent twice without changing the outcome (RFC 9110, 9.2.2), less
/// `TRACE`, which no upstream should see twice.
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

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
