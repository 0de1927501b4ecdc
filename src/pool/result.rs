//! `AsyncResult`: a handle on work submitted to a pool.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, Result};
use crate::pool::engine::{Job, Shared};
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
#[must_use = "an AsyncResult does nothing until you get() it (dropping it discards the result)"]
pub struct AsyncResult<T> {
    shared: Arc<Shared>,
    job: u64,
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
    pub(crate) fn new(shared: Arc<Shared>, job: u64, decode: fn(&Job) -> Result<T>) -> Self {
        AsyncResult {
            shared,
            job,
            decode,
            taken: false,
            _t: PhantomData,
        }
    }

    /// An `AsyncResult` that already failed (the pool was closed, the input did not encode).
    pub(crate) fn failed(shared: Arc<Shared>, err: Error) -> Self {
        let job = shared.lock().insert_job(failed_job(err));
        AsyncResult::new(shared, job, |job| match &job.chunks[0] {
            Some(crate::pool::engine::ChunkResult::Failed(e)) => Err(e.duplicate()),
            _ => Err(Error::PoolClosed),
        })
    }

    /// Waits until the result is ready, or `deadline` passes; true if ready.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut st = self.shared.lock();
        loop {
            match st.jobs.get(&self.job) {
                Some(j) if j.is_done() => return true,
                None => return true,
                Some(_) => {}
            }
            match self.shared.wait_change(st, deadline) {
                Some(next) => st = next,
                None => return false,
            }
        }
    }

    fn decode_now(&self) -> Result<T> {
        let st = self.shared.lock();
        match st.jobs.get(&self.job) {
            Some(j) => (self.decode)(j),
            None => Err(Error::PoolClosed),
        }
    }

    /// Waits for the result and returns it: the value, or the task's error
    /// (`TaskPanicked`, `WorkerDied`, `Timeout`, ...).
    pub fn get(mut self) -> Result<T> {
        self.wait_until(None);
        let r = self.decode_now();
        self.taken = true;
        self.shared.lock().jobs.remove(&self.job);
        r
    }

    /// Waits at most `d`; `Err(Error::Timeout)` if the result is not ready by then (the
    /// task goes on; ask again later).
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

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        let st = self.shared.lock();
        st.jobs.get(&self.job).is_none_or(Job::is_done)
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
    /// ready already. Keep them short: a slow callback delays every other result.
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
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Self {
        let decode = self.decode;
        let shared = Arc::clone(&self.shared);
        let mut st = shared.lock();
        let ready = match st.jobs.get(&self.job) {
            Some(j) if !j.is_done() => None,
            Some(j) => Some(decode(j)),
            None => Some(Err(Error::PoolClosed)),
        };
        match ready {
            None => {
                let j = st
                    .jobs
                    .get_mut(&self.job)
                    .expect("looked up under the same lock");
                j.on_done = Some(Box::new(move |job: &Job| {
                    let r = decode(job);
                    Box::new(move || match r {
                        Ok(v) => callback(&v),
                        Err(e) => error_callback(&e),
                    })
                }));
            }
            Some(r) => {
                drop(st);
                match r {
                    Ok(v) => callback(&v),
                    Err(e) => error_callback(&e),
                }
                return self;
            }
        }
        drop(st);
        self
    }
}

impl<T> Drop for AsyncResult<T> {
    fn drop(&mut self) {
        if !self.taken {
            let mut st = self.shared.lock();
            match st.jobs.get_mut(&self.job) {
                Some(j) if j.is_done() => {
                    st.jobs.remove(&self.job);
                }
                // A callback is waiting for this result: let the task run and the callback
                // fire (Python's `apply_async(f, args, callback=cb)` without keeping the
                // result), then forget the job.
                Some(j) if j.on_done.is_some() => j.detached = true,
                Some(_) => st.abandon(self.job),
                None => {}
            }
            drop(st);
            self.shared.wake();
        }
    }
}

fn failed_job(err: Error) -> Job {
    Job {
        chunks: vec![Some(crate::pool::engine::ChunkResult::Failed(err))],
        nitems: vec![1],
        remaining: 0,
        sealed: true,
        ..Job::default()
    }
}

/// Decodes every item of a job, in order; a failed chunk gives its error for each item.
pub(crate) fn items<R: DeserializeOwned>(job: &Job) -> Vec<Result<R>> {
    let mut out = Vec::new();
    for (i, chunk) in job.chunks.iter().enumerate() {
        let n = job.nitems.get(i).copied().unwrap_or(0);
        match chunk {
            Some(c) => push_chunk(c, n, &mut out),
            None => out.extend((0..n).map(|_| Err(Error::PoolClosed))),
        }
    }
    out
}

/// Decodes one chunk's items onto `out`.
pub(crate) fn push_chunk<R: DeserializeOwned>(
    chunk: &crate::pool::engine::ChunkResult,
    nitems: usize,
    out: &mut Vec<Result<R>>,
) {
    match chunk.view() {
        Ok((bytes, fds)) => match codec::decode::<Vec<ItemOutcome<R>>>(bytes, fds) {
            Ok(v) => out.extend(v.into_iter().map(|o| match o {
                ItemOutcome::Returned(r) => Ok(r),
                ItemOutcome::Panicked(message) => Err(Error::TaskPanicked { message }),
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
