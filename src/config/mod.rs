//! Configuration, the ground floor of weir: the YAML schema, loading with source positions, the
//! files a config names, validation into a typed [`Config`], and the policies every candidate
//! must pass. Nothing here imports anything of weir above it (only `tls` and the pure gateway
//! compilers `proxy::{matching, filters, affinity}`, leaves); `proxy/` never reads the file, only
//! a snapshot built from a [`Config`].
//!
//! The pipeline (`load`): `scan` (positions, limits) -> `decode` (values to the spec, every
//! error found) -> `files` (the one step that reads) -> `validate` (pure) -> [`Config`]; then
//! `policy` checks it in a sandbox process.

mod admin_token;
mod analysis;
mod decode;
mod diag;
mod duration;
pub mod files;
mod gateway;
pub use gateway::precedence_hints;
mod json_schema;
mod load;
mod model;
pub mod policy;
mod scan;
mod schema;
pub mod status;
mod validate;

pub use admin_token::{AdminToken, MIN_TOKEN_CHARS};
pub use analysis::{
    Advance, AnalysisSpec, COMPARE_STABLE, Compare, ErrorsSpec, Latency, LatencySpec, Rates,
    ToleranceSpec, compares,
};
pub use diag::{ConfigError, ConfigErrors};
pub use duration::{DurationSpec, parse_duration, rfc3339};
pub use files::{Input, sha256_hex};
pub use json_schema::config_schema;
pub use load::{
    FileLoad, Loaded, MAX_FILE_BYTES, load_file, load_str, load_text, read_bytes, read_file,
    unreadable,
};
pub use model::*;
pub use scan::{MAX_DEPTH, MAX_NODES};
pub use schema::*;
pub use status::{FleetStatus, RouteStatus, StatusMeasurement, StatusPhase};
