//! `Event`: a flag shared between processes that waiters can sleep on.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::raw::event as raw;
use super::raw::robust::SyncRegion;
use crate::error::Result;
use crate::shared::region::Region;

/// An event shared between processes: Python's `multiprocessing.Event`.
///
/// A waiter whose setter dies simply keeps waiting: use [`Event::wait_timeout`] when the
/// setter may die.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let ev = mproc::Event::new()?;
/// assert!(!ev.wait_timeout(std::time::Duration::from_millis(1)));
/// ev.set();
/// ev.wait();
/// assert!(ev.is_set());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Event {
    region: Arc<SyncRegion>,
}

impl Event {
    /// A new event, not set.
    pub fn new() -> Result<Self> {
        let region = Region::new("mproc-event", 4)?;
        Ok(Event {
            region: Arc::new(SyncRegion::new(region, false)),
        })
    }

    #[inline]
    fn word(&self) -> &AtomicU32 {
        self.region.atomic_u32(0)
    }

    /// Sets the flag and wakes every waiter, in every process.
    pub fn set(&self) {
        raw::set(self.word());
    }

    /// Clears the flag.
    pub fn clear(&self) {
        raw::clear(self.word());
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        raw::is_set(self.word())
    }

    /// Blocks until the flag is set, or until a [`set`](Event::set) after this call began
    /// (even if [`clear`](Event::clear) followed at once: a `set(); clear()` pulse releases
    /// every waiter that was waiting).
    pub fn wait(&self) {
        raw::wait(self.word(), None);
    }

    /// As [`wait`](Event::wait), for at most `d`. Returns true if the flag was set when
    /// it began or a `set` came while it waited (even if `clear` followed), false only when
    /// time ran out with no `set`: `threading.Event.wait`'s documented contract, which
    /// Python's `multiprocessing.Event` claims (CPython's own `multiprocessing` returns the
    /// flag's value at return, so false after a pulse).
    pub fn wait_timeout(&self, d: Duration) -> bool {
        raw::wait(self.word(), Instant::now().checked_add(d))
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.is_set() { "set" } else { "unset" };
        write!(f, "Event({state})")
    }
}
