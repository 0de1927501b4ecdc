//! `Value<T>` (synchronized) and `RawValue<T>` (racy): one `Pod` in shared memory.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::cell::{self, ValueGuard};
use super::pod::Pod;
use super::region::Region;
use crate::error::Result;
use crate::sync::Lock;
use crate::sync::raw::robust::{BLOCK, SyncRegion};

/// Where a synchronized value's data starts: after its lock's block, aligned for `T`.
pub(crate) fn data_offset<T>() -> usize {
    BLOCK.next_multiple_of(align_of::<T>())
}

/// A `Pod` value in shared memory with its own lock: Python's `multiprocessing.Value`.
///
/// [`get`](Value::get) and [`set`](Value::set) take the lock for one copy; a
/// read-modify-write needs [`lock`](Value::lock), whose guard derefs to `T`. If a process
/// dies holding the lock, the next guard's [`owner_died`](ValueGuard::owner_died) says so.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let v = mproc::Value::new(0i64)?;
/// *v.lock() += 5;
/// assert_eq!(v.get(), 5);
/// # Ok(())
/// # }
/// ```
pub struct Value<T: Pod> {
    lock: Lock,
    _t: PhantomData<T>,
}

impl<T: Pod> Value<T> {
    /// A new shared value holding `v`.
    pub fn new(v: T) -> Result<Self> {
        let region = Region::new("mproc-value", data_offset::<T>() + size_of::<T>())?;
        cell::write(&region, data_offset::<T>(), 1, 0, v);
        Ok(Value {
            lock: Lock::in_region(Arc::new(SyncRegion::new(region, true))),
            _t: PhantomData,
        })
    }

    fn region(&self) -> &Region {
        &self.lock.shared
    }

    /// A copy of the value, read under the lock.
    pub fn get(&self) -> T {
        *self.lock()
    }

    /// Replaces the value, under the lock.
    pub fn set(&self, v: T) {
        *self.lock() = v;
    }

    /// Holds the lock; the guard derefs (mutably) to the value.
    ///
    /// The lock is not reentrant (unlike Python's default `RLock`): while the guard lives,
    /// use the guard, since [`get`](Value::get)/[`set`](Value::set) from the same thread
    /// would wait for the lock it holds. That is what makes lending `&mut T` sound.
    pub fn lock(&self) -> ValueGuard<'_, T> {
        let guard = self.lock.acquire();
        let ptr = cell::elements::<T>(self.region(), data_offset::<T>(), 1);
        ValueGuard::new(guard, ptr)
    }

    /// As [`lock`](Value::lock), waiting at most `d`.
    pub fn lock_timeout(&self, d: Duration) -> Option<ValueGuard<'_, T>> {
        let guard = self.lock.acquire_timeout(d)?;
        let ptr = cell::elements::<T>(self.region(), data_offset::<T>(), 1);
        Some(ValueGuard::new(guard, ptr))
    }

    /// The value's lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }
}

impl<T: Pod> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            lock: self.lock.clone(),
            _t: PhantomData,
        }
    }
}

/// Never blocks: a value whose lock is held (by this thread, in `dbg!(&v)` under
/// `v.lock()`, or by another process) prints as `Value(<locked>)`.
impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lock.try_acquire() {
            Some(guard) => {
                let ptr = cell::elements::<T>(self.region(), data_offset::<T>(), 1);
                write!(f, "Value({:?})", *ValueGuard::new(guard, ptr))
            }
            None => f.write_str("Value(<locked>)"),
        }
    }
}

impl<T: Pod> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.lock.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let lock = Lock::deserialize(d)?;
        if !cell::fits::<T>(lock.shared.len(), data_offset::<T>(), 1) {
            return Err(serde::de::Error::custom("shared value region too small"));
        }
        Ok(Value {
            lock,
            _t: PhantomData,
        })
    }
}

/// A `Pod` value in shared memory without a lock: Python's `RawValue` (or
/// `Value(lock=False)`).
///
/// Every [`get`](RawValue::get) and [`set`](RawValue::set) is one volatile copy. Racy by
/// design: concurrent read-modify-writes lose updates, and a value wider than a machine
/// word may be read half old, half new. Pair it with a [`Lock`] when that matters.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let v = mproc::RawValue::new(1.5f64)?;
/// v.set(v.get() * 2.0);
/// assert_eq!(v.get(), 3.0);
/// # Ok(())
/// # }
/// ```
pub struct RawValue<T: Pod> {
    region: Arc<Region>,
    _t: PhantomData<T>,
}

impl<T: Pod> RawValue<T> {
    /// A new shared value holding `v`.
    pub fn new(v: T) -> Result<Self> {
        let region = Region::new("mproc-rawvalue", size_of::<T>())?;
        cell::write(&region, 0, 1, 0, v);
        Ok(RawValue {
            region: Arc::new(region),
            _t: PhantomData,
        })
    }

    /// A copy of the value now.
    pub fn get(&self) -> T {
        cell::read(&self.region, 0, 1, 0)
    }

    /// Overwrites the value.
    pub fn set(&self, v: T) {
        cell::write(&self.region, 0, 1, 0, v);
    }
}

impl<T: Pod> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            region: self.region.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawValue({:?})", self.get())
    }
}

impl<T: Pod> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.region.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let region = Region::deserialize(d)?;
        if !cell::fits::<T>(region.len(), 0, 1) {
            return Err(serde::de::Error::custom("shared value region too small"));
        }
        Ok(RawValue {
            region: Arc::new(region),
            _t: PhantomData,
        })
    }
}
