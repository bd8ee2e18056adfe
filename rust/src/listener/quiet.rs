//! `Quiet`: a future polled only after it woke, for the rarely firing branches of a `select!`
//! that a busy task polls on every wake-up.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Polls its future only when that future woke its waker (or the task's waker changed); any
/// other wake-up of the task costs a comparison and an atomic swap instead of a poll. A
/// connection's task wakes several times per request, and each poll of a timer or a `watch`
/// receiver that is not due costs about 200 instructions.
pub struct Quiet<F> {
    inner: Pin<Box<F>>,
    shared: Arc<Shared>,
    /// `shared` as the waker the inner future sees.
    waker: Waker,
    /// The task's waker when last polled.
    task: Option<Waker>,
}

struct Shared {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(w) = task {
            w.wake();
        }
    }
}

impl<F: Future> Quiet<F> {
    pub fn new(inner: F) -> Self {
        let shared = Arc::new(Shared {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Quiet {
            inner: Box::pin(inner),
            waker: Waker::from(shared.clone()),
            shared,
            task: None,
        }
    }
}

impl<F: Future> Future for Quiet<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if this.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // Cleared before the poll: a wake during or after it sets it again.
            if !this.shared.woken.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
        } else {
            this.task = Some(cx.waker().clone());
            *this.shared.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            this.shared.woken.store(false, Ordering::Release);
        }
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, waking its waker when `wake` is called.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn polls_the_inner_future_only_after_it_woke_or_the_waker_changed() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(Mutex::new(None::<Waker>));
        let mut q = Quiet::new(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: inner_waker.clone(),
        });
        let task = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut q = Pin::new(&mut q);
        assert!(q.as_mut().poll(&mut cx).is_pending());
        assert!(q.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "not woken: not polled again"
        );
        // The inner future becomes ready and wakes: the task is woken, the next poll polls it.
        ready.store(true, Ordering::SeqCst);
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(q.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_new_task_waker_is_passed_on() {
        let polls = Arc::new(AtomicUsize::new(0));
        let inner_waker = Arc::new(Mutex::new(None::<Waker>));
        let mut q = Quiet::new(Probe {
            polls: polls.clone(),
            ready: Arc::new(AtomicBool::new(false)),
            waker: inner_waker.clone(),
        });
        let first = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let second = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let mut q = Pin::new(&mut q);
        let w1 = Waker::from(first.clone());
        assert!(q.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        let w2 = Waker::from(second.clone());
        assert!(q.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            2,
            "a changed waker polls again"
        );
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(
            (
                first.0.load(Ordering::SeqCst),
                second.0.load(Ordering::SeqCst)
            ),
            (0, 1)
        );
    }
}
