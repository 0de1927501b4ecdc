//! [`PoolBuilder`]: how a pool is configured and started (local workers), and the entry for
//! a pool whose workers live elsewhere (MPI ranks).

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Pool;
use super::engine::{Config, Shared};
use super::worker;
use crate::codec;
use crate::context::{StartMethod, get_start_method};
use crate::error::{Error, Result};
use crate::isolation::{Isolation, Limits, Sandbox};
use crate::target::{self, Target};

/// Configures a [`Pool`] (Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild, context)`, plus a per-task timeout, and the workers' isolation:
/// [`limits`](PoolBuilder::limits), [`sandbox`](PoolBuilder::sandbox),
/// [`max_worker_memory`](PoolBuilder::max_worker_memory)).
#[derive(Debug, Default)]
pub struct PoolBuilder {
    processes: usize,
    init: Option<worker::InitSpec>,
    init_error: Option<Error>,
    maxtasks: Option<usize>,
    method: Option<StartMethod>,
    timeout: Option<Duration>,
    limits: Limits,
    sandbox: Sandbox,
    max_rss: Option<u64>,
}

impl PoolBuilder {
    /// The number of workers; 0 (the default) means [`crate::cpu_count`].
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n;
        self
    }

    /// A function each worker runs once when it starts (Python's `initializer`,
    /// `initargs`). If it panics in every worker, tasks fail with `TaskPanicked` instead
    /// of the pool retrying for ever.
    pub fn initializer<F, Args>(mut self, f: F, args: Args) -> Self
    where
        F: Target<Args, ()>,
        Args: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let mut buf = Vec::new();
        let mut fds = Vec::new();
        match codec::encode_into(&[args][..], &mut buf, &mut fds) {
            Ok(()) => {
                self.init = Some(worker::InitSpec {
                    entry: target::pool_entry_offset::<F, Args, ()>(),
                    args: buf,
                    fds,
                })
            }
            Err(e) => self.init_error = Some(e),
        }
        self
    }

    /// Replaces each worker after it has run `n` tasks (chunks); must be positive.
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasks = Some(n);
        self
    }

    /// The start method of the workers (default: the global one).
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.method = Some(m);
        self
    }

    /// Kills the worker of a task (chunk) that runs longer than `d`; the task fails with
    /// `Error::TaskTimedOut` and a fresh worker takes the dead one's place.
    pub fn task_timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Limits for each worker, applied in the worker before its initializer and its first
    /// task (see [`Limits`]). A limit that stops a worker fails that task with
    /// `Error::LimitExceeded`; the pool replaces the worker and goes on.
    pub fn limits(mut self, l: Limits) -> Self {
        self.limits = l;
        self
    }

    /// A sandbox for each worker, applied with the limits (see [`Sandbox`]). What this
    /// kernel cannot enforce makes [`build`](PoolBuilder::build) fail with
    /// `Error::Unsupported`, naming the feature.
    pub fn sandbox(mut self, s: Sandbox) -> Self {
        self.sandbox = s;
        self
    }

    /// After a task, a worker whose resident memory exceeds `bytes` is replaced (it
    /// answers, then exits; no task fails). Costs the worker one `pread` per task.
    pub fn max_worker_memory(mut self, bytes: u64) -> Self {
        self.max_rss = Some(bytes);
        self
    }

    /// Starts the workers.
    ///
    /// `Err(ValueError)` for a zero memory or CPU-time limit or a `writable` path that does
    /// not exist, `Err(Unsupported)` for a limit or sandbox this kernel cannot enforce.
    pub fn build(self) -> Result<Pool> {
        if let Some(e) = self.init_error {
            return Err(e);
        }
        if self.maxtasks == Some(0) {
            return Err(Error::ValueError(
                "maxtasksperchild must be a positive number".into(),
            ));
        }
        if self.max_rss == Some(0) {
            return Err(Error::ValueError(
                "max_worker_memory must be a positive number".into(),
            ));
        }
        let isolation = Isolation::checked(&self.limits, &self.sandbox)?;
        let processes = if self.processes == 0 {
            crate::cpu_count()
        } else {
            self.processes
        };
        let shared = Shared::start(Config {
            processes,
            method: self.method.unwrap_or_else(get_start_method),
            maxtasks: self.maxtasks.unwrap_or(0) as u64,
            timeout: self.timeout,
            init: self.init,
            isolation,
            max_rss: self.max_rss.unwrap_or(0),
        })?;
        Ok(Pool { shared })
    }
}

impl Pool {
    /// A pool of `processes` workers that live elsewhere (MPI ranks), served by `drive`,
    /// the driver thread's body.
    #[cfg(feature = "mpi")]
    pub(crate) fn with_remote_workers(
        processes: usize,
        drive: Box<dyn FnOnce(std::sync::Arc<Shared>) + Send>,
    ) -> Result<Pool> {
        let config = Config {
            processes,
            method: get_start_method(),
            maxtasks: 0,
            timeout: None,
            init: None,
            isolation: None,
            max_rss: 0,
        };
        let shared = Shared::start_with(config, super::engine::Workers::Remote(drive))?;
        Ok(Pool { shared })
    }
}
