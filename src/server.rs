//! Starting and stopping weir: bind every listener and the admin API, serve, and drain on
//! shutdown.
//!
//! Listener and admin addresses are read once, here; a reload never rebinds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
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
    #[error("cannot start a worker thread: {0}")]
    Worker(std::io::Error),
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

/// The listen backlog of every listener (nginx uses 511; the kernel caps it at
/// `net.core.somaxconn`).
const BACKLOG: u32 = 1024;

/// Binds `count` listening sockets to `address`: one alone, or a group sharing the port with
/// `SO_REUSEPORT`, across which the kernel spreads new connections (by a hash of their
/// addresses). A group would quietly share its port with another group of the same user, so
/// the port is first bound alone, without `SO_REUSEPORT`: that fails, as a lone socket does,
/// when anything already listens there, and fixes the port when `address` asks for port 0.
/// That socket stays bound (not listening, which `SO_REUSEADDR` lets the group bind beside)
/// until the group listens, so nothing takes the port in between. What it cannot stop: a
/// process of the same user that sets `SO_REUSEPORT` later, or one whose own probe was bound
/// at the same instant, joining the group. The sockets come back as std listeners
/// (non-blocking), for the runtime that serves each to register.
fn bind(
    what: String,
    address: SocketAddr,
    count: usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), ServerError> {
    let err = |source| ServerError::Bind {
        what: what.clone(),
        address,
        source,
    };
    let socket = |shared: bool| -> std::io::Result<TcpSocket> {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if shared {
            socket.set_reuseport(true)?;
        }
        Ok(socket)
    };
    let alone = socket(false).map_err(err)?;
    alone.bind(address).map_err(err)?;
    if count <= 1 {
        let listener = alone.listen(BACKLOG).map_err(err)?;
        let bound = listener.local_addr().map_err(err)?;
        return Ok((vec![listener.into_std().map_err(err)?], bound));
    }
    let bound = alone.local_addr().map_err(err)?;
    let err = |source| ServerError::Bind {
        what: what.clone(),
        address: bound,
        source,
    };
    let mut group = Vec::with_capacity(count);
    for _ in 0..count {
        let shared = socket(true).map_err(err)?;
        shared.bind(bound).map_err(err)?;
        group.push(
            shared
                .listen(BACKLOG)
                .map_err(err)?
                .into_std()
                .map_err(err)?,
        );
    }
    drop(alone);
    Ok((group, bound))
}

/// The threads of thread-per-core serving after the first (the caller's): each runs its own
/// single-threaded runtime until `stop` says so or goes, and hands back the runtime's handle.
fn start_workers(
    count: usize,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<tokio::runtime::Handle>, ServerError> {
    let mut handles = Vec::with_capacity(count);
    for i in 1..=count {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("weir-worker-{i}"))
            .spawn(move || {
                crate::proxy::worker::enter(i);
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                });
            })
            .map_err(ServerError::Worker)?;
        let handle = rx
            .recv()
            .map_err(|_| ServerError::Worker(std::io::Error::other("worker thread ended")))?
            .map_err(ServerError::Worker)?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Binds every listener and the admin address of `candidate` and starts serving it on the
/// calling runtime. `path` is the file later reloads read.
pub async fn start(candidate: Candidate, path: Option<PathBuf>) -> Result<Running, ServerError> {
    start_on(candidate, path, 1).await
}

/// As [`start`], with the listeners served by `threads` single-threaded runtimes, thread per
/// core: the calling one (a single-threaded runtime, which also runs the admin API, reloads
/// and health checks) and `threads - 1` more, each with its own `SO_REUSEPORT` socket of
/// every listener. A connection stays on the thread that accepted it, with the tasks it
/// spawns, and takes upstream connections from that thread's part of each pool (`worker`);
/// the config, the pools' other state and the metrics are shared.
pub async fn start_on(
    candidate: Candidate,
    path: Option<PathBuf>,
    threads: usize,
) -> Result<Running, ServerError> {
    let threads = threads.max(1);
    // Before the first snapshot's pools are built: they keep a part per thread.
    crate::proxy::worker::set_count(threads);
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
        let what = format!("listener `{}`", l.name);
        let (sockets, address) = bind(what, l.address, threads)?;
        bound.push((l.name.clone(), address, sockets));
    }
    let (admin_socket, admin_address) = bind("admin".to_owned(), admin_wanted, 1)?;
    let admin_socket = admin_socket.into_iter().next().expect("one socket");
    let admin_socket = TcpListener::from_std(admin_socket).map_err(|source| ServerError::Bind {
        what: "admin".to_owned(),
        address: admin_address,
        source,
    })?;
    let workers = start_workers(threads - 1, &admin_stop_rx)?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (open_tx, open_rx) = mpsc::channel(1);
    let draining = Arc::new(AtomicBool::new(false));

    let mut listeners = Vec::new();
    let mut accept_tasks = Vec::new();
    for (name, address, sockets) in bound {
        tracing::info!(listener = &*name, %address, threads, "listening");
        let ctx = ListenerContext {
            name: name.clone(),
            snapshots: reloader.snapshots.clone(),
            shutdown: shutdown_rx.clone(),
            open: open_tx.clone(),
            drain: reloader.drain.clone(),
            metrics: metrics.listener(&name),
        };
        let here = tokio::runtime::Handle::current();
        for (socket, runtime) in sockets
            .into_iter()
            .zip(std::iter::once(&here).chain(&workers))
        {
            // Registered with the runtime that serves it, so its readiness wakes that thread.
            let socket = {
                let _serving = runtime.enter();
                TcpListener::from_std(socket).map_err(|source| ServerError::Bind {
                    what: format!("listener `{name}`"),
                    address,
                    source,
                })?
            };
            accept_tasks.push(runtime.spawn(listener::serve(socket, ctx.clone())));
        }
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
