//! `JoinableQueue<T>`: a [`Queue`] whose consumers acknowledge each item, so that a producer
//! can wait until all of them have been processed.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::queue::{Queue, deadline_in};
use crate::error::Result;

/// A [`Queue`] that counts unfinished tasks: Python's `multiprocessing.JoinableQueue`.
///
/// Every item put adds one unfinished task; each [`task_done`](JoinableQueue::task_done)
/// (called by a consumer once it has processed an item) removes one;
/// [`join`](JoinableQueue::join) waits until none is left. The count lives in the queue's shared
/// memory, in step with the items: an item counts from the instant it is in the queue.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let q = mproc::JoinableQueue::new()?;
/// q.put(7)?;
/// let x: i32 = q.get()?;
/// q.task_done()?;
/// q.join(); // returns at once: every item is done
/// assert!(q.task_done().is_err()); // one too many
/// # let _ = x;
/// # Ok(())
/// # }
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// An unbounded joinable queue.
    pub fn new() -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::new()?,
        })
    }

    /// A joinable queue of at most `maxsize` items (0: unbounded); see [`Queue::bounded`].
    pub fn bounded(maxsize: usize) -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::bounded(maxsize)?,
        })
    }

    /// A joinable queue with a ring of `ring_bytes`; see [`Queue::with_ring_size`].
    pub fn with_ring_size(maxsize: usize, ring_bytes: usize) -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::with_ring_size(maxsize, ring_bytes)?,
        })
    }

    /// Appends `item`; see [`Queue::put`].
    pub fn put(&self, item: T) -> Result<()> {
        self.queue.put(item)
    }

    /// Appends `item`, waiting at most `timeout`; see [`Queue::put_timeout`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        self.queue.put_timeout(item, timeout)
    }

    /// Appends `item` if there is room now; see [`Queue::try_put`].
    pub fn try_put(&self, item: T) -> Result<()> {
        self.queue.try_put(item)
    }

    /// Removes the oldest item; see [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// Removes the oldest item, waiting at most `timeout`; see [`Queue::get_timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.queue.get_timeout(timeout)
    }

    /// Removes the oldest item if there is one now; see [`Queue::try_get`].
    pub fn try_get(&self) -> Result<T> {
        self.queue.try_get()
    }

    /// Removes the oldest item, as a future; see [`Queue::get_async`]. Call
    /// [`task_done`](JoinableQueue::task_done) for it as for any item.
    pub fn get_async(&self) -> crate::GetFuture<'_, T> {
        self.queue.get_async()
    }

    /// A descriptor readable iff an item waits; see [`Queue::as_pollable_fd`].
    pub fn as_pollable_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.queue.as_pollable_fd()
    }

    /// The number of items in the queue; see [`Queue::qsize`].
    pub fn qsize(&self) -> usize {
        self.queue.qsize()
    }

    /// Whether the queue holds no item.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether a bounded queue holds `maxsize` items.
    pub fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// The item limit; `None` if unbounded.
    pub fn maxsize(&self) -> Option<usize> {
        self.queue.maxsize()
    }

    /// Closes this handle in this process; see [`Queue::close`].
    pub fn close(&self) {
        self.queue.close()
    }
}

impl<T> JoinableQueue<T> {
    /// Marks one item as processed. `Err(Error::ValueError)` if called more times than
    /// items were put (Python: "task_done() called too many times").
    ///
    /// [`Error::ValueError`]: crate::Error::ValueError
    pub fn task_done(&self) -> Result<()> {
        self.queue.inner().ring().task_done()
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        self.queue.inner().ring().unfinished()
    }

    /// Waits until every item put has been marked done with
    /// [`task_done`](JoinableQueue::task_done).
    pub fn join(&self) {
        self.queue.inner().ring().join(None);
    }

    /// Waits at most `timeout` for every item to be marked done; `true` if they all were.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.queue.inner().ring().join(deadline_in(timeout))
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("qsize", &self.queue.inner().ring().len())
            .field("unfinished_tasks", &self.unfinished_tasks())
            .finish()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(JoinableQueue {
            queue: Queue::deserialize(d)?,
        })
    }
}
