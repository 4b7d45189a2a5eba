//! What weir tells the people who operate it about each request and about itself: request IDs,
//! W3C trace context and the spans exported over OTLP, the access log, and log text a person can
//! read.
//!
//! Everything here that runs per request is cheap and lock-free (thread-local random numbers,
//! fixed-size buffers, a bounded queue's `try_send`); everything that formats, encodes or writes
//! runs on a background task or thread, and a full queue drops and counts rather than wait.

pub mod access;
pub mod human;
pub mod random;
pub mod request_id;
pub mod span_export;
pub mod trace_context;
