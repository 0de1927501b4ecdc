//! JoinableQueue's count: `done`, the items acknowledged by `task_done`.
//!
//! The unfinished count is `tail.items - done`: an item counts from the instant its last
//! frame is published, with no second word to keep in step. `task_done` raises `done` with
//! a compare-and-swap that refuses to pass the published count, then wakes joiners if any
//! are registered. Joiners sleep on `done` itself: every `task_done` changes it, so a joiner
//! that read it before registering cannot miss one.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::eventcount::probe_deadline;
use super::runtime::Runtime;
use super::{Ring, count_of};
use crate::error::{Error, Result};
use crate::shim::{Word, Word64};
use crate::sync::raw::backoff::Backoff;

impl<R: Runtime> Ring<R> {
    /// Acknowledges one item. An error if every published item already was.
    pub(crate) fn task_done(&self) -> Result<()> {
        let done = &self.ctl().join.done;
        let mut d = done.load(Ordering::Relaxed);
        let mut backoff = Backoff::new();
        loop {
            let put = count_of(self.ctl().tail.0.load(Ordering::Acquire));
            if put.wrapping_sub(d) == 0 {
                return Err(Error::ValueError(
                    "task_done() called too many times".to_string(),
                ));
            }
            match done.compare_exchange_weak(
                d,
                d.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => {
                    d = now;
                    backoff.spin();
                }
            }
        }
        R::W::fence(Ordering::SeqCst);
        if self.ctl().join.waiters.load(Ordering::Relaxed) != 0 {
            done.wake_all();
        }
        Ok(())
    }

    /// Items published and not yet acknowledged by `task_done`.
    pub(crate) fn unfinished(&self) -> usize {
        let d = self.ctl().join.done.load(Ordering::Acquire);
        count_of(self.ctl().tail.0.load(Ordering::Acquire)).wrapping_sub(d) as usize
    }

    /// Waits until every published item has been acknowledged; `false` on timeout.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        let (done, waiters) = (&self.ctl().join.done, &self.ctl().join.waiters);
        loop {
            if self.unfinished() == 0 {
                return true;
            }
            let d = done.load(Ordering::Acquire);
            let until = probe_deadline::<R::W>(deadline);
            waiters.fetch_add(1, Ordering::Relaxed);
            R::W::fence(Ordering::SeqCst);
            if self.unfinished() != 0 {
                done.wait(d, Some(until));
            }
            waiters.fetch_sub(1, Ordering::Relaxed);
            if self.unfinished() == 0 {
                return true;
            }
            if deadline.is_some_and(|dl| R::W::now() >= dl) {
                return false;
            }
        }
    }
}
