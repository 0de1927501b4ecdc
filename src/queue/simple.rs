//! `SimpleQueue<T>`: the minimal queue, Python's `multiprocessing.SimpleQueue`.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::queue::Queue;
use crate::error::Result;

/// An unbounded queue with only `put`, `get`, `is_empty` and `close`: Python's
/// `multiprocessing.SimpleQueue`. The same shared-memory ring as [`Queue`], so the same
/// guarantees (no loss when a producer exits right after `put`, no wedge when one is
/// killed); use [`Queue`] for timeouts, sizes and bounds.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let q = mproc::SimpleQueue::new()?;
/// assert!(q.is_empty());
/// q.put(vec![1, 2, 3])?;
/// assert!(!q.is_empty());
/// assert_eq!(q.get()?, vec![1, 2, 3]);
/// # Ok(())
/// # }
/// ```
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new, empty queue.
    pub fn new() -> Result<Self> {
        Ok(SimpleQueue {
            queue: Queue::new()?,
        })
    }

    /// Appends `item`; see [`Queue::put`].
    pub fn put(&self, item: T) -> Result<()> {
        self.queue.put(item)
    }

    /// `put`, waiting at most `d` for room; `Err(Error::Full)` if none came, and nothing
    /// of `item` is left in the queue. Unbounded as the queue is, a put waits only while
    /// its ring's bytes are full of items nobody takes (Python's `SimpleQueue.put` blocks
    /// on a full pipe the same way, with no timeout; every blocking call here has one).
    pub fn put_timeout(&self, item: T, d: std::time::Duration) -> Result<()> {
        self.queue.put_timeout(item, d)
    }

    /// Removes the oldest item, waiting for one; see [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// `get`, waiting at most `d`; `Err(Error::Empty)` if nothing came (Python's
    /// SimpleQueue has no timeout; every blocking call here has one).
    pub fn get_timeout(&self, d: std::time::Duration) -> Result<T> {
        self.queue.get_timeout(d)
    }

    /// Removes the oldest item, as a future; see [`Queue::get_async`].
    pub fn get_async(&self) -> crate::GetFuture<'_, T> {
        self.queue.get_async()
    }

    /// Whether the queue holds no item.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// A descriptor readable iff an item waits; see [`Queue::as_pollable_fd`].
    pub fn as_pollable_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.queue.as_pollable_fd()
    }

    /// Closes this handle in this process; see [`Queue::close`]. Idempotent.
    pub fn close(&self) {
        self.queue.close()
    }
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue").finish_non_exhaustive()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(SimpleQueue {
            queue: Queue::deserialize(d)?,
        })
    }
}
