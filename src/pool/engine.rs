//! The pool's engine: one driver thread per pool, and the state every caller shares.
//!
//! **Who does what.** Callers encode their work into chunks ([`Task`]s), add them to
//! `pending` and dispatch them at once, under the state lock, to workers with room
//! (at most [`IN_FLIGHT`] chunks each), writing without blocking. The driver thread polls
//! every worker's socket and pidfd (and a wake-up socket): it reads results, finishes the
//! sends that did not fit, notices dead and overdue workers, replaces them, dispatches
//! what is pending, and wakes waiters (`cond`). Nothing blocks while holding the lock:
//! all socket I/O under it is non-blocking, so a worker writing a large result and a
//! caller sending a large task never wait on each other.
//!
//! **Crash accounting.** A worker runs its chunks in the order it received them, and
//! answers in that order; so when it dies, the oldest of its unanswered chunks is the one
//! it was running: that chunk fails (`WorkerDied`, or `Timeout` if the driver killed it for
//! running too long). The chunks queued behind it never started, and go back to `pending`.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::codec::HandleFd;
use crate::connection::framing::{Arrival, Incoming, Outgoing};
use crate::connection::pipe;
use crate::context::StartMethod;
use crate::error::{Error, Result};
use crate::pool::worker::{self, InitSpec};
use crate::process::{ChildHandle, Process};
use crate::sys;

/// How long the driver looks for results before it sleeps, while work is in flight.
const SPIN: Duration = Duration::from_micros(20);

/// Chunks a worker may hold at once: enough to keep it busy between driver wake-ups.
pub(crate) const IN_FLIGHT: usize = 8;

/// How a pool is configured.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) method: StartMethod,
    pub(crate) maxtasks: u64,
    pub(crate) timeout: Option<Duration>,
    pub(crate) init: Option<InitSpec>,
}

/// One chunk of work: `[entry][encoded Vec<Args>]`, and the arguments' descriptors.
#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) job: u64,
    pub(crate) index: usize,
    pub(crate) payload: Arc<Vec<u8>>,
    pub(crate) fds: Vec<HandleFd>,
}

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

/// A unit the caller waits on: one `apply`, one `map`, one `imap`.
#[derive(Default)]
pub(crate) struct Job {
    pub(crate) chunks: Vec<Option<ChunkResult>>,
    pub(crate) nitems: Vec<usize>,
    pub(crate) remaining: usize,
    /// No more chunks will be added.
    pub(crate) sealed: bool,
    /// Nobody will read the results: drop them as they come.
    pub(crate) abandoned: bool,
    /// Chunks in the order they completed (kept for `imap_unordered` only).
    pub(crate) completed: VecDeque<usize>,
    /// Results are taken in completion order (`imap_unordered`).
    pub(crate) unordered: bool,
    /// The chunk index of `chunks[0]`: an ordered `imap` drops what it consumed.
    pub(crate) base: usize,
    /// Its `AsyncResult` was dropped with a callback set: run the callback, then forget.
    pub(crate) detached: bool,
    /// Runs once when the job completes: decodes under the lock, returns the user's
    /// callback to run outside it.
    #[allow(clippy::type_complexity)]
    pub(crate) on_done: Option<Box<dyn FnOnce(&Job) -> Box<dyn FnOnce() + Send> + Send>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("chunks", &self.chunks.len())
            .field("remaining", &self.remaining)
            .field("sealed", &self.sealed)
            .field("abandoned", &self.abandoned)
            .finish()
    }
}

impl Job {
    /// The slot of chunk `index`, if it is still kept.
    pub(crate) fn slot(&mut self, index: usize) -> Option<&mut Option<ChunkResult>> {
        let i = index.checked_sub(self.base)?;
        self.chunks.get_mut(i)
    }

    /// Whether every chunk has a result and none will be added.
    pub(crate) fn is_done(&self) -> bool {
        self.sealed && self.remaining == 0
    }
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

#[derive(Debug)]
struct Worker {
    process: Process<()>,
    child: Arc<ChildHandle>,
    sock: Arc<HandleFd>,
    incoming: Incoming,
    outgoing: VecDeque<Outgoing>,
    inflight: VecDeque<Task>,
    assigned: u64,
    /// When the oldest unanswered chunk started (for `task_timeout`).
    head_since: Option<Instant>,
    timed_out: bool,
    /// The chunk that ran past `task_timeout` (the one to blame when the worker dies).
    overdue: Option<(u64, usize)>,
    init_failed: Option<String>,
    /// It said READY: its initializer finished.
    ready: bool,
    /// Sending failed: no more dispatch; waiting for the exit.
    broken: bool,
    /// Its stream ended (or is corrupt): nothing more to read.
    eof: bool,
    /// Why its stream was refused (a corrupt frame): the error its task gets.
    corrupt: Option<String>,
}

/// Everything the callers and the driver share.
#[derive(Debug)]
pub(crate) struct State {
    workers: Vec<Worker>,
    pending: VecDeque<Task>,
    pub(crate) jobs: HashMap<u64, Job>,
    next_job: u64,
    started_workers: u32,
    pub(crate) closed: bool,
    pub(crate) terminated: bool,
    /// The driver has stopped and every worker is reaped.
    pub(crate) finished: bool,
    /// Why the pool cannot run anything any more (its initializer keeps failing).
    broken: Option<String>,
    init_failures: u32,
}

/// The pool's shared core.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) cond: Condvar,
    wake_tx: OwnedFd,
    wake_rx: OwnedFd,
    pub(crate) config: Config,
    /// The driver thread, joined by the first `Pool::join` after it finished.
    driver: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Its id: code running on it (a callback) must never wait for it.
    driver_id: std::sync::OnceLock<std::thread::ThreadId>,
}

impl Shared {
    /// Starts the workers and the driver thread.
    pub(crate) fn start(config: Config) -> Result<Arc<Shared>> {
        let (wake_tx, wake_rx) = sys::fd::socketpair()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                workers: Vec::new(),
                pending: VecDeque::new(),
                jobs: HashMap::new(),
                next_job: 0,
                started_workers: 0,
                closed: false,
                terminated: false,
                finished: false,
                broken: None,
                init_failures: 0,
            }),
            cond: Condvar::new(),
            wake_tx,
            wake_rx,
            config,
            driver: Mutex::new(None),
            driver_id: std::sync::OnceLock::new(),
        });
        {
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
        let handle = std::thread::Builder::new()
            .name("mproc-pool".into())
            .spawn(move || driver.drive())
            .map_err(Error::Io)?;
        *shared.driver.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(shared)
    }

    /// Waits for the driver thread to end (after `finished`), so that everything it held
    /// is released when `join` returns. A no-op on the driver thread itself (a callback
    /// that joins its own pool).
    pub(crate) fn on_driver_thread(&self) -> bool {
        self.driver_id.get() == Some(&std::thread::current().id())
    }

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
        st: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> Option<MutexGuard<'a, State>> {
        match deadline {
            None => Some(self.cond.wait(st).unwrap_or_else(PoisonError::into_inner)),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                let waited = self.cond.wait_timeout(st, d - now);
                Some(waited.unwrap_or_else(PoisonError::into_inner).0)
            }
        }
    }

    /// Wakes the driver (a byte on its wake-up socket; a full socket is as good).
    pub(crate) fn wake(&self) {
        let _ =
            sys::fd::try_send_with_fds(self.wake_tx.as_fd(), &[std::io::IoSlice::new(&[1])], &[]);
    }

    fn spawn_worker(&self, st: &mut State) -> Result<()> {
        let (ours, theirs) = pipe::<()>()?;
        let init = worker::init_for_worker(&self.config.init)?;
        let mut p = Process::new(worker::worker_main, (theirs, init, self.config.maxtasks));
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
        st.workers.push(Worker {
            process: p,
            child,
            sock: Arc::new(ours.into_handle()),
            incoming: Incoming::default(),
            outgoing: VecDeque::new(),
            inflight: VecDeque::new(),
            assigned: 0,
            head_since: None,
            timed_out: false,
            overdue: None,
            init_failed: None,
            ready: false,
            broken: false,
            eof: false,
            corrupt: None,
        });
        Ok(())
    }

    /// Adds a new job; returns its id.
    pub(crate) fn new_job(&self, st: &mut State, job: Job) -> Result<u64> {
        if st.closed || st.terminated {
            return Err(Error::PoolClosed);
        }
        Ok(st.insert_job(job))
    }

    /// Queues `task` (of a job already added) and dispatches what it can.
    pub(crate) fn submit(&self, st: &mut State, task: Task) {
        if st.terminated || st.finished {
            complete(
                st,
                task.job,
                task.index,
                ChunkResult::Failed(Error::PoolClosed),
            );
            return;
        }
        if let Some(reason) = &st.broken {
            let err = Error::TaskPanicked {
                message: format!("pool initializer failed: {reason}"),
            };
            complete(st, task.job, task.index, ChunkResult::Failed(err));
            return;
        }
        st.pending.push_back(task);
    }

    /// Dispatches pending chunks to workers with room, and pushes out what is queued,
    /// without blocking. Wakes the driver if something could not be sent at once (or if
    /// timeouts must be watched).
    pub(crate) fn dispatch(&self, st: &mut State) {
        let mut wake = false;
        let maxtasks = self.config.maxtasks;
        while !st.pending.is_empty() {
            let best = st
                .workers
                .iter_mut()
                .filter(|w| {
                    !w.broken
                        && !w.timed_out
                        && w.init_failed.is_none()
                        && w.inflight.len() < IN_FLIGHT
                        && (maxtasks == 0 || w.assigned < maxtasks)
                })
                .min_by_key(|w| w.inflight.len());
            let Some(w) = best else { break };
            let task = st.pending.pop_front().expect("checked non-empty");
            let fds: Vec<HandleFd> = task.fds.iter().filter_map(|f| f.try_clone().ok()).collect();
            w.outgoing
                .push_back(Outgoing::new(Arc::clone(&task.payload), fds));
            if w.inflight.is_empty() {
                w.head_since = Some(Instant::now());
            }
            w.inflight.push_back(task);
            w.assigned += 1;
            wake |= self.config.timeout.is_some();
        }
        for w in &mut st.workers {
            wake |= flush(w);
        }
        if wake {
            self.wake();
        }
    }

    /// The driver thread. If it ever panics, the pool is terminated (workers killed and
    /// reaped, every waiting result failed) rather than left with nobody to finish it.
    fn drive(self: Arc<Self>) {
        let _ = self.driver_id.set(std::thread::current().id());
        let me = Arc::clone(&self);
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| me.drive_loop())).is_err() {
            let mut st = self.lock();
            st.terminated = true;
            self.shutdown_if_done(&mut st);
        }
    }

    fn drive_loop(&self) {
        loop {
            let (socks, children, timeout, busy) = {
                let mut st = self.lock();
                if self.shutdown_if_done(&mut st) {
                    return;
                }
                // A socket at its end would poll readable for ever, one we cannot send on
                // writable: leave them out, and wait for those workers' exits.
                let socks: Vec<(Arc<HandleFd>, bool)> = st
                    .workers
                    .iter()
                    .filter(|w| !w.eof)
                    .map(|w| (Arc::clone(&w.sock), !w.broken && !w.outgoing.is_empty()))
                    .collect();
                let children: Vec<Arc<ChildHandle>> =
                    st.workers.iter().map(|w| Arc::clone(&w.child)).collect();
                let busy = st.workers.iter().any(|w| !w.inflight.is_empty());
                (socks, children, self.next_deadline(&st), busy)
            };
            let mut set: Vec<(std::os::fd::BorrowedFd<'_>, bool)> =
                vec![(self.wake_rx.as_fd(), false)];
            set.extend(socks.iter().map(|(s, w)| (s.as_fd(), *w)));
            set.extend(children.iter().map(|c| (c.pidfd(), false)));
            // With work in flight, look again for a few microseconds before sleeping: a
            // result that comes back that fast is then seen without a wake-up.
            let mut ready = false;
            if busy {
                let until = Instant::now() + SPIN;
                while !ready && Instant::now() < until {
                    ready = sys::fd::poll_rw(&set, Some(Duration::ZERO))
                        .is_ok_and(|r| r.iter().any(|&(rd, wr)| rd || wr));
                }
            }
            if !ready {
                let _ = sys::fd::poll_rw(&set, timeout);
            }
            drop(set);
            let callbacks = {
                let mut st = self.lock();
                self.drain_wake();
                self.service(&mut st)
            };
            self.cond.notify_all();
            for cb in callbacks {
                // A panicking callback must not take the pool down with it (the panic hook
                // has already reported it).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(cb));
            }
        }
    }

    fn drain_wake(&self) {
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        while let Ok(Some(n)) = sys::fd::try_recv_with_fds(self.wake_rx.as_fd(), &mut buf, &mut fds)
        {
            if n == 0 {
                break;
            }
        }
    }

    /// When the driver must look at timeouts next.
    fn next_deadline(&self, st: &State) -> Option<Duration> {
        let limit = self.config.timeout?;
        let now = Instant::now();
        st.workers
            .iter()
            .filter(|w| !w.timed_out)
            .filter_map(|w| w.head_since)
            .map(|since| (since + limit).saturating_duration_since(now))
            .min()
    }

    /// One round of the driver's work; returns callbacks to run outside the lock.
    fn service(&self, st: &mut State) -> Vec<Box<dyn FnOnce() + Send>> {
        let mut callbacks = Vec::new();
        // Results and sends.
        for i in 0..st.workers.len() {
            loop {
                let arrival = {
                    let w = &mut st.workers[i];
                    if w.eof {
                        break;
                    }
                    let sock = Arc::clone(&w.sock);
                    w.incoming.poll_frame(sock.as_fd())
                };
                match arrival {
                    Ok(Arrival::Frame(bytes, fds)) => {
                        self.on_frame(st, i, bytes, fds, &mut callbacks)
                    }
                    Ok(Arrival::Pending) => break,
                    Ok(Arrival::Closed) | Err(_) => {
                        // Nothing more can come from it: make sure it exits, so its
                        // chunks are accounted for.
                        let w = &mut st.workers[i];
                        if let Err(e) = arrival {
                            w.corrupt = Some(e.to_string());
                        }
                        w.broken = true;
                        w.eof = true;
                        let _ = w.process.kill();
                        break;
                    }
                }
            }
            flush(&mut st.workers[i]);
        }
        // Overdue tasks: kill the worker; its exit reports the timeout.
        if let Some(limit) = self.config.timeout {
            for w in &mut st.workers {
                if let Some(since) = w.head_since {
                    if !w.timed_out && since.elapsed() >= limit {
                        w.timed_out = true;
                        w.overdue = w.inflight.front().map(|t| (t.job, t.index));
                        let _ = w.process.kill();
                    }
                }
            }
        }
        // Exits. A dead worker's last frames are all in its socket by now: read them
        // first, or a result written just before the exit would be lost.
        let mut i = 0;
        while i < st.workers.len() {
            match st.workers[i].child.exitcode_now() {
                Some(code) => {
                    // Even a worker we could no longer send to may have answered.
                    while !st.workers[i].eof {
                        let sock = Arc::clone(&st.workers[i].sock);
                        match st.workers[i].incoming.poll_frame(sock.as_fd()) {
                            Ok(Arrival::Frame(bytes, fds)) => {
                                self.on_frame(st, i, bytes, fds, &mut callbacks)
                            }
                            other => {
                                if let Err(e) = other {
                                    st.workers[i].corrupt = Some(e.to_string());
                                }
                                st.workers[i].eof = true
                            }
                        }
                    }
                    let w = st.workers.swap_remove(i);
                    self.on_exit(st, w, code, &mut callbacks);
                }
                None => i += 1,
            }
        }
        // Replacements, while there is or may be work.
        if !st.terminated && st.broken.is_none() {
            let wanted = if st.closed && st.pending.is_empty() {
                0
            } else {
                self.config.processes
            };
            while st.workers.len() < wanted {
                if let Err(e) = self.spawn_worker(st) {
                    // Cannot start workers: fail what is waiting rather than hang.
                    let tasks: Vec<Task> = st.pending.drain(..).collect();
                    for t in tasks {
                        complete_into(
                            st,
                            t.job,
                            t.index,
                            ChunkResult::Failed(e.duplicate()),
                            &mut callbacks,
                        );
                    }
                    break;
                }
            }
        }
        self.dispatch(st);
        callbacks
    }

    fn on_frame(
        &self,
        st: &mut State,
        i: usize,
        mut bytes: Vec<u8>,
        fds: Vec<OwnedFd>,
        callbacks: &mut Vec<Box<dyn FnOnce() + Send>>,
    ) {
        match bytes.first().copied() {
            Some(worker::READY) => {
                st.init_failures = 0;
                st.workers[i].ready = true;
            }
            Some(worker::INIT_FAILED) => {
                st.workers[i].init_failed = Some(String::from_utf8_lossy(&bytes[1..]).into_owned());
            }
            Some(status @ (worker::CHUNK_OK | worker::CHUNK_FAILED)) => {
                let w = &mut st.workers[i];
                let Some(task) = w.inflight.pop_front() else {
                    w.broken = true;
                    let _ = w.process.kill();
                    return;
                };
                w.head_since = if w.inflight.is_empty() {
                    None
                } else {
                    Some(Instant::now())
                };
                let result = if status == worker::CHUNK_OK {
                    bytes.remove(0);
                    ChunkResult::Done(bytes, fds.into_iter().map(HandleFd::new).collect())
                } else {
                    ChunkResult::Failed(Error::Codec(
                        String::from_utf8_lossy(&bytes[1..]).into_owned(),
                    ))
                };
                complete_into(st, task.job, task.index, result, callbacks);
            }
            _ => {
                // Not our protocol: stop trusting this worker.
                let w = &mut st.workers[i];
                w.broken = true;
                let _ = w.process.kill();
            }
        }
    }

    fn on_exit(
        &self,
        st: &mut State,
        mut w: Worker,
        code: i32,
        callbacks: &mut Vec<Box<dyn FnOnce() + Send>>,
    ) {
        let _ = w.process.join();
        // A worker that never said READY did not finish its initializer, however it
        // ended (a panic reported, or an exit, abort or signal); none of its tasks ran.
        let init_failure = w.init_failed.take().or_else(|| {
            (!w.ready).then(|| {
                let how = Error::WorkerDied { exitcode: code };
                format!("{how} before its initializer finished")
            })
        });
        if let Some(reason) = init_failure {
            st.init_failures += 1;
            for t in w.inflight.drain(..).rev() {
                st.pending.push_front(t);
            }
            // An initializer that fails in every worker would otherwise be retried for
            // ever: after a few in a row, the pool is broken and says why.
            if st.init_failures >= 3 * self.config.processes as u32 {
                st.broken = Some(reason.clone());
                let tasks: Vec<Task> = st.pending.drain(..).collect();
                for t in tasks {
                    let err = Error::TaskPanicked {
                        message: format!("pool initializer failed: {reason}"),
                    };
                    complete_into(st, t.job, t.index, ChunkResult::Failed(err), callbacks);
                }
            }
            return;
        }
        // The chunk to blame: the overdue one if the driver killed the worker for it (its
        // answer may have come in the meantime), else the one it was running.
        let blamed = match (w.timed_out, w.overdue) {
            (true, Some(key)) => w.inflight.iter().position(|t| (t.job, t.index) == key),
            _ => (!w.inflight.is_empty()).then_some(0),
        };
        if let Some(t) = blamed.and_then(|i| w.inflight.remove(i)) {
            let err = if w.timed_out {
                Error::Timeout
            } else if let Some(why) = w.corrupt.take() {
                Error::Codec(format!(
                    "the worker's reply was refused and it was killed: {why}"
                ))
            } else {
                Error::WorkerDied { exitcode: code }
            };
            complete_into(st, t.job, t.index, ChunkResult::Failed(err), callbacks);
        }
        for t in w.inflight.drain(..).rev() {
            st.pending.push_front(t);
        }
    }

    /// Ends the driver when the pool is terminated, or closed with nothing left to do.
    fn shutdown_if_done(&self, st: &mut State) -> bool {
        // A job still being fed (a `map` encoding its chunks, a live `imap`) is work to
        // come, even if nothing is queued right now.
        let feeding = st.jobs.values().any(|j| !j.sealed && !j.abandoned);
        let idle =
            !feeding && st.pending.is_empty() && st.workers.iter().all(|w| w.inflight.is_empty());
        if !(st.terminated || (st.closed && (idle || st.broken.is_some()))) {
            return false;
        }
        {
            if st.terminated {
                for w in &st.workers {
                    let _ = w.process.kill();
                }
            }
            let pending: Vec<Task> = st.pending.drain(..).collect();
            let inflight: Vec<Task> = st
                .workers
                .iter_mut()
                .flat_map(|w| w.inflight.drain(..))
                .collect();
            let mut callbacks = Vec::new();
            for t in pending.into_iter().chain(inflight) {
                complete_into(
                    st,
                    t.job,
                    t.index,
                    ChunkResult::Failed(Error::PoolClosed),
                    &mut callbacks,
                );
            }
            drop(callbacks); // a stopped pool runs no more callbacks
        }
        // Closing our ends tells the workers to exit; then reap them all.
        let workers = std::mem::take(&mut st.workers);
        for mut w in workers {
            let _ = sys::fd::shutdown(w.sock.as_fd(), true);
            if w.process.join_timeout(Duration::from_secs(5)).ok() != Some(true) {
                let _ = w.process.kill();
                let _ = w.process.join();
            }
        }
        st.finished = true;
        self.cond.notify_all();
        true
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The driver holds an `Arc<Shared>` until it returns, so when this runs the
        // driver is gone and so are the workers.
    }
}

/// Pushes a worker's queued frames out without blocking; true if some are left.
fn flush(w: &mut Worker) -> bool {
    if w.broken {
        return false;
    }
    while let Some(o) = w.outgoing.front_mut() {
        match o.advance(w.sock.as_fd()) {
            Ok(true) => {
                w.outgoing.pop_front();
            }
            Ok(false) => return true,
            Err(_) => {
                // It cannot take more work: make sure it exits, so its chunks are
                // accounted for.
                w.broken = true;
                let _ = w.process.kill();
                return false;
            }
        }
    }
    false
}

/// Records a chunk's result (no callbacks collected: for paths that run none).
fn complete(st: &mut State, job: u64, index: usize, result: ChunkResult) {
    let mut ignored = Vec::new();
    complete_into(st, job, index, result, &mut ignored);
}

/// Records a chunk's result; if that completes the job, collects its callback.
fn complete_into(
    st: &mut State,
    job: u64,
    index: usize,
    result: ChunkResult,
    callbacks: &mut Vec<Box<dyn FnOnce() + Send>>,
) {
    let Some(j) = st.jobs.get_mut(&job) else {
        return;
    };
    if j.abandoned {
        j.remaining -= 1;
        if j.remaining == 0 {
            st.jobs.remove(&job);
        }
        return;
    }
    let Some(slot) = j.slot(index) else {
        return;
    };
    if slot.is_some() {
        return;
    }
    *slot = Some(result);
    j.remaining -= 1;
    if j.unordered {
        j.completed.push_back(index);
    }
    if j.is_done() {
        if let Some(on_done) = j.on_done.take() {
            callbacks.push(on_done(j));
        }
        if j.detached {
            st.jobs.remove(&job);
        }
    }
}

impl State {
    /// Adds a job whatever the pool's state; returns its id.
    pub(crate) fn insert_job(&mut self, job: Job) -> u64 {
        let id = self.next_job;
        self.next_job += 1;
        self.jobs.insert(id, job);
        id
    }

    /// Drops the unsent chunks of an abandoned job.
    pub(crate) fn abandon(&mut self, job: u64) {
        let before = self.pending.len();
        self.pending.retain(|t| t.job != job);
        let dropped = before - self.pending.len();
        if let Some(j) = self.jobs.get_mut(&job) {
            j.remaining -= dropped;
            j.abandoned = true;
            j.sealed = true;
            j.chunks.clear();
            if j.remaining == 0 {
                self.jobs.remove(&job);
            }
        }
    }
}
