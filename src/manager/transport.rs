//! Where manager connections come from: the crate's authenticated [`Listener`] and
//! [`connect`] (CPython's handshake: mutual HMAC with the manager's key), so a manager
//! accepts nobody who does not know the key, over Unix sockets and TCP alike.

use std::time::Duration;

use crate::connection::{
    Address, Connection, Listener, Unauthenticated, connect as connect_to, connect_timeout,
};
use crate::error::{Error, Result};

/// A server's listening socket.
#[derive(Debug)]
pub(crate) struct ServerSocket {
    listener: Listener<()>,
}

impl ServerSocket {
    /// Listens at `address`, accepting only peers that prove they know `authkey`.
    pub(crate) fn bind(address: &Address, authkey: &[u8]) -> Result<ServerSocket> {
        Ok(ServerSocket {
            listener: Listener::bind(address.clone(), Some(authkey))?,
        })
    }

    /// The address peers reach it at (for TCP port 0, the port chosen).
    pub(crate) fn address(&self) -> Address {
        self.listener.address()
    }

    /// The next peer, not yet authenticated: the caller runs the handshake on the peer's
    /// own thread, so a peer that stalls it holds up no one else.
    pub(crate) fn accept(&self) -> Result<Unauthenticated<()>> {
        self.listener.accept_unauthenticated()
    }

    /// Whether peers come over the network.
    pub(crate) fn is_tcp(&self) -> bool {
        !self.listener.address().carries_handles()
    }
}

/// Connects to a server and authenticates with `authkey`.
pub(crate) fn connect(address: &Address, authkey: &[u8]) -> Result<Connection<()>> {
    connect_to(address.clone(), Some(authkey))
}

/// Connects, giving up after `d` (to wake a server's own accept loop).
pub(crate) fn connect_briefly(
    address: &Address,
    authkey: &[u8],
    d: Duration,
) -> Result<Connection<()>> {
    connect_timeout(address.clone(), Some(authkey), d)
}

/// Whether `e` says there is no server at the address (any more).
pub(crate) fn is_gone(e: &Error) -> bool {
    use std::io::ErrorKind::*;
    match e {
        Error::Closed => true,
        Error::Io(e) => matches!(
            e.kind(),
            ConnectionRefused | NotFound | ConnectionReset | BrokenPipe | UnexpectedEof
        ),
        _ => false,
    }
}
