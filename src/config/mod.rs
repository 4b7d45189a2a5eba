//! Configuration: the YAML schema, loading with source positions, and validation into a typed
//! [`Config`]. Nothing here opens a socket; `proxy/` never reads the file, only a snapshot built
//! from a [`Config`].

mod duration;
pub mod files;
mod load;
pub mod policy;
mod schema;
mod validate;

pub use duration::{DurationSpec, parse_duration};
pub use files::{Input, sha256_hex};
pub use load::{
    ConfigError, ConfigErrors, Loaded, MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, load_file, load_str,
    load_text, not_utf8, unreadable,
};
pub use schema::*;
pub use validate::{
    Backend, Condition, Config, Expect, HostMatch, Limits, Listener, MAX_RETRY_ATTEMPTS, Mirror,
    Outlier, Override, PathPrefix, Retries, Rollout, Route, RouteMatch, StickyKey, Upstream,
    UpstreamTls, Webhook,
};
