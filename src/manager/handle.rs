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
//! Lifetime (Python's reference counting; the server side is `store/claims.rs`). A process
//! holds one claim per object it has proxies to: a [`Life`], shared by every proxy to the
//! object in the process, clones and decoded copies alike (a clone is an `Arc` increment:
//! no message). The creator's claim comes with `Create`. Serializing a proxy asks the
//! server for a token (`Lend`, one round trip), a claim the bytes carry; decoding them
//! turns it into the decoding process's claim (`Convert`) or, if that process has one
//! already, gives it back (`Return`). When the last proxy to an object in a process goes,
//! its claim is given back (`Release`). Those changes queue on the [`ServerRef`] and ride
//! on the process's next request to the server, in order (`client.rs`); the server frees
//! an object when no claim is left, so no claim is ever given back before the ones that
//! depend on it arrived. A process that dies gives back its claims through the server
//! (its session ends).
use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::{self, ServerRef};
use super::wire::{Answer, Buf, ObjectId, RefOp, Request, Token};
use crate::connection::Address;
use crate::error::{Error, Result};

/// A proxy's server and object.
#[derive(Clone)]
pub(crate) struct Handle {
    pub(crate) server: Arc<ServerRef>,
    pub(crate) id: ObjectId,
    /// This process's claim on the object.
    pub(crate) _claim: Option<Arc<Life>>,
}

/// A process's claim on an object, shared by all its proxies to it; dropping the last
/// proxy gives it back.
pub(crate) struct Life {
    server: Arc<ServerRef>,
    id: ObjectId,
    /// The process holding the claim: a child made by `fork` inherits a copy of this
    /// memory, and must not give back what its parent holds.
    pid: u32,
}

impl Life {
    /// The claim `Create` gave this process on a new object.
    pub(crate) fn new(server: &Arc<ServerRef>, id: ObjectId) -> Arc<Life> {
        let life = Arc::new(Life {
            server: server.clone(),
            id,
            pid: crate::sys::pid::current(),
        });
        server.claims().lives.insert(id, Arc::downgrade(&life));
        life
    }

    /// The claim for a proxy decoded from bytes carrying `token`: this process's, if it
    /// has one (then the token's claim is given back), or the token's made its own.
    fn decoded(server: &Arc<ServerRef>, id: ObjectId, token: Token) -> Arc<Life> {
        let mut claims = server.claims();
        if let Some(life) = claims.lives.get(&id).and_then(Weak::upgrade) {
            claims.ops.push(RefOp::Return(token));
            return life;
        }
        let life = Arc::new(Life {
            server: server.clone(),
            id,
            pid: crate::sys::pid::current(),
        });
        claims.lives.insert(id, Arc::downgrade(&life));
        claims.ops.push(RefOp::Convert(token, id));
        life
    }
}

impl Drop for Life {
    fn drop(&mut self) {
        if crate::sys::pid::current() != self.pid {
            return;
        }
        let mut claims = self.server.claims();
        claims.ops.push(RefOp::Release(self.id, 1));
        // Unless a newer claim took its place meanwhile.
        if claims
            .lives
            .get(&self.id)
            .is_some_and(|l| l.strong_count() == 0)
        {
            claims.lives.remove(&self.id);
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
    /// The claim the bytes carry (0: none).
    token: Token,
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
        // The bytes may outlive every proxy here: they carry a claim of their own.
        let token = client::lend(&self.server, self.id).map_err(serde::ser::Error::custom)?;
        client::note_embedded(token);
        Wire {
            address: self.server.address.clone(),
            authkey: Buf(self.server.authkey.clone()),
            nonce: self.server.nonce,
            id: self.id,
            token,
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
        let life = (w.token != 0).then(|| Life::decoded(&server, w.id, w.token));
        Ok(Handle {
            server,
            id: w.id,
            _claim: life,
        })
    }
}
