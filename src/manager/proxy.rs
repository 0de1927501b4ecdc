//! Proxies to a manager's lists, dicts, namespaces and values.
//!
//! Each proxy is a [`Handle`] and a type: the client encodes values with the crate's codec,
//! the server stores the bytes, and every method is one round trip on the thread's
//! connection to the server (`client.rs`), returning `Result`.

use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::handle::{Handle, unexpected};
use super::managed::{Records, code_of};
use super::wire::{Answer, Buf, Bytes, DumpWhat, Request};
use crate::codec;
use crate::error::Result;
use crate::target::Target;

mod parity;
pub use self::parity::ArrayProxy;

/// Encodes a value for the server.
/// Encodes a value for the server. Proxies inside it pass their claims to the object the
/// next request stores into (`client::collecting`).
pub(crate) fn enc<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    super::client::collecting(|| codec::encode_plain_into(v, &mut buf))?;
    Ok(buf)
}

pub(crate) fn dec<T: DeserializeOwned>(b: &Buf) -> Result<T> {
    codec::decode_plain(&b.0)
}

pub(crate) fn done(a: Answer) -> Result<()> {
    match a {
        Answer::Done => Ok(()),
        a => Err(unexpected(a)),
    }
}

pub(crate) fn len(a: Answer) -> Result<usize> {
    match a {
        Answer::Len(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        a => Err(unexpected(a)),
    }
}

pub(crate) fn boolean(a: Answer) -> Result<bool> {
    match a {
        Answer::Bool(b) => Ok(b),
        a => Err(unexpected(a)),
    }
}

pub(crate) fn one<T: DeserializeOwned>(a: Answer) -> Result<T> {
    match a {
        Answer::One(b) => dec(&b),
        a => Err(unexpected(a)),
    }
}

pub(crate) fn maybe<T: DeserializeOwned>(a: Answer) -> Result<Option<T>> {
    match a {
        Answer::Maybe(b) => b.as_ref().map(dec).transpose(),
        a => Err(unexpected(a)),
    }
}

pub(crate) fn many<T: DeserializeOwned>(a: Answer) -> Result<Vec<T>> {
    match a {
        Answer::Many(v) => v.iter().map(dec).collect(),
        a => Err(unexpected(a)),
    }
}

/// Implements Clone, Debug and serde for a proxy type `$name<..>` with fields `handle` and
/// `_type`.
macro_rules! proxy_traits {
    ($name:ident<$($p:ident),*>) => {
        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                $name { handle: self.handle.clone(), _type: ::std::marker::PhantomData }
            }
        }
        impl<$($p),*> ::std::fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.handle)
            }
        }
        impl<$($p),*> ::serde::Serialize for $name<$($p),*> {
            fn serialize<Ser: ::serde::Serializer>(
                &self,
                s: Ser,
            ) -> ::std::result::Result<Ser::Ok, Ser::Error> {
                self.handle.serialize(s)
            }
        }
        impl<'de, $($p),*> ::serde::Deserialize<'de> for $name<$($p),*> {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                Ok($name {
                    handle: $crate::manager::handle::Handle::deserialize(d)?,
                    _type: ::std::marker::PhantomData,
                })
            }
        }
        impl<$($p),*> $name<$($p),*> {
            pub(crate) fn from_handle(handle: $crate::manager::handle::Handle) -> Self {
                $name { handle, _type: ::std::marker::PhantomData }
            }
        }
    };
}
pub(crate) use proxy_traits;

/// A list in a manager's server (Python's `manager.list()`), shared by every process that
/// holds a clone of this proxy.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn add(l: mproc::ListProxy<u32>, x: u32) -> mproc::Result<()> { l.append(&x) }
///
/// let manager = mproc::Manager::start()?;
/// let l = manager.list()?;
/// mproc::spawn(add, (l.clone(), 7))?.result()??;
/// l.modify(0, |x: u32| x * 6)?; // runs in the server, atomically
/// assert_eq!(l.to_vec()?, [42]);
/// # Ok(()) }
/// ```
pub struct ListProxy<T> {
    handle: Handle,
    _type: PhantomData<fn(T) -> T>,
}
proxy_traits!(ListProxy<T>);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    fn id(&self) -> u64 {
        self.handle.id
    }

    /// The number of items.
    pub fn len(&self) -> Result<usize> {
        len(self.handle.call(&Request::Len(self.id()))?)
    }

    /// Whether the list has no items.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Appends `v`.
    pub fn append(&self, v: &T) -> Result<()> {
        done(
            self.handle
                .call(&Request::ListAppend(self.id(), Bytes(&enc(v)?)))?,
        )
    }

    /// Appends every item of `v`, in one round trip.
    pub fn extend(&self, v: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<Vec<u8>> = v.into_iter().map(|x| enc(&x)).collect::<Result<_>>()?;
        let items = items.iter().map(|b| Bytes(b)).collect();
        done(self.handle.call(&Request::ListExtend(self.id(), items))?)
    }

    /// The item at `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Result<Option<T>> {
        maybe(self.handle.call(&Request::ListGet(self.id(), i as u64))?)
    }

    /// Replaces the item at `i`; `Err(ValueError)` past the end.
    pub fn set(&self, i: usize, v: &T) -> Result<()> {
        done(
            self.handle
                .call(&Request::ListSet(self.id(), i as u64, Bytes(&enc(v)?)))?,
        )
    }

    /// Inserts `v` before index `i` (at the end if `i` is past it, as Python's `insert`).
    pub fn insert(&self, i: usize, v: &T) -> Result<()> {
        done(
            self.handle
                .call(&Request::ListInsert(self.id(), i as u64, Bytes(&enc(v)?)))?,
        )
    }

    /// Removes and returns the item at `i`; `Err(ValueError)` past the end.
    pub fn remove(&self, i: usize) -> Result<T> {
        one(self
            .handle
            .call(&Request::ListRemove(self.id(), i as u64))?)
    }

    /// Removes and returns the last item, `None` if the list is empty.
    pub fn pop(&self) -> Result<Option<T>> {
        maybe(self.handle.call(&Request::ListPop(self.id()))?)
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<()> {
        done(self.handle.call(&Request::Clear(self.id()))?)
    }

    /// A copy of the whole list.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        many(
            self.handle
                .call(&Request::Dump(self.id(), DumpWhat::Items))?,
        )
    }

    /// Replaces the item at `i` with `f(item)` inside the server, atomically with respect to
    /// every other call, and returns the new item. `f` is a fn item or a closure that
    /// captures nothing (checked at compile time); the server runs this same executable and
    /// finds it as a child finds its target. `Err(ValueError)` past the end; a panic in `f`
    /// is `Err(TaskPanicked)` and leaves the item as it was. Over TCP, only for a peer
    /// running the server's executable (otherwise `Err(ValueError)` says so).
    pub fn modify<F>(&self, i: usize, f: F) -> Result<T>
    where
        F: Target<(T,), T>,
        T: Send + 'static,
    {
        let _ = f;
        let entry = Records::<F, T>::LIST_MODIFY;
        one(self
            .handle
            .call(&Request::ListModify(self.id(), i as u64, code_of(entry)))?)
    }
}

/// Invariant in `K` and `V`, and `Send + Sync` whatever they are.
type KeyValue<K, V> = fn(K, V) -> (K, V);

/// A dict in a manager's server (Python's `manager.dict()`). Keys are compared by their
/// encoding and iterate in insertion order.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn count(d: mproc::DictProxy<String, u64>, word: String) -> mproc::Result<u64> {
///     d.modify(word, |c: Option<u64>| c.unwrap_or(0) + 1) // atomic: no lost updates
/// }
/// let manager = mproc::Manager::start()?;
/// let d = manager.dict()?;
/// let a = mproc::spawn(count, (d.clone(), "hi".to_string()))?;
/// let b = mproc::spawn(count, (d.clone(), "hi".to_string()))?;
/// a.result()??;
/// b.result()??;
/// assert_eq!(d.get(&"hi".to_string())?, Some(2));
/// # Ok(()) }
/// ```
pub struct DictProxy<K, V> {
    handle: Handle,
    _type: PhantomData<KeyValue<K, V>>,
}
proxy_traits!(DictProxy<K, V>);

impl<K, V> DictProxy<K, V>
where
    K: Serialize + DeserializeOwned + Eq + Hash,
    V: Serialize + DeserializeOwned,
{
    fn id(&self) -> u64 {
        self.handle.id
    }

    /// The number of entries.
    pub fn len(&self) -> Result<usize> {
        len(self.handle.call(&Request::Len(self.id()))?)
    }

    /// Whether the dict has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The value for `k`.
    pub fn get(&self, k: &K) -> Result<Option<V>> {
        maybe(
            self.handle
                .call(&Request::DictGet(self.id(), Bytes(&enc(k)?)))?,
        )
    }

    /// Sets `k` to `v`; returns the value it had.
    pub fn insert(&self, k: K, v: V) -> Result<Option<V>> {
        let (k, v) = (enc(&k)?, enc(&v)?);
        maybe(
            self.handle
                .call(&Request::DictInsert(self.id(), Bytes(&k), Bytes(&v)))?,
        )
    }

    /// Removes `k`; returns the value it had.
    pub fn remove(&self, k: &K) -> Result<Option<V>> {
        maybe(
            self.handle
                .call(&Request::DictRemove(self.id(), Bytes(&enc(k)?)))?,
        )
    }

    /// Whether `k` has a value.
    pub fn contains_key(&self, k: &K) -> Result<bool> {
        boolean(
            self.handle
                .call(&Request::DictContains(self.id(), Bytes(&enc(k)?)))?,
        )
    }

    /// Every key, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>> {
        many(
            self.handle
                .call(&Request::Dump(self.id(), DumpWhat::Keys))?,
        )
    }

    /// Every value, in insertion order.
    pub fn values(&self) -> Result<Vec<V>> {
        many(
            self.handle
                .call(&Request::Dump(self.id(), DumpWhat::Values))?,
        )
    }

    /// Every entry, in insertion order.
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        match self
            .handle
            .call(&Request::Dump(self.id(), DumpWhat::Items))?
        {
            Answer::Pairs(v) => v.iter().map(|(k, v)| Ok((dec(k)?, dec(v)?))).collect(),
            a => Err(unexpected(a)),
        }
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        done(self.handle.call(&Request::Clear(self.id()))?)
    }

    /// Sets `k` to `f(its value or None)` inside the server, atomically with respect to
    /// every other call, and returns the new value: Python's racy `d[k] += 1` made safe.
    /// `f` is a fn item or a closure that captures nothing; see [`ListProxy::modify`].
    pub fn modify<F>(&self, k: K, f: F) -> Result<V>
    where
        F: Target<(Option<V>,), V>,
        V: Send + 'static,
    {
        let _ = f;
        let entry = Records::<F, Option<V>>::DICT_MODIFY;
        let k = enc(&k)?;
        one(self
            .handle
            .call(&Request::DictModify(self.id(), Bytes(&k), code_of(entry)))?)
    }
}

/// A namespace in a manager's server (Python's `manager.Namespace()`): named values of any
/// serde type.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let manager = mproc::Manager::start()?;
/// let ns = manager.namespace()?;
/// ns.set("x", &10u32)?;
/// ns.set("name", &"ada".to_string())?;
/// assert_eq!(ns.get::<u32>("x")?, Some(10));
/// assert_eq!(ns.get::<String>("missing")?, None);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Namespace {
    handle: Handle,
}

impl Namespace {
    pub(crate) fn from_handle(handle: Handle) -> Self {
        Namespace { handle }
    }

    /// The value named `name`, `None` if unset. Reading it as another type than it was set
    /// with is `Err(Codec)`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        maybe(self.handle.call(&Request::NsGet(self.handle.id, name))?)
    }

    /// Sets the value named `name`.
    pub fn set<T: Serialize>(&self, name: &str, v: &T) -> Result<()> {
        done(
            self.handle
                .call(&Request::NsSet(self.handle.id, name, Bytes(&enc(v)?)))?,
        )
    }
}

/// One value in a manager's server (Python's `manager.Value`), of any serde type.
pub struct ValueProxy<T> {
    handle: Handle,
    _type: PhantomData<fn(T) -> T>,
}
proxy_traits!(ValueProxy<T>);

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The value.
    pub fn get(&self) -> Result<T> {
        one(self.handle.call(&Request::ValueGet(self.handle.id))?)
    }

    /// Replaces the value.
    pub fn set(&self, v: &T) -> Result<()> {
        done(
            self.handle
                .call(&Request::ValueSet(self.handle.id, Bytes(&enc(v)?)))?,
        )
    }
}
