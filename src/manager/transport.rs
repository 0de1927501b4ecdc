//! Where manager connections come from: the one place that binds, accepts and connects.
//!
//! TEMPORARY: plain Unix/TCP sockets through std, without authentication, until the
//! crate's authenticated `Listener`/`connect` land; then this file only forwards to them.

use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};

use crate::connection::Connection;
use crate::error::{Error, Result};

/// Where a manager's server listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Address {
    /// A Unix socket path.
    Unix(std::path::PathBuf),
    /// A Linux abstract socket name.
    Abstract(String),
    /// A TCP address.
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{n}"),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// A server's listening socket.
#[derive(Debug)]
pub(crate) enum ServerSocket {
    Unix(UnixListener),
    Tcp(std::net::TcpListener),
}

impl ServerSocket {
    pub(crate) fn bind(address: &Address, _authkey: &[u8]) -> Result<ServerSocket> {
        Ok(match address {
            Address::Unix(p) => ServerSocket::Unix(UnixListener::bind(p)?),
            Address::Abstract(n) => {
                ServerSocket::Unix(UnixListener::bind_addr(&UnixAddr::from_abstract_name(n)?)?)
            }
            Address::Tcp(a) => ServerSocket::Tcp(std::net::TcpListener::bind(a)?),
        })
    }

    pub(crate) fn address(&self, asked: &Address) -> Result<Address> {
        Ok(match self {
            ServerSocket::Unix(_) => asked.clone(),
            ServerSocket::Tcp(l) => Address::Tcp(l.local_addr()?),
        })
    }

    pub(crate) fn accept(&self) -> Result<Connection<()>> {
        let fd: OwnedFd = match self {
            ServerSocket::Unix(l) => l.accept()?.0.into(),
            ServerSocket::Tcp(l) => {
                let s = l.accept()?.0;
                s.set_nodelay(true)?;
                s.into()
            }
        };
        Ok(Connection::from_fd(fd, true, true))
    }

    pub(crate) fn is_tcp(&self) -> bool {
        matches!(self, ServerSocket::Tcp(_))
    }
}

/// Connects to a server.
pub(crate) fn connect(address: &Address, _authkey: &[u8]) -> Result<Connection<()>> {
    let fd: OwnedFd = match address {
        Address::Unix(p) => UnixStream::connect(p)?.into(),
        Address::Abstract(n) => UnixStream::connect_addr(&UnixAddr::from_abstract_name(n)?)?.into(),
        Address::Tcp(a) => {
            let s = std::net::TcpStream::connect(a)?;
            s.set_nodelay(true)?;
            s.into()
        }
    };
    Ok(Connection::from_fd(fd, true, true))
}

/// Whether `e` says there is no server at the address (any more).
pub(crate) fn is_gone(e: &Error) -> bool {
    use std::io::ErrorKind::*;
    match e {
        Error::Closed => true,
        Error::Io(e) => matches!(
            e.kind(),
            ConnectionRefused | NotFound | ConnectionReset | BrokenPipe
        ),
        _ => false,
    }
}
