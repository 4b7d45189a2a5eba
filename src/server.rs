//! Starting and stopping weir: bind every listener and the admin API, serve, and drain on
//! shutdown.
//!
//! Listener and admin addresses are read once, here; a reload never rebinds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::metrics::Metrics;
use crate::proxy::listener::{self, ListenerContext};
use crate::reload::Candidate;
use crate::reload::Reloader;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the config is refused by its policies:\n{0}")]
    Refused(crate::config::ConfigErrors),
    #[error("cannot listen on {address} ({what})")]
    Bind {
        what: String,
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A serving weir. Dropping it without [`Running::drain`] stops accepting but does not wait.
pub struct Running {
    /// Each listener's name and the address it is bound to (the real port when the config
    /// asked for port 0).
    pub listeners: Vec<(Arc<str>, SocketAddr)>,
    pub admin_address: SocketAddr,
    pub reloader: Arc<Reloader>,
    draining: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    admin_stop: watch::Sender<bool>,
    open_tx: mpsc::Sender<()>,
    open_rx: mpsc::Receiver<()>,
    accept_tasks: Vec<JoinHandle<()>>,
}

async fn bind(what: String, address: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let err = |source| ServerError::Bind {
        what: what.clone(),
        address,
        source,
    };
    let socket = TcpListener::bind(address).await.map_err(err)?;
    let bound = socket.local_addr().map_err(err)?;
    Ok((socket, bound))
}

/// Binds every listener and the admin address of `candidate` and starts serving it. `path` is
/// the file later reloads read.
pub async fn start(candidate: Candidate, path: Option<PathBuf>) -> Result<Running, ServerError> {
    let metrics = Arc::new(Metrics::new());
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let listeners_wanted = candidate.config.listeners.clone();
    let admin_wanted = candidate.config.admin_address;
    // The initial load: the policies, the first snapshot, the control task (which ends with
    // `admin_stop`, also when binding fails below).
    let reloader = Reloader::start(candidate, path, metrics.clone(), admin_stop_rx.clone())
        .await
        .map_err(ServerError::Refused)?;
    let reloader = Arc::new(reloader);
    let mut bound = Vec::new();
    for l in &listeners_wanted {
        let (socket, address) = bind(format!("listener `{}`", l.name), l.address).await?;
        bound.push((l.name.clone(), address, socket));
    }
    let (admin_socket, admin_address) = bind("admin".to_owned(), admin_wanted).await?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (open_tx, open_rx) = mpsc::channel(1);
    let draining = Arc::new(AtomicBool::new(false));

    let mut listeners = Vec::new();
    let mut accept_tasks = Vec::new();
    for (name, address, socket) in bound {
        tracing::info!(listener = &*name, %address, "listening");
        let ctx = ListenerContext {
            name: name.clone(),
            snapshots: reloader.snapshots.clone(),
            shutdown: shutdown_rx.clone(),
            open: open_tx.clone(),
            drain: reloader.drain.clone(),
            metrics: metrics.listener(&name),
        };
        accept_tasks.push(tokio::spawn(listener::serve(socket, ctx)));
        listeners.push((name, address));
    }
    tracing::info!(address = %admin_address, "admin API listening");
    let state = Arc::new(AdminState {
        reloader: reloader.clone(),
        draining: draining.clone(),
    });
    tokio::spawn(admin::serve(admin_socket, state, admin_stop_rx.clone()));
    tokio::spawn(crate::reload::watch::run(reloader.clone(), admin_stop_rx));

    Ok(Running {
        listeners,
        admin_address,
        reloader,
        draining,
        shutdown,
        admin_stop,
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
    /// the configured drain timeout; `/readyz` answers 503 meanwhile, and the admin API stops
    /// last. Returns whether every connection finished in time.
    pub async fn drain(self) -> bool {
        let timeout: Duration = self.reloader.snapshots.load().config.limits.drain_timeout;
        let Running {
            draining,
            shutdown,
            admin_stop,
            open_tx,
            mut open_rx,
            accept_tasks,
            ..
        } = self;
        draining.store(true, Ordering::Relaxed);
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
                timeout = %crate::observe::human::duration(timeout),
                "drain timeout reached with connections still open"
            );
        }
        // The admin API and the file watcher stop last.
        let _ = admin_stop.send(true);
        finished
    }
}
