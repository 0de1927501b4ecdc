//! `wait`: Python's `multiprocessing.connection.wait`, over anything with a descriptor that
//! turns readable when it is ready.
//!
//! One `poll(2)` over all the objects' descriptors: a connection or receiver is ready when a
//! message (or the peer's end of stream) is waiting, a listener when a peer is waiting to be
//! accepted, a process when it has exited (its pidfd).
//!
//! A shared-memory pipe end (`shm.rs`) hands out its pollable descriptor (`AsFd`: readable
//! iff its ring holds a frame or the peer is gone, `ready.rs`); asking for it counts the
//! end as a poller, so senders keep it in step. After the poll the end says whether it is
//! really ready ([`Waitable::disarm`]): a frame in the ring, or end of stream; a flag left
//! stale (a receiver killed before it settled it) is put right there. A round in which
//! something woke but nothing was ready polls again.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use super::{Connection, Listener, Receiver};
use crate::error::Result;
use crate::process::Process;
use crate::sys;

/// Something [`wait`] can wait for.
///
/// Implemented by [`Connection`], [`Receiver`], [`Listener`], [`Process`] and
/// `BorrowedFd` (any descriptor: a socket of your own, say). Implement it for your own
/// types by naming the descriptor whose readability means "ready".
pub trait Waitable {
    /// The descriptor that becomes readable when this object is ready.
    /// An error if there is none (a process not started yet).
    fn wait_fd(&self) -> Result<BorrowedFd<'_>>;

    /// Whether this object is ready without asking the kernel (data already received into
    /// this process's memory). `false` unless the object buffers.
    fn ready_now(&self) -> bool {
        false
    }

    /// Called by [`wait`] before its poll: registers this object as about to sleep, where
    /// that matters, and returns whether it is ready without polling. Not for users.
    #[doc(hidden)]
    fn arm(&self) -> bool {
        self.ready_now()
    }

    /// Called by [`wait`] after its poll, once for each [`arm`](Waitable::arm):
    /// `polled` is whether the descriptor turned readable; returns whether the object is
    /// ready. Not for users.
    #[doc(hidden)]
    fn disarm(&self, polled: bool) -> Result<bool> {
        Ok(polled)
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`: no limit),
/// and returns the indices of those that are ready, in order (empty when time ran out).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// use std::time::{Duration, Instant};
/// fn sleeper(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
/// let (a, b) = mproc::pipe::<u32>()?;
/// let p = mproc::spawn(sleeper, (50,))?;
/// assert!(mproc::wait(&[&a, &p], Some(Duration::ZERO))?.is_empty());
/// b.send(&1)?;
/// assert_eq!(mproc::wait(&[&a, &p], None)?, vec![0]);
/// a.recv()?;
/// assert_eq!(mproc::wait(&[&a, &p], None)?, vec![1]); // the process exited
/// # p.result()?; Ok(()) }
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let fds = objects
        .iter()
        .map(|o| o.wait_fd())
        .collect::<Result<Vec<_>>>()?;
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let already: Vec<bool> = objects.iter().map(|o| o.arm()).collect();
        let left = match (timeout, deadline) {
            _ if already.contains(&true) => Some(Duration::ZERO),
            (None, _) | (Some(_), None) => None,
            (Some(_), Some(d)) => Some(d.saturating_duration_since(Instant::now())),
        };
        let polled = sys::fd::poll_many(&fds, left);
        // Every armed object is disarmed, whatever happened.
        let mut ready = Vec::new();
        let mut first_err = None;
        for (i, o) in objects.iter().enumerate() {
            let p = polled.as_ref().is_ok_and(|p| p[i]);
            match o.disarm(p) {
                Ok(r) if r || already[i] => ready.push(i),
                Ok(_) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let polled = polled?;
        if let Some(e) = first_err {
            return Err(e);
        }
        if !ready.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(ready);
        }
        if timeout == Some(Duration::ZERO) {
            return Ok(ready);
        }
        if polled.contains(&true) {
            // Woken for nothing (a doorbell already answered, or a message half-way into
            // a ring): a breath before looking again, so a stalled writer is not spun on.
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

impl<T> Waitable for Connection<T> {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        // Nothing of the stream is kept in memory between receives (`recv.rs`): the
        // socket, or a pipe end's pollable descriptor, says whether a message is waiting.
        Ok(self.as_fd())
    }

    fn ready_now(&self) -> bool {
        self.link().is_some_and(|l| l.pending())
    }

    fn disarm(&self, polled: bool) -> Result<bool> {
        let Some(l) = self.link().filter(|_| self.readable) else {
            return Ok(polled);
        };
        if l.pending() {
            return Ok(true);
        }
        if !polled {
            return Ok(false);
        }
        // Readable with nothing in the ring: end of stream (a look that drains the
        // socket's doorbells says so), or a flag left set by a receiver killed before it
        // settled it, or by an item another holder took: put it right.
        if self.poll(Some(Duration::ZERO))? {
            return Ok(true);
        }
        l.settle();
        Ok(l.pending())
    }
}

impl<T> Waitable for Receiver<T> {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        self.conn.wait_fd()
    }

    fn ready_now(&self) -> bool {
        self.conn.ready_now()
    }

    fn arm(&self) -> bool {
        self.conn.arm()
    }

    fn disarm(&self, polled: bool) -> Result<bool> {
        self.conn.disarm(polled)
    }
}

impl<T> Waitable for Listener<T> {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.as_fd())
    }
}

impl<R> Waitable for Process<R> {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        self.sentinel()
    }
}

impl Waitable for BorrowedFd<'_> {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.as_fd())
    }
}

// The raw numbers, for code that polls them itself (Python's `fileno()`): the descriptor
// `AsFd` documents, readable iff a message waits or the peer is gone.

impl<T> AsRawFd for Connection<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl<T> AsRawFd for Receiver<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl<T> AsRawFd for Listener<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}
