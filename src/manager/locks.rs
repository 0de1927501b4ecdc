//! Proxies to a manager's reentrant locks, semaphores, conditions and barriers (Python's
//! `manager.RLock()`, `Semaphore(n)`, `BoundedSemaphore(n)`, `Condition()`, `Barrier(n)`).
//!
//! As for [`LockProxy`](super::LockProxy): every blocking call waits in the server, on
//! the server thread of the caller's connection, so it holds up no other client
//! (`server.rs`, `store/sync.rs`), and has a timeout form. A lock (an rlock, a condition's
//! lock) is held by a connection, that is by one thread of one process: its guards are not
//! `Send`, and when the holder's connection closes (the thread or process is gone, even by
//! SIGKILL) the server frees it. A barrier one of whose waiting parties is gone is broken.

use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::handle::{Handle, unexpected};
use super::proxy::{boolean, done};
use super::sync_proxy::nanos;
use super::wire::{Answer, Request};
use crate::error::{Error, Result};

/// Not `Send`: a held lock belongs to the thread whose connection took it.
type ThisThread = PhantomData<*const ()>;

fn count(a: Answer) -> Result<usize> {
    match a {
        Answer::Len(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        a => Err(unexpected(a)),
    }
}

/// A reentrant lock in a manager's server: the thread that holds it may acquire it again,
/// and it is free once every guard is dropped.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let manager = mproc::Manager::start()?;
/// let lock = manager.rlock()?;
/// let outer = lock.acquire()?;
/// let inner = lock.acquire()?; // the same thread: fine
/// drop(inner);
/// drop(outer);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RLockProxy {
    handle: Handle,
}

/// One hold of an [`RLockProxy`]; dropping it releases that hold.
#[derive(Debug)]
#[must_use = "the hold is released when the guard is dropped"]
pub struct RLockProxyGuard<'a> {
    lock: &'a RLockProxy,
    released: bool,
    _thread: ThisThread,
}

impl RLockProxy {
    pub(crate) fn from_handle(handle: Handle) -> Self {
        RLockProxy { handle }
    }

    fn acquire_for(&self, wait: Option<Duration>) -> Result<Option<RLockProxyGuard<'_>>> {
        let req = Request::RLockAcquire(self.handle.id, wait.and_then(nanos));
        let granted = boolean(self.handle.call_waiting(&req, wait)?)?;
        Ok(granted.then(|| RLockProxyGuard {
            lock: self,
            released: false,
            _thread: PhantomData,
        }))
    }

    /// Acquires the lock (again, if this thread holds it), waiting as long as it takes.
    pub fn acquire(&self) -> Result<RLockProxyGuard<'_>> {
        self.acquire_for(None)?
            .ok_or_else(|| Error::ValueError("the manager refused the rlock".into()))
    }

    /// Acquires the lock if it is free or held by this thread; `Ok(None)` if not.
    pub fn try_acquire(&self) -> Result<Option<RLockProxyGuard<'_>>> {
        self.acquire_for(Some(Duration::ZERO))
    }

    /// Acquires the lock, waiting at most `d`; `Ok(None)` if another thread kept it.
    pub fn acquire_timeout(&self, d: Duration) -> Result<Option<RLockProxyGuard<'_>>> {
        self.acquire_for(Some(d))
    }
}

impl RLockProxyGuard<'_> {
    /// Releases this hold now, reporting failure (dropping the guard releases it silently).
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        let h = &self.lock.handle;
        done(h.call(&Request::RLockRelease(h.id))?)
    }
}

impl Drop for RLockProxyGuard<'_> {
    fn drop(&mut self) {
        if !self.released {
            let h = &self.lock.handle;
            let _ = h.call(&Request::RLockRelease(h.id));
        }
    }
}

/// A semaphore in a manager's server, plain or bounded (Python's `manager.Semaphore(n)`
/// and `manager.BoundedSemaphore(n)`). Any thread of any process may release it.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let manager = mproc::Manager::start()?;
/// let s = manager.bounded_semaphore(1)?;
/// s.acquire()?;
/// assert!(!s.try_acquire()?);
/// s.release()?;
/// assert!(matches!(s.release(), Err(mproc::Error::ValueError(_)))); // past its bound
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SemaphoreProxy {
    handle: Handle,
}

impl SemaphoreProxy {
    pub(crate) fn from_handle(handle: Handle) -> Self {
        SemaphoreProxy { handle }
    }

    fn acquire_for(&self, wait: Option<Duration>) -> Result<bool> {
        let req = Request::SemAcquire(self.handle.id, wait.and_then(nanos));
        boolean(self.handle.call_waiting(&req, wait)?)
    }

    /// Takes one unit, waiting as long as it takes.
    pub fn acquire(&self) -> Result<()> {
        self.acquire_for(None).map(|_| ())
    }

    /// Takes one unit if the value is above zero; whether it did.
    pub fn try_acquire(&self) -> Result<bool> {
        self.acquire_for(Some(Duration::ZERO))
    }

    /// Takes one unit, waiting at most `d`; whether it did.
    pub fn acquire_timeout(&self, d: Duration) -> Result<bool> {
        self.acquire_for(Some(d))
    }

    /// Gives one unit back; for a bounded semaphore already at its bound,
    /// `Err(ValueError)` and nothing changes.
    pub fn release(&self) -> Result<()> {
        done(self.handle.call(&Request::SemRelease(self.handle.id))?)
    }

    /// The current value.
    pub fn get_value(&self) -> Result<usize> {
        count(self.handle.call(&Request::SemValue(self.handle.id))?)
    }
}

/// A condition variable and its lock in a manager's server (Python's
/// `manager.Condition()`). `notify_all` wakes every thread waiting when it is called, and
/// no later waiter can overtake them.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn produce(c: mproc::ConditionProxy, v: mproc::ValueProxy<u32>) -> mproc::Result<()> {
///     let _g = c.acquire()?;
///     v.set(&42)?;
///     c.notify_all()
/// }
/// let manager = mproc::Manager::start()?;
/// let (c, v) = (manager.condition()?, manager.value(0u32)?);
/// let mut g = c.acquire()?;
/// let p = mproc::spawn(produce, (c.clone(), v.clone()))?;
/// while v.get()? == 0 {
///     g = c.wait(g)?; // lets go of the lock while it waits
/// }
/// drop(g);
/// p.result()??;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConditionProxy {
    handle: Handle,
}

/// A held [`ConditionProxy`] lock; dropping it releases the lock.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct ConditionProxyGuard<'a> {
    cond: &'a ConditionProxy,
    released: bool,
    _thread: ThisThread,
}

impl ConditionProxy {
    pub(crate) fn from_handle(handle: Handle) -> Self {
        ConditionProxy { handle }
    }

    fn guard(&self) -> ConditionProxyGuard<'_> {
        ConditionProxyGuard {
            cond: self,
            released: false,
            _thread: PhantomData,
        }
    }

    fn acquire_for(&self, wait: Option<Duration>) -> Result<Option<ConditionProxyGuard<'_>>> {
        let req = Request::CondAcquire(self.handle.id, wait.and_then(nanos));
        let granted = boolean(self.handle.call_waiting(&req, wait)?)?;
        Ok(granted.then(|| self.guard()))
    }

    /// Acquires the condition's lock, waiting as long as it takes. Acquiring it again from
    /// the thread that holds it is `Err(ValueError)` (it could never be released).
    pub fn acquire(&self) -> Result<ConditionProxyGuard<'_>> {
        self.acquire_for(None)?
            .ok_or_else(|| Error::ValueError("the manager refused the condition's lock".into()))
    }

    /// Acquires the lock, waiting at most `d`; `Ok(None)` if it stayed held.
    pub fn acquire_timeout(&self, d: Duration) -> Result<Option<ConditionProxyGuard<'_>>> {
        self.acquire_for(Some(d))
    }

    fn wait_for<'a>(
        &'a self,
        mut g: ConditionProxyGuard<'a>,
        wait: Option<Duration>,
    ) -> Result<(ConditionProxyGuard<'a>, bool)> {
        // From here the server owns the lock's fate: it lets go and takes it back; if the
        // call fails the connection is gone, and the lock with it.
        g.released = true;
        let req = Request::CondWait(self.handle.id, wait.and_then(nanos));
        // The wait may also last as long as it takes to get the lock back after the
        // deadline: only a plain wait bounds the client's patience by the deadline.
        let notified = boolean(self.handle.call_waiting(&req, None)?)?;
        Ok((self.guard(), notified))
    }

    /// Releases the lock, waits for a `notify`, and takes the lock back.
    pub fn wait<'a>(&'a self, g: ConditionProxyGuard<'a>) -> Result<ConditionProxyGuard<'a>> {
        self.wait_for(g, None).map(|(g, _)| g)
    }

    /// As [`wait`](ConditionProxy::wait), giving up waiting for a notify after `d` (the lock
    /// is taken back either way); whether it was notified.
    pub fn wait_timeout<'a>(
        &'a self,
        g: ConditionProxyGuard<'a>,
        d: Duration,
    ) -> Result<(ConditionProxyGuard<'a>, bool)> {
        self.wait_for(g, Some(d))
    }

    /// Wakes up to `n` of the threads waiting, the longest waiting first; how many it woke.
    pub fn notify(&self, n: usize) -> Result<usize> {
        let req = Request::CondNotify(self.handle.id, n as u64);
        count(self.handle.call(&req)?)
    }

    /// Wakes every thread waiting.
    pub fn notify_all(&self) -> Result<()> {
        let req = Request::CondNotify(self.handle.id, u64::MAX);
        count(self.handle.call(&req)?).map(|_| ())
    }
}

impl ConditionProxyGuard<'_> {
    /// Releases the lock now, reporting failure (dropping the guard releases it silently).
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        let h = &self.cond.handle;
        done(h.call(&Request::CondRelease(h.id))?)
    }
}

impl Drop for ConditionProxyGuard<'_> {
    fn drop(&mut self) {
        if !self.released {
            let h = &self.cond.handle;
            let _ = h.call(&Request::CondRelease(h.id));
        }
    }
}

/// A cyclic barrier in a manager's server (Python's `manager.Barrier(n)`).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn party(b: mproc::BarrierProxy) -> mproc::Result<usize> { b.wait() }
/// let manager = mproc::Manager::start()?;
/// let b = manager.barrier(2)?;
/// let p = mproc::spawn(party, (b.clone(),))?;
/// let mine = b.wait()?;
/// let theirs = p.result()??;
/// assert_eq!(mine + theirs, 1); // indices 0 and 1
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BarrierProxy {
    handle: Handle,
}

impl BarrierProxy {
    pub(crate) fn from_handle(handle: Handle) -> Self {
        BarrierProxy { handle }
    }

    fn wait_for(&self, wait: Option<Duration>) -> Result<usize> {
        let req = Request::BarrierWait(self.handle.id, wait.and_then(nanos));
        count(self.handle.call_waiting(&req, wait)?)
    }

    /// Waits until every party has called `wait`; returns this party's arrival index, in
    /// `0..parties`. `Err(BrokenBarrier)` if the barrier is or becomes broken (`abort`, a
    /// `reset`, a timed-out party, a party gone while waiting).
    pub fn wait(&self) -> Result<usize> {
        self.wait_for(None)
    }

    /// As [`wait`](BarrierProxy::wait), for at most `d`: if the round is not complete by
    /// then, the barrier breaks (for every party, as in Python) and this is
    /// `Err(BrokenBarrier)`.
    pub fn wait_timeout(&self, d: Duration) -> Result<usize> {
        self.wait_for(Some(d))
    }

    /// Breaks the barrier: every waiting and later `wait` is `Err(BrokenBarrier)` until
    /// [`reset`](BarrierProxy::reset).
    pub fn abort(&self) -> Result<()> {
        done(self.handle.call(&Request::BarrierAbort(self.handle.id))?)
    }

    /// Makes the barrier usable again; parties waiting get `Err(BrokenBarrier)`.
    pub fn reset(&self) -> Result<()> {
        done(self.handle.call(&Request::BarrierReset(self.handle.id))?)
    }

    fn state(&self) -> Result<[u64; 3]> {
        match self.handle.call(&Request::BarrierState(self.handle.id))? {
            Answer::Numbers(v) => {
                <[u64; 3]>::try_from(v).map_err(|v| unexpected(Answer::Numbers(v)))
            }
            a => Err(unexpected(a)),
        }
    }

    /// The number of parties.
    pub fn parties(&self) -> Result<usize> {
        Ok(self.state()?[0] as usize)
    }

    /// How many parties are waiting now (0 while broken, as in Python).
    pub fn n_waiting(&self) -> Result<usize> {
        Ok(self.state()?[1] as usize)
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> Result<bool> {
        Ok(self.state()?[2] != 0)
    }
}
