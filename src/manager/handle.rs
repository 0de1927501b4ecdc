//! What every proxy is underneath: its server and its object's id, as a serde value.
//!
//! A handle serializes as (address, authkey, server nonce, object id): plain data, no
//! descriptors, so a proxy travels in a child's arguments under every start method, in
//! messages on pipes and queues, and inside other managed objects. The receiving process
//! opens its own connection on first use (`client.rs`). A handle decoded by
//! [`Manager::lookup`](super::Manager::lookup) is re-pointed at the address the looking-up
//! manager reached the server by, since the address the server bound (say `0.0.0.0:50000`)
//! need not be one a remote client can reach.
//!
//! Lifetime. The handle a `Manager` creates carries a [`Life`], shared by all its clones
//! in this process (a clone is an `Arc` increment: no message). When the last clone goes
//! and the handle never left the process (it was never serialized: not passed to a child,
//! sent in a message, stored in another object or published), nobody else can name the
//! object, so the process queues its id on its [`ServerRef`], and the next request this
//! process sends to that server carries it (`client.rs`): the server frees the object
//! before it applies the request. A handle that was serialized even once is never
//! released by its creator; its object lives until the server stops, as before. (So
//! freeing never races with a proxy in transit: whatever was serialized is kept.)

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::{self, ServerRef};
use super::wire::{Answer, Buf, ObjectId, Request};
use crate::connection::Address;
use crate::error::{Error, Result};

/// A proxy's server and object.
#[derive(Clone)]
pub(crate) struct Handle {
    pub(crate) server: Arc<ServerRef>,
    pub(crate) id: ObjectId,
    /// Set on the handles a `Manager` created in this process (and their clones).
    pub(crate) life: Option<Arc<Life>>,
}

/// The creating process's claim on an object: released when the last clone of the
/// creating handle is dropped, unless the handle was ever serialized.
pub(crate) struct Life {
    server: Arc<ServerRef>,
    id: ObjectId,
    /// The creating process: a child made by `fork` inherits a copy of this memory, and
    /// must not release what its parent holds.
    pid: u32,
    escaped: AtomicBool,
}

impl Life {
    pub(crate) fn new(server: &Arc<ServerRef>, id: ObjectId) -> Arc<Life> {
        Arc::new(Life {
            server: server.clone(),
            id,
            pid: crate::sys::pid::current(),
            escaped: AtomicBool::new(false),
        })
    }
}

impl Drop for Life {
    fn drop(&mut self) {
        if !self.escaped.load(Ordering::Relaxed) && crate::sys::pid::current() == self.pid {
            self.server.release_later(self.id);
        }
    }
}

impl Handle {
    /// A round trip for a call that does not wait.
    pub(crate) fn call(&self, req: &Request<'_>) -> Result<Answer> {
        client::call(&self.server, req, None)
    }

    /// A round trip for a call the server may hold up to `wait` (`None`: forever).
    pub(crate) fn call_waiting(&self, req: &Request<'_>, wait: Option<Duration>) -> Result<Answer> {
        client::call(&self.server, req, Some(wait))
    }
}

/// The error for an answer of the wrong shape (a server of another version, or a proxy
/// decoded as the wrong type).
pub(crate) fn unexpected(a: Answer) -> Error {
    Error::Codec(format!("unexpected answer from the manager: {a:?}"))
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.server.address, self.id)
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    address: Address,
    authkey: Buf,
    nonce: u64,
    id: ObjectId,
}

thread_local! {
    /// While `lookup` decodes, the server every decoded handle is re-pointed at.
    static REBASE: RefCell<Option<Arc<ServerRef>>> = const { RefCell::new(None) };
}

/// Runs `f` with handles decoded on this thread re-pointed at `server` (when they name the
/// same server instance).
pub(crate) fn rebased<T>(server: &Arc<ServerRef>, f: impl FnOnce() -> T) -> T {
    let previous = REBASE.with(|r| r.borrow_mut().replace(server.clone()));
    let out = f();
    REBASE.with(|r| *r.borrow_mut() = previous);
    out
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // Once its bytes exist, another process may hold the object: never release it.
        if let Some(life) = &self.life {
            life.escaped.store(true, Ordering::Relaxed);
        }
        Wire {
            address: self.server.address.clone(),
            authkey: Buf(self.server.authkey.clone()),
            nonce: self.server.nonce,
            id: self.id,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let rebase = REBASE.with(|r| r.borrow().clone());
        let server = match rebase {
            Some(s) if s.nonce == w.nonce => s,
            _ => ServerRef::new(w.address, w.authkey.0, w.nonce),
        };
        Ok(Handle {
            server,
            id: w.id,
            life: None,
        })
    }
}
