//! Completion/event queue from Rust to Python, with a wake-up file descriptor.
//!
//! Rust threads push events and write one byte to a non-blocking socket; one Trio task waits
//! for the other end to become readable and drains the queue. Rust never calls into Python.
//! This is Trio's own wake-up socketpair pattern (`trio/_core/_wakeup_socketpair.py`): a Unix
//! socket pair exists on every Unix target (Linux, macOS, the BSDs), unlike `pipe2`.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One event from the core to the control layer. Typed end to end: `py/` turns each variant
/// into its Python value field by field, with no text in between.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A host of `cluster` reached one of the cluster's consecutive-failure thresholds;
    /// `detector` names it ("consecutive_5xx", "consecutive_gateway_failure",
    /// "consecutive_local_origin_failure"). The control layer decides whether to eject.
    Outlier {
        cluster: String,
        host: String,
        detector: &'static str,
    },
    /// A request of function cluster `cluster` found no idle instance and waits for one:
    /// the control layer may start an instance. `waiting` requests wait (this one included),
    /// `busy` hosts serve one, of `hosts` hosts in the cluster.
    InstanceWanted {
        cluster: String,
        waiting: u32,
        busy: u32,
        hosts: u32,
    },
    /// The runtime stopped after `shutdown`: `clean` when every connection finished within
    /// the drain; `open` connections were still open.
    Stopped { clean: bool, open: usize },
}

impl Event {
    /// The name subscribers select events by ("outlier", "instance_wanted", "stopped").
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Outlier { .. } => "outlier",
            Event::InstanceWanted { .. } => "instance_wanted",
            Event::Stopped { .. } => "stopped",
        }
    }
}

pub struct EventQueue {
    queue: Mutex<VecDeque<Event>>,
    read: UnixStream,
    write: UnixStream,
    dropped: AtomicU64,
}

/// Events beyond this many are dropped (oldest first, and counted) if Python stops draining.
pub(crate) const MAX_QUEUED: usize = 65_536;

impl EventQueue {
    pub fn new() -> std::io::Result<Self> {
        // std creates both ends close-on-exec on every Unix target.
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(EventQueue {
            queue: Mutex::new(VecDeque::new()),
            read,
            write,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn push(&self, event: Event) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= MAX_QUEUED {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(event);
        }
        // NOTE: a full socket buffer (WouldBlock) is fine: the reader is already due to wake up.
        let _ = (&self.write).write(&[1u8]);
    }

    /// Take every queued event and clear the wake-up fd.
    pub fn drain(&self) -> Vec<Event> {
        let mut buf = [0u8; 256];
        loop {
            match (&self.read).read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: nothing left to clear
            }
        }
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.drain(..).collect()
    }

    /// Events dropped so far because the queue was full (Python stopped draining).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier(i: usize) -> Event {
        Event::Outlier {
            cluster: "c".into(),
            host: format!("10.0.0.{i}:80"),
            detector: "consecutive_5xx",
        }
    }

    fn readable(q: &EventQueue) -> bool {
        let mut pfd = libc::pollfd {
            fd: q.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn push_wakes_and_drain_empties() {
        let q = EventQueue::new().unwrap();
        q.push(Event::Stopped {
            clean: true,
            open: 0,
        });
        q.push(outlier(1));
        assert!(readable(&q));
        let ev = q.drain();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].kind(), "stopped");
        assert_eq!(ev[1], outlier(1));
        assert!(!readable(&q));
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn overflow_drops_oldest_and_counts() {
        let q = EventQueue::new().unwrap();
        for i in 0..MAX_QUEUED + 10 {
            q.push(outlier(i));
        }
        assert_eq!(q.dropped(), 10);
        let ev = q.drain();
        assert_eq!(ev.len(), MAX_QUEUED);
        assert_eq!(ev[0], outlier(10));
        assert!(!readable(&q));
    }
}
