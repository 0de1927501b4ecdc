//! `Pool`: long-lived workers that survive crashing, hanging and leaking tasks.
//!
//! Work is cut into chunks (Python's `chunksize`); each chunk is one frame to one worker
//! through that worker's shared-memory ring, and one frame back (a frame too large for a
//! ring goes on the worker's socket, announced in the ring). Layout:
//! - `link.rs`: a worker's links, the ring and the socket, read without ever waiting;
//! - `jobs.rs`: the [`JobTable`](jobs::JobTable) — what callers wait on, and results;
//! - `slot.rs`: one worker as the pool sees it, its [`Phase`](ahead::Phase), and pull
//!   scheduling (a worker gets a task when it is idle, or ahead behind its gate);
//! - `gate.rs`: how a busy worker's next tasks are sent ahead and taken back;
//! - `ahead.rs`: the accounting of a worker's tasks and the dispatch decisions, no I/O;
//! - `engine.rs`: the shared state, dispatch, and the spin-then-sleep waits;
//! - `driver.rs`: the thread that reads answers and supervises workers;
//! - `worker.rs`: the worker process's loop; `result.rs`, `imap.rs`: the handles;
//! - `builder.rs`: [`PoolBuilder`]; `submit.rs`: chunking, encoding and submitting a job.
//!
//! A worker that dies costs only the chunk it was running (`Error::WorkerDied` for each of
//! its items) and is replaced; a chunk that runs past `task_timeout` gets its worker killed
//! and reports `Error::TaskTimedOut`; a panic in a task is caught in the worker and
//! reported as `Error::TaskPanicked` for that item only.
//!
//! The job table knows nothing of processes or sockets: another kind of worker (MPI ranks)
//! can feed it outcomes the same way the local driver does.
//!
//! Dropping a `Pool` terminates it, as leaving Python's `with Pool() as p:` block does:
//! workers are killed and reaped, and results not yet collected fail with
//! `Error::PoolClosed`. Call `close` and `join` first to let queued work finish.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::target::{self, Target};

mod ahead;
mod builder;
mod driver;
mod engine;
mod gate;
mod imap;
mod jobs;
mod link;
mod result;
mod slot;
mod submit;
mod worker;

pub use builder::PoolBuilder;

pub use imap::IMap;
pub use result::{AsyncResult, ResultFuture};

use engine::Shared;
use submit::{ChunkFeed, check_chunksize, default_chunksize};

/// What the MPI driver (`src/mpi/driver.rs`) uses of the pool: the state it feeds.
#[cfg(feature = "mpi")]
pub(crate) mod mpi_hooks {
    pub(crate) use super::engine::{Shared, State};
    pub(crate) use super::jobs::{Callback, ChunkResult};
    pub(crate) use super::slot::Task;
}

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn square(x: u64) -> u64 { x * x }
/// let pool = mproc::Pool::new(2)?;
/// assert_eq!(pool.map(square, 1..=5)?, vec![1, 4, 9, 16, 25]);
/// assert_eq!(pool.apply(square, (12,))?, 144);
/// let firsts: Vec<u64> = pool.imap(square, 0..).take(3).collect::<mproc::Result<_>>()?;
/// assert_eq!(firsts, vec![0, 1, 4]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// A pool of `processes` workers (0 means [`crate::cpu_count`]).
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A builder for a configured pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers.
    pub fn processes(&self) -> usize {
        self.shared.config.processes
    }

    /// Runs `f(args...)` in a worker and waits for the result.
    pub fn apply<F, Args, R>(&self, f: F, args: Args) -> Result<R>
    where
        F: Target<Args, R>,
        Args: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let job = self.submit_chunks::<F, Args, R>(vec![args], 1, true);
        self.async_result(job, result::decode_one::<R>).get()
    }

    /// Runs `f(args...)` in a worker; the result comes through the returned handle.
    /// Dropping the handle does not cancel the task: `let _ = pool.apply_async(f, args);`
    /// runs it (fire-and-forget, as in Python), and `close()` then `join()` wait for it.
    /// [`AsyncResult::cancel`] cancels a task that has not started.
    pub fn apply_async<F, Args, R>(&self, f: F, args: Args) -> AsyncResult<R>
    where
        F: Target<Args, R>,
        Args: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let job = self.submit_chunks::<F, Args, R>(vec![args], 1, false);
        self.async_result(job, result::decode_one::<R>)
    }

    /// `f` over every item, in order, with Python's default chunking. The first failed
    /// item (in input order) is the call's error; every task runs either way.
    pub fn map<F, T, R>(&self, f: F, items: impl IntoIterator<Item = T>) -> Result<Vec<R>>
    where
        F: Target<(T,), R>,
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let items: Vec<(T,)> = items.into_iter().map(|t| (t,)).collect();
        let chunksize = default_chunksize(items.len(), self.processes());
        let job = self.submit_chunks::<F, (T,), R>(items, chunksize, true);
        self.async_result(job, result::decode_all::<R>).get()
    }

    /// `map` with an explicit chunk size (items per task); 0 is `Err(ValueError)`, as in
    /// Python.
    pub fn map_chunked<F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<Vec<R>>
    where
        F: Target<(T,), R>,
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let items: Vec<(T,)> = items.into_iter().map(|t| (t,)).collect();
        let job = self.submit_chunks::<F, (T,), R>(items, chunksize, true);
        self.async_result(job, result::decode_all::<R>).get()
    }

    /// `map` without waiting.
    pub fn map_async<F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
    ) -> AsyncResult<Vec<R>>
    where
        F: Target<(T,), R>,
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let items: Vec<(T,)> = items.into_iter().map(|t| (t,)).collect();
        let chunksize = default_chunksize(items.len(), self.processes());
        let job = self.submit_chunks::<F, (T,), R>(items, chunksize, false);
        self.async_result(job, result::decode_all::<R>)
    }

    /// `f(a, b, ...)` for every argument tuple, in order.
    pub fn starmap<F, Args, R>(&self, f: F, items: impl IntoIterator<Item = Args>) -> Result<Vec<R>>
    where
        F: Target<Args, R>,
        Args: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let items: Vec<Args> = items.into_iter().collect();
        let chunksize = default_chunksize(items.len(), self.processes());
        let job = self.submit_chunks::<F, Args, R>(items, chunksize, true);
        self.async_result(job, result::decode_all::<R>).get()
    }

    /// `starmap` without waiting.
    pub fn starmap_async<F, Args, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = Args>,
    ) -> AsyncResult<Vec<R>>
    where
        F: Target<Args, R>,
        Args: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let items: Vec<Args> = items.into_iter().collect();
        let chunksize = default_chunksize(items.len(), self.processes());
        let job = self.submit_chunks::<F, Args, R>(items, chunksize, false);
        self.async_result(job, result::decode_all::<R>)
    }

    /// A lazy, ordered `map`: one item per task (as in Python), input read only as results
    /// are consumed, so `pool.imap(f, 0..)` works.
    pub fn imap<'a, F, T, R>(&self, f: F, items: impl IntoIterator<Item = T> + 'a) -> IMap<'a, R>
    where
        F: Target<(T,), R>,
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_chunked(f, items, 1, true)
    }

    /// `imap`, with results in the order they complete.
    pub fn imap_unordered<'a, F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T> + 'a,
    ) -> IMap<'a, R>
    where
        F: Target<(T,), R>,
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_chunked(f, items, 1, false)
    }

    /// `imap` (ordered or not) with `chunksize` items per task; chunksize 0 yields one
    /// `Err(ValueError)`, as Python raises.
    pub fn imap_chunked<'a, F, T, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T> + 'a,
        chunksize: usize,
        ordered: bool,
    ) -> IMap<'a, R>
    where
        F: Target<(T,), R>,
        T: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let entry = target::pool_entry_offset::<F, (T,), R>();
        let feed = Box::new(ChunkFeed {
            input: items.into_iter(),
            chunksize: chunksize.max(1),
            entry,
        });
        if let Err(e) = check_chunksize(chunksize) {
            return IMap::failed(Arc::clone(&self.shared), feed, e);
        }
        let window = self.processes() * engine::WINDOW_PER_WORKER;
        IMap::new(Arc::clone(&self.shared), feed, ordered, window)
    }

    /// Takes no more work; the workers exit once what is queued is done.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake();
    }

    /// Stops at once: kills the workers (even mid-task) and fails every result not yet
    /// ready with `Error::PoolClosed`. Returns when the workers are reaped.
    pub fn terminate(&self) {
        self.shared.lock().terminated = true;
        self.shared.wake();
        self.join();
    }

    /// Waits until the workers have exited. The pool must be closed or terminated first;
    /// `join` on a running pool closes it (Python raises instead; a join that could never
    /// return would be worse). A closed pool still serves the `imap` iterators it handed
    /// out, so `join` also waits for those to be exhausted or dropped.
    pub fn join(&self) {
        self.join_until(None);
    }

    /// `join`, waiting at most `d`; true if the workers have exited.
    pub fn join_timeout(&self, d: Duration) -> bool {
        self.join_until(std::time::Instant::now().checked_add(d))
    }

    fn join_until(&self, deadline: Option<std::time::Instant>) -> bool {
        let mut st = self.shared.lock();
        if !st.closed && !st.terminated {
            st.closed = true;
        }
        // Always: the driver may be asleep after the last job it waited for went away.
        self.shared.wake();
        if self.shared.on_driver_thread() {
            // Called from a callback: waiting here would wait for ourselves. The pool
            // winds down once the callback returns.
            return st.finished;
        }
        while !st.finished {
            match self.shared.wait_change(st, deadline) {
                Some(next) => st = next,
                None => return false,
            }
        }
        drop(st);
        self.shared.join_driver();
        true
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}
