//! Listening and connecting sockets (Unix paths, Linux abstract names, TCP), and the
//! secure random bytes of the authentication handshake.
//!
//! Every socket is CLOEXEC. A listening socket is non-blocking, so that `accept` can be
//! bounded by `poll` and a peer that vanished between `poll` and `accept` never blocks
//! the caller; accepted and connected sockets are blocking (their readers bound waits
//! with `poll` themselves).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

/// Where a socket listens or connects, as the kernel sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Endpoint<'a> {
    /// A Unix socket at a path in the file system.
    Unix(&'a Path),
    /// A Linux abstract-namespace Unix socket (the name without its leading NUL).
    Abstract(&'a [u8]),
    /// A TCP socket.
    Tcp(SocketAddr),
}

impl Endpoint<'_> {
    fn family(&self) -> AddressFamily {
        match self {
            Endpoint::Unix(_) | Endpoint::Abstract(_) => AddressFamily::UNIX,
            Endpoint::Tcp(SocketAddr::V4(_)) => AddressFamily::INET,
            Endpoint::Tcp(SocketAddr::V6(_)) => AddressFamily::INET6,
        }
    }

    fn socket(&self) -> io::Result<OwnedFd> {
        Ok(rustix::net::socket_with(
            self.family(),
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?)
    }

    fn bind(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        match self {
            Endpoint::Unix(p) => rustix::net::bind(fd, &SocketAddrUnix::new(*p)?)?,
            Endpoint::Abstract(n) => rustix::net::bind(fd, &SocketAddrUnix::new_abstract_name(n)?)?,
            Endpoint::Tcp(a) => rustix::net::bind(fd, a)?,
        }
        Ok(())
    }

    fn connect(&self, fd: BorrowedFd<'_>) -> rustix::io::Result<()> {
        match self {
            Endpoint::Unix(p) => rustix::net::connect(fd, &SocketAddrUnix::new(*p)?),
            Endpoint::Abstract(n) => {
                rustix::net::connect(fd, &SocketAddrUnix::new_abstract_name(n)?)
            }
            Endpoint::Tcp(a) => rustix::net::connect(fd, a),
        }
    }
}

/// A non-blocking listening socket bound to `at` (TCP with `SO_REUSEADDR`, as Python's
/// `Listener` does, so a restarted server can take its port back at once).
pub(crate) fn listen(at: Endpoint<'_>, backlog: i32) -> io::Result<OwnedFd> {
    let fd = at.socket()?;
    if let Endpoint::Tcp(_) = at {
        rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    }
    at.bind(fd.as_fd())?;
    rustix::net::listen(&fd, backlog)?;
    Ok(fd)
}

/// The TCP address a socket is bound to (for a listener bound to port 0: the chosen port).
pub(crate) fn local_tcp_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let any = rustix::net::getsockname(fd)?;
    SocketAddr::try_from(any).map_err(io::Error::from)
}

/// Accepts one pending connection without blocking: `Ok(None)` when none is waiting.
/// The new socket is blocking and CLOEXEC; TCP ones get `TCP_NODELAY`.
pub(crate) fn try_accept(listener: BorrowedFd<'_>, tcp: bool) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(fd) => {
                if tcp {
                    rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
                }
                return Ok(Some(fd));
            }
            Err(Errno::INTR) => continue,
            // A peer that gave up between poll and accept.
            Err(Errno::AGAIN | Errno::CONNABORTED) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Connects to `to`, giving up after `timeout` (`None`: the kernel's own limits). The
/// socket returned is blocking and CLOEXEC; TCP ones get `TCP_NODELAY` (a message goes out
/// as soon as it is written, as CPython arranges by writing header and body at once).
pub(crate) fn connect(to: Endpoint<'_>, timeout: Option<Duration>) -> io::Result<OwnedFd> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let fd = to.socket()?;
    loop {
        match to.connect(fd.as_fd()) {
            Ok(()) => break,
            Err(Errno::INTR) => continue,
            Err(Errno::INPROGRESS) => {
                // TCP: wait for the handshake, then ask how it went.
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                let ready = super::fd::poll_rw(&[(fd.as_fd(), true)], left)?;
                if !ready[0].1 {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connecting timed out",
                    ));
                }
                rustix::net::sockopt::socket_error(&fd)??;
                break;
            }
            Err(Errno::AGAIN) => {
                // A Unix listener whose backlog is full: try again shortly, until the
                // deadline.
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connecting timed out: the listener's backlog stayed full",
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
    set_blocking(fd.as_fd())?;
    if let Endpoint::Tcp(_) = to {
        rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
    }
    Ok(fd)
}

fn set_blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags - rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// Fills `buf` with bytes from the kernel's secure random source (for challenges and
/// fresh keys). Never falls back to anything weaker: an error if it cannot.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
