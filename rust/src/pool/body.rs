//! The request body sent upstream: the client's streamed body (optionally teed into a bounded
//! copy so the request can be retried), or bytes we hold (a replay, or no body at all).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

pub enum UpBody {
    /// Streamed from the downstream connection, never buffered.
    Stream(Incoming),
    /// Streamed, while a copy of up to `limit` bytes is kept for a retry.
    Tee(Incoming, Arc<Replay>),
    /// A complete body held in memory (empty for body-less requests).
    Full(Option<Bytes>),
}

/// The copy a teed body leaves behind. Usable for a retry only if the whole body was seen and
/// it stayed within the limit (Envoy's retry buffer limit; beyond it the request is not
/// retried).
pub struct Replay {
    limit: usize,
    state: Mutex<ReplayState>,
}

#[derive(Default)]
struct ReplayState {
    chunks: Vec<Bytes>,
    size: usize,
    overflow: bool,
    complete: bool,
}

impl Replay {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Replay {
            limit,
            state: Mutex::new(ReplayState::default()),
        })
    }

    fn push(&self, data: &Bytes) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.overflow {
            return;
        }
        if s.size + data.len() > self.limit {
            s.overflow = true;
            s.chunks = Vec::new();
            return;
        }
        s.size += data.len();
        // NOTE: Bytes clones share the buffer: the copy costs a refcount, not a memcpy.
        s.chunks.push(data.clone());
    }

    fn finish(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .complete = true;
    }

    /// The whole body, if it can be replayed.
    pub fn body(&self) -> Option<Bytes> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !s.complete || s.overflow {
            return None;
        }
        if s.chunks.len() == 1 {
            return Some(s.chunks[0].clone());
        }
        let mut all = Vec::with_capacity(s.size);
        for c in &s.chunks {
            all.extend_from_slice(c);
        }
        Some(all.into())
    }
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
            UpBody::Tee(b, replay) => {
                let r = Pin::new(&mut *b).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            replay.push(d);
                        }
                        if b.is_end_stream() {
                            replay.finish();
                        }
                    }
                    Poll::Ready(None) => replay.finish(),
                    _ => {}
                }
                r
            }
            UpBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Stream(b) | UpBody::Tee(b, _) => b.is_end_stream(),
            UpBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Stream(b) | UpBody::Tee(b, _) => b.size_hint(),
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
