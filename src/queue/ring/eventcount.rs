//! Eventcounts: how a side that waits for the other sleeps without missing a wake-up, and
//! how the other side wakes it without a syscall when nobody sleeps.
//!
//! An [`EventCount`] is a futex sequence word `seq` and a count of `waiters`. A waiter backs
//! off first (the crate's [`Backoff`]: spin ~20 µs, then yield; on an
//! oversubscribed machine, nothing), then registers in `waiters`, fences (SeqCst), checks its
//! condition again, and sleeps on `seq` as it read it before registering. The other side
//! changes the state (its own SeqCst store or fence), then reads `waiters`: only if it is
//! non-zero does it bump `seq` and `futex_wake`. The two fences pair up: either the waiter's
//! re-check sees the change, or the changer sees the waiter, so no wake is lost, and a side
//! that nobody waits for makes no syscall. Sleeps come in slices (`PROBE_INTERVAL`), after
//! each of which the waiter may look for a dead partner.
//!
//! The changer's side relies on the SeqCst total order of its own store and its `waiters`
//! load, which loom does not model (it treats SeqCst accesses as AcqRel): under the model
//! [`notify_after_seqcst`](EventCount::notify_after_seqcst) adds the fence that order stands
//! for (`Word::model_seqcst_fence`, nothing in production).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::control::EventCount;
use super::runtime::Runtime;
use crate::shim::{Wake, Word};
use crate::sync::raw::backoff::Backoff;

/// How often a sleeper wakes on its own to look for a dead partner.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The nearer of `deadline` and the next probe, on `W`'s clock.
pub(crate) fn probe_deadline<W: Word>(deadline: Option<Instant>) -> Instant {
    let probe = W::now() + PROBE_INTERVAL;
    deadline.map_or(probe, |d| d.min(probe))
}

/// How one sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slept {
    /// What the sleeper waits for is there.
    Ready,
    /// Woken (or never asleep), and it is not there yet.
    Early,
    /// The slice ran out: time to look for a dead partner.
    SliceOver,
}

impl<R: Runtime> EventCount<R> {
    /// Sleeps once until woken or `until`, and says how it ended.
    pub(crate) fn sleep_once(&self, until: Instant, mut ready: impl FnMut() -> bool) -> Slept {
        let s = self.seq.load(Ordering::Acquire);
        self.waiters.fetch_add(1, Ordering::AcqRel);
        // A waiter killed while asleep leaves what one killed here leaves: its count.
        R::W::die_point();
        R::W::fence(Ordering::SeqCst);
        let mut wake = Wake::Retry;
        if !ready() {
            wake = self.seq.wait(s, Some(until));
        }
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        if ready() {
            Slept::Ready
        } else if wake == Wake::TimedOut {
            Slept::SliceOver
        } else {
            Slept::Early
        }
    }

    /// Wakes the sleepers, if any, after the caller changed what they wait for with a
    /// SeqCst store (which orders it before the `waiters` load, as the fence in
    /// [`sleep_once`](EventCount::sleep_once) requires).
    #[inline]
    pub(crate) fn notify_after_seqcst(&self) {
        // The SeqCst order of the caller's store before this load, under the model.
        R::W::model_seqcst_fence();
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.wake();
        }
    }

    /// Wakes the sleepers, if any, after a change made with weaker ordering.
    #[inline]
    pub(crate) fn notify(&self) {
        R::W::fence(Ordering::SeqCst);
        self.notify_after_seqcst();
    }

    /// Bumps the sequence and wakes every sleeper.
    #[cold]
    pub(crate) fn wake(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        self.seq.wake_all();
    }

    /// Waits until `ready()`: backs off, then sleeps in `PROBE_INTERVAL` slices, calling
    /// `on_probe` after each slice that ran out. `false` if `deadline` passes first.
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
        mut on_probe: impl FnMut(),
    ) -> bool {
        if ready() {
            return true;
        }
        if deadline.is_some_and(|d| R::W::now() >= d) {
            return false;
        }
        if R::W::SPINS && Backoff::new().wait_until(deadline, &mut ready) {
            return true;
        }
        loop {
            let until = probe_deadline::<R::W>(deadline);
            let slept = self.sleep_once(until, &mut ready);
            if slept == Slept::Ready {
                return true;
            }
            if deadline.is_some_and(|d| R::W::now() >= d) {
                return false;
            }
            if slept == Slept::SliceOver {
                on_probe();
            }
        }
    }
}
