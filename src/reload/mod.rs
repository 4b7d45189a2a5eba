//! Applying a new config to a running weir: build the new [`Snapshot`] next to the running one
//! and swap it in with one store. Requests in flight keep the snapshot they started with.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::snapshot::Snapshot;

/// What a successful apply could not do: changes that need a restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub warnings: Vec<String>,
}

/// Swaps `config` in. Listener and admin addresses are bound once at start: a change of them is
/// reported in the warnings and the old addresses stay; the rest of the file applies.
pub fn apply(snapshots: &ArcSwap<Snapshot>, config: Config) -> Applied {
    let previous = snapshots.load_full();
    let mut warnings = Vec::new();
    if previous.config.listeners != config.listeners {
        warnings.push(String::from(
            "listener names or addresses changed: restart weir to apply them",
        ));
    }
    if previous.config.admin_address != config.admin_address {
        warnings.push(String::from(
            "the admin address changed: restart weir to apply it",
        ));
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let snapshot = Snapshot::build(Arc::new(config), Some(&previous));
    snapshots.store(Arc::new(snapshot));
    Applied { warnings }
}
