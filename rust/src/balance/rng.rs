//! Random numbers for the balancers: wyrand, per thread by default, or one seeded stream per
//! balancer so tests and benchmarks are reproducible.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const WY_INC: u64 = 0xa076_1d64_78bd_642f;
const WY_XOR: u64 = 0xe703_7ed1_a0b4_28db;

thread_local! {
    // NOTE: one wyrand state per thread: a pick draws without a lock or a shared cache line
    // (`rand::rng()` would also work, but its ChaCha block refills cost more than the pick).
    static THREAD_STATE: Cell<u64> = Cell::new(rand::random());
}

#[inline]
fn wymix(s: u64) -> u64 {
    let t = u128::from(s).wrapping_mul(u128::from(s ^ WY_XOR));
    ((t >> 64) as u64) ^ (t as u64)
}

/// `out` filled from the calling thread's generator: `Entropy::Thread.next_u64()` each.
pub(crate) fn fill_from_thread(out: &mut [u64]) {
    THREAD_STATE.with(|c| {
        let mut s = c.get();
        for o in out {
            s = s.wrapping_add(WY_INC);
            *o = wymix(s);
        }
        c.set(s);
    });
}

/// Where a balancer's randomness comes from.
#[derive(Debug)]
pub(crate) enum Entropy {
    /// The calling thread's generator, seeded from the OS once per thread.
    Thread,
    /// One stream per balancer: reproducible when used from one thread.
    // NOTE: a fetch_add on a shared word; fine for tests and the Python binding, and still
    // correct (every draw sees a distinct state) if several threads share it.
    Seeded(AtomicU64),
}

impl Entropy {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        match seed {
            None => Entropy::Thread,
            Some(s) => Entropy::Seeded(AtomicU64::new(s)),
        }
    }

    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        match self {
            Entropy::Thread => THREAD_STATE.with(|c| {
                let s = c.get().wrapping_add(WY_INC);
                c.set(s);
                wymix(s)
            }),
            Entropy::Seeded(a) => wymix(a.fetch_add(WY_INC, Relaxed).wrapping_add(WY_INC)),
        }
    }

    /// Uniform in `0..n` (`n > 0`).
    #[inline]
    pub(crate) fn below(&self, n: usize) -> usize {
        // NOTE: Lemire's multiply-shift instead of `%`: no division; the bias is < n / 2^64.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `(0, 1]`.
    pub(crate) fn unit(&self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}
