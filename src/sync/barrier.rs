//! `Barrier`: a rendezvous point for a fixed number of parties across processes.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::raw::barrier::{self as raw, Words};
use super::raw::robust::{BLOCK, LOCK_WORD, SyncRegion};
use crate::error::{Error, Result};
use crate::shared::region::Region;

const STATE: usize = BLOCK;
const COUNT: usize = BLOCK + 4;
const SEQ: usize = BLOCK + 8;
const PARTIES: usize = BLOCK + 12;

/// A barrier shared between processes: Python's `multiprocessing.Barrier`.
///
/// [`wait`](Barrier::wait) returns a distinct index in `0..parties` to each party of a
/// round. [`abort`](Barrier::abort), [`reset`](Barrier::reset) while parties wait, and a
/// [`wait_timeout`](Barrier::wait_timeout) that runs out break the round: its waiters get
/// `Err(Error::BrokenBarrier)`. A party that dies while the others wait leaves them
/// waiting: use `wait_timeout` when a party may die.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let b = mproc::Barrier::new(1)?;
/// assert_eq!(b.wait()?, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Barrier {
    region: Arc<SyncRegion>,
}

impl Barrier {
    /// A barrier for `parties` parties (at least 1).
    pub fn new(parties: usize) -> Result<Self> {
        let n = u32::try_from(parties)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                Error::ValueError(format!("barrier parties must be ≥ 1, not {parties}"))
            })?;
        let region = Region::new("mproc-barrier", BLOCK + 16)?;
        region
            .atomic_u32(PARTIES)
            .store(n, std::sync::atomic::Ordering::Relaxed);
        Ok(Barrier {
            region: Arc::new(SyncRegion::new(region, true)),
        })
    }

    fn words(&self) -> Words<'_, std::sync::atomic::AtomicU32> {
        let r = &self.region;
        Words {
            lock: r.atomic_u32(LOCK_WORD),
            state: r.atomic_u32(STATE),
            count: r.atomic_u32(COUNT),
            seq: r.atomic_u32(SEQ),
            parties: r
                .atomic_u32(PARTIES)
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Waits until all parties have called `wait`; returns this party's index.
    pub fn wait(&self) -> Result<usize> {
        raw::wait(self.words(), None).map_err(|_| Error::BrokenBarrier)
    }

    /// As [`wait`](Barrier::wait), for at most `d`; running out breaks the barrier.
    pub fn wait_timeout(&self, d: Duration) -> Result<usize> {
        raw::wait(self.words(), Instant::now().checked_add(d)).map_err(|_| Error::BrokenBarrier)
    }

    /// Breaks the barrier: waiting and future calls fail until [`reset`](Barrier::reset).
    pub fn abort(&self) {
        raw::abort(self.words());
    }

    /// Returns the barrier to its initial state; parties waiting now get `BrokenBarrier`.
    pub fn reset(&self) {
        raw::reset(self.words());
    }

    /// The number of parties a round needs.
    pub fn parties(&self) -> usize {
        self.words().parties as usize
    }

    /// The number of parties waiting in the current round.
    pub fn n_waiting(&self) -> usize {
        raw::n_waiting(self.words())
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> bool {
        raw::is_broken(self.words())
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Barrier(parties={}, waiting={}, broken={})",
            self.parties(),
            self.n_waiting(),
            self.broken()
        )
    }
}
