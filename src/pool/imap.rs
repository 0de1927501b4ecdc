//! `imap` and `imap_unordered`: lazy, with a bounded number of chunks in flight.
//!
//! The iterator pulls its input only as results are consumed: it keeps at most `window`
//! chunks submitted and unconsumed, so an endless input works and memory stays bounded.
//! Dropping it abandons the rest: unsent chunks are dropped, results of running ones are
//! discarded on arrival.

use crate::codec::HandleFd;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::pool::engine::{ChunkResult, Job, Shared, Task};
use crate::pool::result::push_chunk;

/// The next encoded chunk of the input (payload and descriptors, or why it did not
/// encode) and its item count; `None` at the end of the input.
pub(crate) type NextChunk<'a> =
    Box<dyn FnMut() -> Option<(Result<(Vec<u8>, Vec<HandleFd>)>, usize)> + 'a>;

/// The iterator `imap` and `imap_unordered` return: one `Result<R>` per input item.
pub struct IMap<'a, R> {
    shared: Arc<Shared>,
    job: Option<u64>,
    next_chunk: NextChunk<'a>,
    submitted: usize,
    consumed: usize,
    exhausted: bool,
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
        next_chunk: NextChunk<'a>,
        ordered: bool,
        window: usize,
    ) -> Self {
        let job = {
            let mut st = shared.lock();
            let job = Job {
                unordered: !ordered,
                ..Job::default()
            };
            shared.new_job(&mut st, job)
        };
        let (job, buffered) = match job {
            Ok(id) => (Some(id), VecDeque::new()),
            Err(e) => (None, VecDeque::from([Err(e)])),
        };
        IMap {
            shared,
            job,
            next_chunk,
            submitted: 0,
            consumed: 0,
            exhausted: job.is_none(),
            ordered,
            window: window.max(1),
            buffered,
        }
    }

    /// Submits input chunks until the window is full or the input ends.
    fn fill(&mut self) -> Result<()> {
        let Some(job) = self.job else { return Ok(()) };
        while !self.exhausted && self.submitted - self.consumed < self.window {
            match (self.next_chunk)() {
                None => {
                    self.exhausted = true;
                    let mut st = self.shared.lock();
                    if let Some(j) = st.jobs.get_mut(&job) {
                        j.sealed = true;
                    }
                    // A closed pool's driver waits for this job to be whole before it
                    // can finish: tell it.
                    self.shared.wake();
                }
                Some((Err(e), nitems)) => {
                    // This chunk's items get the error; the input goes on.
                    let mut st = self.shared.lock();
                    let Some(j) = st.jobs.get_mut(&job) else {
                        return Err(Error::PoolClosed);
                    };
                    j.chunks.push(Some(ChunkResult::Failed(e)));
                    j.nitems.push(nitems);
                    if j.unordered {
                        j.completed.push_back(self.submitted);
                    }
                    self.submitted += 1;
                }
                Some((Ok((payload, fds)), nitems)) => {
                    let mut st = self.shared.lock();
                    // A closed pool still finishes the iterators it already handed out.
                    if st.terminated || st.finished {
                        return Err(Error::PoolClosed);
                    }
                    let Some(j) = st.jobs.get_mut(&job) else {
                        return Err(Error::PoolClosed);
                    };
                    j.chunks.push(None);
                    j.nitems.push(nitems);
                    j.remaining += 1;
                    let index = self.submitted;
                    self.shared.submit(
                        &mut st,
                        Task {
                            job,
                            index,
                            payload: Arc::new(payload),
                            fds,
                        },
                    );
                    self.shared.dispatch(&mut st);
                    self.submitted += 1;
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
                return Some(r);
            }
            if let Err(e) = self.fill() {
                self.exhausted = true;
                return Some(Err(e));
            }
            if self.consumed == self.submitted {
                return None;
            }
            let job = self.job?;
            let mut st = self.shared.lock();
            let chunk = loop {
                let Some(j) = st.jobs.get_mut(&job) else {
                    self.consumed = self.submitted;
                    return Some(Err(Error::PoolClosed));
                };
                if self.ordered {
                    // Ordered: the next chunk is always the first one kept; once taken it
                    // is dropped, so an endless input keeps memory bounded.
                    if j.chunks.first().is_some_and(Option::is_some) {
                        let chunk = j.chunks.remove(0);
                        let n = j.nitems.remove(0);
                        j.base += 1;
                        break (chunk, n);
                    }
                } else if let Some(i) = j.completed.pop_front() {
                    let n = j.nitems[i - j.base];
                    let chunk = j.slot(i).and_then(|s| s.replace(ChunkResult::Taken));
                    // Drop the taken slots at the front, so memory stays bounded while
                    // chunks complete roughly in order.
                    while matches!(j.chunks.first(), Some(Some(ChunkResult::Taken))) {
                        j.chunks.remove(0);
                        j.nitems.remove(0);
                        j.base += 1;
                    }
                    break (chunk, n);
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
}

impl<R> Drop for IMap<'_, R> {
    fn drop(&mut self) {
        if let Some(job) = self.job {
            let mut st = self.shared.lock();
            if st.jobs.get(&job).is_some_and(|j| j.remaining == 0) {
                st.jobs.remove(&job);
            } else {
                st.abandon(job);
            }
            drop(st);
            // The driver of a closed pool may be waiting for this job to go away.
            self.shared.wake();
        }
    }
}
