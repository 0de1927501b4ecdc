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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::conns::{ConnState, Conns};
use super::store::{ConnId, Store};
use super::transport::ServerSocket;
use crate::connection::Address;
use crate::connection::Connection;
use crate::error::{Error, Result};
use conn::{ConnCleanup, Peer, serve_conn};

/// How often a waiting request checks that its client is still there.
mod conn;

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
