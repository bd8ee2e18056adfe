//! The bounded queue of span records from the request path to the exporter thread: many
//! senders (each snapshot's `Tracing`), one receiver, which takes everything queued at once.
//! A sender never waits: a full queue hands the record back. The receiver learns that the last
//! sender is gone (and exits once it has taken what is left).
//!
//! Imports nothing of the crate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::Duration;

// NOTE: a `Vec` behind a mutex instead of `std::sync::mpsc::sync_channel`: a send is a lock,
// a push and an unlock (`try_send` with its waker check was ~130 instructions a request at
// 100% sampling), and the exporter takes the whole queue by swapping two `Vec`s under one
// lock instead of a `try_recv` per record (~150).
struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    senders: AtomicUsize,
    /// The receiving thread, known once it first waits.
    receiver: OnceLock<Thread>,
}

struct State<T> {
    records: Vec<T>,
    /// The receiver is parked until a record comes (and must be woken).
    waiting: bool,
    /// The last sender is gone.
    closed: bool,
    /// The receiver is gone.
    gone: bool,
}

impl<T> Shared<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake_receiver(&self) {
        if let Some(t) = self.receiver.get() {
            t.unpark();
        }
    }
}

/// The request path's end. Cloned per snapshot; the queue closes when the last clone drops.
pub struct Sender<T>(Arc<Shared<T>>);

/// The exporter thread's end, used by one thread.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue of at most `capacity` records.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            records: Vec::new(),
            waiting: false,
            closed: false,
            gone: false,
        }),
        capacity,
        senders: AtomicUsize::new(1),
        receiver: OnceLock::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queue `record`, or hand it back when the queue is full or its receiver gone. Wakes the
    /// receiver only when it waits for a record.
    pub fn try_send(&self, record: T) -> Result<(), T> {
        let mut state = self.0.state();
        if state.records.len() >= self.0.capacity || state.gone {
            return Err(record);
        }
        state.records.push(record);
        let wake = std::mem::take(&mut state.waiting);
        drop(state);
        if wake {
            self.0.wake_receiver();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.state().closed = true;
            self.0.wake_receiver();
        }
    }
}

impl<T> Receiver<T> {
    /// Move every queued record to `into`; true when the queue is closed (no sender left, and
    /// nothing more will come).
    pub fn take_all(&self, into: &mut Vec<T>) -> bool {
        let mut state = self.0.state();
        if into.is_empty() {
            // NOTE: the two `Vec`s trade places: no copy, and no allocation once both have
            // grown to what a drain holds.
            std::mem::swap(&mut state.records, into);
        } else {
            into.append(&mut state.records);
        }
        state.closed
    }

    /// Wait until a record is queued, the queue closes or `timeout` passes (or spuriously
    /// earlier: the caller takes what there is and decides again).
    pub fn wait(&self, timeout: Duration) {
        self.0.receiver.get_or_init(std::thread::current);
        {
            let mut state = self.0.state();
            if !state.records.is_empty() || state.closed {
                return;
            }
            state.waiting = true;
        }
        // NOTE: a sender that queues between the unlock and this park unparks first, and
        // `park_timeout` then returns at once (the thread's token).
        std::thread::park_timeout(timeout);
        self.0.state().waiting = false;
    }
}

impl<T> Drop for Receiver<T> {
    /// The receiver is gone: senders are refused from now on (their records are dropped and
    /// counted as the request path counts a full queue).
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.gone = true;
        state.records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_hands_back_and_the_receiver_takes_all_at_once() {
        let (tx, rx) = channel::<u32>(3);
        for i in 0..3 {
            assert_eq!(tx.try_send(i), Ok(()));
        }
        assert_eq!(tx.try_send(3), Err(3));
        let mut got = Vec::new();
        assert!(!rx.take_all(&mut got));
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(tx.try_send(4), Ok(()));
        assert!(!rx.take_all(&mut got));
        assert_eq!(got, [0, 1, 2, 4]);
        drop(rx);
        assert_eq!(tx.try_send(5), Err(5));
    }

    #[test]
    fn the_queue_closes_with_its_last_sender() {
        let (tx, rx) = channel::<u32>(8);
        let other = tx.clone();
        tx.try_send(1).unwrap();
        drop(tx);
        let mut got = Vec::new();
        assert!(!rx.take_all(&mut got));
        other.try_send(2).unwrap();
        drop(other);
        // Closed, and what was queued before is still taken.
        rx.wait(Duration::from_secs(3600));
        assert!(rx.take_all(&mut got));
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_record_and_by_the_close() {
        let (tx, rx) = channel::<u32>(1024);
        let sender = std::thread::spawn(move || {
            for i in 0..1000 {
                while tx.try_send(i).is_err() {
                    std::thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        // Each wait ends with a record or the close (a lost wake-up would hang here for an
        // hour, not pass).
        let mut closed = false;
        for _ in 0..10_000 {
            if closed {
                break;
            }
            rx.wait(Duration::from_secs(3600));
            closed = rx.take_all(&mut got);
        }
        assert!(closed);
        sender.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }
}
