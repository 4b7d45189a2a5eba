//! weir: a weighted L7 traffic-splitting reverse proxy for canary releases.
//!
//! The crate is a library with a thin binary, so tests drive the real thing in-process.
//! See ARCHITECTURE.md for the map.

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod rollout;
pub mod server;
pub mod snapshot;
pub mod tls;
