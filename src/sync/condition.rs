//! `Condition`: a condition variable shared between processes, paired with a [`Lock`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::lock::{Lock, LockGuard};
use super::raw::condvar::Cond;
use super::raw::robust::{BLOCK, LOCK_WORD, SyncRegion};
use crate::error::Result;
use crate::shared::region::Region;

/// A condition variable shared between processes: Python's `multiprocessing.Condition`.
///
/// It has its own [`Lock`] ([`Condition::new`]) or shares one ([`Condition::with_lock`]).
/// [`notify(n)`](Condition::notify) wakes exactly `n` of the current waiters (fewer if
/// fewer wait); like Python, call it holding the lock to avoid missing a waiter that is
/// about to wait. If the lock's holder dies, the waiter that relocks it sees
/// [`LockGuard::owner_died`]. A waiter that dies while waiting stays counted, so a later
/// `notify(1)` may be spent on it, as a wakeup can be lost to a dead thread in any
/// condition variable; waiters whose notifier may die should use the timeout forms.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let cond = mproc::Condition::new()?;
/// let g = cond.acquire();
/// let (g, notified) = cond.wait_timeout(g, std::time::Duration::from_millis(10));
/// assert!(!notified);
/// drop(g);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Condition {
    lock: Lock,
    /// Where the condition word lives: the lock's own region, or a separate one.
    region: Option<Arc<SyncRegion>>,
}

impl Condition {
    /// A condition with its own lock.
    pub fn new() -> Result<Self> {
        // The user's lock block, then the condition's block.
        let region = Region::new("mproc-condition", 2 * BLOCK)?;
        Ok(Condition {
            lock: Lock::in_region(Arc::new(SyncRegion::new(region, true))),
            region: None,
        })
    }

    /// A condition that uses `lock` (Python's `Condition(lock)`).
    pub fn with_lock(lock: Lock) -> Result<Self> {
        let region = Region::new("mproc-condition", BLOCK)?;
        Ok(Condition {
            lock,
            region: Some(Arc::new(SyncRegion::new(region, false))),
        })
    }

    /// The condition's block: its internal lock at `LOCK_WORD`, its state words before.
    #[inline]
    fn cond(&self) -> Cond<'_, AtomicU32> {
        let (r, base) = match &self.region {
            Some(r) => (&**r, 0),
            None => (&*self.lock.shared, BLOCK),
        };
        Cond::new(r.atomic_u32(base + LOCK_WORD), move |i| {
            r.atomic_u32(base + 4 * i)
        })
    }

    /// The condition's lock.
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Acquires the condition's lock.
    pub fn acquire(&self) -> LockGuard<'_> {
        self.lock.acquire()
    }

    fn check<'a>(&self, g: &LockGuard<'a>) {
        assert!(
            g.lock.same_as(&self.lock),
            "Condition::wait: the guard is not of this condition's lock"
        );
    }

    /// Releases the lock, sleeps until notified, relocks. Python allows spurious returns;
    /// this returns only when notified (or, in `wait_timeout`, when time runs out).
    ///
    /// # Panics
    /// If `g` guards a different lock than the condition's.
    pub fn wait<'a>(&self, g: LockGuard<'a>) -> LockGuard<'a> {
        self.wait_deadline(g, None).0
    }

    /// As [`wait`](Condition::wait), for at most `d`; the bool is true if notified.
    pub fn wait_timeout<'a>(&self, g: LockGuard<'a>, d: Duration) -> (LockGuard<'a>, bool) {
        self.wait_deadline(g, Instant::now().checked_add(d))
    }

    fn wait_deadline<'a>(
        &self,
        g: LockGuard<'a>,
        deadline: Option<Instant>,
    ) -> (LockGuard<'a>, bool) {
        self.check(&g);
        let lock: &'a Lock = g.lock;
        // Counted while still holding the lock: a notify made under the lock after this
        // point sees this waiter.
        let ticket = self.cond().prepare_wait();
        drop(g);
        let notified = self.cond().wait(ticket, deadline);
        (lock.acquire(), notified)
    }

    /// Waits until `pred()` holds, checking it under the lock before each wait.
    pub fn wait_for<'a>(
        &self,
        mut g: LockGuard<'a>,
        mut pred: impl FnMut() -> bool,
    ) -> LockGuard<'a> {
        while !pred() {
            g = self.wait(g);
        }
        g
    }

    /// As [`wait_for`](Condition::wait_for), for at most `d`; the bool is the predicate's
    /// last value.
    pub fn wait_for_timeout<'a>(
        &self,
        mut g: LockGuard<'a>,
        mut pred: impl FnMut() -> bool,
        d: Duration,
    ) -> (LockGuard<'a>, bool) {
        let deadline = Instant::now().checked_add(d);
        loop {
            if pred() {
                return (g, true);
            }
            if deadline.is_some_and(|t| Instant::now() >= t) {
                return (g, false);
            }
            g = self.wait_deadline(g, deadline).0;
        }
    }

    /// Wakes up to `n` of the threads waiting now (fewer if fewer wait). A thread that
    /// starts waiting after this call is not one of them.
    pub fn notify(&self, n: usize) {
        self.cond().notify(n);
    }

    /// Wakes every thread waiting now; none of them can be overtaken by a thread that
    /// starts waiting later (the last party of a cyclic barrier that notifies and waits
    /// again at once does not take the notification of the party it woke).
    pub fn notify_all(&self) {
        self.cond().notify(usize::MAX);
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Condition({:?}, waiters={})",
            self.lock,
            self.cond().sleepers()
        )
    }
}
