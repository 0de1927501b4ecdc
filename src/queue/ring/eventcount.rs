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

use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use super::control::EventCount;
use crate::sync::raw::backoff::Backoff;
use crate::sys::futex;

/// How often a sleeper wakes on its own to look for a dead partner.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The nearer of `deadline` and the next probe.
pub(crate) fn probe_deadline(deadline: Option<Instant>) -> Instant {
    let probe = Instant::now() + PROBE_INTERVAL;
    deadline.map_or(probe, |d| d.min(probe))
}

impl EventCount {
    /// Sleeps once until woken or `until`; returns `ready()` after.
    pub(crate) fn sleep_once(&self, until: Instant, mut ready: impl FnMut() -> bool) -> bool {
        let s = self.seq.load(Ordering::Acquire);
        self.waiters.fetch_add(1, Ordering::AcqRel);
        fence(Ordering::SeqCst);
        if !ready() {
            futex::wait(&self.seq, s, Some(until));
        }
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        ready()
    }

    /// Wakes the sleepers, if any, after the caller changed what they wait for with a
    /// SeqCst store (which orders it before the `waiters` load, as the fence in
    /// [`sleep_once`](EventCount::sleep_once) requires).
    #[inline]
    pub(crate) fn notify_after_seqcst(&self) {
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.wake();
        }
    }

    /// Wakes the sleepers, if any, after a change made with weaker ordering.
    #[inline]
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        self.notify_after_seqcst();
    }

    /// Bumps the sequence and wakes every sleeper.
    #[cold]
    pub(crate) fn wake(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        futex::wake_all(&self.seq);
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
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        if Backoff::new().wait_until(deadline, &mut ready) {
            return true;
        }
        loop {
            let until = probe_deadline(deadline);
            if self.sleep_once(until, &mut ready) {
                return true;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            if now >= until {
                on_probe();
            }
        }
    }
}
