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
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::handle::Life;
use super::transport;
use super::wire::{self, Answer, Buf, ObjectId, RING_BYTES, RefOp, Request, Rings, Session, Token};
use crate::connection::Address;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::queue::Queue;
use std::os::fd::AsFd;

/// Where a proxy's object lives.
pub(crate) struct ServerRef {
    pub(crate) address: Address,
    pub(crate) authkey: Vec<u8>,
    /// The server instance's random nonce: a proxy never talks to a different server that
    /// happens to listen at the same address later.
    pub(crate) nonce: u64,
    /// Set by the owner's `shutdown`: calls in this process answer `Closed` at once.
    pub(crate) closed: AtomicBool,
    key: String,
    /// This process's claims on the server's objects (`handle.rs`).
    claims: Mutex<ClaimState>,
}

/// A process's claim bookkeeping for one server.
#[derive(Default)]
pub(crate) struct ClaimState {
    /// The process it belongs to: a child made by `fork` starts afresh.
    pid: u32,
    /// Claim changes not yet sent: the next request carries them, in this order.
    pub(crate) ops: Vec<RefOp>,
    /// This process's live claim on each object, shared by the proxies to it.
    pub(crate) lives: HashMap<ObjectId, Weak<Life>>,
}

/// The server references this process knows, by nonce: a proxy decoded in this process
/// shares the one already there, and with it the claims (`handle.rs`).
fn servers() -> MutexGuard<'static, BTreeMap<u64, Weak<ServerRef>>> {
    static SERVERS: Mutex<BTreeMap<u64, Weak<ServerRef>>> = Mutex::new(BTreeMap::new());
    SERVERS.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ServerRef {
    fn fresh(address: Address, authkey: Vec<u8>, nonce: u64) -> Arc<ServerRef> {
        let key = format!("{address}#{nonce:x}");
        Arc::new(ServerRef {
            address,
            authkey,
            nonce,
            closed: AtomicBool::new(false),
            key,
            claims: Mutex::new(ClaimState::default()),
        })
    }

    /// The reference to the server `nonce` names, the one this process already has if any.
    pub(crate) fn new(address: Address, authkey: Vec<u8>, nonce: u64) -> Arc<ServerRef> {
        let mut servers = servers();
        if let Some(s) = servers.get(&nonce).and_then(Weak::upgrade) {
            if s.authkey == authkey {
                return s;
            }
        }
        servers.retain(|_, s| s.strong_count() > 0);
        let s = ServerRef::fresh(address, authkey, nonce);
        servers.insert(nonce, Arc::downgrade(&s));
        s
    }

    /// A reference at exactly `address` (a manager's own, which must reach the server by
    /// the address it was given); later decoded proxies share it.
    fn at(address: Address, authkey: Vec<u8>, nonce: u64) -> Arc<ServerRef> {
        let mut servers = servers();
        if let Some(s) = servers.get(&nonce).and_then(Weak::upgrade) {
            if s.authkey == authkey && s.address == address {
                return s;
            }
        }
        let s = ServerRef::fresh(address, authkey, nonce);
        servers.insert(nonce, Arc::downgrade(&s));
        s
    }

    /// This process's claim bookkeeping (emptied first in a forked child: the parent's
    /// claims are the parent's).
    pub(crate) fn claims(&self) -> MutexGuard<'_, ClaimState> {
        let mut c = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = crate::sys::pid::current();
        if c.pid != pid {
            c.ops.clear();
            c.lives.clear();
            c.pid = pid;
        }
        c
    }
}

impl fmt::Debug for ServerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerRef({})", self.key)
    }
}

/// This process's session: what it tells every server in `Hello` (`store/claims.rs`).
pub(crate) fn session() -> Session {
    static SESSION: Mutex<(u32, Session)> = Mutex::new((0, 0));
    let mut s = SESSION.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = crate::sys::pid::current();
    if s.0 != pid || s.1 == 0 {
        let mut b = [0u8; 8];
        // A failure leaves 0: the server then keeps no claims for this process (its
        // objects live until the server stops), which is safe.
        let _ = crate::sys::net::random_bytes(&mut b);
        *s = (pid, u64::from_le_bytes(b));
    }
    s.1
}

thread_local! {
    /// While `proxy::enc` encodes a request's values: the tokens of the proxies inside.
    static EMBEDDED: RefCell<Option<Vec<Token>>> = const { RefCell::new(None) };
    /// Tokens encoded for the next request on this thread.
    static PENDING: RefCell<Vec<Token>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` (an encoding of a request's values), noting the tokens of proxies it encodes
/// for the next request this thread sends: their claims pass to the object it stores into.
pub(crate) fn collecting<T>(f: impl FnOnce() -> T) -> T {
    let previous = EMBEDDED.with(|e| e.borrow_mut().replace(Vec::new()));
    let out = f();
    let tokens = EMBEDDED.with(|e| std::mem::replace(&mut *e.borrow_mut(), previous));
    if let Some(tokens) = tokens {
        if !tokens.is_empty() {
            PENDING.with(|p| p.borrow_mut().extend(tokens));
        }
    }
    out
}

/// Notes a token encoded into a request's values (see [`collecting`]).
pub(crate) fn note_embedded(token: Token) {
    EMBEDDED.with(|e| {
        if let Some(v) = e.borrow_mut().as_mut() {
            v.push(token);
        }
    });
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
    let none: (&[RefOp], &[Token]) = (&[], &[]);
    crate::codec::encode_plain_into(&(none.0, none.1, req), &mut out)?;
    conn.send_bytes(&out)?;
    let mut inp = Vec::new();
    conn.recv_bytes_into(&mut inp)?;
    wire::decode::<wire::Reply>(&inp)?
}

/// Connects and says hello; on a local address, moves the connection onto shared-memory
/// rings. Returns the connection and the server's nonce.
pub(crate) fn open(address: &Address, authkey: &[u8]) -> Result<(Link, u64)> {
    let conn = transport::connect(address, authkey)?;
    let hello = Request::Hello(session(), crate::sys::pid::current());
    let nonce = match socket_call(&conn, &hello)? {
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
    let ops = std::mem::take(&mut server.claims().ops);
    let tokens = if matches!(req, Request::Lend(_)) {
        Vec::new()
    } else {
        PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()))
    };
    match round_trip(&client, (&ops, &tokens, req), wait) {
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
    frame: (&[RefOp], &[Token], &Request<'_>),
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

/// A claim on object `id` for a proxy being serialized: its token (one round trip; the
/// claim changes this process has queued go with it).
pub(crate) fn lend(server: &ServerRef, id: ObjectId) -> Result<Token> {
    match call(server, &Request::Lend(id), None)? {
        Answer::Token(t) => Ok(t),
        a => Err(Error::Codec(format!(
            "unexpected answer from the manager: {a:?}"
        ))),
    }
}

/// Connects to the server at `address`, learns its nonce, and keeps the connection as this
/// thread's for that server.
pub(crate) fn connect(address: Address, authkey: Vec<u8>) -> Result<Arc<ServerRef>> {
    let (link, nonce) = open(&address, &authkey)?;
    let server = ServerRef::at(address, authkey, nonce);
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
