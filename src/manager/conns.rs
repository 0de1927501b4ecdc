//! The server's table of live connections: what ends a connection exactly once, whoever
//! notices first that its client is gone.
//!
//! **Why a table.** A connection's thread notices its client's end itself (end of stream,
//! or the socket readable while it waits on the rings) and then runs the connection's
//! cleanup. But a client writes its rings' memory, so a hostile or broken one can leave a
//! ring in a state where a ring call does not return (today: a first piece with no rest,
//! `queue/ring/consume.rs`); the thread's own cleanup would then never run, and the locks
//! it held would stay held for ever. So the server's janitor also looks at every upgraded
//! connection's socket (a duplicate kept here) a few times a second and ends the ones
//! whose client left, without the thread's help.
//!
//! **Who writes what.** The acceptor inserts an entry; the connection's thread sets its
//! `session` (at `Hello`) and `upgraded` (once the rings arrived); [`ConnState::ended`]
//! is set by whoever removes the entry (the thread's cleanup or the janitor), which is
//! what makes the end happen once. The end and every change the thread makes to the store
//! happen under the store's mutex, and the thread checks `ended` under it before each:
//! so after a connection ended, its thread (if it ever runs again) changes nothing, and a
//! lock it might otherwise take after its cleanup cannot exist. Lock order: the store's
//! mutex, then the table's.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::store::ConnId;
use super::wire::Session;
use crate::sys::stream::{Peek, peek};

/// What a connection's thread and the janitor share about it.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Set, under the store's mutex, when the connection's cleanup ran.
    ended: AtomicBool,
    /// The session its `Hello` named (0: none yet).
    session: AtomicU64,
    /// Its requests come on rings: the client writes nothing more on the socket, so a
    /// readable socket means the client is gone.
    upgraded: AtomicBool,
}

impl ConnState {
    /// Whether the connection's cleanup ran. Read under the store's mutex to rely on it.
    pub(crate) fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Records the session; call under the store's mutex, before the store's `hello`.
    pub(crate) fn set_session(&self, session: Session) {
        self.session.store(session, Ordering::Relaxed);
    }

    /// The connection now runs on its rings.
    pub(crate) fn set_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }
}

struct Entry {
    /// A duplicate of the client's socket: to look at it, and to shut it down on stop.
    socket: OwnedFd,
    state: Arc<ConnState>,
}

/// The live connections.
#[derive(Default)]
pub(crate) struct Conns {
    map: Mutex<HashMap<ConnId, Entry>>,
}

impl Conns {
    fn map(&self) -> MutexGuard<'_, HashMap<ConnId, Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection, with a duplicate of its socket.
    pub(crate) fn add(&self, id: ConnId, socket: OwnedFd) -> Arc<ConnState> {
        let state = Arc::new(ConnState::default());
        self.map().insert(
            id,
            Entry {
                socket,
                state: state.clone(),
            },
        );
        state
    }

    /// Takes connection `id` out, marking it ended, and returns its session (0 for none);
    /// `None` if it had ended already. Call under the store's mutex (see the module docs).
    pub(crate) fn end(&self, id: ConnId) -> Option<Session> {
        let entry = self.map().remove(&id)?;
        entry.state.ended.store(true, Ordering::Relaxed);
        Some(entry.state.session.load(Ordering::Relaxed))
    }

    /// Shuts every client socket down both ways (the server stops): each client reads
    /// end-of-stream, and each connection's thread ends with its cleanup.
    pub(crate) fn shut_down_all(&self) {
        for e in self.map().values() {
            let _ = crate::sys::fd::shutdown(e.socket.as_fd(), true);
            let _ = crate::sys::fd::shutdown(e.socket.as_fd(), false);
        }
    }

    /// The upgraded connections whose client is gone: its socket readable (end of stream,
    /// or bytes a client on rings never sends) or failing.
    pub(crate) fn hung_up(&self) -> Vec<ConnId> {
        self.map()
            .iter()
            .filter(|(_, e)| e.state.upgraded.load(Ordering::Acquire))
            .filter(|(_, e)| !matches!(peek(e.socket.as_fd(), &mut [0u8; 1]), Ok(Peek::Empty)))
            .map(|(id, _)| *id)
            .collect()
    }
}
