//! Readiness descriptors: the eventfd that says "an item waits in this ring" to any poller,
//! and the epoll instance that joins it with a socket's hang-up into one descriptor.
//!
//! An eventfd is a kernel counter: readable while non-zero. mproc uses it as a flag
//! (`flag_set` adds one, `flag_clear` reads it back to zero); both never block. The
//! counter lives in the kernel, shared by every process holding the descriptor.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::epoll;
use rustix::event::{EventfdFlags, eventfd};
use rustix::io::Errno;

/// A new readiness flag: an eventfd, clear, non-blocking, CLOEXEC.
pub(crate) fn flag() -> io::Result<OwnedFd> {
    Ok(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?)
}

/// Makes the flag readable (never blocks; a counter at its maximum is already readable).
#[inline]
pub(crate) fn flag_set(fd: BorrowedFd<'_>) {
    loop {
        match rustix::io::write(fd, &1u64.to_ne_bytes()) {
            Err(Errno::INTR) => continue,
            // `AGAIN`: the counter is saturated, hence readable; anything else leaves
            // readiness to the next settle (it cannot be reported to the sender's caller,
            // whose message is sent).
            _ => return,
        }
    }
}

/// Makes the flag not readable (never blocks).
#[inline]
pub(crate) fn flag_clear(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 8];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Err(Errno::INTR) => continue,
            // Read to zero, or already zero (`AGAIN`).
            _ => return,
        }
    }
}

/// One descriptor readable when `flag` is, or when `sock`'s peer has hung up: an epoll
/// instance watching the flag for input and the socket for hang-up only (so the doorbell
/// bytes a socket also carries do not make it readable). Level-triggered, so `poll(2)` on
/// it says what is true now.
pub(crate) fn pollable(flag: BorrowedFd<'_>, sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        ep.as_fd(),
        flag,
        epoll::EventData::new_u64(0),
        epoll::EventFlags::IN,
    )?;
    epoll::add(
        ep.as_fd(),
        sock,
        epoll::EventData::new_u64(1),
        epoll::EventFlags::RDHUP,
    )?;
    Ok(ep)
}
