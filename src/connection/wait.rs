//! `wait`: Python's `multiprocessing.connection.wait`, over anything with a descriptor that
//! turns readable when it is ready.
//!
//! One `poll(2)` over all the objects' descriptors: a connection or receiver is ready when a
//! message (or the peer's end of stream) is waiting, a listener when a peer is waiting to be
//! accepted, a process when it has exited (its pidfd).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

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
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`: no limit),
/// and returns the indices of those that are ready, in order (empty when time ran out).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// use std::time::Duration;
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
    let already: Vec<bool> = objects.iter().map(|o| o.ready_now()).collect();
    let timeout = if already.contains(&true) {
        Some(Duration::ZERO)
    } else {
        timeout
    };
    let polled = sys::fd::poll_many(&fds, timeout)?;
    Ok((0..objects.len())
        .filter(|&i| already[i] || polled[i])
        .collect())
}

impl<T> Waitable for Connection<T> {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        // Nothing of the stream is kept in memory between receives (`recv.rs`): the
        // socket alone says whether a message is waiting.
        Ok(self.as_fd())
    }
}

impl<T> Waitable for Receiver<T> {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        self.conn.wait_fd()
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

// The raw numbers, for code that polls them itself (Python's `fileno()`).

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
