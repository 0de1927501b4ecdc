//! `AsyncResult`: a handle on work submitted to a pool, to wait on, poll, or `.await`.
//!
//! The result lives in the pool's [`JobTable`](crate::pool::jobs::JobTable) until taken.
//! A blocking waiter spins briefly on the pool's progress counter, then sleeps on its
//! condition variable; an `.await`ing task leaves its `Waker` with the job, and whoever
//! completes the job (the driver, or a pool shutting down) wakes it. No runtime is needed.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, Result};
use crate::pool::engine::Shared;
use crate::pool::jobs::{Callback, ChunkResult, Job, JobId, OnDone};
use crate::target::ItemOutcome;

/// The result of a task (or a map) submitted asynchronously (Python's `AsyncResult`).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn slow_square(x: u64) -> u64 { x * x }
/// let pool = mproc::Pool::new(2)?;
/// let r = pool.apply_async(slow_square, (9,));
/// assert_eq!(r.get()?, 81);
/// # Ok(()) }
/// ```
///
/// It is also a future (`pool.apply_async(f, args).await`), under any executor: the task
/// is woken when the result arrives.
///
/// Dropping it does not cancel the task: it runs all the same, and its result is dropped
/// when it comes, as in Python (`let _ = pool.apply_async(f, args)` is fire-and-forget;
/// `close()` then `join()` waits for it). Only [`cancel`](Self::cancel) cancels.
#[must_use = "dropping an AsyncResult discards the result (the task still runs); get() it, or cancel() it"]
pub struct AsyncResult<T> {
    shared: Arc<Shared>,
    job: JobId,
    decode: fn(&Job) -> Result<T>,
    taken: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("job", &self.job)
            .field("ready", &self.ready())
            .finish()
    }
}

impl<T> AsyncResult<T> {
    pub(crate) fn new(shared: Arc<Shared>, job: JobId, decode: fn(&Job) -> Result<T>) -> Self {
        AsyncResult {
            shared,
            job,
            decode,
            taken: false,
            _t: PhantomData,
        }
    }

    /// An `AsyncResult` that already failed (the pool was closed, the input did not encode).
    pub(crate) fn failed(shared: Arc<Shared>, err: Error, decode: fn(&Job) -> Result<T>) -> Self {
        let job = shared.lock().jobs.open_failed(err);
        AsyncResult::new(shared, job, decode)
    }

    /// Waits until the result is ready, or `deadline` passes; true if ready.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut st = self
            .shared
            .lock_when(deadline, |st| st.jobs.is_done(self.job));
        loop {
            if st.jobs.is_done(self.job) {
                return true;
            }
            match self.shared.wait_change(st, deadline) {
                Some(next) => st = next,
                None => return false,
            }
        }
    }

    fn decode_now(&self) -> Result<T> {
        let st = self.shared.lock();
        match st.jobs.get(self.job) {
            Some(j) => (self.decode)(j),
            None => Err(Error::PoolClosed),
        }
    }

    /// Decodes the (ready) result and forgets the job.
    fn take(&mut self) -> Result<T> {
        let mut st = self.shared.lock();
        let r = match st.jobs.get(self.job) {
            Some(j) => (self.decode)(j),
            None => Err(Error::PoolClosed),
        };
        st.jobs.remove(self.job);
        self.taken = true;
        r
    }

    /// Waits for the result and returns it: the value, or the task's error
    /// (`TaskPanicked`, `WorkerDied`, `TaskTimedOut`, ...).
    pub fn get(mut self) -> Result<T> {
        self.wait_until(None);
        self.take()
    }

    /// Waits at most `d`; `Err(Error::Timeout)` if the result is not ready by then (the
    /// task goes on; ask again later). `Timeout` always means this wait ran out; a task
    /// the pool killed for running past its `task_timeout` is `Error::TaskTimedOut`.
    pub fn get_timeout(&self, d: Duration) -> Result<T> {
        if self.wait_until(Instant::now().checked_add(d)) {
            self.decode_now()
        } else {
            Err(Error::Timeout)
        }
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits at most `d`; true if the result is ready.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(d))
    }

    /// Cancels the task if it has not started: true if it had not and now never will
    /// (then it is ready: [`get`](Self::get) is `Err(Error::Cancelled)`,
    /// [`successful`](Self::successful) `Some(false)`, and the error callback of
    /// [`on_complete`](Self::on_complete) gets `Error::Cancelled`); false if it started or
    /// finished (it goes on; nothing changes). A task waiting in the pool's queue is taken
    /// out; one already sent to a busy worker as its next task is taken back if the worker
    /// has not reached it (exactly one of the two wins).
    ///
    /// For a job of several chunks (`map_async`, `starmap_async`), every chunk not yet
    /// started is cancelled, and the result is true only if none had started or finished,
    /// so that nothing of it ran (concurrent.futures' rule: `cancel` is true only when
    /// nothing ran). When it is false, the chunks that ran keep their results and those
    /// stopped fail with `Error::Cancelled`, so `get()` is `Err(Error::Cancelled)` unless
    /// every chunk had started.
    ///
    /// ```
    /// # fn main() -> mproc::Result<()> {
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    /// let pool = mproc::Pool::new(1)?;
    /// let running = pool.apply_async(nap, (300,));
    /// let queued = pool.apply_async(nap, (0,));
    /// assert!(queued.cancel()); // the only worker is busy: it never starts
    /// assert!(matches!(queued.get(), Err(mproc::Error::Cancelled)));
    /// assert_eq!(running.get()?, 300);
    /// # Ok(()) }
    /// ```
    pub fn cancel(&self) -> bool {
        self.shared.cancel(self.job)
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        self.shared.lock().jobs.is_done(self.job)
    }

    /// `None` until ready; then whether the task succeeded.
    pub fn successful(&self) -> Option<bool> {
        if !self.ready() {
            return None;
        }
        Some(self.decode_now().is_ok())
    }
}

impl<T: Send + 'static> AsyncResult<T> {
    /// Python's `callback` and `error_callback`: when the result is ready, one of them runs
    /// in this (the parent) process, on the pool's thread — or at once, here, if it is
    /// ready already. Keep them short: a slow callback delays every other result. The
    /// error callback gets the error by value.
    ///
    /// ```
    /// # fn main() -> mproc::Result<()> {
    /// use std::sync::mpsc;
    /// fn double(x: i32) -> i32 { x * 2 }
    /// let pool = mproc::Pool::new(1)?;
    /// let (tx, rx) = mpsc::channel();
    /// let r = pool.apply_async(double, (21,)).on_complete(
    ///     move |v| tx.send(*v).unwrap(),
    ///     |e| panic!("unexpected {e}"),
    /// );
    /// assert_eq!(rx.recv().unwrap(), 42);
    /// assert_eq!(r.get()?, 42);
    /// # Ok(()) }
    /// ```
    pub fn on_complete(
        self,
        callback: impl FnOnce(&T) + Send + 'static,
        error_callback: impl FnOnce(Error) + Send + 'static,
    ) -> Self {
        let decode = self.decode;
        let mut st = self.shared.lock();
        let now = match st.jobs.get(self.job) {
            None => Some(Err(Error::PoolClosed)),
            Some(j) if st.jobs.is_done(self.job) => Some(decode(j)),
            Some(_) => None,
        };
        match now {
            Some(r) => {
                // Ready already: run it here, outside the lock.
                drop(st);
                match r {
                    Ok(v) => callback(&v),
                    Err(e) => error_callback(e),
                }
            }
            None => {
                let on_done: OnDone = Box::new(move |job: &Job| {
                    let r = decode(job);
                    Box::new(move || match r {
                        Ok(v) => callback(&v),
                        Err(e) => error_callback(e),
                    }) as Callback
                });
                // Not done (checked under this lock), so it will run on completion.
                st.jobs.set_on_done(self.job, on_done);
                drop(st);
            }
        }
        self
    }
}

/// The future of an [`AsyncResult`]: `Ready` with the result once it arrives.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct ResultFuture<T> {
    result: Option<AsyncResult<T>>,
}

impl<T> Future for ResultFuture<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let Some(r) = self.result.as_mut() else {
            return Poll::Ready(Err(Error::ValueError(
                "an AsyncResult future was polled after it completed".into(),
            )));
        };
        {
            // Checked and registered under one lock: the driver cannot complete the job
            // in between and miss the waker.
            let mut st = r.shared.lock();
            if st.jobs.set_waker(r.job, cx.waker()) {
                return Poll::Pending;
            }
        }
        let mut r = self.result.take().expect("checked above");
        Poll::Ready(r.take())
    }
}

impl<T> IntoFuture for AsyncResult<T> {
    type Output = Result<T>;
    type IntoFuture = ResultFuture<T>;

    /// `pool.apply_async(f, args).await`: woken (not polled in a loop) when it is ready.
    fn into_future(self) -> ResultFuture<T> {
        ResultFuture { result: Some(self) }
    }
}

/// Dropping an `AsyncResult` cancels nothing: the task runs, and its result is dropped
/// when it comes (or handed to the callback set with `on_complete`).
impl<T> Drop for AsyncResult<T> {
    fn drop(&mut self) {
        if !self.taken {
            self.shared.lock().jobs.release(self.job);
            // The driver of a closed pool may be waiting for this job to go away.
            self.shared.wake();
        }
    }
}

/// Decodes every item of a job, in order; a failed chunk gives its error for each item.
pub(crate) fn items<R: DeserializeOwned>(job: &Job) -> Vec<Result<R>> {
    let mut out = Vec::new();
    for (chunk, n) in job.chunks() {
        match chunk {
            Some(c) => push_chunk(c, n, &mut out),
            None => out.extend((0..n).map(|_| Err(Error::PoolClosed))),
        }
    }
    out
}

/// Decodes one chunk's items onto `out`: exactly `nitems` of them, whatever the chunk
/// holds (a worker's answer was checked against its count when it came; this keeps a
/// caller's results in step with its inputs all the same).
pub(crate) fn push_chunk<R: DeserializeOwned>(
    chunk: &ChunkResult,
    nitems: usize,
    out: &mut Vec<Result<R>>,
) {
    match chunk.view() {
        Ok((bytes, fds)) => match codec::decode::<Vec<ItemOutcome<R>>>(bytes, fds) {
            Ok(v) if v.len() != nitems => {
                let e = Error::Codec(format!(
                    "a chunk of {nitems} items came back with {} results",
                    v.len()
                ));
                out.extend((0..nitems).map(|_| Err(e.duplicate())));
            }
            Ok(v) => out.extend(v.into_iter().map(|o| match o {
                ItemOutcome::Returned(r) => Ok(r),
                ItemOutcome::Panicked(p) => Err(p.into()),
            })),
            Err(e) => out.extend((0..nitems).map(|_| Err(e.duplicate()))),
        },
        Err(e) => out.extend((0..nitems).map(|_| Err(e.duplicate()))),
    }
}

/// `apply`: the single item.
pub(crate) fn decode_one<R: DeserializeOwned>(job: &Job) -> Result<R> {
    items::<R>(job)
        .into_iter()
        .next()
        .unwrap_or(Err(Error::PoolClosed))
}

/// `map`: every item, or the first error (in input order).
pub(crate) fn decode_all<R: DeserializeOwned>(job: &Job) -> Result<Vec<R>> {
    items::<R>(job).into_iter().collect()
}
