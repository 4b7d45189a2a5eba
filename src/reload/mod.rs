//! Reloading, and the control plane's one place to act. A config goes from the file (`read`:
//! read, validate, name the attempt) through the watcher or SIGHUP (`watch`) to the control task
//! (`control`), which checks its policies, builds the snapshot and swaps it in, and runs the
//! rollouts. [`Reloader`] (`handle`) is what everyone else holds.

mod control;
mod handle;
pub mod history;
pub mod read;
pub mod revision;
pub mod watch;

pub use control::RolloutView;
pub use handle::{Read, Reloader};
pub use history::{HistoryEntry, ReloadRecord, WeightChange};
pub use read::{Attempt, Candidate, ReadResult, Refused, read_file};
pub use revision::Revision;
