//! What a manager client and its server say to each other.
//!
//! The client writes one [`Frame`] (a [`Request`], after its process's claim changes)
//! and reads one [`Reply`] (a
//! `Result<Answer, Error>`) per frame: strictly one request in flight per connection, so
//! frames never need ids. Values travel already encoded ([`Bytes`]): the server stores bytes
//! and never decodes a user's type, except inside a `modify` or a custom object's handler,
//! which run the client's own code in the server (see `managed.rs`).
//!
//! Everything here is decoded from a peer, so it is bounded by the frame it came in: postcard
//! reads lengths from the input and fails on a short frame before allocating past it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// The object ids a server hands out; 0 is never used.
pub(crate) type ObjectId = u64;

/// A client process's name for the server: random, drawn afresh in a forked child.
pub(crate) type Session = u64;

/// Encoded bytes on the wire: serialized as one byte string, not a sequence of `u8`s
/// (one copy on each side, no per-byte loop).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de [u8]>::deserialize(d).map(Bytes)
    }
}

/// Owned bytes that serialize like [`Bytes`].
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Buf(pub(crate) Vec<u8>);

impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buf({} bytes)", self.0.len())
    }
}

impl Serialize for Buf {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Buf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Buf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Buf, E> {
                Ok(Buf(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Buf, E> {
                Ok(Buf(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A function the client asks the server to run: an offset from the anchor (see
/// `target.rs`) in an executable whose fingerprint must match the server's.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Code {
    pub(crate) offset: i64,
    pub(crate) fingerprint: u64,
}

/// A new object's kind and initial state.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Kind<'a> {
    List,
    Dict,
    Namespace,
    /// A queue of at most this many items (`None`: unbounded).
    Queue(Option<u64>),
    Lock,
    RLock,
    /// A semaphore's initial value, and whether releases may not take it above it.
    Semaphore(u64, bool),
    Condition,
    /// A barrier for this many parties.
    Barrier(u64),
    Event,
    #[serde(borrow)]
    Value(Bytes<'a>),
    /// A fixed-length array of these items.
    Array(#[serde(borrow)] Vec<Bytes<'a>>),
    /// A custom object: its encoded state, and the code that builds and serves it.
    Custom {
        #[serde(borrow)]
        state: Bytes<'a>,
        code: Code,
    },
}

/// A claim on an object that travels inside a serialized proxy (see `handle.rs`).
pub(crate) type Token = u64;

/// A change to the claims of the sending process's session, applied before the request
/// it rides with (see `handle.rs`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum RefOp {
    /// The process let go of this many claims on the object.
    Release(ObjectId, u64),
    /// The process made a proxy from bytes carrying this token (for this object): the
    /// token's claim becomes the process's.
    Convert(Token, ObjectId),
    /// The process made a proxy from bytes carrying this token but already had a claim:
    /// the token's claim is given back.
    Return(Token),
}

/// What a request frame holds: the sending process's claim changes (applied first), the
/// tokens of the proxies serialized into this request's values (their claims pass to the
/// object the request stores into), then the request.
pub(crate) type Frame<'a> = (Vec<RefOp>, Vec<Token>, Request<'a>);

/// One request. `id` names the object the operation applies to.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    /// The first message on a connection: the client process's session and pid; the
    /// answer is the server's instance nonce.
    Hello(Session, u32),
    /// Local connections only: after the answer, the client sends (on the socket, with
    /// their descriptors) the two shared-memory rings that carry every later request and
    /// reply; the socket then only tells either side that the other is gone.
    Upgrade,
    #[serde(borrow)]
    Create(Kind<'a>),
    Len(ObjectId),
    Clear(ObjectId),
    /// The whole list, the dict's keys, values or items, as asked.
    Dump(ObjectId, DumpWhat),
    ListAppend(ObjectId, #[serde(borrow)] Bytes<'a>),
    ListExtend(ObjectId, #[serde(borrow)] Vec<Bytes<'a>>),
    ListGet(ObjectId, u64),
    ListSet(ObjectId, u64, #[serde(borrow)] Bytes<'a>),
    ListInsert(ObjectId, u64, #[serde(borrow)] Bytes<'a>),
    ListRemove(ObjectId, u64),
    ListPop(ObjectId),
    ListModify(ObjectId, u64, Code),
    /// `modify_with`: the index, the encoded argument, the function.
    ListModifyWith(ObjectId, u64, #[serde(borrow)] Bytes<'a>, Code),
    /// The first index of an item equal (by encoding) to this one.
    ListIndex(ObjectId, #[serde(borrow)] Bytes<'a>),
    ListCount(ObjectId, #[serde(borrow)] Bytes<'a>),
    ListReverse(ObjectId),
    /// Sort with the element type's order, which only the client's code knows.
    ListSort(ObjectId, Code),
    /// Items `start..end` (`None`: to the end), clamped to the list as Python's slices are.
    ListSlice(ObjectId, u64, Option<u64>),
    DictGet(ObjectId, #[serde(borrow)] Bytes<'a>),
    DictInsert(
        ObjectId,
        #[serde(borrow)] Bytes<'a>,
        #[serde(borrow)] Bytes<'a>,
    ),
    DictRemove(ObjectId, #[serde(borrow)] Bytes<'a>),
    DictContains(ObjectId, #[serde(borrow)] Bytes<'a>),
    DictModify(ObjectId, #[serde(borrow)] Bytes<'a>, Code),
    /// `modify_with`: the key, the encoded argument, the function.
    DictModifyWith(
        ObjectId,
        #[serde(borrow)] Bytes<'a>,
        #[serde(borrow)] Bytes<'a>,
        Code,
    ),
    DictUpdate(ObjectId, #[serde(borrow)] Vec<(Bytes<'a>, Bytes<'a>)>),
    DictSetDefault(
        ObjectId,
        #[serde(borrow)] Bytes<'a>,
        #[serde(borrow)] Bytes<'a>,
    ),
    /// Remove and return the last entry inserted.
    DictPopItem(ObjectId),
    NsGet(ObjectId, &'a str),
    NsSet(ObjectId, &'a str, #[serde(borrow)] Bytes<'a>),
    /// Add an item, waiting up to this many nanoseconds while the queue is full (`None`:
    /// forever).
    QueuePut(ObjectId, #[serde(borrow)] Bytes<'a>, Option<u64>),
    QueueFull(ObjectId),
    QueueTaskDone(ObjectId),
    /// Wait until every item put was marked done.
    QueueJoin(ObjectId, Option<u64>),
    /// Take the queue's first item, waiting up to this many nanoseconds (`None`: forever).
    QueueGet(ObjectId, Option<u64>),
    /// Acquire the lock, waiting up to this many nanoseconds (`None`: forever).
    LockAcquire(ObjectId, Option<u64>),
    LockRelease(ObjectId),
    RLockAcquire(ObjectId, Option<u64>),
    RLockRelease(ObjectId),
    SemAcquire(ObjectId, Option<u64>),
    SemRelease(ObjectId),
    SemValue(ObjectId),
    CondAcquire(ObjectId, Option<u64>),
    CondRelease(ObjectId),
    /// Release the condition's lock, wait for a notify (up to the deadline), take the lock
    /// back; answers whether it was notified.
    CondWait(ObjectId, Option<u64>),
    /// Wake up to this many waiters (`u64::MAX`: all).
    CondNotify(ObjectId, u64),
    BarrierWait(ObjectId, Option<u64>),
    BarrierAbort(ObjectId),
    BarrierReset(ObjectId),
    /// The barrier's parties, waiting parties, and whether it is broken.
    BarrierState(ObjectId),
    EventSet(ObjectId),
    EventClear(ObjectId),
    EventIsSet(ObjectId),
    EventWait(ObjectId, Option<u64>),
    ValueGet(ObjectId),
    ValueSet(ObjectId, #[serde(borrow)] Bytes<'a>),
    Call(ObjectId, #[serde(borrow)] Bytes<'a>),
    /// Publish a proxy under a name: the name, the proxy's Rust type, the proxy.
    Publish(&'a str, &'a str, #[serde(borrow)] Bytes<'a>),
    /// The proxy published under a name, if it is of this Rust type.
    Lookup(&'a str, &'a str),
    /// Stop the server: carries the owner's token, which only the process that started
    /// the server (or serves it) knows.
    Shutdown(#[serde(borrow)] Bytes<'a>),
    /// A claim on the object for a proxy being serialized; the answer is its token.
    Lend(ObjectId),
    /// How many objects the server holds (for tests and diagnostics).
    ObjectCount,
}

impl Request<'_> {
    /// The object the request applies to (that stores what the request carries).
    pub(crate) fn object(&self) -> Option<ObjectId> {
        use Request as R;
        match self {
            R::Hello(..) | R::Upgrade | R::Create(_) | R::Shutdown(_) | R::ObjectCount => None,
            R::Publish(..) | R::Lookup(..) => None,
            R::Len(id)
            | R::Clear(id)
            | R::Dump(id, _)
            | R::ListAppend(id, _)
            | R::ListExtend(id, _)
            | R::ListGet(id, _)
            | R::ListSet(id, ..)
            | R::ListInsert(id, ..)
            | R::ListRemove(id, _)
            | R::ListPop(id)
            | R::ListModify(id, ..)
            | R::ListModifyWith(id, ..)
            | R::ListIndex(id, _)
            | R::ListCount(id, _)
            | R::ListReverse(id)
            | R::ListSort(id, _)
            | R::ListSlice(id, ..)
            | R::DictGet(id, _)
            | R::DictInsert(id, ..)
            | R::DictRemove(id, _)
            | R::DictContains(id, _)
            | R::DictModify(id, ..)
            | R::DictModifyWith(id, ..)
            | R::DictUpdate(id, _)
            | R::DictSetDefault(id, ..)
            | R::DictPopItem(id)
            | R::NsGet(id, _)
            | R::NsSet(id, ..)
            | R::QueuePut(id, ..)
            | R::QueueFull(id)
            | R::QueueTaskDone(id)
            | R::QueueJoin(id, _)
            | R::QueueGet(id, _)
            | R::LockAcquire(id, _)
            | R::LockRelease(id)
            | R::RLockAcquire(id, _)
            | R::RLockRelease(id)
            | R::SemAcquire(id, _)
            | R::SemRelease(id)
            | R::SemValue(id)
            | R::CondAcquire(id, _)
            | R::CondRelease(id)
            | R::CondWait(id, _)
            | R::CondNotify(id, _)
            | R::BarrierWait(id, _)
            | R::BarrierAbort(id)
            | R::BarrierReset(id)
            | R::BarrierState(id)
            | R::EventSet(id)
            | R::EventClear(id)
            | R::EventIsSet(id)
            | R::EventWait(id, _)
            | R::ValueGet(id)
            | R::ValueSet(id, _)
            | R::Call(id, _)
            | R::Lend(id) => Some(*id),
        }
    }

    /// How long the request may wait in the server, for those that can: `Some(None)` is
    /// forever, `Some(Some(ns))` a deadline; `None` for a request that never waits.
    pub(crate) fn wait(&self) -> Option<Option<u64>> {
        use Request as R;
        match self {
            R::QueueGet(_, w)
            | R::QueuePut(_, _, w)
            | R::QueueJoin(_, w)
            | R::LockAcquire(_, w)
            | R::RLockAcquire(_, w)
            | R::SemAcquire(_, w)
            | R::CondAcquire(_, w)
            | R::CondWait(_, w)
            | R::BarrierWait(_, w)
            | R::EventWait(_, w) => Some(*w),
            _ => None,
        }
    }
}

/// Which part of a list or dict a [`Request::Dump`] asks for.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum DumpWhat {
    Items,
    Keys,
    Values,
}

/// A successful answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Answer {
    Done,
    Id(ObjectId),
    Nonce(u64),
    Bool(bool),
    Len(u64),
    One(Buf),
    Maybe(Option<Buf>),
    Many(Vec<Buf>),
    Pairs(Vec<(Buf, Buf)>),
    Numbers(Vec<u64>),
    Token(Token),
}

/// The two rings of an upgraded connection: requests (client to server), replies.
pub(crate) type Rings = (crate::queue::Queue<Buf>, crate::queue::Queue<Buf>);

/// Bytes in each ring of an upgraded connection: small messages pass in one copy; larger
/// ones stream through.
pub(crate) const RING_BYTES: usize = 64 << 10;

/// What the server sends back for each request.
pub(crate) type Reply = Result<Answer, Error>;

/// Decodes one wire message from exactly `bytes`, borrowing byte strings from it.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> crate::Result<T> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(Error::Codec(format!(
            "{} trailing bytes after a manager message",
            rest.len()
        ))),
        Err(e) => Err(Error::Codec(format!("malformed manager message: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_borrow() {
        let v = [1u8, 2, 3];
        let req = Request::DictInsert(7, Bytes(&v), Bytes(b"xy"));
        let mut buf = Vec::new();
        crate::codec::encode_plain_into(&req, &mut buf).unwrap();
        // A byte string: length then the bytes, not one varint per element.
        assert!(buf.len() <= 1 + 1 + 1 + 3 + 1 + 2);
        match decode::<Request<'_>>(&buf) {
            Ok(Request::DictInsert(7, k, v)) => {
                assert_eq!((k.0, v.0), (&[1, 2, 3][..], &b"xy"[..]))
            }
            other => panic!("{other:?}"),
        }
    }
}
