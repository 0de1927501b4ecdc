//! `imap` and `imap_unordered`: lazy, with a bounded number of chunks in flight.
//!
//! The iterator pulls its input only as results are consumed: it keeps at most `window`
//! chunks submitted and unconsumed, so an endless input works and memory stays bounded.
//! Dropping it stops the input (no further item is pulled from the caller's iterator), but
//! cancels nothing: the chunks already submitted run, and their results are discarded on
//! arrival. If the input iterator panics, every result of the items taken
//! before the panic is still delivered, and then the panic resumes in the consumer
//! (Python's `imap` likewise yields what came before and then raises).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::codec::HandleFd;
use crate::error::{Error, Result};
use crate::pool::engine::Shared;
use crate::pool::jobs::{ChunkResult, JobId, Order};
use crate::pool::result::push_chunk;
use crate::pool::slot::Task;

/// An encoded chunk (payload and descriptors, or why it did not encode) and its item count.
pub(crate) type EncodedChunk = (Result<(Vec<u8>, Vec<HandleFd>)>, usize);

/// The input of an `imap`, cut into encoded chunks.
pub(crate) trait Feed {
    /// The next chunk; `None` at the end of the input.
    fn next_chunk(&mut self) -> Option<EncodedChunk>;
    /// Items left in the input (the input iterator's own `size_hint`).
    fn size_hint(&self) -> (usize, Option<usize>);
}

/// Why the input stopped early.
enum Stop {
    /// The input iterator panicked: resumed once the results before it are out.
    Panicked(Box<dyn std::any::Any + Send>),
}

/// The iterator `imap` and `imap_unordered` return: one `Result<R>` per input item.
///
/// Dropping it stops reading the input (no further item is taken from your iterator); the
/// tasks it already submitted (a few per worker) still run, and their results are dropped.
///
/// Its `size_hint` is exact when its input's is, and counts down as results are taken, so
/// progress bars (`indicatif`'s `progress_count`, `ProgressIterator`) can show a total.
pub struct IMap<'a, R> {
    shared: Arc<Shared>,
    job: Option<JobId>,
    feed: Box<dyn Feed + 'a>,
    /// Chunks submitted, and consumed.
    submitted: usize,
    consumed: usize,
    /// Items in submitted chunks not yet consumed.
    outstanding: usize,
    exhausted: bool,
    stop: Option<Stop>,
    ordered: bool,
    window: usize,
    buffered: VecDeque<Result<R>>,
}

impl<R> std::fmt::Debug for IMap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("submitted", &self.submitted)
            .field("consumed", &self.consumed)
            .field("ordered", &self.ordered)
            .finish()
    }
}

impl<'a, R: DeserializeOwned> IMap<'a, R> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        feed: Box<dyn Feed + 'a>,
        ordered: bool,
        window: usize,
    ) -> Self {
        let order = if ordered {
            Order::InOrder
        } else {
            Order::Completion
        };
        let job = {
            let mut st = shared.lock();
            shared.new_job(&mut st, order)
        };
        match job {
            Ok(id) => Self::with(shared, Some(id), feed, ordered, window, VecDeque::new()),
            Err(e) => Self::failed(shared, feed, e),
        }
    }

    /// An iterator that yields `err` once and ends (a refused call, as Python raises).
    pub(crate) fn failed(shared: Arc<Shared>, feed: Box<dyn Feed + 'a>, err: Error) -> Self {
        let mut it = Self::with(shared, None, feed, true, 1, VecDeque::from([Err(err)]));
        it.exhausted = true;
        it
    }

    fn with(
        shared: Arc<Shared>,
        job: Option<JobId>,
        feed: Box<dyn Feed + 'a>,
        ordered: bool,
        window: usize,
        buffered: VecDeque<Result<R>>,
    ) -> Self {
        IMap {
            shared,
            job,
            feed,
            submitted: 0,
            consumed: 0,
            outstanding: 0,
            exhausted: job.is_none(),
            stop: None,
            ordered,
            window: window.max(1),
            buffered,
        }
    }

    /// Submits input chunks until the window is full or the input ends.
    fn fill(&mut self) -> Result<()> {
        let Some(job) = self.job else { return Ok(()) };
        while !self.exhausted && self.submitted - self.consumed < self.window {
            let feed = &mut self.feed;
            let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| feed.next_chunk()));
            let next = match next {
                Ok(next) => next,
                Err(payload) => {
                    // Deliver what was taken before the panic, then resume it.
                    self.stop = Some(Stop::Panicked(payload));
                    None
                }
            };
            match next {
                None => {
                    self.exhausted = true;
                    self.shared.lock().jobs.seal(job);
                    // A closed pool's driver waits for this job to be whole before it
                    // can finish: tell it.
                    self.shared.wake();
                }
                Some((Err(e), nitems)) => {
                    // This chunk's items get the error; the input goes on.
                    let mut st = self.shared.lock();
                    if st.jobs.get(job).is_none() {
                        return Err(Error::PoolClosed);
                    }
                    st.jobs.add_resolved(job, nitems, ChunkResult::Failed(e));
                    self.submitted += 1;
                    self.outstanding += nitems;
                }
                Some((Ok((payload, fds)), nitems)) => {
                    let mut st = self.shared.lock();
                    // A closed pool still finishes the iterators it already handed out.
                    if st.terminated || st.finished {
                        return Err(Error::PoolClosed);
                    }
                    let Some(index) = st.jobs.add_chunk(job, nitems) else {
                        return Err(Error::PoolClosed);
                    };
                    let payload = Arc::new(payload);
                    let task = Task {
                        job,
                        index,
                        nitems,
                        payload,
                        fds,
                    };
                    self.shared.submit(&mut st, task, false);
                    self.submitted += 1;
                    self.outstanding += nitems;
                }
            }
        }
        Ok(())
    }

    /// The next result, waiting at most `d` for it (Python's `next(timeout)`);
    /// `Some(Err(Error::Timeout))` if it did not come in time (ask again later).
    pub fn next_timeout(&mut self, d: Duration) -> Option<Result<R>> {
        self.next_until(Instant::now().checked_add(d))
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        loop {
            if let Some(r) = self.buffered.pop_front() {
                self.outstanding = self.outstanding.saturating_sub(1);
                return Some(r);
            }
            if let Err(e) = self.fill() {
                self.exhausted = true;
                self.outstanding = 0;
                self.consumed = self.submitted;
                return Some(Err(e));
            }
            if self.consumed == self.submitted {
                if let Some(Stop::Panicked(payload)) = self.stop.take() {
                    std::panic::resume_unwind(payload);
                }
                return None;
            }
            let job = self.job?;
            let mut st = self.shared.lock_when(deadline, |st| st.jobs.has_next(job));
            let chunk = loop {
                match st.jobs.take_next(job) {
                    Ok(Some(chunk)) => break chunk,
                    Ok(None) => {}
                    Err(e) => {
                        self.consumed = self.submitted;
                        self.outstanding = 0;
                        return Some(Err(e));
                    }
                }
                match self.shared.wait_change(st, deadline) {
                    Some(next) => st = next,
                    None => return Some(Err(Error::Timeout)),
                }
            };
            drop(st);
            self.consumed += 1;
            let mut items = Vec::new();
            match chunk {
                (Some(c), n) => push_chunk(&c, n, &mut items),
                (None, n) => items.extend((0..n).map(|_| Err(Error::PoolClosed))),
            }
            self.buffered.extend(items);
        }
    }
}

impl<R: DeserializeOwned> Iterator for IMap<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_until(None)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Results still to come from what was submitted (or buffered), plus the input.
        let here = self.outstanding.max(self.buffered.len());
        if self.exhausted {
            return (here, Some(here));
        }
        let (lo, hi) = self.feed.size_hint();
        (
            here.saturating_add(lo),
            hi.and_then(|h| h.checked_add(here)),
        )
    }
}

impl<R> Drop for IMap<'_, R> {
    fn drop(&mut self) {
        if let Some(job) = self.job {
            self.shared.lock().jobs.release(job);
            // The driver of a closed pool may be waiting for this job to go away.
            self.shared.wake();
        }
    }
}
