//! Configuration: the YAML schema, loading with source positions, and validation into a typed
//! [`Config`]. Nothing here opens a socket; `proxy/` never reads the file, only a snapshot built
//! from a [`Config`].

mod admin_token;
mod duration;
mod json_schema;
mod load;
mod schema;
mod validate;

pub use admin_token::{AdminToken, MIN_TOKEN_CHARS};
pub use duration::{DurationSpec, parse_duration};
pub use json_schema::config_schema;
pub use load::{ConfigError, ConfigErrors, load_file, load_str, unreadable};
pub use schema::*;
pub use validate::{
    Backend, Condition, Config, Expect, HostMatch, Limits, Listener, MAX_RETRY_ATTEMPTS, Mirror,
    Outlier, Override, PathPrefix, Retries, Rollout, Route, RouteMatch, StickyKey, Upstream,
    UpstreamTls, Webhook,
};
