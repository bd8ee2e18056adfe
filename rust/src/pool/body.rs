//! The request body sent upstream: the client's streamed body (optionally teed into a bounded
//! copy so the request can be retried), or bytes we hold (a replay, or no body at all). While
//! the client's body streams, `BodyProgress` tells the request path when it ended (the route
//! timeout starts then), when its last frame came (the stream idle timeout), and whether the
//! client broke it (so the failure is the client's, not the upstream host's).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub enum UpBody {
    /// Streamed from the downstream connection; `replay`, when set, keeps a copy of up to its
    /// limit for another attempt.
    Downstream {
        body: Incoming,
        progress: Arc<BodyProgress>,
        replay: Option<Arc<Replay>>,
    },
    /// A complete body held in memory (empty for body-less requests).
    Full(Option<Bytes>),
}

/// Where the client's request body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyState {
    Streaming,
    /// Read to its end (at `BodyProgress::ended_at`).
    Ended,
    /// The client went away, or reset its stream, before the end.
    Disconnected,
    /// The client sent a body that cannot be framed (a bad chunk size line...).
    Malformed,
}

const STATES: [BodyState; 4] = [
    BodyState::Streaming,
    BodyState::Ended,
    BodyState::Disconnected,
    BodyState::Malformed,
];

/// Shared between the body as the upstream connection polls it and the request path.
pub struct BodyProgress {
    origin: Instant,
    state: AtomicU8,
    /// Milliseconds after `origin`: the last frame, and the end.
    last_frame_ms: AtomicU64,
    ended_ms: AtomicU64,
    changed: Notify,
}

impl BodyProgress {
    pub fn new() -> Arc<Self> {
        Arc::new(BodyProgress {
            origin: Instant::now(),
            state: AtomicU8::new(0),
            last_frame_ms: AtomicU64::new(0),
            ended_ms: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    pub fn state(&self) -> BodyState {
        STATES[usize::from(self.state.load(std::sync::atomic::Ordering::Acquire)).min(3)]
    }

    fn since_origin(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn frame(&self) {
        self.last_frame_ms.store(self.since_origin(), Relaxed);
    }

    fn settle(&self, to: BodyState) {
        let code = STATES.iter().position(|s| *s == to).unwrap_or(0) as u8;
        self.ended_ms.store(self.since_origin(), Relaxed);
        // Only the first outcome counts (a body that ended cannot fail afterwards).
        if self
            .state
            .compare_exchange(0, code, std::sync::atomic::Ordering::AcqRel, Relaxed)
            .is_ok()
        {
            self.changed.notify_waiters();
        }
    }

    fn fail(&self, e: &hyper::Error) {
        use std::error::Error as _;
        let mut src = e.source();
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                ) {
                    return self.settle(BodyState::Malformed);
                }
            }
            src = s.source();
        }
        self.settle(BodyState::Disconnected)
    }

    /// When the body was read to its end, if it was.
    pub fn ended_at(&self) -> Option<Instant> {
        (self.state() == BodyState::Ended)
            .then(|| self.origin + Duration::from_millis(self.ended_ms.load(Relaxed)))
    }

    /// When the last frame (or the request head) arrived.
    pub fn last_frame_at(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_frame_ms.load(Relaxed))
    }

    /// Wait until the body is no longer streaming; its final state.
    pub async fn settled(&self) -> BodyState {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.state() {
                BodyState::Streaming => changed.await,
                s => return s,
            }
        }
    }
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

fn poll_downstream(
    body: &mut Incoming,
    progress: &BodyProgress,
    replay: Option<&Replay>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
    let r = Pin::new(&mut *body).poll_frame(cx);
    match &r {
        Poll::Ready(Some(Ok(f))) => {
            if let (Some(d), Some(replay)) = (f.data_ref(), replay) {
                replay.push(d);
            }
            if body.is_end_stream() {
                if let Some(replay) = replay {
                    replay.finish();
                }
                progress.settle(BodyState::Ended);
            } else {
                progress.frame();
            }
        }
        Poll::Ready(None) => {
            if let Some(replay) = replay {
                replay.finish();
            }
            progress.settle(BodyState::Ended);
        }
        Poll::Ready(Some(Err(e))) => progress.fail(e),
        Poll::Pending => {}
    }
    r
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Downstream {
                body,
                progress,
                replay,
            } => poll_downstream(body, progress, replay.as_deref(), cx),
            UpBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Downstream { body, .. } => body.is_end_stream(),
            UpBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Downstream { body, .. } => body.size_hint(),
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
