//! Reloading: read a candidate config, validate it, and swap it in, keeping a record of every
//! attempt (the revision serving, the last result, the history of weight changes).
//! The file watcher of a later issue calls [`Reloader::reload`]; so do SIGHUP and the initial load.

pub mod apply;
pub mod revision;
pub mod watch;

pub use apply::{Candidate, HistoryEntry, ReloadRecord, Reloader, WeightChange, read_file};
pub use revision::Revision;
