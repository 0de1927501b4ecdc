//! The job table: every unit of work a caller waits on, and the results of its chunks.
//!
//! **Protocol.** A job is opened by a caller (`apply`, `map`, `imap`), which then adds its
//! chunks one by one and seals it once no more will come. Whoever learns a chunk's fate
//! (the driver reading a worker's answer, a worker's exit, a shut-down pool) records it with
//! [`JobTable::complete`]; the caller reads results when the job is done ([`JobTable::get`]
//! for `apply`/`map`, [`JobTable::take_next`] for the `imap` iterators) and removes the job.
//! A caller that goes away releases its job ([`JobTable::release`]): every chunk it
//! submitted still runs (Python runs an `apply_async` whose result nobody keeps), and
//! results that still come are dropped, or go to its callback. A cancelled chunk is one
//! the pool took back before it started: it is completed with `Error::Cancelled`.
//! The table does no I/O and knows nothing about workers: the local process pool (and a
//! future MPI one) only feed it outcomes. It lives inside the pool's state lock.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::task::Waker;

use crate::codec::HandleFd;
use crate::error::{Error, Result};
use crate::sys;

/// A job's id in the table.
pub(crate) type JobId = u64;

/// What became of one chunk.
#[derive(Debug)]
pub(crate) enum ChunkResult {
    /// The worker's encoded `Vec<ItemOutcome<R>>` (after the status byte) and descriptors.
    Done(Vec<u8>, Vec<HandleFd>),
    /// The chunk failed as a whole: every item in it gets this error.
    Failed(Error),
    /// An `imap_unordered` consumer took it already (the slot waits to be trimmed).
    Taken,
}

impl ChunkResult {
    /// A copy of the result for decoding (descriptors duplicated; the job keeps its own).
    pub(crate) fn view(&self) -> Result<(&[u8], Vec<OwnedFd>)> {
        match self {
            ChunkResult::Done(bytes, fds) => Ok((
                bytes,
                fds.iter()
                    .map(|f| sys::fd::dup_cloexec(f.as_fd()))
                    .collect::<std::io::Result<_>>()?,
            )),
            ChunkResult::Failed(e) => Err(e.duplicate()),
            ChunkResult::Taken => Err(Error::PoolClosed),
        }
    }
}

/// A callback made when a job completes: it decodes under the lock and returns the user's
/// callback, to run outside it.
pub(crate) type OnDone = Box<dyn FnOnce(&Job) -> Box<dyn FnOnce() + Send> + Send>;

/// A user callback ready to run (outside the lock, on the driver thread).
pub(crate) type Callback = Box<dyn FnOnce() + Send>;

/// How a job's results are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// All at once, or front to back (`apply`, `map`, `imap`).
    InOrder,
    /// In the order chunks complete (`imap_unordered`).
    Completion,
}

/// Who still wants a job's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// Its `AsyncResult` or `IMap` is alive.
    Caller,
    /// Its `AsyncResult` was dropped with a callback set: run the callback, then forget.
    Detached,
    /// Nobody: drop results as they come, forget the job once nothing is out.
    Abandoned,
}

/// A unit the caller waits on: one `apply`, one `map`, one `imap`.
pub(crate) struct Job {
    /// Results by chunk index, from `base` on (an `imap` drops what it consumed).
    chunks: VecDeque<Option<ChunkResult>>,
    /// Items in each kept chunk.
    nitems: VecDeque<usize>,
    base: usize,
    /// Chunks added and not yet resolved.
    remaining: usize,
    /// No more chunks will be added.
    sealed: bool,
    reader: Reader,
    order: Order,
    /// Chunk indices in the order they completed (`Order::Completion` only).
    completed: VecDeque<usize>,
    on_done: Option<OnDone>,
    /// The task awaiting it (`AsyncResult` as a future), woken when it is done.
    waker: Option<Waker>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("chunks", &self.chunks.len())
            .field("remaining", &self.remaining)
            .field("sealed", &self.sealed)
            .field("reader", &self.reader)
            .finish()
    }
}

impl Job {
    fn new(order: Order) -> Job {
        Job {
            chunks: VecDeque::new(),
            nitems: VecDeque::new(),
            base: 0,
            remaining: 0,
            sealed: false,
            reader: Reader::Caller,
            order,
            completed: VecDeque::new(),
            on_done: None,
            waker: None,
        }
    }

    /// Whether every chunk has a result and none will be added.
    fn is_done(&self) -> bool {
        self.sealed && self.remaining == 0
    }

    /// The kept chunks in order, with their item counts (`None`: no result, the pool
    /// stopped first).
    pub(crate) fn chunks(&self) -> impl Iterator<Item = (Option<&ChunkResult>, usize)> {
        self.chunks
            .iter()
            .zip(self.nitems.iter())
            .map(|(c, &n)| (c.as_ref(), n))
    }

    fn slot(&mut self, index: usize) -> Option<&mut Option<ChunkResult>> {
        let i = index.checked_sub(self.base)?;
        self.chunks.get_mut(i)
    }

    /// Drops consumed slots at the front so memory stays bounded for endless inputs.
    fn trim(&mut self) {
        while matches!(self.chunks.front(), Some(Some(ChunkResult::Taken))) {
            self.chunks.pop_front();
            self.nitems.pop_front();
            self.base += 1;
        }
    }
}

/// Every job of one pool.
#[derive(Debug, Default)]
pub(crate) struct JobTable {
    jobs: HashMap<JobId, Job>,
    next: JobId,
    /// Bumped whenever a waiter may now proceed: a job done, or a result an `imap` can
    /// hand out. The driver wakes waiters only when it moved (a `map`'s caller sleeps
    /// through the completions of all its chunks but the last).
    signals: u64,
}

impl JobTable {
    /// Opens an empty, unsealed job.
    pub(crate) fn open(&mut self, order: Order) -> JobId {
        let id = self.next;
        self.next += 1;
        self.jobs.insert(id, Job::new(order));
        id
    }

    /// A sealed one-item job that already failed with `err`.
    pub(crate) fn open_failed(&mut self, err: Error) -> JobId {
        let id = self.open(Order::InOrder);
        self.add_resolved(id, 1, ChunkResult::Failed(err));
        self.seal(id);
        id
    }

    /// Adds a chunk of `nitems` items whose result is to come; its index, or `None` if
    /// the job is gone.
    pub(crate) fn add_chunk(&mut self, id: JobId, nitems: usize) -> Option<usize> {
        let j = self.jobs.get_mut(&id)?;
        let index = j.base + j.chunks.len();
        j.chunks.push_back(None);
        j.nitems.push_back(nitems);
        j.remaining += 1;
        Some(index)
    }

    /// Adds a chunk whose result is already known (it failed to encode).
    pub(crate) fn add_resolved(&mut self, id: JobId, nitems: usize, result: ChunkResult) {
        if let Some(index) = self.add_chunk(id, nitems) {
            let mut ignored = Vec::new();
            self.complete(id, index, result, &mut ignored);
        }
    }

    /// No more chunks will be added.
    pub(crate) fn seal(&mut self, id: JobId) {
        if let Some(j) = self.jobs.get_mut(&id) {
            j.sealed = true;
        }
        let mut ignored = Vec::new();
        self.finish_if_done(id, &mut ignored);
    }

    /// Records chunk `index`'s result; if that completes the job, its callback goes to
    /// `callbacks`. A result for a job or slot that is gone (abandoned, already
    /// resolved) is dropped.
    pub(crate) fn complete(
        &mut self,
        id: JobId,
        index: usize,
        result: ChunkResult,
        callbacks: &mut Vec<Callback>,
    ) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if j.reader == Reader::Abandoned {
            j.remaining = j.remaining.saturating_sub(1);
            if j.remaining == 0 {
                self.jobs.remove(&id);
            }
            return;
        }
        let Some(slot) = j.slot(index) else { return };
        if slot.is_some() {
            return;
        }
        *slot = Some(result);
        j.remaining -= 1;
        if j.order == Order::Completion {
            j.completed.push_back(index);
        }
        if j.order == Order::Completion || index == j.base || j.is_done() {
            self.signals += 1;
        }
        self.finish_if_done(id, callbacks);
    }

    fn finish_if_done(&mut self, id: JobId, callbacks: &mut Vec<Callback>) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if !j.is_done() {
            return;
        }
        if let Some(w) = j.waker.take() {
            // Under the pool's lock: an executor's `wake` only schedules the task.
            w.wake();
        }
        if let Some(on_done) = j.on_done.take() {
            callbacks.push(on_done(j));
        }
        if j.reader == Reader::Detached {
            self.jobs.remove(&id);
        }
    }

    /// Moves whenever a waiter may now proceed (see the field).
    pub(crate) fn signals(&self) -> u64 {
        self.signals
    }

    /// Whether the job is done (a job that is gone counts as done: nothing will change).
    pub(crate) fn is_done(&self, id: JobId) -> bool {
        self.jobs.get(&id).is_none_or(Job::is_done)
    }

    /// The job, to decode its results.
    pub(crate) fn get(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    /// Forgets a job whose results were taken.
    pub(crate) fn remove(&mut self, id: JobId) {
        self.jobs.remove(&id);
    }

    /// Sets the completion callback of an unfinished job (the caller checked that it is
    /// not done, under the same lock).
    pub(crate) fn set_on_done(&mut self, id: JobId, on_done: OnDone) {
        if let Some(j) = self.jobs.get_mut(&id) {
            j.on_done = Some(on_done);
        }
    }

    /// Registers the waker of the task awaiting this job (replacing an earlier one); false
    /// if the job is already done or gone (poll again now).
    pub(crate) fn set_waker(&mut self, id: JobId, waker: &Waker) -> bool {
        match self.jobs.get_mut(&id) {
            Some(j) if !j.is_done() => {
                match &mut j.waker {
                    Some(w) if w.will_wake(waker) => {}
                    slot => *slot = Some(waker.clone()),
                }
                true
            }
            _ => false,
        }
    }

    /// The caller went away (its `AsyncResult` or `IMap` was dropped). Nothing it
    /// submitted is cancelled: its chunks still queued run as the others do. A job with
    /// nothing out is forgotten; one with a callback runs on and is forgotten after the
    /// callback; any other is abandoned: its results are dropped as they come, and it is
    /// forgotten once nothing is out. No chunk is added after this (an `imap` stops
    /// taking input).
    pub(crate) fn release(&mut self, id: JobId) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.sealed = true;
        if j.remaining == 0 {
            self.jobs.remove(&id);
        } else if j.on_done.is_some() {
            j.reader = Reader::Detached;
        } else {
            self.abandon(id, 0);
        }
    }

    /// For `cancel`: whether no chunk of the job has a result yet (none finished; none
    /// was consumed by an `imap`), and how many are unresolved. `None` if the job is gone.
    pub(crate) fn unresolved(&self, id: JobId) -> Option<(bool, usize)> {
        let j = self.jobs.get(&id)?;
        let untouched = j.base == 0 && j.chunks.iter().all(Option::is_none);
        Some((untouched, j.remaining))
    }

    /// Nobody will read this job: `unsent` of its chunks will never be sent (they were
    /// dropped from the queue: a submission that failed half-way), results of the others
    /// are dropped as they come.
    pub(crate) fn abandon(&mut self, id: JobId, unsent: usize) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.remaining = j.remaining.saturating_sub(unsent);
        j.reader = Reader::Abandoned;
        j.sealed = true;
        j.chunks.clear();
        j.nitems.clear();
        j.completed.clear();
        j.on_done = None;
        j.waker = None;
        if j.remaining == 0 {
            self.jobs.remove(&id);
        }
    }

    /// Whether some caller is still adding chunks (work to come, even if none is queued).
    pub(crate) fn feeding(&self) -> bool {
        self.jobs
            .values()
            .any(|j| !j.sealed && j.reader != Reader::Abandoned)
    }

    /// For an `imap`: whether [`JobTable::take_next`] would return at once.
    pub(crate) fn has_next(&self, id: JobId) -> bool {
        self.jobs.get(&id).is_none_or(|j| match j.order {
            Order::InOrder => j.chunks.front().is_some_and(Option::is_some),
            Order::Completion => !j.completed.is_empty(),
        })
    }

    /// For an `imap`: the next result to hand out (in order or in completion order), with
    /// its item count; `Ok(None)` if it has not come yet, `Err` if the job is gone.
    pub(crate) fn take_next(&mut self, id: JobId) -> Result<Option<(Option<ChunkResult>, usize)>> {
        let j = self.jobs.get_mut(&id).ok_or(Error::PoolClosed)?;
        match j.order {
            Order::InOrder => {
                if !j.chunks.front().is_some_and(Option::is_some) {
                    return Ok(None);
                }
                let chunk = j.chunks.pop_front().flatten();
                let n = j.nitems.pop_front().unwrap_or(0);
                j.base += 1;
                Ok(Some((chunk, n)))
            }
            Order::Completion => {
                let Some(i) = j.completed.pop_front() else {
                    return Ok(None);
                };
                let n = i
                    .checked_sub(j.base)
                    .and_then(|k| j.nitems.get(k))
                    .copied()
                    .unwrap_or(0);
                let chunk = j.slot(i).and_then(|s| s.replace(ChunkResult::Taken));
                j.trim();
                Ok(Some((chunk, n)))
            }
        }
    }

    /// Chunks of this job not resolved yet (for tests of the accounting).
    #[cfg(test)]
    fn remaining(&self, id: JobId) -> Option<usize> {
        self.jobs.get(&id).map(|j| j.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(n: u8) -> ChunkResult {
        ChunkResult::Done(vec![n], Vec::new())
    }

    #[test]
    fn a_job_is_done_once_sealed_and_resolved() {
        let mut t = JobTable::default();
        let id = t.open(Order::InOrder);
        let a = t.add_chunk(id, 2).unwrap();
        let b = t.add_chunk(id, 1).unwrap();
        assert_eq!((a, b), (0, 1));
        let mut cbs = Vec::new();
        t.complete(id, b, done(1), &mut cbs);
        t.complete(id, a, done(0), &mut cbs);
        assert!(!t.is_done(id), "not sealed yet");
        t.seal(id);
        assert!(t.is_done(id));
        // A second result for a resolved slot is ignored.
        t.complete(id, a, done(9), &mut cbs);
        let counts: Vec<usize> = t.get(id).unwrap().chunks().map(|(_, n)| n).collect();
        assert_eq!(counts, vec![2, 1]);
    }

    #[test]
    fn unordered_takes_in_completion_order_and_trims() {
        let mut t = JobTable::default();
        let id = t.open(Order::Completion);
        for _ in 0..3 {
            t.add_chunk(id, 1);
        }
        let mut cbs = Vec::new();
        t.complete(id, 2, done(2), &mut cbs);
        t.complete(id, 0, done(0), &mut cbs);
        let first = t.take_next(id).unwrap().unwrap();
        assert!(matches!(first.0, Some(ChunkResult::Done(ref b, _)) if b == &[2]));
        let second = t.take_next(id).unwrap().unwrap();
        assert!(matches!(second.0, Some(ChunkResult::Done(ref b, _)) if b == &[0]));
        assert!(t.take_next(id).unwrap().is_none());
        assert_eq!(t.get(id).unwrap().chunks().count(), 2, "slot 0 trimmed");
    }

    #[test]
    fn abandoned_jobs_are_forgotten_when_nothing_is_out() {
        let mut t = JobTable::default();
        let id = t.open(Order::InOrder);
        for _ in 0..3 {
            t.add_chunk(id, 1);
        }
        t.abandon(id, 1); // one never sent, two running
        assert_eq!(t.remaining(id), Some(2));
        assert!(!t.feeding());
        let mut cbs = Vec::new();
        t.complete(id, 0, done(0), &mut cbs);
        t.complete(id, 1, done(1), &mut cbs);
        assert!(t.get(id).is_none());
    }

    #[test]
    fn a_released_job_keeps_its_queued_chunks_counted() {
        let mut t = JobTable::default();
        let id = t.open(Order::InOrder);
        for _ in 0..2 {
            t.add_chunk(id, 1);
        }
        t.seal(id);
        t.release(id);
        // Both chunks are still out (neither is cancelled): the job waits for both.
        assert_eq!(t.remaining(id), Some(2));
        let mut cbs = Vec::new();
        t.complete(id, 0, done(0), &mut cbs);
        assert_eq!(t.remaining(id), Some(1));
        t.complete(id, 1, done(1), &mut cbs);
        assert!(t.get(id).is_none());
    }

    #[test]
    fn a_detached_job_runs_its_callback_then_goes() {
        let mut t = JobTable::default();
        let id = t.open(Order::InOrder);
        t.add_chunk(id, 1);
        t.seal(id);
        let on_done: OnDone = Box::new(|_job: &Job| Box::new(|| {}) as Callback);
        t.set_on_done(id, on_done);
        t.release(id);
        let mut cbs = Vec::new();
        t.complete(id, 0, done(0), &mut cbs);
        assert_eq!(cbs.len(), 1);
        assert!(t.get(id).is_none());
    }
}
