//! Unix seqpacket sockets at abstract names: connection-oriented, one record per send, kept
//! whole and in order. The shared-memory tracker (`shared/tracker.rs`) is their user.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SocketAddrUnix, SocketFlags, SocketType};

fn socket(flags: SocketFlags) -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | flags,
        None,
    )?)
}

/// A non-blocking listening socket bound to the abstract name `name`; `AddrInUse` if
/// another process holds it.
pub(crate) fn listen_abstract(name: &[u8], backlog: i32) -> io::Result<OwnedFd> {
    let fd = socket(SocketFlags::NONBLOCK)?;
    rustix::net::bind(&fd, &SocketAddrUnix::new_abstract_name(name)?)?;
    rustix::net::listen(&fd, backlog)?;
    Ok(fd)
}

/// A connection to the listener at the abstract name `name`: `ConnectionRefused` if
/// nobody listens there.
pub(crate) fn connect_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    let fd = socket(SocketFlags::empty())?;
    let addr = SocketAddrUnix::new_abstract_name(name)?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => return Ok(fd),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Accepts one pending connection (blocking, CLOEXEC) from a listener made by
/// [`listen_abstract`]; `Ok(None)` if none is waiting any more.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN | Errno::CONNABORTED) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends `buf` as one record; no SIGPIPE if the peer is gone (the error instead).
pub(crate) fn send(sock: BorrowedFd<'_>, buf: &[u8]) -> io::Result<()> {
    // A record is sent as a datagram is: one call, never split.
    super::dgram::send(sock, buf)
}

/// Receives one record into `buf`, waiting at most `timeout` (`None`: for ever). Returns its
/// full length (more than `buf.len()` if it was cut; 0 at end of stream), or `TimedOut`.
pub(crate) fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    if !super::fd::poll_readable(sock.as_fd(), timeout)? {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
    }
    loop {
        match rustix::net::recv(sock, &mut *buf, RecvFlags::TRUNC | RecvFlags::DONTWAIT) {
            Ok((_, len)) => return Ok(len),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Err(e) => return Err(e.into()),
        }
    }
}
