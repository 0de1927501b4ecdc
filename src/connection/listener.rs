//! `Listener` and `connect`: Python's `multiprocessing.connection.Listener` and `Client`.
//!
//! A listener is a non-blocking listening socket. `accept` waits (poll) for a peer, takes
//! it, and — when there is an authkey — runs the mutual handshake of `auth.rs`: deliver a
//! challenge, then answer the peer's. `connect` does the mirror image: answer, then
//! deliver. Both hand back an ordinary [`Connection`] that speaks CPython's framing
//! (`wire.rs`), so either end may be a Python program.
//!
//! The handshake is bounded in time ([`HANDSHAKE_TIMEOUT`], or the caller's deadline if
//! sooner): a peer that connects and says nothing cannot hold `accept` forever. `accept`
//! runs it inline; the crate's servers take the raw peer (`accept_unauthenticated`) and run
//! the handshake on that peer's own thread, so a silent peer blocks nobody else. A peer that
//! fails the handshake costs only its own connection: `accept` returns the error and the
//! next `accept` serves the next peer.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::Connection;
use super::address::Address;
use super::auth::{self, Framed};
use super::framing::{self, Format};
use super::wire::{self, Codec, PyWire};
use crate::codec::HandleFd;
use crate::error::{Error, Result};
use crate::sys;

/// How long a peer may take over the authentication handshake (CPython's
/// `CONNECTION_TIMEOUT`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Pending connections the kernel queues for a listener.
const BACKLOG: i32 = 128;

/// A socket that accepts connections (Python's `multiprocessing.connection.Listener`).
///
/// With an `authkey`, every peer must prove it knows the key (and the listener proves it
/// too) before a single message is read; a peer with a wrong key gets
/// `Err(AuthenticationError)` and so does this side's `accept`, after which the listener
/// goes on serving others.
///
/// **`authkey = None` means no authentication**, as in Python: anyone who can reach the
/// address can connect and send messages, which are then decoded as `T`. Use `None` only
/// on addresses only trusted processes can reach (a Unix path with tight permissions, an
/// abstract name on a machine you trust), never on a TCP port others can reach.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// use mproc::{Address, Listener};
/// fn client(at: Address) -> mproc::Result<()> {
///     let conn = mproc::connect::<String>(at, Some(b"secret"))?;
///     conn.send(&"hello".to_string())
/// }
/// let listener = Listener::<String>::bind("127.0.0.1:0".parse()?, Some(b"secret"))?;
/// let p = mproc::spawn(client, (listener.address(),))?;
/// let conn = listener.accept()?;
/// assert_eq!(conn.recv()?, "hello");
/// p.result()??;
/// # Ok(()) }
/// ```
///
/// A closed listener cannot accept: `close` consumes it.
///
/// ```compile_fail
/// let l = mproc::Listener::<u8>::bind(mproc::Address::unique()?, None)?;
/// l.close();
/// l.accept()?;
/// # Ok::<(), mproc::Error>(())
/// ```
pub struct Listener<T> {
    /// A handle like any other, so a forked child that was not given it closes it (an
    /// abstract name would otherwise stay taken while the child lives).
    sock: HandleFd,
    address: Address,
    authkey: Option<Vec<u8>>,
    codec: Codec,
    /// The process that created the socket file (it alone removes it).
    owner: u32,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Listener<T> {
    /// Listens at `address`. A Unix path must not exist yet (a second listener on the same
    /// address is an error, `AddrInUse`); the file is removed when the listener closes.
    pub fn bind(address: Address, authkey: Option<&[u8]>) -> Result<Listener<T>> {
        Self::bind_with(address, authkey, Codec::default())
    }

    /// [`bind`](Listener::bind), choosing how accepted connections encode typed messages
    /// (with the `pickle` feature, `Codec::Pickle` talks to Python's `send`/`recv`).
    pub fn bind_with(
        address: Address,
        authkey: Option<&[u8]>,
        codec: Codec,
    ) -> Result<Listener<T>> {
        let sock = HandleFd::new(sys::net::listen(address.endpoint(), BACKLOG)?);
        let address = match address {
            Address::Tcp(_) => Address::Tcp(sys::net::local_tcp_addr(sock.as_fd())?),
            other => other,
        };
        Ok(Listener {
            sock,
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            codec,
            owner: std::process::id(),
            _type: PhantomData,
        })
    }

    /// The address peers connect to: for TCP port 0, the port the system chose.
    pub fn address(&self) -> Address {
        self.address.clone()
    }

    /// Waits for a peer and returns the connection to it, authenticated if the listener
    /// has an authkey. `Err(AuthenticationError)` for a peer that failed the handshake
    /// (the listener stays usable).
    ///
    /// The handshake runs here, on the calling thread, bounded by [`HANDSHAKE_TIMEOUT`]: a
    /// peer that connects and says nothing holds this call for that long. A server that
    /// must keep serving others meanwhile should accept on one thread and hand each peer
    /// on (as the crate's manager does, authenticating on the peer's own thread), or use
    /// [`accept_timeout`](Listener::accept_timeout).
    pub fn accept(&self) -> Result<Connection<T>> {
        self.accept_until(None)
    }

    /// [`accept`](Listener::accept), waiting at most `d` in all (handshake included);
    /// `Err(Timeout)` if no peer completed it in time.
    pub fn accept_timeout(&self, d: Duration) -> Result<Connection<T>> {
        self.accept_until(Instant::now().checked_add(d))
    }

    fn accept_until(&self, deadline: Option<Instant>) -> Result<Connection<T>> {
        self.take_peer(deadline)?.handshake(deadline)
    }

    /// Takes the next peer without authenticating it: a server that serves each peer on
    /// its own thread calls [`Unauthenticated::handshake`] there, so a peer that stalls
    /// the handshake holds up only its own thread, never the accepting one.
    pub(crate) fn accept_unauthenticated(&self) -> Result<Unauthenticated<T>> {
        self.take_peer(None)
    }

    fn take_peer(&self, deadline: Option<Instant>) -> Result<Unauthenticated<T>> {
        let tcp = matches!(self.address, Address::Tcp(_));
        let sock = loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !sys::fd::poll_readable(self.sock.as_fd(), left)? {
                return Err(Error::Timeout);
            }
            if let Some(s) = sys::net::try_accept(self.sock.as_fd(), tcp)? {
                break s;
            }
        };
        Ok(Unauthenticated {
            conn: Connection::from_python(sock, tcp, self.codec),
            authkey: self.authkey.clone(),
        })
    }

    /// Stops listening (dropping the listener does the same); a Unix socket file is
    /// removed.
    pub fn close(self) {}
}

impl<T> Drop for Listener<T> {
    fn drop(&mut self) {
        if let Address::Unix(path) = &self.address {
            if self.owner == std::process::id() {
                // Best effort, as Python's: the file may already be gone.
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl<T> AsFd for Listener<T> {
    /// The listening socket: readable when a peer is waiting to be accepted.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl<T> fmt::Debug for Listener<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("codec", &self.codec)
            .finish()
    }
}

/// An accepted peer that has not yet been through the handshake: nothing may be read from
/// it or sent to it before [`handshake`](Unauthenticated::handshake) succeeds.
pub(crate) struct Unauthenticated<T> {
    conn: Connection<T>,
    authkey: Option<Vec<u8>>,
}

impl<T> Unauthenticated<T> {
    /// The peer's socket (to shut it down from another thread while the handshake runs).
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.as_fd()
    }

    /// Runs the listener side of the handshake (deliver a challenge, then answer the
    /// peer's), bounded by [`HANDSHAKE_TIMEOUT`] or `deadline` if sooner. Without an
    /// authkey there is nothing to check.
    pub(crate) fn handshake(self, deadline: Option<Instant>) -> Result<Connection<T>> {
        if let Some(key) = &self.authkey {
            let mut io = Handshake::new(&self.conn, deadline);
            auth::deliver_challenge(&mut io, key).map_err(|e| io.explain(e))?;
            auth::answer_challenge(&mut io, key).map_err(|e| io.explain(e))?;
        }
        Ok(self.conn)
    }
}

/// Connects to the listener at `address` (Python's `multiprocessing.connection.Client`),
/// authenticating with `authkey` (`None`: no handshake; see [`Listener`] for the risk).
/// A wrong key is `Err(AuthenticationError)`.
pub fn connect<T>(address: Address, authkey: Option<&[u8]>) -> Result<Connection<T>> {
    connect_with(address, authkey, Codec::default())
}

/// [`connect`], choosing how typed messages are encoded (see [`Codec`]).
pub fn connect_with<T>(
    address: Address,
    authkey: Option<&[u8]>,
    codec: Codec,
) -> Result<Connection<T>> {
    connect_until(address, authkey, codec, None)
}

/// [`connect`], giving up after `d` (connecting and the handshake together):
/// `Err(Timeout)`.
pub fn connect_timeout<T>(
    address: Address,
    authkey: Option<&[u8]>,
    d: Duration,
) -> Result<Connection<T>> {
    connect_until(
        address,
        authkey,
        Codec::default(),
        Instant::now().checked_add(d),
    )
}

fn connect_until<T>(
    address: Address,
    authkey: Option<&[u8]>,
    codec: Codec,
    deadline: Option<Instant>,
) -> Result<Connection<T>> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let sock = sys::net::connect(address.endpoint(), left).map_err(|e| {
        if e.kind() == io::ErrorKind::TimedOut {
            Error::Timeout
        } else {
            Error::Io(io::Error::new(
                e.kind(),
                format!("cannot connect to {address}: {e}"),
            ))
        }
    })?;
    let conn = Connection::from_python(sock, matches!(address, Address::Tcp(_)), codec);
    if let Some(key) = authkey {
        let mut io = Handshake::new(&conn, deadline);
        auth::answer_challenge(&mut io, key).map_err(|e| io.explain(e))?;
        auth::deliver_challenge(&mut io, key).map_err(|e| io.explain(e))?;
    }
    Ok(conn)
}

/// The handshake's view of a fresh connection: frames of at most 256 bytes, under a
/// deadline.
struct Handshake<'a, T> {
    conn: &'a Connection<T>,
    deadline: Instant,
    /// Whether the deadline is the caller's (then running out is `Timeout`) or ours.
    callers: bool,
}

impl<'a, T> Handshake<'a, T> {
    fn new(conn: &'a Connection<T>, deadline: Option<Instant>) -> Self {
        let ours = Instant::now() + HANDSHAKE_TIMEOUT;
        match deadline {
            Some(d) if d < ours => Handshake {
                conn,
                deadline: d,
                callers: true,
            },
            _ => Handshake {
                conn,
                deadline: ours,
                callers: false,
            },
        }
    }

    /// Names what went wrong: our own deadline is a peer that stalled, not the caller's
    /// timeout; a malformed frame is a failed handshake.
    fn explain(&self, e: Error) -> Error {
        match e {
            Error::Timeout if !self.callers => Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the peer did not complete the authentication handshake within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
            )),
            Error::Codec(_) => Error::AuthenticationError,
            other => other,
        }
    }
}

impl<T> Framed for Handshake<'_, T> {
    fn send(&mut self, message: &[u8]) -> Result<()> {
        let mut partial = false;
        let sock = self.conn.as_fd();
        if framing::write_frame_until(
            sock,
            self.conn.format,
            message,
            &[],
            self.deadline,
            &mut partial,
        )? {
            Ok(())
        } else {
            Err(Error::Timeout)
        }
    }

    fn recv(&mut self) -> Result<Vec<u8>> {
        wire::read_short_frame(self.conn.as_fd(), auth::MAX_MESSAGE, self.deadline)
    }
}

impl<T> Connection<T> {
    /// A connection on CPython's wire over a freshly accepted or connected socket.
    fn from_python(sock: OwnedFd, tcp: bool, codec: Codec) -> Self {
        let mut conn = Connection::from_fd(sock, true, true);
        conn.format = Format::Python(PyWire { tcp, codec });
        conn
    }
}
