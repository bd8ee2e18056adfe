//! The request body sent upstream: the client's streamed body, or bytes we hold (a replayed
//! request, or none).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

pub enum UpBody {
    /// Streamed from the downstream connection, never buffered.
    Stream(Incoming),
    /// A complete body held in memory (empty for body-less requests, so they can be retried).
    Full(Option<Bytes>),
}

impl UpBody {
    pub fn empty() -> Self {
        UpBody::Full(None)
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Stream(b) => Pin::new(b).poll_frame(cx),
            UpBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Stream(b) => b.is_end_stream(),
            UpBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Stream(b) => b.size_hint(),
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
