//! weir: a weighted L7 traffic-splitting reverse proxy for canary releases.
//!
//! The crate is a library with a thin binary, so tests drive the real thing in-process.
//! See ARCHITECTURE.md for the map.

/// The Git commit weir was built from (see `build.rs`): a full hash, or `unknown` when the
/// source had no Git metadata and no `WEIR_GIT_COMMIT` was given.
pub const GIT_COMMIT: &str = env!("WEIR_GIT_COMMIT");

/// What `weir --version` prints after the name: the crate version and the Git commit.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WEIR_GIT_COMMIT"),
    ")"
);

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod observe;
pub mod proxy;
pub mod reload;
pub mod rollout;
pub mod server;
pub mod snapshot;
pub mod tls;
