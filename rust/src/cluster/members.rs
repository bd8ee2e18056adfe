//! The host list of one membership, in fixed-size chunks that memberships share.
//!
//! A membership is immutable once published (requests index it without a lock), so a change
//! makes a new one. Stored flat, changing one host of 10,000 would copy 10,000 pointers; here
//! it copies the one chunk that holds the host and the list of chunk pointers: `CHUNK` +
//! `len / CHUNK` pointers, a few hundred at most up to 16,384 hosts. Every chunk is full but the
//! last, so host `i` is at `chunks[i / CHUNK][i % CHUNK]`: one more load than a flat list.

use super::Host;
use std::sync::Arc;

/// Hosts per chunk: the copy per change is `CHUNK + len / CHUNK` pointers, least around
/// `len = CHUNK²` (16,384 hosts).
const SHIFT: usize = 7;
const CHUNK: usize = 1 << SHIFT;

/// One host of a membership and its weight.
#[derive(Clone)]
pub struct Member {
    pub host: Arc<Host>,
    pub weight: u32,
}

#[derive(Clone, Default)]
pub struct Members {
    chunks: Vec<Arc<[Member]>>,
    len: usize,
}

impl Members {
    pub fn from_vec(members: Vec<Member>) -> Members {
        let len = members.len();
        let chunks = members.chunks(CHUNK).map(Arc::from).collect();
        Members { chunks, len }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, i: usize) -> &Member {
        &self.chunks[i >> SHIFT][i & (CHUNK - 1)]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// A copy with `member` at `i` (`i < len`).
    pub fn with_set(&self, i: usize, member: Member) -> Members {
        let mut chunks = self.chunks.clone();
        let mut chunk = chunks[i >> SHIFT].to_vec();
        chunk[i & (CHUNK - 1)] = member;
        chunks[i >> SHIFT] = chunk.into();
        Members {
            chunks,
            len: self.len,
        }
    }

    /// A copy with `member` appended at `len`.
    pub fn with_pushed(&self, member: Member) -> Members {
        let mut chunks = self.chunks.clone();
        match chunks.last_mut() {
            Some(last) if last.len() < CHUNK => {
                let mut chunk = Vec::with_capacity(last.len() + 1);
                chunk.extend_from_slice(last);
                chunk.push(member);
                *last = chunk.into();
            }
            _ => chunks.push(Arc::from([member])),
        }
        Members {
            chunks,
            len: self.len + 1,
        }
    }

    /// A copy without host `i`, whose place the last host takes (`i < len`).
    pub fn with_swap_removed(&self, i: usize) -> Members {
        let last = self.len - 1;
        let moved = self.get(last).clone();
        let mut out = if i == last {
            self.clone()
        } else {
            self.with_set(i, moved)
        };
        let tail = out.chunks.pop().expect("not empty");
        if tail.len() > 1 {
            out.chunks.push(Arc::from(&tail[..tail.len() - 1]));
        }
        out.len = last;
        out
    }
}

impl std::ops::Index<usize> for Members {
    type Output = Arc<Host>;
    #[inline]
    fn index(&self, i: usize) -> &Arc<Host> {
        &self.get(i).host
    }
}
