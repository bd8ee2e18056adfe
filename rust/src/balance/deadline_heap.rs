//! The EDF scheduler's priority queue: a 4-ary min-heap of (deadline, insertion order, host).

/// One host's place in the schedule, packed into one integer whose order is the schedule's:
/// deadline, then insertion order (ties are first in, first out, as in Envoy), then host.
// NOTE: a positive f64's bits order like the number, so one u128 comparison replaces a float
// comparison plus a tie-break, and a 4-way minimum compiles to branch-free selects. Heap
// comparisons are the unpredictable branches that dominate a pick otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry(u128);

impl Entry {
    /// `deadline` must be positive (or +inf); `seq` is the insertion order (it may wrap after
    /// 2^32 re-queues, which can only reorder exact deadline ties).
    #[inline]
    pub(crate) fn new(deadline: f64, seq: u32, host: u32) -> Entry {
        debug_assert!(deadline > 0.0, "deadline {deadline}");
        Entry(u128::from(deadline.to_bits()) << 64 | u128::from(seq) << 32 | u128::from(host))
    }
    #[inline]
    pub(crate) fn deadline(self) -> f64 {
        f64::from_bits((self.0 >> 64) as u64)
    }
    #[cfg(test)]
    pub(crate) fn seq(self) -> u32 {
        (self.0 >> 32) as u32
    }
    #[inline]
    pub(crate) fn host(self) -> usize {
        self.0 as u32 as usize
    }
}

// NOTE: 4 children per node instead of 2: half the levels (7 for 10,000 hosts) and the 4
// children of a node are 64 contiguous bytes, so a sift-down makes half the dependent memory
// loads of `std::collections::BinaryHeap`.
const ARITY: usize = 4;

#[derive(Debug, Default)]
pub(crate) struct DeadlineHeap {
    entries: Vec<Entry>,
}

impl DeadlineHeap {
    pub(crate) fn from_entries(entries: Vec<Entry>) -> DeadlineHeap {
        let mut heap = DeadlineHeap { entries };
        for i in (0..heap.entries.len().div_ceil(ARITY)).rev() {
            heap.sift_down(i);
        }
        heap
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The earliest entry.
    #[inline]
    pub(crate) fn first(&self) -> Option<Entry> {
        self.entries.first().copied()
    }

    /// Replace entry `i` by a later one (same host, later deadline).
    #[inline]
    pub(crate) fn postpone(&mut self, i: usize, later: Entry) {
        debug_assert!(later >= self.entries[i]);
        self.entries[i] = later;
        self.sift_down(i);
    }

    pub(crate) fn pop(&mut self) -> Option<Entry> {
        let last = self.entries.pop()?;
        if self.entries.is_empty() {
            return Some(last);
        }
        let first = std::mem::replace(&mut self.entries[0], last);
        self.sift_down(0);
        Some(first)
    }

    pub(crate) fn push(&mut self, entry: Entry) {
        self.entries.push(entry);
        let mut pos = self.entries.len() - 1;
        while pos > 0 {
            let parent = (pos - 1) / ARITY;
            if entry >= self.entries[parent] {
                break;
            }
            self.entries[pos] = self.entries[parent];
            pos = parent;
        }
        self.entries[pos] = entry;
    }

    #[inline]
    fn sift_down(&mut self, mut pos: usize) {
        let entries = &mut self.entries[..];
        let len = entries.len();
        let entry = entries[pos];
        loop {
            let first = ARITY * pos + 1;
            let (best, least) = if first + ARITY <= len {
                // A full node (all but the last): branch-free minimum of the four.
                let c = &entries[first..first + ARITY];
                let (a, a_at) = if c[1] < c[0] { (c[1], 1) } else { (c[0], 0) };
                let (b, b_at) = if c[3] < c[2] { (c[3], 3) } else { (c[2], 2) };
                if b < a {
                    (first + b_at, b)
                } else {
                    (first + a_at, a)
                }
            } else if first < len {
                let (at, least) = entries[first..]
                    .iter()
                    .enumerate()
                    .min_by_key(|&(_, e)| *e)
                    .expect("a child");
                (first + at, *least)
            } else {
                break;
            };
            if least >= entry {
                break;
            }
            entries[pos] = least;
            pos = best;
        }
        entries[pos] = entry;
    }
}
