//! The server: one thread per client connection over a shared [`Store`].
//!
//! Why threads, not a poll loop: a client's blocking call (`get`, `acquire`, `wait`) simply
//! parks its own thread on the store's condition variable, a slow or stalled peer stalls only
//! its own thread, and a thread blocked in `recv` on its connection wakes straight into the
//! request (no extra `poll` per request). Connections are per process and thread, reused by
//! all their proxies, so there are few. The accept loop only takes peers; each peer's
//! thread runs the authentication handshake first (as CPython's `Server.accepter` hands
//! `deliver_challenge` to the connection's thread), so a peer that connects and stays
//! silent costs its own thread until the handshake timeout, and delays no one.
//!
//! Who wakes whom: a request that may let a waiter proceed (`put`, `release`, `set`, a
//! holder's connection closing) sets `Store::wake`, and its thread notifies the condition
//! variable. A waiting thread also wakes every [`PEER_CHECK`] to see whether its client hung
//! up (then it gives up the wait) or the server is stopping.
//!
//! **A client's rings are its memory.** Nothing a client writes there may keep its
//! connection's thread, or what the connection holds, for ever. The thread's waits on the
//! rings are bounded: a `get` of the next request by [`PEER_CHECK`] (the ring's own wait
//! for the rest of an item it has begun is the ring's to bound), a reply's `put` by
//! [`FIRST_PUT`] doubling to [`LAST_PUT`] per attempt, and between them it looks at the
//! socket: a client on rings never writes on it, so readable means gone. And since a ring
//! call that does not return would keep the thread from its cleanup, the janitor also looks
//! at every upgraded connection's socket every [`WATCH`] and runs the cleanup of a gone
//! client itself, exactly once either way (`conns.rs`).
//!
//! Stopping: a `Shutdown` request (or the owner's lifeline closing) sets `stopping`, shuts
//! down every client socket both ways — so every client, even one blocked in a `get`, reads
//! end-of-stream and answers `Err(Closed)` — and wakes the accept loop by connecting to it.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::conns::{ConnState, Conns};
use super::store::{Caller, ConnId, Store};
use super::transport::ServerSocket;
use super::wire::{self, Answer, Buf, Request, Rings};
use crate::connection::Address;
use crate::connection::Connection;
use crate::error::{Error, Result};

/// How often a waiting request checks that its client is still there.
const PEER_CHECK: Duration = Duration::from_millis(50);
/// How often sessions without a connection are checked for a dead process.
const JANITOR: Duration = Duration::from_secs(1);
/// How often the janitor looks for upgraded connections whose client left.
const WATCH: Duration = Duration::from_millis(200);
/// How long a reply's first `put` may wait for the reply ring (its lock, or room), before
/// the client is looked at; each later attempt waits twice as long, up to [`LAST_PUT`], so
/// a reply too large to pass in one attempt still passes to a client that reads it.
const FIRST_PUT: Duration = Duration::from_secs(1);
const LAST_PUT: Duration = Duration::from_secs(8);

struct Shared {
    store: Mutex<Store>,
    cond: Condvar,
    nonce: u64,
    remote: bool,
    address: Address,
    authkey: Vec<u8>,
    /// What a `Shutdown` must carry: only the server's owner has it (any client knows the
    /// authkey, so the key alone must not stop a shared server).
    owner_token: Vec<u8>,
    stopping: AtomicBool,
    /// The live connections, each with a duplicate of its socket.
    conns: Conns,
    next_conn: AtomicU64,
    done: Mutex<bool>,
    done_cond: Condvar,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic in user code is caught before it can poison; be robust anyway.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store, for connection `me`'s thread: `None` once the connection has ended
    /// (see `conns.rs`), and then the thread must change nothing.
    fn store_for(&self, me: &ConnState) -> Option<MutexGuard<'_, Store>> {
        let store = self.store();
        (!me.ended()).then_some(store)
    }

    /// Ends connection `id`, once: frees every lock it held, drops it from every wait,
    /// and counts it out of its session (whose claims go when its process is gone).
    fn end_conn(&self, id: ConnId) {
        let mut store = self.store();
        let Some(session) = self.conns.end(id) else {
            return;
        };
        if session != 0 {
            store.bye(session);
        }
        store.release_all(id);
        if std::mem::take(&mut store.wake) {
            self.cond.notify_all();
        }
    }

    fn stop(&self) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        self.conns.shut_down_all();
        {
            let _store = self.store();
            self.cond.notify_all();
        }
        // Wake the accept loop: it sees `stopping` and returns.
        let _ =
            super::transport::connect_briefly(&self.address, &self.authkey, Duration::from_secs(2));
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.done_cond.notify_all();
    }
}

/// A bound server, ready to serve.
pub(crate) struct Server {
    socket: ServerSocket,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds `address` (the real address is [`Server::address`]).
    pub(crate) fn bind(address: &Address, authkey: &[u8], owner_token: &[u8]) -> Result<Server> {
        let socket = ServerSocket::bind(address, authkey)?;
        let real = socket.address();
        let mut nonce = [0u8; 8];
        crate::sys::net::random_bytes(&mut nonce)?;
        Ok(Server {
            shared: Arc::new(Shared {
                store: Mutex::new(Store::default()),
                cond: Condvar::new(),
                nonce: u64::from_le_bytes(nonce),
                remote: socket.is_tcp(),
                address: real,
                authkey: authkey.to_vec(),
                owner_token: owner_token.to_vec(),
                stopping: AtomicBool::new(false),
                conns: Conns::default(),
                next_conn: AtomicU64::new(1),
                done: Mutex::new(false),
                done_cond: Condvar::new(),
            }),
            socket,
        })
    }

    pub(crate) fn address(&self) -> Address {
        self.shared.address.clone()
    }

    /// This server instance's nonce (what its clients learn in `Hello`).
    pub(crate) fn nonce(&self) -> u64 {
        self.shared.nonce
    }

    /// Serves until a `Shutdown` request, or until `lifeline` (the owner's end of a pipe)
    /// closes.
    pub(crate) fn serve<L: Send + 'static>(self, lifeline: Option<Connection<L>>) -> Result<()> {
        let Server { socket, shared } = self;
        if let Some(lifeline) = lifeline {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("mproc-manager-lifeline".into())
                .spawn(move || {
                    // Whatever comes (end of stream when the owner exits): stop.
                    let _ = lifeline.recv_bytes();
                    shared.stop();
                })?;
        }
        {
            // Ends the connections of clients that left while their thread could not see
            // it, and the sessions of processes that died without a connection open.
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("mproc-manager-janitor".into())
                .spawn(move || {
                    let mut reaped = Instant::now();
                    while !shared.stopping.load(Ordering::Acquire) {
                        std::thread::sleep(WATCH);
                        for id in shared.conns.hung_up() {
                            ::log::debug!("manager: connection {id}'s client left");
                            shared.end_conn(id);
                        }
                        if reaped.elapsed() >= JANITOR {
                            reaped = Instant::now();
                            shared.store().reap_sessions();
                        }
                    }
                })?;
        }
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("mproc-manager-accept".into())
                .spawn(move || accept_loop(&socket, &shared))?
        };
        let mut done = shared.done.lock().unwrap_or_else(PoisonError::into_inner);
        while !*done {
            done = shared
                .done_cond
                .wait(done)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(done);
        let _ = acceptor.join();
        if let Address::Unix(path) = &shared.address {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

fn accept_loop(socket: &ServerSocket, shared: &Arc<Shared>) {
    while !shared.stopping.load(Ordering::Acquire) {
        // The handshake runs on the peer's own thread (below): a peer that connects and
        // says nothing must not hold up everyone else for the handshake timeout.
        let conn = match socket.accept() {
            Ok(c) => c,
            // A transient error: keep accepting.
            Err(e) => {
                ::log::debug!("manager: a connection was refused: {e}");
                continue;
            }
        };
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let Ok(dup) = crate::sys::fd::dup_cloexec(conn.as_fd()) else {
            continue;
        };
        let me = shared.conns.add(id, dup);
        let shared2 = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("mproc-manager-conn-{id}"))
            .spawn(move || {
                // However the thread ends, a panic included.
                let _cleanup = ConnCleanup {
                    id,
                    shared: &shared2,
                };
                match conn.handshake(None) {
                    Ok(conn) => serve_conn(&Peer {
                        conn: &conn,
                        id,
                        me: &me,
                        shared: &shared2,
                    }),
                    Err(e) => ::log::debug!("manager: a connection was refused: {e}"),
                }
            });
        if spawned.is_err() {
            shared.end_conn(id);
        }
    }
}

/// One connection, as its thread sees it.
struct Peer<'a> {
    conn: &'a Connection<()>,
    id: ConnId,
    me: &'a ConnState,
    shared: &'a Shared,
}

impl Peer<'_> {
    /// Whether to stop serving this client: it left (a client on rings never writes on
    /// the socket, so readable means gone), its connection was ended, or the server stops.
    fn gone(&self) -> bool {
        self.shared.stopping.load(Ordering::Acquire)
            || self.me.ended()
            || self.conn.poll(Some(Duration::ZERO)).unwrap_or(true)
    }
}

/// Receives the next request frame into `inp`; `false` when the peer is gone (or the
/// server stops).
fn next_request(peer: &Peer<'_>, rings: Option<&Rings>, inp: &mut Vec<u8>) -> bool {
    let Some((requests, _)) = rings else {
        return peer.conn.recv_bytes_into(inp).is_ok();
    };
    loop {
        match requests.get_timeout(PEER_CHECK) {
            Ok(frame) => {
                *inp = frame.0;
                return !peer.me.ended();
            }
            // Nothing (or not all of an item) in time: is the client still there?
            Err(Error::Empty | Error::Timeout) => {
                if peer.gone() {
                    return false;
                }
            }
            // A ring that is not one any more (the client wrote over it).
            Err(_) => return false,
        }
    }
}

fn serve_conn(peer: &Peer<'_>) {
    let Peer {
        conn, id, shared, ..
    } = *peer;
    let mut caller = Caller {
        conn: id,
        remote: shared.remote,
        session: 0,
    };
    let mut rings: Option<Rings> = None;
    let mut inp = Vec::new();
    let mut out = Vec::new();
    while next_request(peer, rings.as_ref(), &mut inp) {
        let mut embedded = Vec::new();
        let request = match wire::decode::<wire::Frame<'_>>(&inp) {
            Ok((ops, tokens, request)) => {
                if caller.session != 0 && !(ops.is_empty() && tokens.is_empty()) {
                    let Some(mut store) = shared.store_for(peer.me) else {
                        break;
                    };
                    store.apply_ops(caller.session, &ops);
                    // Before the request stores the bytes: no reader may see them while
                    // their tokens are still in transit.
                    match &request {
                        Request::Create(_) => embedded = tokens,
                        Request::QueuePut(queue, ..) => {
                            // Held by the queue while the put waits, then by the item.
                            store.embed(&tokens, *queue);
                            embedded = tokens;
                        }
                        Request::Publish(..) => store.embed(&tokens, 0),
                        r => {
                            if let Some(container) = r.object() {
                                store.embed(&tokens, container);
                            }
                        }
                    }
                }
                Ok(request)
            }
            Err(e) => Err(e),
        };
        if let Ok(Request::Hello(session, pid)) = &request {
            if caller.session == 0 && *session != 0 {
                let Some(mut store) = shared.store_for(peer.me) else {
                    break;
                };
                caller.session = *session;
                // Counted out of the session by the connection's end, however it ends.
                peer.me.set_session(*session);
                store.hello(*session, *pid, shared.remote);
            }
        }
        let (reply, shutdown) = match request {
            Ok(Request::Hello(..)) => (Ok(Answer::Nonce(shared.nonce)), false),
            Ok(Request::Shutdown(token)) if same_token(token.0, &shared.owner_token) => {
                (Ok(Answer::Done), true)
            }
            Ok(Request::Shutdown(_)) => (Err(not_owner()), false),
            Ok(Request::Upgrade) if rings.is_none() && !shared.remote => {
                if send(peer, None, &Ok(Answer::Done), &mut out).is_err() {
                    break;
                }
                match receive_rings(conn) {
                    Ok(r) => rings = Some(r),
                    Err(_) => break,
                }
                peer.me.set_upgraded();
                continue;
            }
            Ok(Request::Upgrade) => (
                Err(Error::ValueError(
                    "this connection cannot be upgraded".into(),
                )),
                false,
            ),
            Ok(req) => match handle(&req, caller, peer, &embedded) {
                Some(r) => {
                    // A new object's contents are seen by no one before its creator has
                    // its id: its tokens can pass to it now.
                    if let (Ok(Answer::Id(new)), Request::Create(_)) = (&r, &req) {
                        shared.store().embed(&embedded, *new);
                    }
                    (r, false)
                }
                None => break, // the peer hung up while waiting
            },
            Err(e) => {
                ::log::warn!("manager: connection {id} sent a malformed request: {e}");
                (Err(e), false)
            }
        };
        if send(peer, rings.as_ref(), &reply, &mut out).is_err() {
            break;
        }
        if shutdown {
            shared.stop();
            break;
        }
    }
}

/// Compares a shutdown token in time independent of where it differs.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The error for a `Shutdown` from a client that is not the server's owner.
pub(crate) fn not_owner() -> Error {
    Error::ValueError(
        "only the manager that started the server (or the process serving it) can shut it down"
            .into(),
    )
}

/// A connection's cleanup, run when its thread ends however it ends (a panic included),
/// unless the janitor ran it already: forget its socket dup, release every lock it held so
/// no other client waits for a connection that is gone, and count it out of its session.
struct ConnCleanup<'a> {
    id: ConnId,
    shared: &'a Shared,
}

impl Drop for ConnCleanup<'_> {
    fn drop(&mut self) {
        self.shared.end_conn(self.id);
    }
}

/// The rings a client sends right after the server accepted its `Upgrade`.
fn receive_rings(conn: &Connection<()>) -> Result<Rings> {
    let typed =
        Connection::<Rings>::from_fd(crate::sys::fd::dup_cloexec(conn.as_fd())?, true, true);
    typed.recv_timeout(Duration::from_secs(10))
}

/// Sends one reply on the rings, or the socket.
fn send(
    peer: &Peer<'_>,
    rings: Option<&Rings>,
    reply: &wire::Reply,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    crate::codec::encode_plain_into(reply, out)?;
    let Some((_, replies)) = rings else {
        return peer.conn.send_bytes(out);
    };
    // Each attempt is bounded: the client may hold the reply ring's lock, or stop reading,
    // and die. A timed-out attempt leaves nothing of the reply but an `Abort` the client
    // skips, so the next one starts afresh.
    let mut attempt = FIRST_PUT;
    loop {
        match replies.put_timeout(Buf(out.clone()), attempt) {
            Err(Error::Full) if peer.gone() => return Err(Error::Closed),
            Err(Error::Full) => attempt = attempt.saturating_mul(2).min(LAST_PUT),
            r => return r,
        }
    }
}

/// Runs one request, waiting if it must; `None` if the peer hung up meanwhile.
fn handle(
    req: &Request<'_>,
    caller: Caller,
    peer: &Peer<'_>,
    tokens: &[wire::Token],
) -> Option<wire::Reply> {
    let Peer { conn, shared, .. } = *peer;
    // `None` is forever (or a deadline too far to represent).
    let mut deadline = req
        .wait()
        .flatten()
        .and_then(|ns| Instant::now().checked_add(Duration::from_nanos(ns)));
    let mut store = shared.store_for(peer.me)?;
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            return Some(Err(Error::Closed));
        }
        if peer.me.ended() {
            return None;
        }
        if !tokens.is_empty() {
            store.arriving = tokens.to_vec();
        }
        let reply = store.apply(req, caller);
        store.arriving.clear();
        if std::mem::take(&mut store.wake) {
            shared.cond.notify_all();
        }
        if let Some(reply) = reply {
            return Some(reply);
        }
        // It must wait: until its deadline, a wake-up, or its peer leaving.
        let now = Instant::now();
        let mut slice = PEER_CHECK;
        if let Some(d) = deadline {
            if now >= d {
                let reply = store.expire(req, caller);
                if std::mem::take(&mut store.wake) {
                    shared.cond.notify_all();
                }
                match reply {
                    Some(reply) => return Some(reply),
                    // A condition's waiter takes its lock back, however long that takes.
                    None => {
                        deadline = None;
                        continue;
                    }
                }
            }
            slice = slice.min(d - now);
        }
        let (guard, timeout) = shared
            .cond
            .wait_timeout(store, slice)
            .unwrap_or_else(PoisonError::into_inner);
        store = guard;
        if timeout.timed_out() && conn.poll(Some(Duration::ZERO)).unwrap_or(true) {
            // A client sends nothing while it waits: readable means it hung up.
            return None;
        }
    }
}
