//! The objects a manager server owns, each kept encoded as clients sent it.
//!
//! Only the store (`store.rs`) holds them, under the server's lock: it reads and changes
//! them on behalf of one request at a time; nothing here blocks or wakes anyone.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};

use super::managed::ServerEntry;
use super::store::ConnId;
use super::wire::ObjectId;
use crate::error::Error;

/// A dict that remembers insertion order.
#[derive(Default)]
pub(super) struct Dict {
    index: HashMap<Vec<u8>, u64>,
    /// Insertion number -> (key, value): iterates in insertion order.
    pub(super) entries: BTreeMap<u64, (Vec<u8>, Vec<u8>)>,
    next: u64,
}

impl Dict {
    pub(super) fn get(&self, k: &[u8]) -> Option<&Vec<u8>> {
        let seq = self.index.get(k)?;
        self.entries.get(seq).map(|(_, v)| v)
    }

    pub(super) fn insert(&mut self, k: &[u8], v: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(seq) = self.index.get(k) {
            let slot = self.entries.get_mut(seq).expect("index and entries agree");
            return Some(std::mem::replace(&mut slot.1, v));
        }
        let seq = self.next;
        self.next += 1;
        self.index.insert(k.to_vec(), seq);
        self.entries.insert(seq, (k.to_vec(), v));
        None
    }

    pub(super) fn remove(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let seq = self.index.remove(k)?;
        self.entries.remove(&seq).map(|(_, v)| v)
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
    }

    /// Removes and returns the entry inserted last (Python's `popitem`).
    pub(super) fn pop_last(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (_, (k, v)) = self.entries.pop_last()?;
        self.index.remove(&k);
        Some((k, v))
    }
}

/// A queue: its items, its bound, and how many items put were not yet marked done.
pub(super) struct Queue {
    pub(super) items: VecDeque<Vec<u8>>,
    /// The tokens of the proxies inside each item (`store/claims.rs`), beside `items`.
    pub(super) tokens: VecDeque<Vec<u64>>,
    pub(super) maxsize: Option<usize>,
    pub(super) unfinished: u64,
}

/// A reentrant lock: its holder and how many times it holds it.
#[derive(Default)]
pub(super) struct RLock {
    pub(super) owner: Option<ConnId>,
    pub(super) count: u64,
}

/// A semaphore's value, and its bound if it is a bounded one.
pub(super) struct Semaphore {
    pub(super) value: u64,
    pub(super) bound: Option<u64>,
}

/// Where one caller of `wait` on a condition is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Waiter {
    /// Released the lock and waits for a notify.
    Sleeping,
    /// Notified (or timed out: `false`), waits to take the lock back.
    Reacquiring { notified: bool },
}

/// A condition: its lock's holder, and its waiters in the order they began waiting (so
/// that `notify(n)` wakes the n longest waiting, and no later waiter overtakes them).
#[derive(Default)]
pub(super) struct Condition {
    pub(super) owner: Option<ConnId>,
    pub(super) order: VecDeque<ConnId>,
    pub(super) waiters: HashMap<ConnId, Waiter>,
}

/// A cyclic barrier. A round ends when `generation` moves on; `epoch` moves on at each
/// `reset`, which breaks the round in progress for its waiters only.
pub(super) struct Barrier {
    pub(super) parties: u64,
    pub(super) count: u64,
    pub(super) generation: u64,
    pub(super) epoch: u64,
    pub(super) broken: bool,
    /// Each waiting caller: (generation, epoch, index) of its arrival.
    pub(super) waiting: HashMap<ConnId, (u64, u64, u64)>,
}

/// One managed object.
pub(super) enum Object {
    List(Vec<Vec<u8>>),
    Dict(Dict),
    Namespace(HashMap<String, Vec<u8>>),
    Queue(Queue),
    /// A lock: which connection holds it.
    Lock(Option<ConnId>),
    RLock(RLock),
    Semaphore(Semaphore),
    Condition(Condition),
    Barrier(Barrier),
    /// A fixed-length array.
    Array(Vec<Vec<u8>>),
    Event(bool),
    Value(Vec<u8>),
    Custom {
        state: Box<dyn Any + Send>,
        entry: ServerEntry,
    },
}

impl Object {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Object::List(_) => "list",
            Object::Dict(_) => "dict",
            Object::Namespace(_) => "namespace",
            Object::Queue(_) => "queue",
            Object::Lock(_) => "lock",
            Object::RLock(_) => "rlock",
            Object::Semaphore(_) => "semaphore",
            Object::Condition(_) => "condition",
            Object::Barrier(_) => "barrier",
            Object::Array(_) => "array",
            Object::Event(_) => "event",
            Object::Value(_) => "value",
            Object::Custom { .. } => "custom object",
        }
    }
}

pub(super) fn wrong_kind(id: ObjectId, o: &Object, want: &str) -> Error {
    Error::ValueError(format!(
        "manager object {id} is a {}, not a {want}",
        o.kind()
    ))
}
