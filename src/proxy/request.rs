//! The request body weir sends upstream: the client's stream, or a copy of a small body read in
//! full so that it can be sent more than once (retries, mirroring).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The request body weir sends upstream: the client's stream, passed through as it arrives, or a
/// copy of a small body read in full, which can be sent again (retries) or twice (mirroring).
pub enum RequestBody {
    Streaming(Incoming),
    Replay {
        data: Option<Bytes>,
        trailers: Option<http::HeaderMap>,
    },
}

/// A whole request body, kept so that it can be sent more than once.
#[derive(Clone, Default)]
pub struct Replayable {
    data: Bytes,
    trailers: Option<http::HeaderMap>,
}

/// Why a body was not made [`Replayable`].
pub enum NotReplayable {
    /// Longer than the limit, or of unknown length: here it is, untouched, to be streamed.
    TooLarge(Incoming),
    /// The client failed while sending it.
    Broken(hyper::Error),
}

impl Replayable {
    /// Reads `body` in full when it is empty or announces a length (`content-length`) of at most
    /// `limit` bytes; a body of unknown or larger length is handed back untouched, so a large
    /// upload is never buffered.
    pub async fn read(body: Incoming, limit: u64) -> Result<Replayable, NotReplayable> {
        use http_body_util::BodyExt;
        if body.is_end_stream() {
            return Ok(Replayable::default());
        }
        match body.size_hint().exact() {
            Some(n) if n <= limit => {}
            _ => return Err(NotReplayable::TooLarge(body)),
        }
        let collected = body.collect().await.map_err(NotReplayable::Broken)?;
        let trailers = collected.trailers().cloned();
        Ok(Replayable {
            data: collected.to_bytes(),
            trailers,
        })
    }

    pub fn body(&self) -> RequestBody {
        RequestBody::Replay {
            data: (!self.data.is_empty()).then(|| self.data.clone()),
            trailers: self.trailers.clone(),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Streaming(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Replay { data, trailers } => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming(b) => b.is_end_stream(),
            RequestBody::Replay { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(b) => b.size_hint(),
            RequestBody::Replay { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
