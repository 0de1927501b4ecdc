//! Code that runs inside the server: `modify` functions and custom managed types.
//!
//! The server runs the same executable as its owner, so a client names a function the way a
//! parent names a child's target (`target.rs`): the offset of a monomorphized entry from a
//! fixed anchor, with the executable's fingerprint. The server accepts an offset only from
//! a peer that authenticated (every connection does, before its first request) and whose
//! fingerprint is its own — over TCP too: a network peer running another executable is
//! refused, with an error saying so — and only if it names a real server entry record;
//! then it calls the entry with the object's bytes. A custom object's entry is fixed when
//! the object is created, so any client may `call` it: it sends only requests.
//! A panic inside user code is caught and answered as `TaskPanicked` to that caller alone.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::handle::Handle;
use super::wire::{Answer, Bytes, Code, Request};
use crate::codec;
use crate::error::{Error, Result};
use crate::target::{self, Record, Target};

pub(crate) use crate::target::server::{Call, Done, ServerEntry};

/// The code describing an entry record for the wire.
pub(crate) fn code_of(record: &'static Record<ServerEntry>) -> Code {
    Code {
        offset: target::server_entry_offset(record),
        fingerprint: target::fingerprint(),
    }
}

/// The records of the server entries for `(F, T)` and for a managed type `S`: constants
/// in the executable, the only thing a server accepts an offset to (`target/record.rs`).
pub(crate) struct Records<F, T>(PhantomData<fn() -> (F, T)>);

impl<F, T> Records<F, T>
where
    F: Target<(T,), T>,
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// A list's `modify(i, f)`.
    pub(crate) const LIST_MODIFY: &'static Record<ServerEntry> =
        &target::server_record(list_modify_entry::<F, T>);
}

impl<F, V> Records<F, Option<V>>
where
    F: Target<(Option<V>,), V>,
    V: Serialize + DeserializeOwned + Send + 'static,
{
    /// A dict's `modify(k, f)`.
    pub(crate) const DICT_MODIFY: &'static Record<ServerEntry> =
        &target::server_record(dict_modify_entry::<F, V>);
}

/// The records of `modify_with` entries: `F` applied to an element (`T`) and an argument
/// (`A`).
pub(crate) struct WithRecords<F, T, A>(PhantomData<Three<F, T, A>>);

/// Names three types without owning values of them.
type Three<F, T, A> = fn() -> (F, T, A);

impl<F, T, A> WithRecords<F, T, A>
where
    F: Target<(T, A), T>,
    T: Serialize + DeserializeOwned + Send + 'static,
    A: DeserializeOwned + Send + 'static,
{
    /// A list's `modify_with(i, arg, f)`.
    pub(crate) const LIST: &'static Record<ServerEntry> =
        &target::server_record(list_modify_with_entry::<F, T, A>);
}

impl<F, V, A> WithRecords<F, Option<V>, A>
where
    F: Target<(Option<V>, A), V>,
    V: Serialize + DeserializeOwned + Send + 'static,
    A: DeserializeOwned + Send + 'static,
{
    /// A dict's `modify_with(k, arg, f)`.
    pub(crate) const DICT: &'static Record<ServerEntry> =
        &target::server_record(dict_modify_with_entry::<F, V, A>);
}

/// The record of a list's `sort` for elements of type `T`.
pub(crate) struct SortRecord<T>(PhantomData<fn() -> T>);

impl<T: Ord + DeserializeOwned + 'static> SortRecord<T> {
    pub(crate) const LIST: &'static Record<ServerEntry> =
        &target::server_record(list_sort_entry::<T>);
}

impl<S: Managed> Records<S, ()> {
    /// A custom object's builder and handler.
    pub(crate) const CUSTOM: &'static Record<ServerEntry> =
        &target::server_record(custom_entry::<S>);
}

/// The entry `code` names in this executable.
pub(crate) fn entry_of(code: Code) -> Result<ServerEntry> {
    target::server_entry_at(code.offset, code.fingerprint).ok_or(Error::BinaryMismatch)
}

fn guarded<T>(f: impl FnOnce() -> T) -> Result<T> {
    // Quiet: the caller gets the panic; Python's manager server does not print it either.
    target::catch(true, f).map_err(Error::from)
}

fn encode<T: Serialize>(v: &T) -> Result<Done> {
    let mut out = Vec::new();
    codec::encode_plain_into(v, &mut out)?;
    Ok(Done::Bytes(out))
}

fn misused() -> Error {
    Error::ValueError("a server entry was called for the wrong kind of operation".into())
}

/// The entry that runs a list's `modify(i, f)`: `f: fn(T) -> T`.
pub(crate) fn list_modify_entry<F, T>(call: Call<'_>) -> Result<Done>
where
    F: Target<(T,), T>,
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let Call::Modify(Some(bytes)) = call else {
        return Err(misused());
    };
    let old: T = codec::decode_plain(bytes)?;
    let f: F = target::conjure::<F, (T,), T>();
    encode(&guarded(|| f.call((old,)))?)
}

/// The entry that runs a dict's `modify(k, f)`: `f: fn(Option<V>) -> V`.
pub(crate) fn dict_modify_entry<F, V>(call: Call<'_>) -> Result<Done>
where
    F: Target<(Option<V>,), V>,
    V: Serialize + DeserializeOwned + Send + 'static,
{
    let Call::Modify(bytes) = call else {
        return Err(misused());
    };
    let old: Option<V> = bytes.map(codec::decode_plain).transpose()?;
    let f: F = target::conjure::<F, (Option<V>,), V>();
    encode(&guarded(|| f.call((old,)))?)
}

/// The entry that runs a list's `modify_with(i, arg, f)`: `f: fn(T, A) -> T`, given the
/// encoding of `(element, arg)`.
pub(crate) fn list_modify_with_entry<F, T, A>(call: Call<'_>) -> Result<Done>
where
    F: Target<(T, A), T>,
    T: Serialize + DeserializeOwned + Send + 'static,
    A: DeserializeOwned + Send + 'static,
{
    let Call::Modify(Some(bytes)) = call else {
        return Err(misused());
    };
    let (old, arg): (T, A) = codec::decode_plain(bytes)?;
    let f: F = target::conjure::<F, (T, A), T>();
    encode(&guarded(|| f.call((old, arg)))?)
}

/// The entry that runs a dict's `modify_with(k, arg, f)`: `f: fn(Option<V>, A) -> V`,
/// given the encoding of `(value or None, arg)`.
pub(crate) fn dict_modify_with_entry<F, V, A>(call: Call<'_>) -> Result<Done>
where
    F: Target<(Option<V>, A), V>,
    V: Serialize + DeserializeOwned + Send + 'static,
    A: DeserializeOwned + Send + 'static,
{
    let Call::Modify(Some(bytes)) = call else {
        return Err(misused());
    };
    let (old, arg): (Option<V>, A) = codec::decode_plain(bytes)?;
    let f: F = target::conjure::<F, (Option<V>, A), V>();
    encode(&guarded(|| f.call((old, arg)))?)
}

/// The entry that sorts a list: given the encoding of every item as a `Vec<T>`, answers
/// the stable permutation that sorts them (the server moves its bytes accordingly).
pub(crate) fn list_sort_entry<T: Ord + DeserializeOwned + 'static>(call: Call<'_>) -> Result<Done> {
    let Call::Modify(Some(bytes)) = call else {
        return Err(misused());
    };
    let items: Vec<T> = codec::decode_plain(bytes)?;
    let mut order: Vec<u64> = (0..items.len() as u64).collect();
    guarded(|| order.sort_by(|&a, &b| items[a as usize].cmp(&items[b as usize])))?;
    encode(&order)
}

/// A type whose values live in a manager's server and answer requests: Python's
/// `BaseManager.register`, typed. Create one with [`Manager::create`](super::Manager::create)
/// and talk to it through the [`Proxy`] it returns; `handle` runs in the server, one request
/// at a time, so it needs no locking.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Counter { n: u64 }
///
/// #[derive(Serialize, Deserialize)]
/// enum Op { Add(u64), Get }
///
/// impl mproc::Managed for Counter {
///     type Request = Op;
///     type Response = u64;
///     fn handle(&mut self, op: Op) -> u64 {
///         if let Op::Add(k) = op { self.n += k }
///         self.n
///     }
/// }
///
/// fn work(c: mproc::Proxy<Counter>) -> mproc::Result<u64> { c.call(Op::Add(5)) }
///
/// let manager = mproc::Manager::start()?;
/// let counter = manager.create(Counter { n: 1 })?;
/// mproc::spawn(work, (counter.clone(),))?.result()??;
/// assert_eq!(counter.call(Op::Get)?, 6);
/// # Ok(()) }
/// ```
pub trait Managed: Serialize + DeserializeOwned + Send + 'static {
    /// What a client may ask.
    type Request: Serialize + DeserializeOwned + Send;
    /// What the object answers.
    type Response: Serialize + DeserializeOwned + Send;
    /// Serves one request, in the server.
    fn handle(&mut self, request: Self::Request) -> Self::Response;
}

/// The entry that builds and serves a custom object of type `S`.
pub(crate) fn custom_entry<S: Managed>(call: Call<'_>) -> Result<Done> {
    match call {
        Call::Create(bytes) => {
            let state: S = codec::decode_plain(bytes)?;
            Ok(Done::State(Box::new(state)))
        }
        Call::Handle(state, bytes) => {
            let state = state.downcast_mut::<S>().ok_or_else(misused)?;
            let request: S::Request = codec::decode_plain(bytes)?;
            encode(&guarded(|| state.handle(request))?)
        }
        Call::Modify(_) => Err(misused()),
    }
}

/// A proxy to a custom [`Managed`] object in a manager's server. Clone it, send it to
/// children in arguments or messages; every [`call`](Proxy::call) is one round trip.
pub struct Proxy<S> {
    pub(crate) handle: Handle,
    _type: PhantomData<fn(S) -> S>,
}

impl<S: Managed> Proxy<S> {
    pub(crate) fn from_handle(handle: Handle) -> Self {
        Proxy {
            handle,
            _type: PhantomData,
        }
    }

    /// Sends `request` to the object and returns its response. A panic in `handle` comes
    /// back as `Err(TaskPanicked)` (the object stays, as the panic left it).
    pub fn call(&self, request: S::Request) -> Result<S::Response> {
        let mut buf = Vec::new();
        codec::encode_plain_into(&request, &mut buf)?;
        match self
            .handle
            .call(&Request::Call(self.handle.id, Bytes(&buf)))?
        {
            Answer::One(b) => codec::decode_plain(&b.0),
            other => Err(super::handle::unexpected(other)),
        }
    }
}

impl<S> Clone for Proxy<S> {
    fn clone(&self) -> Self {
        Proxy {
            handle: self.handle.clone(),
            _type: PhantomData,
        }
    }
}

impl<S> fmt::Debug for Proxy<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("type", &std::any::type_name::<S>())
            .field("handle", &self.handle)
            .finish()
    }
}

impl<S> Serialize for Proxy<S> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> std::result::Result<Ser::Ok, Ser::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, S> Deserialize<'de> for Proxy<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Proxy {
            handle: Handle::deserialize(d)?,
            _type: PhantomData,
        })
    }
}
