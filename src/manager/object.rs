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
}

/// One managed object.
pub(super) enum Object {
    List(Vec<Vec<u8>>),
    Dict(Dict),
    Namespace(HashMap<String, Vec<u8>>),
    Queue(VecDeque<Vec<u8>>),
    /// A lock: which connection holds it.
    Lock(Option<ConnId>),
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
