//! Accepting connections on one listener and serving each with hyper: HTTP/1.1 and HTTP/2
//! prior knowledge (h2c) on the same port, keep-alive, the limits of the config, and graceful
//! shutdown when the server drains or the connection sits idle.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use tokio::io::{AsyncRead, AsyncWrite};

use super::forward::ConnInfo;
use crate::config::Limits;
use crate::metrics::{ConnectionGauge, ListenerMetrics};
use crate::snapshot::Snapshot;

/// What every connection of a listener shares.
#[derive(Clone)]
pub struct ListenerContext {
    pub name: Arc<str>,
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    /// Becomes `true` when the server starts draining.
    pub shutdown: watch::Receiver<bool>,
    /// Each connection task holds a clone; the server's drain waits until all are dropped.
    pub open: mpsc::Sender<()>,
    /// Connection and TLS handshake metrics, resolved once.
    pub metrics: ListenerMetrics,
}

/// Accepts until shutdown. Accept errors (out of file descriptors, say) are logged and retried
/// after a short pause instead of ending the listener.
pub async fn serve(listener: TcpListener, mut ctx: ListenerContext) {
    loop {
        tokio::select! {
            changed = ctx.shutdown.changed() => {
                if changed.is_err() || *ctx.shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(stream, peer, ctx.clone()));
                }
                Err(e) => {
                    tracing::warn!(listener = &*ctx.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    tracing::debug!(listener = &*ctx.name, "stopped accepting");
}

/// State of one connection that its requests update.
struct Connection {
    snapshots: Arc<ArcSwap<Snapshot>>,
    info: ConnInfo,
    /// Requests started so far; the idle check watches it move.
    requests: AtomicU64,
}

/// The idle check runs this many times per idle timeout; a connection is idle after that many
/// checks in a row saw no new request.
const IDLE_CHECKS: u32 = 4;

async fn connection(stream: TcpStream, peer: std::net::SocketAddr, ctx: ListenerContext) {
    let _open = ctx.open.clone();
    let _active = ConnectionGauge::open(&ctx.metrics.active);
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    // Limits and certificates are read when the connection opens: a reload applies to new
    // connections, and an open connection keeps what it started with.
    let (limits, tls) = {
        let snapshot = ctx.snapshots.load();
        let tls = snapshot
            .config
            .listeners
            .iter()
            .find(|l| l.name == ctx.name)
            .and_then(|l| l.tls.clone());
        (snapshot.config.limits, tls)
    };
    let Some(tls) = tls else {
        return serve_http(stream, peer, "http", limits, ctx).await;
    };
    // The handshake shares the request head's deadline, so a silent client cannot hold a slot.
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    match tokio::time::timeout(limits.header_read_timeout, accept).await {
        Ok(Ok(stream)) => serve_http(stream, peer, "https", limits, ctx).await,
        Ok(Err(e)) => {
            ctx.metrics.tls_failed.inc();
            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            ctx.metrics.tls_timeout.inc();
            tracing::debug!(client = %peer, "TLS handshake timed out");
        }
    }
}

async fn serve_http<I>(
    io: I,
    peer: std::net::SocketAddr,
    scheme: &'static str,
    limits: Limits,
    mut ctx: ListenerContext,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));

    let conn = Arc::new(Connection {
        snapshots: ctx.snapshots.clone(),
        info: ConnInfo {
            client: peer,
            listener: ctx.name.clone(),
            scheme,
            client_errors: ctx.metrics.client_errors.clone(),
        },
        requests: AtomicU64::new(0),
    });
    let service_conn = conn.clone();
    let service = service_fn(move |req| {
        let conn = service_conn.clone();
        conn.requests.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, Infallible>(super::handle(&conn.snapshots, &conn.info, req).await) }
    });
    let serving = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(serving);
    let mut idle_check = tokio::time::interval(limits.idle_timeout / IDLE_CHECKS);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_seen, mut quiet_checks) = (0, 0);
    let mut closing = *ctx.shutdown.borrow();
    if closing {
        serving.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = serving.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = ctx.shutdown.changed(), if !closing => {
                // Finish the request in flight, then close (HTTP/2: GOAWAY).
                serving.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle_check.tick(), if !closing => {
                let seen = conn.requests.load(Ordering::Relaxed);
                if seen != last_seen {
                    (last_seen, quiet_checks) = (seen, 0);
                } else {
                    quiet_checks += 1;
                    if quiet_checks > IDLE_CHECKS {
                        serving.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}
