//! `RLock`: a reentrant lock shared between processes, recovered when its holder dies.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::raw::mutex::{self, COUNT_OFFSET, reentrant};
use super::raw::robust::{self, BLOCK, LOCK_WORD, SyncRegion};
use crate::error::Result;
use crate::shared::region::Region;

/// A reentrant lock shared between processes: Python's `multiprocessing.RLock`.
///
/// The thread that holds it may acquire it again; it is released when the outermost
/// guard drops. Other threads, of this process or another, wait. A holder's death is
/// recovered as for [`Lock`](crate::Lock) and reported by [`RLockGuard::owner_died`].
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let lock = mproc::RLock::new()?;
/// let outer = lock.acquire();
/// let inner = lock.acquire(); // the same thread: no deadlock
/// drop(inner);
/// assert!(lock.is_locked());
/// drop(outer);
/// assert!(!lock.is_locked());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RLock {
    shared: Arc<SyncRegion>,
}

impl RLock {
    /// A new, unlocked reentrant lock.
    pub fn new() -> Result<Self> {
        let region = Region::new("mproc-rlock", BLOCK)?;
        Ok(RLock {
            shared: Arc::new(SyncRegion::new(region, true)),
        })
    }

    #[inline]
    fn words(&self) -> (&AtomicU32, &AtomicU32) {
        (
            self.shared.atomic_u32(LOCK_WORD),
            self.shared.atomic_u32(LOCK_WORD + COUNT_OFFSET),
        )
    }

    /// Blocks until this thread holds the lock (at once if it already does).
    #[inline]
    pub fn acquire(&self) -> RLockGuard<'_> {
        let (w, c) = self.words();
        let died = reentrant::lock(w, c, robust::me(), None);
        RLockGuard::new(self, died.unwrap_or(false))
    }

    /// Takes the lock if it is free or already this thread's.
    pub fn try_acquire(&self) -> Option<RLockGuard<'_>> {
        let (w, c) = self.words();
        let died = reentrant::try_lock(w, c, robust::me())?;
        Some(RLockGuard::new(self, died))
    }

    /// Waits at most `d` for the lock.
    pub fn acquire_timeout(&self, d: Duration) -> Option<RLockGuard<'_>> {
        let (w, c) = self.words();
        let died = reentrant::lock(w, c, robust::me(), Instant::now().checked_add(d))?;
        Some(RLockGuard::new(self, died))
    }

    /// Whether some thread holds the lock now.
    pub fn is_locked(&self) -> bool {
        mutex::is_locked(self.words().0)
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, c) = self.words();
        match mutex::owner(w) {
            None => f.write_str("RLock(owner=None, 0)"),
            Some(tid) => write!(
                f,
                "RLock(owner=thread {tid}, {})",
                c.load(std::sync::atomic::Ordering::Relaxed)
            ),
        }
    }
}

impl Serialize for RLock {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shared.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RLock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(RLock {
            shared: Arc::new(SyncRegion::deserialize(d)?),
        })
    }
}

/// One level of holding an [`RLock`]; the lock is released when the outermost guard drops.
/// Not `Send`: the thread that acquired must release.
#[must_use = "the level is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    owner_died: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'a> RLockGuard<'a> {
    fn new(lock: &'a RLock, owner_died: bool) -> Self {
        RLockGuard {
            lock,
            owner_died,
            _not_send: PhantomData,
        }
    }

    /// True if the previous holder died holding the lock.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl Drop for RLockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let (w, c) = self.lock.words();
        reentrant::unlock(w, c, robust::me());
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard")
            .field("owner_died", &self.owner_died)
            .finish()
    }
}
