//! Completion/event queue from Rust to Python, with a wake-up file descriptor.
//!
//! Rust threads push events and write one byte to a non-blocking pipe; one Trio task waits for
//! the read end to become readable and drains the queue. Rust never calls into Python. This is
//! Trio's own wake-up socketpair pattern (`trio/_core/_wakeup_socketpair.py`).

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    /// JSON object text with the event's fields.
    pub fields: String,
}

pub struct EventQueue {
    queue: Mutex<VecDeque<Event>>,
    read: OwnedFd,
    write: OwnedFd,
}

/// Events beyond this many are dropped (oldest first) if Python stops draining.
const MAX_QUEUED: usize = 65_536;

impl EventQueue {
    pub fn new() -> std::io::Result<Self> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds is a valid two-element array; pipe2 fills it on success.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(EventQueue {
            queue: Mutex::new(VecDeque::new()),
            read,
            write,
        })
    }

    pub fn push(&self, kind: &'static str, fields: String) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= MAX_QUEUED {
                q.pop_front();
            }
            q.push_back(Event { kind, fields });
        }
        let byte = 1u8;
        // NOTE: a full pipe (EAGAIN) is fine: the reader is already due to wake up.
        // SAFETY: writing one byte from a valid buffer to an fd we own.
        unsafe {
            libc::write(
                self.write.as_raw_fd(),
                &byte as *const u8 as *const libc::c_void,
                1,
            )
        };
    }

    /// Take every queued event and clear the wake-up fd.
    pub fn drain(&self) -> Vec<Event> {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reading into a valid buffer from a non-blocking fd we own.
            let n = unsafe {
                libc::read(
                    self.read.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
        }
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.drain(..).collect()
    }

    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_wakes_and_drain_empties() {
        let q = EventQueue::new().unwrap();
        q.push("stopped", "{}".into());
        q.push("x", "{\"a\":1}".into());
        let mut pfd = libc::pollfd {
            fd: q.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 0) }, 1);
        let ev = q.drain();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].kind, "stopped");
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 0) }, 0);
    }
}
