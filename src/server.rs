//! Starting and stopping weir: bind every listener, serve, and drain on shutdown.
//!
//! Listener addresses are read once, here; a reload never rebinds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::proxy::listener::{self, ListenerContext};
use crate::snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address} (listener `{listener}`): {source}")]
    Bind {
        listener: Arc<str>,
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A serving weir. Dropping it without [`Running::drain`] stops accepting but does not wait.
pub struct Running {
    /// Each listener's name and the address it is bound to (the real port when the config
    /// asked for port 0).
    pub listeners: Vec<(Arc<str>, SocketAddr)>,
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    pub config_path: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    open_tx: mpsc::Sender<()>,
    open_rx: mpsc::Receiver<()>,
    accept_tasks: Vec<JoinHandle<()>>,
}

/// Binds every listener of `config` and starts serving it.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, ServerError> {
    let snapshot = Snapshot::build(Arc::new(config), None);
    let snapshots = Arc::new(ArcSwap::from_pointee(snapshot));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (open_tx, open_rx) = mpsc::channel(1);

    let config = snapshots.load().config.clone();
    let mut bound = Vec::new();
    for l in &config.listeners {
        let socket = TcpListener::bind(l.address)
            .await
            .map_err(|source| ServerError::Bind {
                listener: l.name.clone(),
                address: l.address,
                source,
            })?;
        let address = socket.local_addr().map_err(|source| ServerError::Bind {
            listener: l.name.clone(),
            address: l.address,
            source,
        })?;
        bound.push((l.name.clone(), address, socket));
    }

    let mut listeners = Vec::new();
    let mut accept_tasks = Vec::new();
    for (name, address, socket) in bound {
        tracing::info!(listener = &*name, %address, "listening");
        let ctx = ListenerContext {
            name: name.clone(),
            snapshots: snapshots.clone(),
            shutdown: shutdown_rx.clone(),
            open: open_tx.clone(),
        };
        accept_tasks.push(tokio::spawn(listener::serve(socket, ctx)));
        listeners.push((name, address));
    }

    Ok(Running {
        listeners,
        snapshots,
        config_path,
        shutdown,
        open_tx,
        open_rx,
        accept_tasks,
    })
}

impl Running {
    /// The bound address of the listener called `name`.
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, a)| *a)
    }

    /// Stops accepting, lets requests in flight finish and closes connections, waiting at most
    /// the configured drain timeout. Returns whether every connection finished in time.
    pub async fn drain(self) -> bool {
        let timeout: Duration = self.snapshots.load().config.limits.drain_timeout;
        let Running {
            shutdown,
            open_tx,
            mut open_rx,
            accept_tasks,
            ..
        } = self;
        let _ = shutdown.send(true);
        for task in accept_tasks {
            let _ = task.await;
        }
        drop(open_tx);
        // `recv` returns `None` once every connection task has dropped its sender.
        let finished = tokio::time::timeout(timeout, open_rx.recv()).await.is_ok();
        if finished {
            tracing::info!("drained");
        } else {
            tracing::warn!(
                ?timeout,
                "drain timeout reached with connections still open"
            );
        }
        finished
    }
}
