//! weir's own keep-alive pool for plain HTTP/1.1 upstreams: per endpoint, a lock-free queue of
//! idle hyper connections (`SendRequest`). A connection goes back to the queue when the
//! response body it carried ends, on the task that read that body: no lock, no hashing, no task
//! spawned per request. TLS and HTTP/2 upstreams use hyper-util's pooled client instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::request::RequestBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, timed out, name not found).
    Connect(BoxError),
    /// The connection failed before a response head.
    Reset(BoxError),
}

pub struct Http1Pool {
    /// Idle connections per endpoint (in the upstream's endpoint order).
    idle: Box<[Arc<ArrayQueue<SendRequest<RequestBody>>>]>,
    connect_timeout: Duration,
}

/// A connection lent to one request, returned to its endpoint's queue when the response body
/// ends (see `body::UpstreamBody`).
pub struct Lease {
    sender: SendRequest<RequestBody>,
    home: Arc<ArrayQueue<SendRequest<RequestBody>>>,
}

impl Lease {
    /// Puts the connection back for the next request; a closed one is dropped, and so is one
    /// past the queue's capacity (it closes instead of idling).
    pub fn give_back(self) {
        if !self.sender.is_closed() {
            let _ = self.home.push(self.sender);
        }
    }
}

impl Http1Pool {
    pub fn new(endpoints: usize, max_idle: usize, connect_timeout: Duration) -> Http1Pool {
        Http1Pool {
            idle: (0..endpoints)
                .map(|_| Arc::new(ArrayQueue::new(max_idle)))
                .collect(),
            connect_timeout,
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `endpoint` (at `authority`) on an idle
    /// connection, or a new one. A pooled connection that turns out closed before the request
    /// went out is replaced by a new one, transparently: the request was not sent.
    pub async fn send(
        &self,
        endpoint: usize,
        authority: &Authority,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let home = &self.idle[endpoint];
        while let Some(mut sender) = home.pop() {
            if sender.is_closed() || sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok((response, self.lease(sender, endpoint))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Reset(e.into_error().into())),
                },
            }
        }
        let mut sender = self.connect(authority).await?;
        match sender.send_request(req).await {
            Ok(response) => Ok((response, self.lease(sender, endpoint))),
            Err(e) => Err(SendError::Reset(e.into())),
        }
    }

    fn lease(&self, sender: SendRequest<RequestBody>, endpoint: usize) -> Lease {
        Lease {
            sender,
            home: self.idle[endpoint].clone(),
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<RequestBody>, SendError> {
        let connect = async {
            let stream = connect_any(authority).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(SendError::Connect(
                    format!("no connection within {:?}", self.connect_timeout).into(),
                ));
            }
            Ok(Err(e)) => return Err(SendError::Connect(e.into())),
            Ok(Ok(s)) => s,
        };
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// A connection to `authority`: its IP literal, or each address its name resolves to, in order,
/// until one accepts (`localhost` may list `::1` before `127.0.0.1`).
async fn connect_any(authority: &Authority) -> std::io::Result<TcpStream> {
    if let Ok(address) = authority.as_str().parse::<SocketAddr>() {
        return TcpStream::connect(address).await;
    }
    let mut last = None;
    for address in tokio::net::lookup_host(authority.as_str()).await? {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{authority}` resolves to no address"),
        )
    }))
}
