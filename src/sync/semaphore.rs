//! `Semaphore` and `BoundedSemaphore`: counting semaphores shared between processes.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::raw::robust::SyncRegion;
use super::raw::semaphore as raw;
use crate::error::{Error, Result};
use crate::shared::region::Region;

const VALUE: usize = 0;
const SLEEPERS: usize = 4;

#[derive(Clone, Serialize, Deserialize)]
struct Shared {
    region: Arc<SyncRegion>,
}

impl Shared {
    fn new(value: usize, what: &str) -> Result<Self> {
        let v = u32::try_from(value)
            .map_err(|_| Error::ValueError(format!("{what} value {value} is too large")))?;
        let region = Region::new("mproc-semaphore", 8)?;
        region.atomic_u32(VALUE).store(v, Ordering::Relaxed);
        Ok(Shared {
            region: Arc::new(SyncRegion::new(region, false)),
        })
    }
    #[inline]
    fn value(&self) -> &AtomicU32 {
        self.region.atomic_u32(VALUE)
    }
    #[inline]
    fn sleepers(&self) -> &AtomicU32 {
        self.region.atomic_u32(SLEEPERS)
    }
    fn acquire(&self, deadline: Option<Instant>) -> bool {
        raw::acquire(self.value(), self.sleepers(), deadline)
    }
}

/// A counting semaphore shared between processes: Python's `multiprocessing.Semaphore`.
///
/// Permits taken by a process that dies are lost with it, as with every semaphore: no
/// owner is recorded, so nothing can tell a dead holder's permit from a long-held one.
/// Guard with [`Semaphore::guard`] to release on every path in the living.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let sem = mproc::Semaphore::new(2)?;
/// let a = sem.guard();
/// let b = sem.guard();
/// assert!(!sem.try_acquire());
/// drop(a);
/// assert_eq!(sem.get_value(), 1);
/// # drop(b);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Semaphore {
    shared: Shared,
}

impl Semaphore {
    /// A semaphore with `value` permits (at most `u32::MAX`).
    pub fn new(value: usize) -> Result<Self> {
        Ok(Semaphore {
            shared: Shared::new(value, "semaphore")?,
        })
    }

    /// Takes a permit, waiting as long as it takes.
    pub fn acquire(&self) {
        self.shared.acquire(None);
    }

    /// Takes a permit if one is free now.
    pub fn try_acquire(&self) -> bool {
        raw::try_acquire(self.shared.value())
    }

    /// Waits at most `d` for a permit; true if one was taken.
    pub fn acquire_timeout(&self, d: Duration) -> bool {
        self.shared.acquire(Instant::now().checked_add(d))
    }

    /// Returns a permit, waking one waiter.
    ///
    /// # Panics
    /// If the value would exceed `u32::MAX`.
    pub fn release(&self) {
        let ok = raw::release(self.shared.value(), self.shared.sleepers(), None);
        assert!(ok, "semaphore value overflow");
    }

    /// The number of free permits now.
    pub fn get_value(&self) -> usize {
        self.shared.value().load(Ordering::Relaxed) as usize
    }

    /// Takes a permit (waiting as long as it takes) and returns it when the guard drops.
    pub fn guard(&self) -> SemaphoreGuard<'_> {
        self.acquire();
        SemaphoreGuard {
            shared: &self.shared,
            max: None,
        }
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Semaphore(value={})", self.get_value())
    }
}

/// A semaphore whose value may not exceed its initial value: Python's `BoundedSemaphore`.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let sem = mproc::BoundedSemaphore::new(1)?;
/// assert!(sem.release().is_err()); // above the initial value
/// sem.acquire();
/// sem.release()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct BoundedSemaphore {
    shared: Shared,
    max: u32,
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` permits, which is also its maximum.
    pub fn new(value: usize) -> Result<Self> {
        let shared = Shared::new(value, "bounded semaphore")?;
        Ok(BoundedSemaphore {
            max: value as u32,
            shared,
        })
    }

    /// Takes a permit, waiting as long as it takes.
    pub fn acquire(&self) {
        self.shared.acquire(None);
    }

    /// Takes a permit if one is free now.
    pub fn try_acquire(&self) -> bool {
        raw::try_acquire(self.shared.value())
    }

    /// Waits at most `d` for a permit; true if one was taken.
    pub fn acquire_timeout(&self, d: Duration) -> bool {
        self.shared.acquire(Instant::now().checked_add(d))
    }

    /// Returns a permit; `Err(Error::ValueError)` if that would exceed the initial value.
    pub fn release(&self) -> Result<()> {
        if raw::release(self.shared.value(), self.shared.sleepers(), Some(self.max)) {
            Ok(())
        } else {
            Err(Error::ValueError(
                "bounded semaphore released too many times".into(),
            ))
        }
    }

    /// The number of free permits now.
    pub fn get_value(&self) -> usize {
        self.shared.value().load(Ordering::Relaxed) as usize
    }

    /// Takes a permit and returns it when the guard drops.
    pub fn guard(&self) -> SemaphoreGuard<'_> {
        self.acquire();
        SemaphoreGuard {
            shared: &self.shared,
            max: Some(self.max),
        }
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BoundedSemaphore(value={}, maxvalue={})",
            self.get_value(),
            self.max
        )
    }
}

/// A permit of a [`Semaphore`] or [`BoundedSemaphore`], returned when dropped.
#[must_use = "the permit is returned as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    shared: &'a Shared,
    max: Option<u32>,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // The guard returns the permit it took, so a bounded semaphore can only refuse if
        // someone else released too many; Python would raise there, a destructor can't.
        let _ = raw::release(self.shared.value(), self.shared.sleepers(), self.max);
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SemaphoreGuard")
    }
}
