//! `Array<T>` (synchronized) and `RawArray<T>` (racy): a fixed-length `Pod` array in
//! shared memory.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::cell::{self, ArrayGuard};
use super::pod::Pod;
use super::region::Region;
use super::value::data_offset;
use crate::error::{Error, Result};
use crate::sync::Lock;
use crate::sync::raw::robust::SyncRegion;

fn too_long<T>(len: usize) -> Error {
    Error::ValueError(format!(
        "shared array of {len} elements of {} bytes is too large",
        size_of::<T>()
    ))
}

/// A fixed-length array of `Pod` in shared memory, with its own lock: Python's
/// `multiprocessing.Array`.
///
/// Element reads and writes take the lock for one copy; [`lock`](Array::lock) holds it and
/// its guard derefs to `[T]`, for slices, sorting, or any compound update.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let a = mproc::Array::from_slice(&[3, 1, 2])?;
/// a.lock().sort();
/// assert_eq!(a.to_vec(), [1, 2, 3]);
/// assert_eq!(a.get(5), None);
/// # Ok(())
/// # }
/// ```
pub struct Array<T: Pod> {
    lock: Lock,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> Array<T> {
    /// A zero-filled array of `len` elements.
    pub fn new(len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .and_then(|b| b.checked_add(data_offset::<T>()))
            .ok_or_else(|| too_long::<T>(len))?;
        let region = Region::new("mproc-array", bytes)?;
        Ok(Array {
            lock: Lock::in_region(Arc::new(SyncRegion::new(region, true))),
            len,
            _t: PhantomData,
        })
    }

    /// An array holding a copy of `s`.
    pub fn from_slice(s: &[T]) -> Result<Self> {
        let a = Array::new(s.len())?;
        a.lock().copy_from_slice(s);
        Ok(a)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        self.lock().get(i).copied()
    }

    /// Overwrites element `i`.
    ///
    /// # Panics
    /// If `i >= len()`, as slice indexing does.
    pub fn set(&self, i: usize, v: T) {
        let len = self.len;
        match self.lock().get_mut(i) {
            Some(slot) => *slot = v,
            None => panic!("index {i} out of range for shared array of length {len}"),
        }
    }

    /// A copy of all elements.
    pub fn to_vec(&self) -> Vec<T> {
        self.lock().to_vec()
    }

    /// Holds the lock; the guard derefs (mutably) to the elements.
    pub fn lock(&self) -> ArrayGuard<'_, T> {
        let guard = self.lock.acquire();
        let ptr = cell::elements::<T>(&self.lock.shared, data_offset::<T>(), self.len);
        ArrayGuard::new(guard, ptr, self.len)
    }

    /// As [`lock`](Array::lock), waiting at most `d`.
    pub fn lock_timeout(&self, d: Duration) -> Option<ArrayGuard<'_, T>> {
        let guard = self.lock.acquire_timeout(d)?;
        let ptr = cell::elements::<T>(&self.lock.shared, data_offset::<T>(), self.len);
        Some(ArrayGuard::new(guard, ptr, self.len))
    }

    /// The array's lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }
}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            lock: self.lock.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

/// Never blocks: an array whose lock is held (by this thread, in `dbg!(&a)` under
/// `a.lock()`, or by another process) prints as `Array(<locked>, len=N)`.
impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lock.try_acquire() {
            Some(guard) => {
                let ptr = cell::elements::<T>(&self.lock.shared, data_offset::<T>(), self.len);
                write!(f, "Array({:?})", &*ArrayGuard::new(guard, ptr, self.len))
            }
            None => write!(f, "Array(<locked>, len={})", self.len),
        }
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.lock, self.len as u64).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (lock, len) = <(Lock, u64)>::deserialize(d)?;
        let len = usize::try_from(len).map_err(serde::de::Error::custom)?;
        if !cell::fits::<T>(lock.shared.len(), data_offset::<T>(), len) {
            return Err(serde::de::Error::custom("shared array region too small"));
        }
        Ok(Array {
            lock,
            len,
            _t: PhantomData,
        })
    }
}

/// A fixed-length array of `Pod` in shared memory without a lock: Python's `RawArray`.
///
/// Each element access is one volatile copy; racy by design, as [`RawValue`](crate::RawValue).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let a = mproc::RawArray::<u8>::new(4)?;
/// a.set(0, 7);
/// assert_eq!(a.to_vec(), [7, 0, 0, 0]);
/// # Ok(())
/// # }
/// ```
pub struct RawArray<T: Pod> {
    region: Arc<Region>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> RawArray<T> {
    /// A zero-filled array of `len` elements.
    pub fn new(len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| too_long::<T>(len))?;
        Ok(RawArray {
            region: Arc::new(Region::new("mproc-rawarray", bytes)?),
            len,
            _t: PhantomData,
        })
    }

    /// An array holding a copy of `s`.
    pub fn from_slice(s: &[T]) -> Result<Self> {
        let a = RawArray::new(s.len())?;
        for (i, v) in s.iter().enumerate() {
            a.set(i, *v);
        }
        Ok(a)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.len).then(|| cell::read(&self.region, 0, self.len, i))
    }

    /// Overwrites element `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn set(&self, i: usize, v: T) {
        assert!(
            i < self.len,
            "index {i} out of range for shared array of length {}",
            self.len
        );
        cell::write(&self.region, 0, self.len, i, v);
    }

    /// A copy of all elements, each read once (not a consistent snapshot).
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len)
            .map(|i| cell::read(&self.region, 0, self.len, i))
            .collect()
    }
}

impl<T: Pod> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            region: self.region.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawArray({:?})", self.to_vec())
    }
}

impl<T: Pod> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&*self.region, self.len as u64).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (region, len) = <(Region, u64)>::deserialize(d)?;
        let len = usize::try_from(len).map_err(serde::de::Error::custom)?;
        if !cell::fits::<T>(region.len(), 0, len) {
            return Err(serde::de::Error::custom("shared array region too small"));
        }
        Ok(RawArray {
            region: Arc::new(region),
            len,
            _t: PhantomData,
        })
    }
}
