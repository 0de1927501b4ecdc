//! Unix datagram sockets: one message per call, never split or merged, in order per sender.
//! The log forwarder (`crate::log`) is their user; `send` serves seqpacket records too.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// A connected pair of Unix datagram sockets, both CLOEXEC.
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Sends `buf` as one datagram, waiting while the receiver's queue is full (so nothing is
/// dropped). No SIGPIPE if the receiver is gone: the error is returned instead.
pub(crate) fn send(sock: BorrowedFd<'_>, buf: &[u8]) -> io::Result<()> {
    loop {
        match rustix::net::send(sock, buf, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one datagram into `buf` without waiting: `Ok(None)` when none is queued,
/// `Ok(Some(len))` with its full length, which exceeds `buf.len()` if it was cut.
pub(crate) fn try_recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match rustix::net::recv(sock, &mut *buf, RecvFlags::DONTWAIT | RecvFlags::TRUNC) {
            Ok((_, len)) => return Ok(Some(len)),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}
