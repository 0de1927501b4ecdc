//! `Lock`: a mutual-exclusion lock shared between processes, recovered when its holder dies.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::raw::mutex;
use super::raw::robust::{self, BLOCK, LOCK_WORD, SyncRegion};
use crate::error::Result;
use crate::shared::region::Region;

/// A lock shared between processes: Python's `multiprocessing.Lock`, held through a guard.
///
/// Clones are the same lock; a `Lock` passed to a child (in its arguments or inside a
/// message) is the same lock there. If a holder dies holding it — panic with
/// `panic=abort`, `abort()`, a segfault, SIGKILL — the next acquirer gets it at once and
/// [`LockGuard::owner_died`] tells it so: whatever the lock protected may be half-updated.
///
/// Python's `release()` is the guard's drop: the thread that acquired releases (Python lets
/// any process release a `Lock`, which is what makes a dead holder unrecoverable there).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let lock = mproc::Lock::new()?;
/// {
///     let guard = lock.acquire();
///     assert!(!guard.owner_died());
///     assert!(lock.try_acquire().is_none());
/// }
/// assert!(lock.try_acquire().is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Lock {
    pub(crate) shared: Arc<SyncRegion>,
}

impl Lock {
    /// A new, unlocked lock in its own shared region.
    pub fn new() -> Result<Self> {
        let region = Region::new("mproc-lock", BLOCK)?;
        Ok(Lock::in_region(Arc::new(SyncRegion::new(region, true))))
    }

    /// The lock whose block starts `shared` (a `Value`'s or a `Condition`'s).
    pub(crate) fn in_region(shared: Arc<SyncRegion>) -> Self {
        Lock { shared }
    }

    #[inline]
    pub(crate) fn word(&self) -> &AtomicU32 {
        self.shared.atomic_u32(LOCK_WORD)
    }

    /// Blocks until the lock is free, then holds it until the guard drops.
    #[inline]
    pub fn acquire(&self) -> LockGuard<'_> {
        let died = mutex::lock(self.word(), robust::me(), None);
        // Without a deadline the raw lock only returns once it holds the lock.
        LockGuard::new(self, died.unwrap_or(false))
    }

    /// Takes the lock if it is free right now.
    #[inline]
    pub fn try_acquire(&self) -> Option<LockGuard<'_>> {
        let died = mutex::try_lock(self.word(), robust::me())?;
        Some(LockGuard::new(self, died))
    }

    /// Waits at most `d` for the lock.
    pub fn acquire_timeout(&self, d: Duration) -> Option<LockGuard<'_>> {
        self.acquire_deadline(Instant::now().checked_add(d))
    }

    pub(crate) fn acquire_deadline(&self, deadline: Option<Instant>) -> Option<LockGuard<'_>> {
        let died = mutex::lock(self.word(), robust::me(), deadline)?;
        Some(LockGuard::new(self, died))
    }

    /// Whether some thread of some process holds the lock now (Python's `locked()`).
    pub fn is_locked(&self) -> bool {
        mutex::is_locked(self.word())
    }

    /// Whether both handles are the same lock (clones, or copies sent to this process).
    pub fn same_as(&self, other: &Lock) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared) || self.shared.same_object(&other.shared)
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match mutex::owner(self.word()) {
            None => f.write_str("Lock(owner=None)"),
            Some(tid) => write!(f, "Lock(owner=thread {tid})"),
        }
    }
}

impl Serialize for Lock {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shared.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Lock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Lock::in_region(Arc::new(SyncRegion::deserialize(d)?)))
    }
}

/// Proof that this thread holds a [`Lock`]; releases it when dropped.
///
/// Not `Send`: the lock is linked into the holding thread's kernel robust list, so the
/// same thread must release it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    pub(crate) lock: &'a Lock,
    owner_died: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    pub(crate) fn new(lock: &'a Lock, owner_died: bool) -> Self {
        LockGuard {
            lock,
            owner_died,
            _not_send: PhantomData,
        }
    }

    /// True if the previous holder died holding the lock (and this acquire recovered it).
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        mutex::unlock(self.lock.word(), robust::me());
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("owner_died", &self.owner_died)
            .finish()
    }
}
