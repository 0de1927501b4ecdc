//! The pool's engine: the state every caller shares, and the driver thread that serves it.
//!
//! **Who does what.** Callers open a job in the [`JobTable`], encode their work into
//! chunks ([`Task`]s), queue them in `pending` and dispatch at once, under the state lock,
//! to idle workers (one task per worker: scheduling is pull, see `slot.rs`), writing
//! without blocking. The driver thread (`driver.rs`) polls every worker's socket, answer
//! ring and pidfd (and a wake-up socket): it reads answers, finishes sends that did not
//! fit, notices dead and overdue workers, replaces them, dispatches what is pending, and
//! wakes waiters (`cond`, and the `progress` counter spinning waiters watch). Nothing
//! blocks while holding the lock: rings are read only for items whole now, and written
//! only where there is room now (`link.rs`); sockets are non-blocking.
//!
//! **Who wakes whom.** A caller wakes the driver (a byte on its wake-up socket) only when
//! it needs it: a frame that did not fit, a timeout to watch, a job dropped, a job sealed
//! in a closed pool, work left unwatched (below). Whoever records a result that lets a
//! waiter proceed — a job done, an `imap` result ([`JobTable::signals`]) — bumps
//! `progress` and notifies `cond` if anyone sleeps on it; other rounds wake nobody.
//!
//! **Fewer hops.** A caller waiting for a result does not leave the reading to the driver
//! at first: for a short while ([`SPIN`], through the shared [`Backoff`]) it looks at the
//! workers' answer rings itself and, when one holds an answer, reads it and dispatches the
//! next tasks under the lock ([`Shared::harvest`]), exactly as the driver would. A quick
//! task's round trip is then caller → worker → caller, with both sides still running, so
//! neither pays the ~30 µs wake-up of a sleeping CPU; the worker likewise looks for its
//! next task a while before it sleeps. Past the window the caller sleeps on `cond` and the
//! driver, which never spins, does the reading: an idle pool costs no CPU.
//!
//! **One reader per answer.** While a caller harvests (`State::harvesting`), the driver
//! sleeps *blind*: on its wake-up socket, the pidfds and the workers' sockets, but not the
//! rings answers come on — else every answer would also wake the driver, a
//! third runnable thread on a two-CPU machine, and the spin would stop for everyone.
//! Work is never left unwatched: the last harvester to stop while a worker still owes a
//! frame wakes the driver, and so does a caller that submits without waiting at once
//! (`apply_async`, `imap`, a `map` of many chunks); `apply` and one-chunk `map`s are read
//! by their caller, who enters `lock_when` right after submitting.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::codec::HandleFd;
use crate::connection::socket_pipe;
use crate::context::StartMethod;
use crate::error::{Error, Result};
use crate::pool::ahead;
use crate::pool::gate::SharedGate;
use crate::pool::jobs::{Callback, ChunkResult, JobId, JobTable, Order};
use crate::pool::slot::{Slot, Task};
use crate::pool::worker::{self, InitSpec};
use crate::sync::raw::backoff::Backoff;
use crate::sys;

/// How long a waiter (a caller, a worker between tasks) spins before it yields and then
/// sleeps: enough to cover a quick task's round trip, little next to any task worth
/// sending to another process. See [`Backoff`] (it does not spin at all on an
/// oversubscribed machine).
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// The largest task sent to a busy worker ahead of time (`gate.rs`): larger ones wait for
/// an idle worker, as sending them costs more than the round trip saved.
const AHEAD_MAX: usize = 64 * 1024;

/// Chunks an `imap` keeps submitted and unconsumed, per worker: enough that a worker
/// finds its next task queued in the parent the moment it is free.
pub(crate) const WINDOW_PER_WORKER: usize = 4;

/// How a pool is configured.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) method: StartMethod,
    pub(crate) maxtasks: u64,
    pub(crate) timeout: Option<Duration>,
    pub(crate) init: Option<InitSpec>,
    /// The workers' limits and sandbox, checked.
    pub(crate) isolation: Option<crate::isolation::Isolation>,
    /// `max_worker_memory` (0: none).
    pub(crate) max_rss: u64,
}

/// Who runs a pool's tasks.
pub(crate) enum Workers {
    /// Local worker processes, started and supervised by the pool's own driver.
    Local,
    /// Workers elsewhere (the MPI ranks): this is the driver thread's body. It takes tasks
    /// from `pending`, completes them in the job table, and ends the pool as
    /// `shutdown_if_done` does; callers only wake it.
    #[allow(dead_code)] // built only with the `mpi` feature
    Remote(Box<dyn FnOnce(Arc<Shared>) + Send>),
}

/// Everything the callers and the driver share.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) workers: Vec<Slot>,
    pub(crate) pending: VecDeque<Task>,
    pub(crate) jobs: JobTable,
    pub(crate) started_workers: u32,
    pub(crate) closed: bool,
    pub(crate) terminated: bool,
    /// The driver has stopped and every worker is reaped.
    pub(crate) finished: bool,
    /// Why the pool cannot run anything any more (its initializer keeps failing).
    pub(crate) broken: Option<String>,
    pub(crate) init_failures: u32,
    /// Callbacks of jobs completed outside the driver, for the driver to run.
    pub(crate) deferred: Deferred,
    /// Who reads the workers' answers: callers harvesting, or the driver.
    pub(crate) readers: Readers,
    /// Threads asleep on `cond`: no one to notify when there are none.
    pub(crate) sleepers: usize,
}

/// Who reads the workers' answers. While callers harvest ([`Shared::lock_when`]), the
/// driver sleeps *blind*, without the sockets answers come on, so that an answer wakes one
/// thread, not two. Whoever leaves work unwatched wakes it: the last harvester to stop
/// while a worker still owes a frame, and a caller that submits and does not wait. Each
/// operation returns whether the driver must now be woken.
#[derive(Debug, Default)]
pub(crate) struct Readers {
    /// Callers reading the workers' sockets themselves right now.
    harvesting: usize,
    /// The driver sleeps (or is about to) without watching the workers' sockets.
    blind: bool,
}

impl Readers {
    /// A caller starts reading answers itself.
    pub(crate) fn start_harvest(&mut self) {
        self.harvesting += 1;
    }

    /// A caller stops; `work_out`: a worker still owes a frame. True: wake the driver.
    pub(crate) fn stop_harvest(&mut self, work_out: bool) -> bool {
        self.harvesting -= 1;
        self.see_if(self.harvesting == 0 && work_out)
    }

    /// Work was submitted that no caller will read at once. True: wake the driver.
    pub(crate) fn unwatched_work(&mut self) -> bool {
        self.see_if(self.harvesting == 0)
    }

    /// The driver is about to sleep: whether it may leave the answer sockets out.
    pub(crate) fn driver_sleeps(&mut self) -> bool {
        self.blind = self.harvesting > 0;
        self.blind
    }

    /// The driver woke: it watches the sockets again from its next sleep on.
    pub(crate) fn driver_woke(&mut self) {
        self.blind = false;
    }

    fn see_if(&mut self, cond: bool) -> bool {
        let wake = cond && self.blind;
        if wake {
            self.blind = false;
        }
        wake
    }
}

/// Whether an answer waits in the ring of a worker one is due from.
fn answer_waits(st: &State) -> bool {
    st.workers
        .iter()
        .any(|w| w.expects_frame() && w.ring_pending())
}

/// Callbacks waiting for the driver thread.
#[derive(Default)]
pub(crate) struct Deferred(pub(crate) Vec<Callback>);

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} callbacks", self.0.len())
    }
}

impl State {
    /// Drops the unsent chunks of a job whose submission failed half-way (its caller gets
    /// the error, not a handle), and abandons it. A caller that merely drops its handle
    /// cancels nothing ([`JobTable::release`]).
    pub(crate) fn abandon(&mut self, job: JobId) {
        let before = self.pending.len();
        self.pending.retain(|t| t.job != job);
        let dropped = before - self.pending.len();
        self.jobs.abandon(job, dropped);
    }

    /// Cancels every chunk of `job` not started: those pending, and those sent ahead whose
    /// gate word the pool wins (`ahead.rs`); each fails with `Error::Cancelled`. A chunk
    /// running, or done, is left alone. True if no chunk had started or finished, so that
    /// nothing of the job ran (concurrent.futures' `cancel`).
    pub(crate) fn cancel(&mut self, job: JobId, callbacks: &mut Vec<Callback>) -> bool {
        let Some((untouched, out)) = self.jobs.unresolved(job) else {
            return false;
        };
        if out == 0 {
            return false;
        }
        let (mut stopped, rest): (Vec<Task>, Vec<Task>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|t| t.job == job);
        self.pending = rest.into();
        for w in &mut self.workers {
            stopped.extend(w.cancel(job));
        }
        let all = untouched && stopped.len() == out;
        for t in stopped {
            let cancelled = ChunkResult::Failed(Error::Cancelled);
            self.jobs.complete(job, t.index, cancelled, callbacks);
        }
        all
    }

    /// Whether any worker holds a task.
    pub(crate) fn any_busy(&self) -> bool {
        self.workers.iter().any(Slot::is_busy)
    }
}

/// The pool's shared core.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) cond: Condvar,
    /// Bumped when a waiter may proceed (see `JobTable::signals`): spinning waiters look
    /// again when it moves.
    pub(crate) progress: AtomicU64,
    /// The driver's wake-up pair: mproc handles (registered), so a child made by `Fork`
    /// closes its copies as it closes every handle it was not given.
    pub(crate) wake_tx: HandleFd,
    pub(crate) wake_rx: HandleFd,
    pub(crate) config: Config,
    /// The driver thread, joined by the first `Pool::join` after it finished.
    pub(crate) driver: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Its id: code running on it (a callback) must never wait for it.
    pub(crate) driver_id: std::sync::OnceLock<std::thread::ThreadId>,
}

impl Shared {
    /// Starts the workers and the driver thread.
    pub(crate) fn start(config: Config) -> Result<Arc<Shared>> {
        Shared::start_with(config, Workers::Local)
    }

    /// Starts the driver thread, and the workers if they are local.
    pub(crate) fn start_with(config: Config, workers: Workers) -> Result<Arc<Shared>> {
        let (wake_tx, wake_rx) = sys::fd::socketpair()?;
        let (wake_tx, wake_rx) = (HandleFd::new(wake_tx), HandleFd::new(wake_rx));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                workers: Vec::new(),
                pending: VecDeque::new(),
                jobs: JobTable::default(),
                started_workers: 0,
                closed: false,
                terminated: false,
                finished: false,
                broken: None,
                init_failures: 0,
                deferred: Deferred::default(),
                readers: Readers::default(),
                sleepers: 0,
            }),
            cond: Condvar::new(),
            progress: AtomicU64::new(0),
            wake_tx,
            wake_rx,
            config,
            driver: Mutex::new(None),
            driver_id: std::sync::OnceLock::new(),
        });
        if let Workers::Local = workers {
            let mut st = shared.lock();
            for _ in 0..shared.config.processes {
                if let Err(e) = shared.spawn_worker(&mut st) {
                    // A pool that cannot start all its workers leaves none behind.
                    for w in &st.workers {
                        let _ = w.process.kill();
                    }
                    for mut w in std::mem::take(&mut st.workers) {
                        let _ = w.process.join();
                    }
                    return Err(e);
                }
            }
        }
        let driver = Arc::clone(&shared);
        let body: Box<dyn FnOnce() + Send> = match workers {
            Workers::Local => Box::new(move || driver.drive()),
            Workers::Remote(drive) => Box::new(move || drive(driver)),
        };
        let handle = std::thread::Builder::new()
            .name("mproc-pool".into())
            .spawn(body)
            .map_err(Error::Io)?;
        *shared.driver.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(shared)
    }

    /// Whether this is the driver thread (a callback must never wait for it).
    pub(crate) fn on_driver_thread(&self) -> bool {
        self.driver_id.get() == Some(&std::thread::current().id())
    }

    /// Waits for the driver thread to end (after `finished`), so that everything it held
    /// is released when `join` returns.
    pub(crate) fn join_driver(&self) {
        let handle = self
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            if h.thread().id() == std::thread::current().id() {
                return;
            }
            let _ = h.join();
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the next change of state, until `deadline` (forever if `None`); `None`
    /// once the deadline has passed.
    pub(crate) fn wait_change<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> Option<MutexGuard<'a, State>> {
        let mut st = match deadline {
            None => {
                st.sleepers += 1;
                self.cond.wait(st).unwrap_or_else(PoisonError::into_inner)
            }
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                st.sleepers += 1;
                let waited = self.cond.wait_timeout(st, d - now);
                waited.unwrap_or_else(PoisonError::into_inner).0
            }
        };
        st.sleepers -= 1;
        Some(st)
    }

    /// Wakes the threads asleep on `cond` (call after changing what they wait for, with
    /// the lock still held or just released): none, cheaply, if none sleeps.
    pub(crate) fn notify(&self, st: &State) {
        self.progress.fetch_add(1, Ordering::Release);
        if st.sleepers > 0 {
            self.cond.notify_all();
        }
    }

    /// Locks the state once `ready` holds, or once the spin has passed without it (then
    /// the caller sleeps on `cond`). While it spins it reads answers itself (see the module
    /// docs), and looks again whenever a waiter may proceed. An answer it reads starts its
    /// spin afresh: while answers flow (a `map` of quick tasks) the caller keeps the
    /// workers fed itself.
    pub(crate) fn lock_when(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&State) -> bool,
    ) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        if ready(&st) || st.finished {
            return st;
        }
        st.readers.start_harvest();
        drop(st);
        let mut seen = self.progress.load(Ordering::Acquire);
        let mut backoff = Backoff::with_budget(SPIN);
        loop {
            backoff.snooze();
            if backoff.is_completed() || deadline.is_some_and(|d| Instant::now() >= d) {
                let mut st = self.lock();
                self.stop_harvest(&mut st);
                return st;
            }
            let moved = self.progress.load(Ordering::Acquire) != seen;
            // The rings are looked at under the lock (a pipe end is the pool's alone): an
            // uncontended lock costs less than the `poll` a socket needed.
            let mut st = self.lock();
            let readable = answer_waits(&st);
            if !(moved || readable) {
                drop(st);
                continue;
            }
            if readable {
                let mut callbacks = Vec::new();
                let signals = st.jobs.signals();
                if self.harvest(&mut st, &mut callbacks) {
                    backoff = Backoff::with_budget(SPIN);
                }
                if st.jobs.signals() != signals {
                    self.notify(&st);
                }
                if !callbacks.is_empty() {
                    // Callbacks run on the driver thread, never on a caller's.
                    st.deferred.0.extend(callbacks);
                    self.wake();
                }
            }
            seen = self.progress.load(Ordering::Acquire);
            if ready(&st) || st.finished {
                self.stop_harvest(&mut st);
                return st;
            }
        }
    }

    /// A harvester stops reading: if it was the last, and a worker still owes a frame, the
    /// driver must watch the sockets again.
    fn stop_harvest(&self, st: &mut State) {
        let work_out = st.workers.iter().any(Slot::expects_frame);
        if st.readers.stop_harvest(work_out) {
            self.wake();
        }
    }

    /// Wakes the driver (a byte on its wake-up socket; a full socket is as good).
    pub(crate) fn wake(&self) {
        let _ =
            sys::fd::try_send_with_fds(self.wake_tx.as_fd(), &[std::io::IoSlice::new(&[1])], &[]);
    }

    pub(crate) fn spawn_worker(&self, st: &mut State) -> Result<()> {
        let (ours, theirs) = socket_pipe::<()>()?;
        let (rings, their_rings) = crate::connection::pipe::<()>()?;
        // The pollable descriptor of the answer ring (made here, counting the pool as its
        // poller from now on: `connection/shm.rs`).
        let bell = HandleFd::new(sys::fd::dup_cloexec(rings.as_fd()).map_err(Error::Io)?);
        let init = worker::init_for_worker(&self.config.init)?;
        let (gate, their_gate) = SharedGate::new()?;
        let mut p = crate::process::Process::new(
            worker::worker_main,
            (
                theirs,
                init,
                worker::Settings {
                    maxtasks: self.config.maxtasks,
                    isolation: self.config.isolation.clone(),
                    max_rss: self.config.max_rss,
                },
                (their_gate, their_rings),
            ),
        );
        st.started_workers += 1;
        let prefix = match self.config.method {
            StartMethod::Fork => "Fork",
            StartMethod::Spawn => "Spawn",
            StartMethod::ForkServer => "ForkServer",
        };
        p.set_name(&format!("{prefix}PoolWorker-{}", st.started_workers));
        p.set_daemon(true);
        p.set_start_method(self.config.method);
        p.start()?;
        let child = p.child_handle().expect("started just above");
        let mut slot = Slot::new(p, child, ours.into_handle(), rings, bell, gate);
        slot.isolation = self.config.isolation.clone();
        st.workers.push(slot);
        Ok(())
    }

    /// Opens a job for a caller; `PoolClosed` once the pool takes no more work.
    pub(crate) fn new_job(&self, st: &mut State, order: Order) -> Result<JobId> {
        if st.closed || st.terminated {
            return Err(Error::PoolClosed);
        }
        Ok(st.jobs.open(order))
    }

    /// Queues `task` (a chunk already added to its job) and dispatches what it can.
    /// `watched`: the caller waits for the result at once (`lock_when`), so it reads the
    /// answer itself; otherwise a driver asleep without the workers' sockets is woken.
    pub(crate) fn submit(&self, st: &mut State, task: Task, watched: bool) {
        let refused = if st.terminated || st.finished {
            Some(Error::PoolClosed)
        } else {
            st.broken.as_ref().map(|reason| Error::TaskPanicked {
                message: format!("pool initializer failed: {reason}"),
                location: None,
            })
        };
        match refused {
            Some(err) => {
                let mut callbacks = Vec::new();
                st.jobs.complete(
                    task.job,
                    task.index,
                    ChunkResult::Failed(err),
                    &mut callbacks,
                );
                if !callbacks.is_empty() {
                    st.deferred.0.extend(callbacks);
                    self.wake();
                }
            }
            None => {
                st.pending.push_back(task);
                self.dispatch(st);
                if !watched && st.readers.unwatched_work() {
                    self.wake();
                }
            }
        }
    }

    /// `AsyncResult::cancel`: see [`State::cancel`]. Wakes whoever waits for the job, has
    /// the driver run its callback, and gives a worker whose next task was taken back
    /// something else to do.
    pub(crate) fn cancel(&self, job: JobId) -> bool {
        let mut st = self.lock();
        let mut callbacks = Vec::new();
        let signals = st.jobs.signals();
        let all = st.cancel(job, &mut callbacks);
        self.dispatch(&mut st);
        if st.jobs.signals() != signals {
            self.notify(&st);
        }
        // Callbacks run on the driver thread; a closed pool may have nothing left to do.
        st.deferred.0.extend(callbacks);
        drop(st);
        self.wake();
        all
    }

    /// Hands pending tasks to idle workers, without blocking; an idle worker with nothing
    /// pending takes a next task back from a busy worker that has not started it. Then, if
    /// every worker is busy, sends each its next task ahead (see `gate.rs`). Wakes the
    /// driver if a frame could not be sent whole (or a timeout must be watched).
    pub(crate) fn dispatch(&self, st: &mut State) {
        let ahead = self.config.timeout.is_none() && self.config.maxtasks == 0;
        let st = &mut *st;
        let done = ahead::dispatch(&mut st.workers, &mut st.pending, |t: &Task| {
            ahead && t.payload.len() <= AHEAD_MAX
        });
        let mut wake = done.unsent || (done.assigned && self.config.timeout.is_some());
        // Remote workers are served by the driver alone: it must hear of new work.
        wake |= st.workers.is_empty() && !st.pending.is_empty();
        if wake {
            self.wake();
        }
    }
}
