//! Looking at a stream socket without consuming it: peek, bytes queued, peer hang-up, and
//! giving the CPU away. The exactly-once connection reader (`connection/recv.rs`) is built
//! on these: it looks before it takes, so nothing of the next message is ever read into a
//! buffer private to one process.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::RecvFlags;

/// What a non-blocking peek saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peek {
    /// Nothing queued.
    Empty,
    /// `n` bytes were copied into the buffer (fewer than asked if fewer are queued); the
    /// socket still holds them. Descriptors riding on them stay queued too.
    Bytes(usize),
    /// End of stream: the peer closed and nothing is left.
    Eof,
}

/// Copies up to `buf.len()` queued bytes without consuming them and without blocking.
///
/// No control buffer is passed, so descriptors riding on the bytes are not installed here
/// (the kernel drops its peeked copies; the real ones stay queued for the consuming read).
pub(crate) fn peek(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Peek> {
    let asked = buf.len();
    loop {
        match rustix::net::recv(sock, &mut *buf, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((_, 0)) if asked > 0 => return Ok(Peek::Eof),
            Ok((_, n)) => return Ok(Peek::Bytes(n)),
            Err(Errno::AGAIN) => return Ok(Peek::Empty),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Bytes queued for reading on a stream socket (`FIONREAD`: the whole queue, not one skb).
pub(crate) fn queued(sock: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(rustix::io::ioctl_fionread(sock)?)
}

/// Whether the peer has closed its sending side (`POLLRDHUP`), without waiting.
pub(crate) fn peer_hung_up(sock: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pfd = [PollFd::new(&sock, PollFlags::RDHUP)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut pfd, Some(&zero)) {
        Ok(_) => Ok(pfd[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR)),
        Err(Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Gives the CPU to another runnable thread, if any (`sched_yield`).
pub(crate) fn yield_cpu() {
    rustix::thread::sched_yield();
}

/// Sleeps for `d` (a short pause between looks while a message is arriving).
pub(crate) fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// One `recvmsg` into several buffers, appending received descriptors (CLOEXEC) to `fds`.
/// Blocks until at least one byte (or end of stream) is there; returns 0 at end of stream.
pub(crate) fn recv_vectored_with_fds(
    sock: BorrowedFd<'_>,
    bufs: &mut [std::io::IoSliceMut<'_>],
    fds: &mut Vec<std::os::fd::OwnedFd>,
) -> io::Result<usize> {
    super::fd::recvmsg_fds(sock, bufs, fds, RecvFlags::empty())
}
