//! The client side: one connection per thread per server, shared by every proxy.
//!
//! A proxy names its server by a [`ServerRef`] (address, key, and the server's instance
//! nonce). The first call a thread makes to a server connects, authenticates once and says
//! `Hello`; the connection is then kept in a thread-local cache and reused by all the
//! thread's proxies for that server, so creating a proxy or calling one costs one round trip
//! and no handshake (CPython opens a new authenticated connection for every proxy creation).
//! One request is in flight per connection, and a thread makes one call at a time, so replies
//! need no ids. The cache remembers the pid that filled it: a child made by `fork` starts
//! afresh instead of sharing its parent's sockets (whose descriptors the fork closed).
//!
//! A connection that fails (server gone, torn frame) is dropped from the cache; the call
//! answers `Err(Closed)` when the server is gone, so no proxy call outlives its server.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::transport;
use super::wire::{self, Answer, Buf, NONE_RELEASED, ObjectId, RING_BYTES, Request, Rings};
use crate::connection::Address;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::queue::Queue;
use std::os::fd::AsFd;

/// Where a proxy's object lives.
#[derive(Debug)]
pub(crate) struct ServerRef {
    pub(crate) address: Address,
    pub(crate) authkey: Vec<u8>,
    /// The server instance's random nonce: a proxy never talks to a different server that
    /// happens to listen at the same address later.
    pub(crate) nonce: u64,
    /// Set by the owner's `shutdown`: calls in this process answer `Closed` at once.
    pub(crate) closed: AtomicBool,
    key: String,
    /// Objects this process let go of (`handle.rs`), for the next request to carry.
    released: Mutex<Vec<ObjectId>>,
}

impl ServerRef {
    pub(crate) fn new(address: Address, authkey: Vec<u8>, nonce: u64) -> Arc<ServerRef> {
        let key = format!("{address}#{nonce:x}");
        Arc::new(ServerRef {
            address,
            authkey,
            nonce,
            closed: AtomicBool::new(false),
            key,
            released: Mutex::new(Vec::new()),
        })
    }

    /// Queues `id` for release with the next request to this server.
    pub(crate) fn release_later(&self, id: ObjectId) {
        self.released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
    }

    fn take_released(&self) -> Vec<ObjectId> {
        let mut r = self.released.lock().unwrap_or_else(PoisonError::into_inner);
        if r.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut *r)
        }
    }
}

/// One thread's connection to one server, with its reusable buffers.
struct Client {
    conn: Connection<()>,
    /// Set on a local connection: requests and replies go through shared memory.
    rings: Option<Rings>,
    out: RefCell<Vec<u8>>,
    inp: RefCell<Vec<u8>>,
}

impl Client {
    fn new(link: Link) -> Client {
        Client {
            conn: link.conn,
            rings: link.rings,
            out: RefCell::new(Vec::new()),
            inp: RefCell::new(Vec::new()),
        }
    }
}

/// A fresh connection: its socket, and its rings if it is local.
pub(crate) struct Link {
    conn: Connection<()>,
    rings: Option<Rings>,
}

#[derive(Default)]
struct Cache {
    pid: u32,
    clients: HashMap<String, Rc<Client>>,
}

impl Cache {
    /// A cache inherited through fork holds the parent's connections: the fork closed or
    /// shares their descriptors, so they are forgotten without closing anything.
    fn forget_if_forked(&mut self) {
        let pid = crate::sys::pid::current();
        if self.pid != pid {
            for (_, c) in self.clients.drain() {
                std::mem::forget(c);
            }
            self.pid = pid;
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// How long a waiting call may outlast its own deadline before the client gives up on a
/// server that did not answer (it is then treated as gone for this connection).
const GRACE: Duration = Duration::from_secs(5);

/// How often a client waiting for a reply on the rings looks at the socket for the
/// server's end.
const PEER_CHECK: Duration = Duration::from_millis(50);

/// One request and its answer on the socket.
fn socket_call(conn: &Connection<()>, req: &Request<'_>) -> Result<Answer> {
    let mut out = Vec::new();
    crate::codec::encode_plain_into(&(NONE_RELEASED, req), &mut out)?;
    conn.send_bytes(&out)?;
    let mut inp = Vec::new();
    conn.recv_bytes_into(&mut inp)?;
    wire::decode::<wire::Reply>(&inp)?
}

/// Connects and says hello; on a local address, moves the connection onto shared-memory
/// rings. Returns the connection and the server's nonce.
pub(crate) fn open(address: &Address, authkey: &[u8]) -> Result<(Link, u64)> {
    let conn = transport::connect(address, authkey)?;
    let nonce = match socket_call(&conn, &Request::Hello)? {
        Answer::Nonce(n) => n,
        other => return Err(Error::Codec(format!("unexpected hello answer {other:?}"))),
    };
    if matches!(address, Address::Tcp(_)) {
        return Ok((Link { conn, rings: None }, nonce));
    }
    match socket_call(&conn, &Request::Upgrade)? {
        Answer::Done => {}
        other => return Err(Error::Codec(format!("unexpected upgrade answer {other:?}"))),
    }
    let rings: Rings = (
        Queue::with_ring_size(0, RING_BYTES)?,
        Queue::with_ring_size(0, RING_BYTES)?,
    );
    let typed =
        Connection::<Rings>::from_fd(crate::sys::fd::dup_cloexec(conn.as_fd())?, true, true);
    typed.send(&rings)?;
    Ok((
        Link {
            conn,
            rings: Some(rings),
        },
        nonce,
    ))
}

fn client_for(server: &ServerRef) -> Result<Rc<Client>> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        cache.forget_if_forked();
        if let Some(c) = cache.clients.get(&server.key) {
            return Ok(c.clone());
        }
        let (link, nonce) = open(&server.address, &server.authkey).map_err(gone_is_closed)?;
        if nonce != server.nonce {
            // Another server now listens there: this proxy's objects are gone.
            return Err(Error::Closed);
        }
        let c = Rc::new(Client::new(link));
        cache.clients.insert(server.key.clone(), c.clone());
        Ok(c)
    })
}

/// Closes this thread's connection to `server` (it is shut down).
pub(crate) fn forget_client(server: &ServerRef) {
    let _ = CACHE.try_with(|cache| cache.borrow_mut().clients.remove(&server.key));
}

fn gone_is_closed(e: Error) -> Error {
    if transport::is_gone(&e) {
        Error::Closed
    } else {
        e
    }
}

/// Sends `req` to the server and returns its answer. `wait` is how long the server may take
/// on purpose (a blocking `get` or `acquire`): `None` for a call that does not wait,
/// `Some(None)` for one that may wait forever.
pub(crate) fn call(
    server: &ServerRef,
    req: &Request<'_>,
    wait: Option<Option<Duration>>,
) -> Result<Answer> {
    if server.closed.load(Ordering::Relaxed) {
        return Err(Error::Closed);
    }
    let client = client_for(server)?;
    let released = server.take_released();
    match round_trip(&client, (&released, req), wait) {
        Ok(reply) => reply,
        Err(e) => {
            // The connection is out of step or dead: the next call starts a fresh one.
            forget_client(server);
            Err(gone_is_closed(e))
        }
    }
}

/// One request and its reply. The outer error is the transport's; the inner, the server's.
fn round_trip(
    client: &Client,
    frame: (&[ObjectId], &Request<'_>),
    wait: Option<Option<Duration>>,
) -> Result<wire::Reply> {
    let mut out = client.out.borrow_mut();
    out.clear();
    crate::codec::encode_plain_into(&frame, &mut out)?;
    if let Some((requests, replies)) = &client.rings {
        return ring_trip(&client.conn, requests, replies, &out, wait);
    }
    client.conn.send_bytes(&out)?;
    if let Some(Some(d)) = wait {
        // A timed wait: the server answers by its deadline; if it does not within a grace
        // period, it is stuck or gone, and the call must not hang.
        let limit = d.saturating_add(GRACE);
        let start = Instant::now();
        if !client.conn.poll(Some(limit))? && start.elapsed() >= limit {
            return Err(Error::Closed);
        }
    }
    let mut inp = client.inp.borrow_mut();
    client.conn.recv_bytes_into(&mut inp)?;
    wire::decode::<wire::Reply>(&inp)
}

/// Connects to the server at `address`, learns its nonce, and keeps the connection as this
/// thread's for that server.
pub(crate) fn connect(address: Address, authkey: Vec<u8>) -> Result<Arc<ServerRef>> {
    let (link, nonce) = open(&address, &authkey)?;
    let server = ServerRef::new(address, authkey, nonce);
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        cache.forget_if_forked();
        cache
            .clients
            .insert(server.key.clone(), Rc::new(Client::new(link)));
    });
    Ok(server)
}

/// One request and its reply through the rings. The server never writes to the socket of
/// an upgraded connection, so a readable socket means the server is gone.
fn ring_trip(
    conn: &Connection<()>,
    requests: &Queue<Buf>,
    replies: &Queue<Buf>,
    out: &[u8],
    wait: Option<Option<Duration>>,
) -> Result<wire::Reply> {
    let gone = || conn.poll(Some(Duration::ZERO)).unwrap_or(true);
    loop {
        match requests.put_timeout(Buf(out.to_vec()), PEER_CHECK) {
            Ok(()) => break,
            Err(Error::Full) if !gone() => {}
            Err(Error::Full) => return Err(Error::Closed),
            Err(e) => return Err(e),
        }
    }
    let limit = match wait {
        Some(Some(d)) => Instant::now().checked_add(d.saturating_add(GRACE)),
        _ => None,
    };
    loop {
        match replies.get_timeout(PEER_CHECK) {
            Ok(reply) => return wire::decode::<wire::Reply>(&reply.0),
            Err(Error::Empty) => {
                if gone() || limit.is_some_and(|l| Instant::now() >= l) {
                    return Err(Error::Closed);
                }
            }
            Err(e) => return Err(e),
        }
    }
}
