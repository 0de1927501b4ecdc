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

/// Makes a flag that arrived from another process safe to use: whatever descriptor a
/// hostile peer sent in its place, reads and writes on it must never block (they are
/// non-blocking on the open file, which every holder shares).
pub(crate) fn adopt_flag(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    if !flags.contains(rustix::fs::OFlags::NONBLOCK) {
        rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    // A peer may send any descriptor as a ring's flag: once adopted, clearing it (a read)
    // and setting it (a write) return at once even on a blocking socket with nothing in it.
    #[test]
    fn an_adopted_flag_never_blocks() {
        let (a, b) = crate::sys::fd::socketpair().unwrap();
        adopt_flag(a.as_fd()).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            flag_clear(a.as_fd());
            for _ in 0..100_000 {
                flag_set(a.as_fd());
            }
            tx.send(()).unwrap();
            drop(b);
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a forged flag blocked its reader or writer");
    }
}
