//! Proxies to a manager's queues, locks and events.
//!
//! Their blocking calls wait in the server (`server.rs`), not in the client: a `get` on an
//! empty queue parks the server thread of the caller's connection until an item, its
//! deadline, or the end of the server. A lock is held by a connection (a thread of a
//! process); when that connection closes — the thread or process is gone, even by SIGKILL —
//! the server frees the lock. Python's manager lock stays held forever in that case.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::handle::{Handle, unexpected};
use super::proxy::{boolean, done, enc, one, proxy_traits};
use super::wire::{Answer, Bytes, Request};
use crate::error::{Error, Result};

pub(crate) fn nanos(d: Duration) -> Option<u64> {
    Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A FIFO queue in a manager's server (Python's `manager.Queue()`), unbounded or
/// bounded ([`Manager::queue_bounded`](super::Manager::queue_bounded), Python's
/// `Queue(maxsize)`).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn worker(jobs: mproc::QueueProxy<Option<u32>>, out: mproc::QueueProxy<u32>) -> mproc::Result<()> {
///     while let Some(n) = jobs.get()? {
///         out.put(n * n)?;
///     }
///     Ok(())
/// }
/// let manager = mproc::Manager::start()?;
/// let (jobs, out) = (manager.queue()?, manager.queue()?);
/// let w = mproc::spawn(worker, (jobs.clone(), out.clone()))?;
/// for n in [3, 4] { jobs.put(Some(n))?; }
/// jobs.put(None)?;
/// w.result()??;
/// assert_eq!((out.get()?, out.get()?), (9, 16));
/// assert!(matches!(out.try_get(), Err(mproc::Error::Empty)));
/// # Ok(()) }
/// ```
pub struct QueueProxy<T> {
    handle: Handle,
    _type: PhantomData<fn(T) -> T>,
}
proxy_traits!(QueueProxy<T>);

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    /// Adds `v` at the back, waiting as long as it takes while a bounded queue
    /// ([`Manager::queue_bounded`](super::Manager::queue_bounded)) is full; an unbounded
    /// queue never waits.
    pub fn put(&self, v: T) -> Result<()> {
        let v = enc(&v)?;
        done(
            self.handle
                .call_waiting(&Request::QueuePut(self.handle.id, Bytes(&v), None), None)?,
        )
    }

    /// Adds `v` at the back, waiting at most `d` for room; `Err(Full)` if there was none.
    pub fn put_timeout(&self, v: T, d: Duration) -> Result<()> {
        let v = enc(&v)?;
        done(self.handle.call_waiting(
            &Request::QueuePut(self.handle.id, Bytes(&v), nanos(d)),
            Some(d),
        )?)
    }

    /// Adds `v` at the back if there is room; `Err(Full)` if not.
    pub fn try_put(&self, v: T) -> Result<()> {
        self.put_timeout(v, Duration::ZERO)
    }

    /// Whether a bounded queue holds as many items as it may (never, for an unbounded one).
    pub fn full(&self) -> Result<bool> {
        boolean(self.handle.call(&Request::QueueFull(self.handle.id))?)
    }

    /// Takes the front item, waiting as long as it takes; `Err(Closed)` if the server ends.
    pub fn get(&self) -> Result<T> {
        one(self
            .handle
            .call_waiting(&Request::QueueGet(self.handle.id, None), None)?)
    }

    /// Takes the front item, waiting at most `d`; `Err(Empty)` when none came in time.
    pub fn get_timeout(&self, d: Duration) -> Result<T> {
        one(self
            .handle
            .call_waiting(&Request::QueueGet(self.handle.id, nanos(d)), Some(d))?)
    }

    /// Takes the front item if there is one; `Err(Empty)` if not.
    pub fn try_get(&self) -> Result<T> {
        self.get_timeout(Duration::ZERO)
    }

    /// The number of items waiting.
    pub fn qsize(&self) -> Result<usize> {
        match self.handle.call(&Request::Len(self.handle.id))? {
            Answer::Len(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            a => Err(unexpected(a)),
        }
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }
}

/// A queue whose consumers mark each item done, so that a producer can wait for all the
/// work to finish (Python's `manager.JoinableQueue()`). It has every method of
/// [`QueueProxy`] (through `Deref`), and [`task_done`](JoinableQueueProxy::task_done) and
/// [`join`](JoinableQueueProxy::join).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn worker(q: mproc::JoinableQueueProxy<u32>, out: mproc::ListProxy<u32>) -> mproc::Result<()> {
///     loop {
///         let n = q.get()?;
///         out.append(&(n * 10))?;
///         q.task_done()?;
///     }
/// }
/// let manager = mproc::Manager::start()?;
/// let (q, out) = (manager.joinable_queue()?, manager.list()?);
/// let mut w = mproc::Process::new(worker, (q.clone(), out.clone()));
/// w.set_daemon(true);
/// w.start()?;
/// for n in 1..=3 { q.put(n)?; }
/// q.join()?; // every item was marked done
/// assert_eq!(out.to_vec()?, [10, 20, 30]);
/// # w.kill()?;
/// # Ok(()) }
/// ```
pub struct JoinableQueueProxy<T> {
    queue: QueueProxy<T>,
}

impl<T> Clone for JoinableQueueProxy<T> {
    fn clone(&self) -> Self {
        JoinableQueueProxy {
            queue: self.queue.clone(),
        }
    }
}

impl<T> std::fmt::Debug for JoinableQueueProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinableQueueProxy({:?})", self.queue.handle)
    }
}

impl<T> Serialize for JoinableQueueProxy<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueueProxy<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(JoinableQueueProxy {
            queue: QueueProxy::deserialize(d)?,
        })
    }
}

impl<T> std::ops::Deref for JoinableQueueProxy<T> {
    type Target = QueueProxy<T>;
    fn deref(&self) -> &QueueProxy<T> {
        &self.queue
    }
}

impl<T> JoinableQueueProxy<T> {
    pub(crate) fn from_handle(handle: Handle) -> Self {
        JoinableQueueProxy {
            queue: QueueProxy::from_handle(handle),
        }
    }

    /// Marks one item taken with `get` as done; more calls than items put is
    /// `Err(ValueError)`, as in Python.
    pub fn task_done(&self) -> Result<()> {
        let h = &self.queue.handle;
        done(h.call(&Request::QueueTaskDone(h.id))?)
    }

    /// Waits until every item put was marked done.
    pub fn join(&self) -> Result<()> {
        let h = &self.queue.handle;
        boolean(h.call_waiting(&Request::QueueJoin(h.id, None), None)?).map(|_| ())
    }

    /// Waits at most `d` until every item put was marked done; whether they were.
    pub fn join_timeout(&self, d: Duration) -> Result<bool> {
        let h = &self.queue.handle;
        boolean(h.call_waiting(&Request::QueueJoin(h.id, nanos(d)), Some(d))?)
    }
}

/// A lock in a manager's server (Python's `manager.Lock()`), held by one thread of one
/// process at a time. If its holder dies, the server frees it.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let manager = mproc::Manager::start()?;
/// let lock = manager.lock()?;
/// {
///     let _guard = lock.acquire()?;
///     assert!(lock.try_acquire().is_err()); // held by this very thread: refused, not a deadlock
/// }
/// assert!(lock.try_acquire()?.is_some());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockProxy {
    handle: Handle,
}

/// A held [`LockProxy`]; dropping it releases the lock.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockProxyGuard<'a> {
    lock: &'a LockProxy,
    released: bool,
}

impl LockProxy {
    pub(crate) fn from_handle(handle: Handle) -> Self {
        LockProxy { handle }
    }

    fn acquire_for(&self, wait: Option<Duration>) -> Result<Option<LockProxyGuard<'_>>> {
        let granted = boolean(self.handle.call_waiting(
            &Request::LockAcquire(self.handle.id, wait.and_then(nanos)),
            wait,
        )?)?;
        // Lazily: a guard built for a refused acquire would release, on drop, the lock
        // another process holds.
        Ok(granted.then(|| LockProxyGuard {
            lock: self,
            released: false,
        }))
    }

    /// Acquires the lock, waiting as long as it takes. Acquiring it again from the thread
    /// that holds it is `Err(ValueError)` (it could never be released).
    pub fn acquire(&self) -> Result<LockProxyGuard<'_>> {
        self.acquire_for(None)?
            .ok_or_else(|| Error::ValueError("the manager refused the lock".into()))
    }

    /// Acquires the lock if it is free; `Ok(None)` if it is held.
    pub fn try_acquire(&self) -> Result<Option<LockProxyGuard<'_>>> {
        self.acquire_for(Some(Duration::ZERO))
    }

    /// Acquires the lock, waiting at most `d`; `Ok(None)` if it stayed held.
    pub fn acquire_timeout(&self, d: Duration) -> Result<Option<LockProxyGuard<'_>>> {
        self.acquire_for(Some(d))
    }
}

impl LockProxyGuard<'_> {
    /// Releases the lock now, reporting failure (dropping the guard releases it silently).
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        done(
            self.lock
                .handle
                .call(&Request::LockRelease(self.lock.handle.id))?,
        )
    }
}

impl Drop for LockProxyGuard<'_> {
    fn drop(&mut self) {
        if !self.released {
            // If the server is gone, so is the lock.
            let _ = self
                .lock
                .handle
                .call(&Request::LockRelease(self.lock.handle.id));
        }
    }
}

/// An event in a manager's server (Python's `manager.Event()`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventProxy {
    handle: Handle,
}

impl EventProxy {
    pub(crate) fn from_handle(handle: Handle) -> Self {
        EventProxy { handle }
    }

    /// Sets the flag, waking every waiter.
    pub fn set(&self) -> Result<()> {
        done(self.handle.call(&Request::EventSet(self.handle.id))?)
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<()> {
        done(self.handle.call(&Request::EventClear(self.handle.id))?)
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool> {
        boolean(self.handle.call(&Request::EventIsSet(self.handle.id))?)
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<()> {
        boolean(
            self.handle
                .call_waiting(&Request::EventWait(self.handle.id, None), None)?,
        )
        .map(|_| ())
    }

    /// Waits at most `d` for the flag; whether it was set.
    pub fn wait_timeout(&self, d: Duration) -> Result<bool> {
        boolean(
            self.handle
                .call_waiting(&Request::EventWait(self.handle.id, nanos(d)), Some(d))?,
        )
    }
}
