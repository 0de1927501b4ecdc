//! Pipes between processes: typed, framed, able to carry handles.
//!
//! A pipe made by [`pipe`] or [`pipe_simplex`] carries its messages through shared
//! memory, one ring per direction, and keeps sockets between its ends for what only a
//! socket can do: descriptors (SCM_RIGHTS), wake-ups of a receiver asleep in `poll` (so
//! [`wait`] works), and end of stream when the peer's end is closed everywhere (`shm.rs`
//! tells the protocol; `item.rs` a message's bytes in the ring; `records.rs` the
//! descriptor records). Connections made by
//! [`Listener`]/[`connect`] (CPython's wire, also over TCP) and mproc's own protocol
//! sockets ([`socket_pipe`]) are a plain stream socket: each message one frame
//! (`framing.rs`). Typed messages are serde values encoded by the crate's codec, with the
//! descriptors of any handles inside them attached; `send_bytes` sends raw bytes with no
//! encoding at all. A connection is itself a handle: it can be sent over another
//! connection or passed to a child (a pipe end travels as its socket and its rings).
//!
//! A `Connection` is `Send` but not `Sync`, like Python's: one thread at a time sends or
//! receives on it, which keeps frames whole without a lock. It keeps its encode and
//! receive buffers between calls, so steady traffic allocates nothing.
//!
//! **Exactly once, whoever holds the end.** A pipe's read state (the ring's head, its
//! consumer lock) lives in the shared memory and travels with the end; a socket
//! connection's receive takes one frame out of the socket and nothing more (`recv.rs`:
//! it peeks at the header, then reads exactly that frame). Either way no message ever
//! waits in one process's memory: an end shared by several processes (each `recv` under a
//! `Lock`, Python's pattern) or handed to a child after some reads delivers every message
//! to exactly one `recv`, in order.
//!
//! **Waking.** A pipe's receiver spins briefly on its ring (the crate's one `Backoff`,
//! which parks at once on an oversubscribed machine), then sleeps in `poll` on its socket
//! until a sender rings the doorbell (`shm.rs`). A socket connection's receiver looks at
//! the socket for a short, adaptive window (`spin.rs`) before it sleeps in `poll`. Either
//! way a receiver with nothing to read sleeps after at most about 100 µs.
//!
//! **Bounds.** A message is at most 1 TiB − 1 byte (`framing::MAX_FRAME_LEN`); a header
//! claiming more is `Error::Codec`, and no reader allocates more than what has actually
//! arrived plus one step, whatever a header claims.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::HandleFd;
use crate::error::{Error, Result};
use crate::sys;

mod address;
mod auth;
mod buffer;
pub(crate) mod doorbell;
pub(crate) mod framing;
pub(crate) mod future;
mod item;
mod listener;
#[cfg(feature = "pickle")]
mod pickle;
mod reactor;
pub(crate) mod ready;
mod records;
mod recv;
mod shm;
pub(crate) mod spin;
mod wait;
mod wire;

pub use address::Address;
pub use future::RecvFuture;
pub(crate) use listener::Unauthenticated;
pub use listener::{HANDSHAKE_TIMEOUT, Listener, connect, connect_timeout, connect_with};
pub use wait::{Waitable, wait};
pub use wire::Codec;

/// One end of a pipe carrying values of type `T` (Python's `Connection`).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn child(conn: mproc::Connection<String>) -> mproc::Result<()> {
///     let name: String = conn.recv()?;
///     conn.send(&format!("hello, {name}"))
/// }
/// let (parent, child_end) = mproc::pipe::<String>()?;
/// let p = mproc::spawn(child, (child_end,))?;
/// parent.send(&"world".to_string())?;
/// assert_eq!(parent.recv()?, "hello, world");
/// p.result()??;
/// # Ok(()) }
/// ```
pub struct Connection<T> {
    fd: HandleFd,
    /// The rings of a pipe made by `pipe()`/`pipe_simplex()` (`shm.rs`); `None` for socket
    /// connections (`Listener`/`connect`, mproc's internal protocol sockets).
    link: Option<shm::Link>,
    readable: bool,
    writable: bool,
    send_buf: RefCell<Vec<u8>>,
    recv_buf: RefCell<Vec<u8>>,
    reader: RefCell<recv::ExactReader>,
    format: framing::Format,
    torn: std::cell::Cell<bool>,
    _type: PhantomData<fn(T) -> T>,
}

/// A duplex pipe: two connected ends, each able to send and receive.
///
/// Data goes through shared memory, one ring per direction; a socket between the ends
/// carries descriptors, wake-ups and end of stream (see `connection/shm.rs`).
pub fn pipe<T>() -> Result<(Connection<T>, Connection<T>)> {
    let (a, b) = shm::wake_pair()?;
    let (la, lb) = shm::Link::duplex()?;
    Ok((
        Connection::with_link(a, true, true, la),
        Connection::with_link(b, true, true, lb),
    ))
}

/// A one-way pipe (Python's `Pipe(duplex=False)`): `(receiving end, sending end)`.
pub fn pipe_simplex<T>() -> Result<(Receiver<T>, Sender<T>)> {
    // Both directions stay open: the sending end writes doorbells to the receiving one.
    let (r, w) = shm::wake_pair()?;
    let (lr, lw) = shm::Link::simplex()?;
    Ok((
        Receiver {
            conn: Connection::with_link(r, true, false, lr),
        },
        Sender {
            conn: Connection::with_link(w, false, true, lw),
        },
    ))
}

/// A duplex pipe over a plain stream socketpair, with no shared memory: for mproc's own
/// protocols that read and write the socket directly (the pool's workers, the manager's
/// start-up), and for tests of the socket path. Not part of the API.
#[doc(hidden)]
pub fn socket_pipe<T>() -> Result<(Connection<T>, Connection<T>)> {
    let (a, b) = sys::fd::socketpair()?;
    Ok((
        Connection::from_fd(a, true, true),
        Connection::from_fd(b, true, true),
    ))
}

impl<T> Connection<T> {
    pub(crate) fn from_fd(fd: std::os::fd::OwnedFd, readable: bool, writable: bool) -> Self {
        Connection::build(HandleFd::new(fd), readable, writable, None)
    }

    fn with_link(fd: std::os::fd::OwnedFd, readable: bool, writable: bool, l: shm::Link) -> Self {
        Connection::build(HandleFd::new(fd), readable, writable, Some(l))
    }

    fn build(fd: HandleFd, readable: bool, writable: bool, link: Option<shm::Link>) -> Self {
        Connection {
            fd,
            link,
            readable,
            writable,
            send_buf: RefCell::new(Vec::new()),
            recv_buf: RefCell::new(Vec::new()),
            reader: RefCell::new(recv::ExactReader::default()),
            format: framing::Format::Mproc,
            torn: std::cell::Cell::new(false),
            _type: PhantomData,
        }
    }

    fn check_readable(&self) -> Result<()> {
        if self.readable {
            Ok(())
        } else {
            Err(Error::WriteOnly)
        }
    }

    fn check_writable(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        if self.torn.get() {
            return Err(Error::TornMessage { sending: true });
        }
        Ok(())
    }

    /// Sends raw bytes as one message, without encoding them.
    pub fn send_bytes(&self, b: &[u8]) -> Result<()> {
        self.check_writable()?;
        if let Some(l) = &self.link {
            return l.send(self.fd.as_fd(), b, &[], None, &self.torn);
        }
        framing::write_frame_as(self.fd.as_fd(), self.format, b, &[])
    }

    /// `send_bytes`, waiting at most `d` for the peer to make room; `Err(Error::Timeout)`
    /// if it did not. If part of the message had gone out by then, the connection can no
    /// longer send (the peer would read half a message): later sends are errors.
    pub fn send_bytes_timeout(&self, b: &[u8], d: Duration) -> Result<()> {
        self.check_writable()?;
        self.write_until(b, &[], d)
    }

    fn write_until(&self, payload: &[u8], fds: &[BorrowedFd<'_>], d: Duration) -> Result<()> {
        if let Some(l) = &self.link {
            let deadline = std::time::Instant::now().checked_add(d);
            return l.send(self.fd.as_fd(), payload, fds, deadline, &self.torn);
        }
        let Some(deadline) = std::time::Instant::now().checked_add(d) else {
            return framing::write_frame_as(self.fd.as_fd(), self.format, payload, fds);
        };
        let mut partial = false;
        if framing::write_frame_until(
            self.fd.as_fd(),
            self.format,
            payload,
            fds,
            deadline,
            &mut partial,
        )? {
            return Ok(());
        }
        self.torn.set(partial);
        Err(Error::Timeout)
    }

    /// Receives one message sent with `send_bytes`. `Err(Error::Closed)` when the peer has
    /// closed and nothing is left.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.recv_bytes_into(&mut out)?;
        Ok(out)
    }

    /// Receives one message into `buf` (replacing its contents), reusing its capacity:
    /// the allocation-free form of [`recv_bytes`](Connection::recv_bytes) for bulk traffic.
    pub fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.check_readable()?;
        let mut fds = Vec::new();
        self.read(buf, &mut fds, None)?;
        Ok(buf.len())
    }

    /// Whether a message (or the peer's end of stream) is waiting; waits up to `timeout`
    /// for one (`None`: forever, `Some(ZERO)`: just look).
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        self.check_readable()?;
        if let Some(l) = &self.link {
            let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
            return Ok(l.wait(self.fd.as_fd(), deadline)? != shm::Ready::TimedOut);
        }
        self.reader.borrow().poll(self.fd.as_fd(), timeout)
    }

    /// Reads one message from the rings or the socket.
    fn read(
        &self,
        buf: &mut Vec<u8>,
        fds: &mut Vec<std::os::fd::OwnedFd>,
        deadline: Option<std::time::Instant>,
    ) -> Result<()> {
        match &self.link {
            Some(l) => l.recv(self.fd.as_fd(), buf, fds, deadline),
            None => self
                .reader
                .borrow_mut()
                .read(self.fd.as_fd(), self.format, buf, fds, deadline),
        }
    }

    /// The shared-memory half of a pipe end, if it has one.
    pub(crate) fn link(&self) -> Option<&shm::Link> {
        self.link.as_ref()
    }

    /// The end's own socket (for a pipe end: its doorbells, records aside, and end of
    /// stream), which [`link`](Connection::link)'s calls take; `as_fd` may be another
    /// descriptor (a pipe end's pollable one).
    pub(crate) fn stream_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Closes this end (dropping it does the same).
    pub fn close(self) {}

    /// The underlying handle, for mproc's own protocols (ends made by [`socket_pipe`]: a
    /// pipe end's data is not on its socket).
    pub(crate) fn into_handle(self) -> HandleFd {
        debug_assert!(
            self.link.is_none(),
            "into_handle on a shared-memory pipe end"
        );
        self.fd
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends one value. Handles inside it (connections, queues, locks, ...) travel with it.
    pub fn send(&self, item: &T) -> Result<()> {
        self.check_writable()?;
        let mut buf = self.send_buf.borrow_mut();
        buf.clear();
        let mut fds = Vec::new();
        wire::encode_into(self.format, item, &mut buf, &mut fds)?;
        if let Some(l) = &self.link {
            return l.send(
                self.fd.as_fd(),
                &buf,
                &sys::fd::borrowed(&fds),
                None,
                &self.torn,
            );
        }
        framing::write_frame_as(self.fd.as_fd(), self.format, &buf, &sys::fd::borrowed(&fds))
    }

    /// Sends one value, waiting at most `d` for the peer to make room (see
    /// [`send_bytes_timeout`](Connection::send_bytes_timeout)).
    pub fn send_timeout(&self, item: &T, d: Duration) -> Result<()> {
        self.check_writable()?;
        let mut buf = self.send_buf.borrow_mut();
        buf.clear();
        let mut fds = Vec::new();
        wire::encode_into(self.format, item, &mut buf, &mut fds)?;
        self.write_until(&buf, &sys::fd::borrowed(&fds), d)
    }

    /// Receives one value. `Err(Error::Closed)` when the peer has closed and nothing is
    /// left; `Err(Error::Codec)` for a message that does not decode as `T`.
    pub fn recv(&self) -> Result<T> {
        self.check_readable()?;
        let mut buf = self.recv_buf.borrow_mut();
        let mut fds = Vec::new();
        self.read(&mut buf, &mut fds, None)?;
        wire::decode(self.format, &buf, fds)
    }

    /// Receives one value, waiting at most `d` for it; `Err(Error::Timeout)` if it did not
    /// arrive whole in time. A message of up to 64 KiB that was half-way is kept and read
    /// by the next call; a larger one cut off by the deadline leaves the connection unable
    /// to receive (an error says so) rather than misread.
    pub fn recv_timeout(&self, d: Duration) -> Result<T> {
        self.check_readable()?;
        let deadline = std::time::Instant::now().checked_add(d);
        let mut buf = self.recv_buf.borrow_mut();
        let mut fds = Vec::new();
        self.read(&mut buf, &mut fds, deadline)?;
        wire::decode(self.format, &buf, fds)
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// One look for an async receive (`future.rs`): a message if one can be taken at once.
    pub(crate) fn look(&self) -> Result<future::Look<T>> {
        self.check_readable()?;
        let Some(l) = &self.link else {
            // A socket connection: readable means a frame (read whole) or end of stream.
            return if self.poll(Some(Duration::ZERO))? {
                self.recv().map(future::Look::Took)
            } else {
                Ok(future::Look::Nothing)
            };
        };
        let mut buf = self.recv_buf.borrow_mut();
        let mut fds = Vec::new();
        Ok(
            match l.try_recv(self.fd.as_fd(), &mut buf, &mut fds, None)? {
                future::Look::Took(()) => future::Look::Took(wire::decode(self.format, &buf, fds)?),
                future::Look::Nothing => future::Look::Nothing,
                future::Look::Busy => future::Look::Busy,
            },
        )
    }
}

/// A descriptor that is readable iff a message is waiting or the peer is gone (every copy
/// of its end closed), and not readable otherwise: hand it to `poll(2)`, epoll, mio or
/// tokio's `AsyncFd` (level-triggered; read nothing from it, call `recv`). For a receiving
/// end made by [`pipe`]/[`pipe_simplex`] it is an epoll instance over the ring's readiness
/// flag and the socket's hang-up, made on the first call, which also counts the end as a
/// poller until it is dropped, after which each send and receive on the ring costs one
/// eventfd syscall (nothing before). For a socket connection ([`Listener`]/[`connect`]) it is the socket,
/// and for a sending end of a simplex pipe the socket too (readable on the peer's close).
/// A process killed in the middle of a receive may leave it readable with nothing waiting
/// until the next send or receive: treat readiness as a hint, as with any descriptor.
impl<T> AsFd for Connection<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self
            .link
            .as_ref()
            .and_then(|l| l.pollable_fd(self.fd.as_fd()))
        {
            Some(fd) => fd,
            None => self.fd.as_fd(),
        }
    }
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd)
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire<F, L> {
    fd: F,
    readable: bool,
    writable: bool,
    format: framing::Format,
    link: Option<L>,
}

impl<T> Serialize for Connection<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.reader.borrow().is_torn() {
            // A timed-out receive stopped inside a message: the receiver would misread.
            return Err(serde::ser::Error::custom(
                "a connection whose receive timed out mid-message cannot be sent",
            ));
        }
        Wire {
            fd: &self.fd,
            readable: self.readable,
            writable: self.writable,
            format: self.format,
            link: self.link.as_ref().map(shm::Link::wire),
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        type LinkWire = shm::LinkWire<HandleFd, crate::shared::region::Region>;
        let w = Wire::<HandleFd, LinkWire>::deserialize(d)?;
        let link = w
            .link
            .map(shm::Link::from_wire)
            .transpose()
            .map_err(serde::de::Error::custom)?;
        let mut c = Connection::build(w.fd, w.readable, w.writable, link);
        c.format = w.format;
        Ok(c)
    }
}

/// The sending end of a one-way pipe (see [`pipe_simplex`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Sender<T> {
    conn: Connection<T>,
}

/// The receiving end of a one-way pipe (see [`pipe_simplex`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Receiver<T> {
    conn: Connection<T>,
}

impl<T: Serialize + DeserializeOwned> Sender<T> {
    /// Sends one value (see [`Connection::send`]).
    pub fn send(&self, item: &T) -> Result<()> {
        self.conn.send(item)
    }

    /// Sends one value, waiting at most `d` (see [`Connection::send_timeout`]).
    pub fn send_timeout(&self, item: &T, d: Duration) -> Result<()> {
        self.conn.send_timeout(item, d)
    }
}

impl<T> Sender<T> {
    /// Sends raw bytes as one message.
    pub fn send_bytes(&self, b: &[u8]) -> Result<()> {
        self.conn.send_bytes(b)
    }

    /// Sends raw bytes as one message, waiting at most `d`.
    pub fn send_bytes_timeout(&self, b: &[u8], d: Duration) -> Result<()> {
        self.conn.send_bytes_timeout(b, d)
    }

    /// Closes this end.
    pub fn close(self) {}
}

impl<T: Serialize + DeserializeOwned> Receiver<T> {
    /// Receives one value (see [`Connection::recv`]).
    pub fn recv(&self) -> Result<T> {
        self.conn.recv()
    }

    /// Receives one value, waiting at most `d`.
    pub fn recv_timeout(&self, d: Duration) -> Result<T> {
        self.conn.recv_timeout(d)
    }
}

impl<T> Receiver<T> {
    /// Receives one raw-bytes message.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.conn.recv_bytes()
    }

    /// Receives one raw-bytes message into `buf`, reusing its capacity.
    pub fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.conn.recv_bytes_into(buf)
    }

    /// Whether a message is waiting, waiting up to `timeout`.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        self.conn.poll(timeout)
    }

    /// Closes this end.
    pub fn close(self) {}
}

impl<T> AsFd for Sender<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.as_fd()
    }
}

impl<T> AsFd for Receiver<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.as_fd()
    }
}
