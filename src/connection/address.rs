//! Where a `Listener` listens and `connect` goes: a Unix path, a Linux abstract name, or
//! a TCP address — Python's `address` argument, typed.
//!
//! The text form round-trips: `"/run/app.sock"` and `"./app.sock"` are Unix paths,
//! `"@name"` an abstract name, anything else `host:port` (resolved when parsed).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sys::net::Endpoint;

/// Where a [`Listener`](crate::Listener) listens.
///
/// ```
/// use mproc::Address;
/// let tcp: Address = "127.0.0.1:5000".parse()?;
/// assert_eq!(tcp, Address::Tcp("127.0.0.1:5000".parse().unwrap()));
/// let unix: Address = "/tmp/app.sock".parse()?;
/// let abs: Address = "@app".parse()?;
/// assert_eq!(abs, Address::Abstract("app".into()));
/// for a in [tcp, unix, abs] {
///     assert_eq!(a.to_string().parse::<Address>()?, a);
/// }
/// # Ok::<(), mproc::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// A Unix socket at this path (Python's `Listener('/path')`). The listener creates the
    /// file and removes it when it closes.
    Unix(PathBuf),
    /// A Linux abstract-namespace Unix socket: a name without a file, gone when its
    /// listener closes (Python's `Listener('\0name')`). Written `@name`.
    Abstract(String),
    /// A TCP address (Python's `Listener(('127.0.0.1', 5000))`). Port 0 asks the system
    /// for a free port; [`Listener::address`](crate::Listener::address) tells which.
    Tcp(SocketAddr),
}

impl Address {
    /// A fresh abstract address that nothing else uses: a private rendezvous for processes
    /// on this machine (mproc's answer to Python's `arbitrary_address`), with no file to
    /// clean up.
    pub fn unique() -> Result<Address> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut nonce = [0u8; 8];
        crate::sys::net::random_bytes(&mut nonce)?;
        Ok(Address::Abstract(format!(
            "mproc-{}-{}-{:016x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            u64::from_ne_bytes(nonce)
        )))
    }

    /// Whether messages over this address can carry handles (Unix sockets can, TCP cannot).
    pub fn carries_handles(&self) -> bool {
        !matches!(self, Address::Tcp(_))
    }

    pub(crate) fn endpoint(&self) -> Endpoint<'_> {
        match self {
            Address::Unix(p) => Endpoint::Unix(p),
            Address::Abstract(n) => Endpoint::Abstract(n.as_bytes()),
            Address::Tcp(a) => Endpoint::Tcp(*a),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    /// `"/path"`, `"./path"` or `"../path"`: a Unix path; `"@name"`: an abstract name;
    /// otherwise `"host:port"`, resolved now (the first address the resolver gives).
    fn from_str(s: &str) -> Result<Address> {
        if let Some(name) = s.strip_prefix('@') {
            if name.is_empty() {
                return Err(Error::ValueError(
                    "abstract address has no name: \"@\"".into(),
                ));
            }
            return Ok(Address::Abstract(name.to_owned()));
        }
        if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(a));
        }
        if !s.contains(':') {
            return Err(Error::ValueError(format!(
                "not an address: {s:?} (expected host:port, /path, ./path or @name)"
            )));
        }
        let mut found = s
            .to_socket_addrs()
            .map_err(|e| Error::ValueError(format!("cannot resolve address {s:?}: {e}")))?;
        found
            .next()
            .map(Address::Tcp)
            .ok_or_else(|| Error::ValueError(format!("address {s:?} resolves to nothing")))
    }
}

impl fmt::Display for Address {
    /// The form [`FromStr`] reads back. (A Unix path that is not UTF-8 shows lossily.)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => {
                let shown = p.to_string_lossy();
                if shown.starts_with('/') || shown.starts_with("./") || shown.starts_with("../") {
                    f.write_str(&shown)
                } else {
                    write!(f, "./{shown}")
                }
            }
            Address::Abstract(n) => write!(f, "@{n}"),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Address {
        Address::Unix(p)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Address {
        Address::Unix(p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_forms() {
        assert_eq!(
            "[::1]:80".parse::<Address>().unwrap(),
            Address::Tcp("[::1]:80".parse().unwrap())
        );
        assert!(matches!(
            "localhost:80".parse::<Address>().unwrap(),
            Address::Tcp(a) if a.port() == 80
        ));
        assert_eq!(Address::Unix("rel.sock".into()).to_string(), "./rel.sock");
        for bad in ["", "@", "nonsense", "host:notaport"] {
            assert!(bad.parse::<Address>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(name in "[a-zA-Z0-9_.-]{1,20}", port in any::<u16>()) {
            for a in [
                Address::Abstract(name.clone()),
                Address::Unix(PathBuf::from(format!("/tmp/{name}"))),
                Address::Unix(PathBuf::from(name.clone())),
                Address::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
            ] {
                let back: Address = a.to_string().parse().unwrap();
                match (&a, &back) {
                    // "x" comes back as "./x": the same file.
                    (Address::Unix(p), Address::Unix(q)) => {
                        fn parts(p: &Path) -> Vec<std::path::Component<'_>> {
                            p.components()
                                .filter(|c| *c != std::path::Component::CurDir)
                                .collect()
                        }
                        prop_assert_eq!(parts(p), parts(q));
                    }
                    _ => prop_assert_eq!(&a, &back),
                }
            }
        }
    }
}
