//! The server's objects, and what each request does to them.
//!
//! The store keeps every value encoded, exactly as a client sent it: the server never needs
//! a user's types, except inside `modify` and custom handlers (`managed.rs`). Dict keys are
//! compared by their encoding (equal keys encode equally for the types a key may be), and
//! iterate in insertion order, as Python's dicts do. An object lives while anything holds
//! a claim on it (`store/claims.rs`).
//!
//! [`Store::apply`] never blocks: a `get` on an empty queue, an `acquire` of a held lock or
//! a `wait` on a clear event answers `None`, and the connection's thread waits on the
//! server's condition variable and asks again (`server.rs`). Operations that can let such a
//! waiter proceed set [`Store::wake`].

use std::collections::HashMap;

use super::managed::{Call, Done, ServerEntry, entry_of};
use super::object::{Dict, Object, wrong_kind};
use super::wire::{self, Answer, Buf, Code, DumpWhat, Kind, ObjectId, Reply, Request, Session};
use crate::error::Error;

mod claims;
mod containers;
mod sync;

/// The server's name for a client connection (the owner of a held lock).
pub(crate) type ConnId = u64;

/// Who is asking: the connection, and whether it came over the network.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caller {
    pub(crate) conn: ConnId,
    pub(crate) remote: bool,
    /// The client process's session (`claims.rs`); 0 before its `Hello`.
    pub(crate) session: Session,
}

/// Every object of one server.
#[derive(Default)]
pub(crate) struct Store {
    objects: HashMap<ObjectId, Object>,
    last_id: ObjectId,
    /// Published proxies: name -> (the proxy's Rust type, the proxy).
    names: HashMap<String, (String, Vec<u8>)>,
    /// Set when an operation may let a waiting caller proceed.
    pub(crate) wake: bool,
    claims: claims::Claims,
    /// The tokens inside the value of the request being applied (a queue keeps them with
    /// the item: `store/claims.rs`).
    pub(crate) arriving: Vec<wire::Token>,
}

fn out_of_range(i: u64, len: usize) -> Error {
    Error::ValueError(format!("list index {i} out of range (length {len})"))
}

fn one(v: &[u8]) -> Reply {
    Ok(Answer::One(Buf(v.to_vec())))
}

fn maybe(v: Option<Vec<u8>>) -> Reply {
    Ok(Answer::Maybe(v.map(Buf)))
}

/// Runs a `modify` entry on an element.
fn run_modify(code: Code, caller: Caller, old: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    let entry = trusted_entry(code, caller)?;
    match entry(Call::Modify(old))? {
        Done::Bytes(b) => Ok(b),
        Done::State(_) => Err(Error::ValueError("modify returned a state".into())),
    }
}

/// The entry `code` names, if this caller may name code at all: a local client, or a
/// network peer that authenticated (every connection did: the handshake comes first) and
/// runs this very executable. The offset must still name a real server entry record
/// (`target/record.rs`), so a peer can only pick among this executable's entries.
fn trusted_entry(code: Code, caller: Caller) -> Result<ServerEntry, Error> {
    if caller.remote && code.fingerprint != crate::target::fingerprint() {
        return Err(Error::ValueError(
            "modify, modify_with, sort and custom types over TCP need a peer that \
             authenticated and runs the same executable as the server: this peer \
             authenticated, but runs a different executable"
                .into(),
        ));
    }
    entry_of(code)
}

impl Store {
    fn get(&mut self, id: ObjectId) -> Result<&mut Object, Error> {
        self.objects
            .get_mut(&id)
            .ok_or_else(|| Error::ValueError(format!("no manager object with id {id}")))
    }

    fn list(&mut self, id: ObjectId) -> Result<&mut Vec<Vec<u8>>, Error> {
        match self.get(id)? {
            Object::List(l) => Ok(l),
            o => Err(wrong_kind(id, o, "list")),
        }
    }

    fn dict(&mut self, id: ObjectId) -> Result<&mut Dict, Error> {
        match self.get(id)? {
            Object::Dict(d) => Ok(d),
            o => Err(wrong_kind(id, o, "dict")),
        }
    }

    fn create(&mut self, kind: &Kind<'_>, caller: Caller) -> Result<ObjectId, Error> {
        let object = match kind {
            Kind::List => Object::List(Vec::new()),
            Kind::Dict => Object::Dict(Dict::default()),
            Kind::Namespace => Object::Namespace(HashMap::new()),
            Kind::Queue(maxsize) => sync::queue(*maxsize),
            Kind::Lock => Object::Lock(None),
            Kind::RLock => Object::RLock(Default::default()),
            Kind::Semaphore(n, bounded) => sync::semaphore(*n, *bounded),
            Kind::Condition => sync::condition(),
            Kind::Barrier(parties) => sync::barrier(*parties)?,
            Kind::Event => Object::Event(false),
            Kind::Value(v) => Object::Value(v.0.to_vec()),
            Kind::Array(items) => Object::Array(items.iter().map(|v| v.0.to_vec()).collect()),
            Kind::Custom { state, code } => {
                let entry = trusted_entry(*code, caller)?;
                match entry(Call::Create(state.0))? {
                    Done::State(state) => Object::Custom { state, entry },
                    Done::Bytes(_) => {
                        return Err(Error::ValueError("custom entry built no state".into()));
                    }
                }
            }
        };
        self.last_id += 1;
        self.objects.insert(self.last_id, object);
        self.claim_new(caller.session, self.last_id);
        Ok(self.last_id)
    }

    /// Does `req`; `None` when it must wait (a blocking get, acquire or wait).
    pub(crate) fn apply(&mut self, req: &Request<'_>, caller: Caller) -> Option<Reply> {
        match self.try_apply(req, caller) {
            Ok(Some(a)) => Some(Ok(a)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn try_apply(&mut self, req: &Request<'_>, caller: Caller) -> Result<Option<Answer>, Error> {
        use Request as R;
        let answer = match req {
            R::Hello(..) | R::Upgrade | R::Shutdown(_) => Answer::Done,
            R::Lend(id) => Answer::Token(self.lend(*id)?),
            R::ObjectCount => Answer::Len(self.objects.len() as u64),
            R::Create(kind) => Answer::Id(self.create(kind, caller)?),
            R::Len(id) => Answer::Len(match self.get(*id)? {
                Object::List(l) | Object::Array(l) => l.len(),
                Object::Dict(d) => d.len(),
                Object::Queue(q) => q.items.len(),
                Object::Namespace(n) => n.len(),
                o => return Err(wrong_kind(*id, o, "list, dict or queue")),
            } as u64),
            R::Clear(id) => {
                match self.get(*id)? {
                    Object::List(l) => l.clear(),
                    Object::Dict(d) => d.clear(),
                    Object::Queue(q) => {
                        // Their tokens stay held by the queue (until it is freed).
                        q.items.clear();
                        q.tokens.clear();
                    }
                    Object::Namespace(n) => n.clear(),
                    o => return Err(wrong_kind(*id, o, "list, dict or queue")),
                }
                Answer::Done
            }
            R::Dump(id, what) => match (self.get(*id)?, what) {
                (Object::List(l) | Object::Array(l), _) => {
                    Answer::Many(l.iter().map(|v| Buf(v.clone())).collect())
                }
                (Object::Dict(d), DumpWhat::Items) => Answer::Pairs(
                    d.entries
                        .values()
                        .map(|(k, v)| (Buf(k.clone()), Buf(v.clone())))
                        .collect(),
                ),
                (Object::Dict(d), DumpWhat::Keys) => {
                    Answer::Many(d.entries.values().map(|(k, _)| Buf(k.clone())).collect())
                }
                (Object::Dict(d), DumpWhat::Values) => {
                    Answer::Many(d.entries.values().map(|(_, v)| Buf(v.clone())).collect())
                }
                (o, _) => return Err(wrong_kind(*id, o, "list or dict")),
            },
            R::ListAppend(id, v) => {
                self.list(*id)?.push(v.0.to_vec());
                Answer::Done
            }
            R::ListExtend(id, vs) => {
                self.list(*id)?.extend(vs.iter().map(|v| v.0.to_vec()));
                Answer::Done
            }
            R::ListGet(id, i) => {
                let l = self.items(*id)?;
                Answer::Maybe(
                    usize::try_from(*i)
                        .ok()
                        .and_then(|i| l.get(i))
                        .map(|v| Buf(v.clone())),
                )
            }
            R::ListSet(id, i, v) => {
                let l = self.items(*id)?;
                let len = l.len();
                let slot = usize::try_from(*i).ok().and_then(|i| l.get_mut(i));
                *slot.ok_or_else(|| out_of_range(*i, len))? = v.0.to_vec();
                Answer::Done
            }
            R::ListInsert(id, i, v) => {
                // As Python's list.insert: an index past the end appends.
                let l = self.list(*id)?;
                let at = usize::try_from(*i).unwrap_or(usize::MAX).min(l.len());
                l.insert(at, v.0.to_vec());
                Answer::Done
            }
            R::ListRemove(id, i) => {
                let l = self.list(*id)?;
                match usize::try_from(*i) {
                    Ok(at) if at < l.len() => Answer::One(Buf(l.remove(at))),
                    _ => return Err(out_of_range(*i, l.len())),
                }
            }
            R::ListPop(id) => Answer::Maybe(self.list(*id)?.pop().map(Buf)),
            R::ListModify(id, i, code) => {
                let l = self.list(*id)?;
                let len = l.len();
                let slot = usize::try_from(*i).ok().and_then(|i| l.get_mut(i));
                let slot = slot.ok_or_else(|| out_of_range(*i, len))?;
                let new = run_modify(*code, caller, Some(slot))?;
                slot.clone_from(&new);
                Answer::One(Buf(new))
            }
            R::DictGet(id, k) => return one_or_none(self.dict(*id)?.get(k.0)),
            R::DictInsert(id, k, v) => {
                return maybe(self.dict(*id)?.insert(k.0, v.0.to_vec())).map(Some);
            }
            R::DictRemove(id, k) => Answer::Maybe(self.dict(*id)?.remove(k.0).map(Buf)),
            R::DictContains(id, k) => Answer::Bool(self.dict(*id)?.get(k.0).is_some()),
            R::DictModify(id, k, code) => {
                let d = self.dict(*id)?;
                let new = run_modify(*code, caller, d.get(k.0).map(Vec::as_slice))?;
                d.insert(k.0, new.clone());
                Answer::One(Buf(new))
            }
            R::NsGet(id, name) => match self.get(*id)? {
                Object::Namespace(n) => Answer::Maybe(n.get(*name).map(|v| Buf(v.clone()))),
                o => return Err(wrong_kind(*id, o, "namespace")),
            },
            R::NsSet(id, name, v) => match self.get(*id)? {
                Object::Namespace(n) => {
                    n.insert(name.to_string(), v.0.to_vec());
                    Answer::Done
                }
                o => return Err(wrong_kind(*id, o, "namespace")),
            },
            R::QueuePut(..)
            | R::QueueGet(..)
            | R::QueueFull(_)
            | R::QueueTaskDone(_)
            | R::QueueJoin(..)
            | R::RLockAcquire(..)
            | R::RLockRelease(_)
            | R::SemAcquire(..)
            | R::SemRelease(_)
            | R::SemValue(_)
            | R::CondAcquire(..)
            | R::CondRelease(_)
            | R::CondWait(..)
            | R::CondNotify(..)
            | R::BarrierWait(..)
            | R::BarrierAbort(_)
            | R::BarrierReset(_)
            | R::BarrierState(_) => return self.apply_sync(req, caller),
            R::ListModifyWith(..)
            | R::ListIndex(..)
            | R::ListCount(..)
            | R::ListReverse(_)
            | R::ListSort(..)
            | R::ListSlice(..)
            | R::DictModifyWith(..)
            | R::DictUpdate(..)
            | R::DictSetDefault(..)
            | R::DictPopItem(_) => return self.apply_containers(req, caller),
            R::LockAcquire(id, _) => match self.get(*id)? {
                Object::Lock(owner @ None) => {
                    *owner = Some(caller.conn);
                    Answer::Bool(true)
                }
                Object::Lock(Some(holder)) if *holder == caller.conn => {
                    return Err(Error::ValueError(
                        "this thread already holds the manager lock: acquiring it again \
                         would deadlock"
                            .into(),
                    ));
                }
                Object::Lock(Some(_)) => return Ok(None),
                o => return Err(wrong_kind(*id, o, "lock")),
            },
            R::LockRelease(id) => match self.get(*id)? {
                Object::Lock(owner) if *owner == Some(caller.conn) => {
                    *owner = None;
                    self.wake = true;
                    Answer::Done
                }
                Object::Lock(None) => {
                    return Err(Error::ValueError(
                        "release of an unlocked manager lock".into(),
                    ));
                }
                // Only its holder's connection releases a lock: a stray release must not
                // break another process's mutual exclusion.
                Object::Lock(Some(_)) => {
                    return Err(Error::ValueError(
                        "release of a manager lock held by another thread or process".into(),
                    ));
                }
                o => return Err(wrong_kind(*id, o, "lock")),
            },
            R::EventSet(id) | R::EventClear(id) => match self.get(*id)? {
                Object::Event(flag) => {
                    *flag = matches!(req, R::EventSet(_));
                    self.wake = true;
                    Answer::Done
                }
                o => return Err(wrong_kind(*id, o, "event")),
            },
            R::EventIsSet(id) | R::EventWait(id, _) => match self.get(*id)? {
                Object::Event(flag) => {
                    if !*flag && matches!(req, R::EventWait(..)) {
                        return Ok(None);
                    }
                    Answer::Bool(*flag)
                }
                o => return Err(wrong_kind(*id, o, "event")),
            },
            R::ValueGet(id) => match self.get(*id)? {
                Object::Value(v) => return one(v).map(Some),
                o => return Err(wrong_kind(*id, o, "value")),
            },
            R::ValueSet(id, new) => match self.get(*id)? {
                Object::Value(v) => {
                    v.clear();
                    v.extend_from_slice(new.0);
                    Answer::Done
                }
                o => return Err(wrong_kind(*id, o, "value")),
            },
            R::Call(id, request) => match self.get(*id)? {
                Object::Custom { state, entry } => {
                    match entry(Call::Handle(state.as_mut(), request.0))? {
                        Done::Bytes(b) => Answer::One(Buf(b)),
                        Done::State(_) => {
                            return Err(Error::ValueError("a handler returned a state".into()));
                        }
                    }
                }
                o => return Err(wrong_kind(*id, o, "custom object")),
            },
            R::Publish(name, ty, proxy) => {
                self.names
                    .insert(name.to_string(), (ty.to_string(), proxy.0.to_vec()));
                Answer::Done
            }
            R::Lookup(name, want) => match self.names.get(*name) {
                Some((ty, p)) if ty == want => Answer::One(Buf(p.clone())),
                // Decoding one proxy as another would answer with the wrong object's data
                // (a queue read as a dict has a length): refuse, naming both types.
                Some((ty, _)) => {
                    return Err(Error::ValueError(format!(
                        "the proxy published under {name:?} is a {ty}, not a {want}"
                    )));
                }
                None => {
                    return Err(Error::ValueError(format!(
                        "no proxy is published under the name {name:?}"
                    )));
                }
            },
        };
        Ok(Some(answer))
    }
}

fn one_or_none(v: Option<&Vec<u8>>) -> Result<Option<Answer>, Error> {
    Ok(Some(Answer::Maybe(v.map(|v| Buf(v.clone())))))
}

#[cfg(test)]
mod tests;
