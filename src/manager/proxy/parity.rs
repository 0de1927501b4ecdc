//! The rest of Python's list and dict proxy methods, `modify_with`, and arrays.
//!
//! Each method is one round trip, atomic with respect to every other call on the server
//! (`store/containers.rs`). Items are compared by their encoding, as dict keys are
//! (`index`, `count`); ordering needs the element type, so `sort` and `modify_with` run
//! this executable's code in the server, as `modify` does (`managed.rs`).

use std::hash::Hash;
use std::ops::{Bound, RangeBounds};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DictProxy, ListProxy, dec, done, enc, len, many, maybe, one, proxy_traits};
use crate::error::Result;
use crate::manager::handle::unexpected;
use crate::manager::managed::{SortRecord, WithRecords, code_of};
use crate::manager::wire::{Answer, Bytes, DumpWhat, Request};
use crate::target::Target;

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// The index of the first item equal to `v` (compared by encoding);
    /// `Err(ValueError)` if there is none, as Python's `list.index`.
    pub fn index(&self, v: &T) -> Result<usize> {
        len(self
            .handle
            .call(&Request::ListIndex(self.handle.id, Bytes(&enc(v)?)))?)
    }

    /// How many items equal `v` (compared by encoding).
    pub fn count(&self, v: &T) -> Result<usize> {
        len(self
            .handle
            .call(&Request::ListCount(self.handle.id, Bytes(&enc(v)?)))?)
    }

    /// Sorts the list in place, stably, by `T`'s order, in the server (this executable's
    /// code runs there, as for [`modify`](ListProxy::modify)).
    pub fn sort(&self) -> Result<()>
    where
        T: Ord + 'static,
    {
        let code = code_of(SortRecord::<T>::LIST);
        done(self.handle.call(&Request::ListSort(self.handle.id, code))?)
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<()> {
        done(self.handle.call(&Request::ListReverse(self.handle.id))?)
    }

    /// A copy of the items in `r`, clamped to the list as Python's slices are (`2..100`
    /// of a 5-item list is its last 3 items; a range past the end is empty).
    pub fn slice(&self, r: impl RangeBounds<usize>) -> Result<Vec<T>> {
        let start = match r.start_bound() {
            Bound::Included(&s) => s as u64,
            Bound::Excluded(&s) => (s as u64).saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match r.end_bound() {
            Bound::Included(&e) => Some((e as u64).saturating_add(1)),
            Bound::Excluded(&e) => Some(e as u64),
            Bound::Unbounded => None,
        };
        many(
            self.handle
                .call(&Request::ListSlice(self.handle.id, start, end))?,
        )
    }

    /// An iterator over a snapshot of the list (one round trip; later changes are not
    /// seen).
    pub fn iter(&self) -> Result<std::vec::IntoIter<T>> {
        Ok(self.to_vec()?.into_iter())
    }

    /// Replaces the item at `i` with `f(item, arg)` inside the server, atomically, and
    /// returns the new item: [`modify`](ListProxy::modify) with a value from the caller
    /// (`f` itself still captures nothing).
    pub fn modify_with<A, F>(&self, i: usize, arg: A, f: F) -> Result<T>
    where
        F: Target<(T, A), T>,
        T: Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let code = code_of(WithRecords::<F, T, A>::LIST);
        let arg = enc(&arg)?;
        one(self.handle.call(&Request::ListModifyWith(
            self.handle.id,
            i as u64,
            Bytes(&arg),
            code,
        ))?)
    }
}

impl<K, V> DictProxy<K, V>
where
    K: Serialize + DeserializeOwned + Eq + Hash,
    V: Serialize + DeserializeOwned,
{
    /// Sets every key of `items` to its value, in one round trip.
    pub fn update(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let items: Vec<(Vec<u8>, Vec<u8>)> = items
            .into_iter()
            .map(|(k, v)| Ok((enc(&k)?, enc(&v)?)))
            .collect::<Result<_>>()?;
        let items = items.iter().map(|(k, v)| (Bytes(k), Bytes(v))).collect();
        done(
            self.handle
                .call(&Request::DictUpdate(self.handle.id, items))?,
        )
    }

    /// The value of `k`, after setting it to `v` if it had none (Python's `setdefault`).
    pub fn setdefault(&self, k: K, v: V) -> Result<V> {
        let (k, v) = (enc(&k)?, enc(&v)?);
        one(self.handle.call(&Request::DictSetDefault(
            self.handle.id,
            Bytes(&k),
            Bytes(&v),
        ))?)
    }

    /// Removes `k`; returns the value it had (Python's `pop` with a default of `None`).
    pub fn pop(&self, k: &K) -> Result<Option<V>> {
        self.remove(k)
    }

    /// Removes and returns the entry inserted last, `None` if the dict is empty (Python's
    /// `popitem`).
    pub fn popitem(&self) -> Result<Option<(K, V)>> {
        match self.handle.call(&Request::DictPopItem(self.handle.id))? {
            Answer::Pairs(v) => match v.first() {
                Some((k, v)) => Ok(Some((dec(k)?, dec(v)?))),
                None => Ok(None),
            },
            a => Err(unexpected(a)),
        }
    }

    /// Sets `k` to `f(its value or None, arg)` inside the server, atomically, and returns
    /// the new value: `d[w] += n` is `d.modify_with(w, n, |c, n| c.unwrap_or(0) + n)`.
    /// `f` captures nothing; the value comes in `arg`. See [`modify`](DictProxy::modify).
    pub fn modify_with<A, F>(&self, k: K, arg: A, f: F) -> Result<V>
    where
        F: Target<(Option<V>, A), V>,
        V: Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let code = code_of(WithRecords::<F, Option<V>, A>::DICT);
        let (k, arg) = (enc(&k)?, enc(&arg)?);
        one(self.handle.call(&Request::DictModifyWith(
            self.handle.id,
            Bytes(&k),
            Bytes(&arg),
            code,
        ))?)
    }
}

/// A fixed-length array in a manager's server (Python's `manager.Array`), of any serde
/// type.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn square(a: mproc::ArrayProxy<u64>) -> mproc::Result<()> {
///     for i in 0..a.len()? {
///         let x = a.get(i)?.unwrap_or(0);
///         a.set(i, &(x * x))?;
///     }
///     Ok(())
/// }
/// let manager = mproc::Manager::start()?;
/// let a = manager.array(vec![1u64, 2, 3])?;
/// mproc::spawn(square, (a.clone(),))?.result()??;
/// assert_eq!(a.to_vec()?, [1, 4, 9]);
/// # Ok(()) }
/// ```
pub struct ArrayProxy<T> {
    handle: crate::manager::handle::Handle,
    _type: std::marker::PhantomData<fn(T) -> T>,
}
proxy_traits!(ArrayProxy<T>);

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// The number of items (fixed when the array was made).
    pub fn len(&self) -> Result<usize> {
        len(self.handle.call(&Request::Len(self.handle.id))?)
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The item at `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Result<Option<T>> {
        maybe(
            self.handle
                .call(&Request::ListGet(self.handle.id, i as u64))?,
        )
    }

    /// Replaces the item at `i`; `Err(ValueError)` past the end.
    pub fn set(&self, i: usize, v: &T) -> Result<()> {
        done(
            self.handle
                .call(&Request::ListSet(self.handle.id, i as u64, Bytes(&enc(v)?)))?,
        )
    }

    /// A copy of every item.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        many(
            self.handle
                .call(&Request::Dump(self.handle.id, DumpWhat::Items))?,
        )
    }
}
