//! One worker as the pool sees it: its process, its links (`link.rs`), and the accounting
//! of its tasks (`ahead.rs`: its phase, and the tasks sent to it ahead).
//!
//! **Scheduling is pull.** A worker is *given* a task only when it is idle (Python's
//! workers pull from one shared queue, which comes to the same). While every worker is
//! busy, the pool may send a worker its next tasks ahead, behind its gate (`gate.rs`): an
//! idle worker takes back any of them not yet started, so no task ever waits behind
//! another while some worker is free. A worker that dies costs exactly the tasks it
//! started — its current one, and any queued one its gate says it took — and its tasks
//! not started go to the next worker ([`Slot::exit`]).
//!
//! **Who does what.** The decisions are the account's ([`Account`], no I/O); this file
//! does their I/O: frames onto the link, kills, and the errors a death reports. Callers
//! and the driver dispatch under the pool's lock; answers, timeouts and exits come through
//! the driver. A worker retires once `maxtasksperchild` is reached, or once it said it
//! retires (past `max_worker_memory`); a worker under limits that dies of one fails its
//! task with `LimitExceeded` (`isolation::blame`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::HandleFd;
use crate::connection::Connection;
use crate::error::Error;
use crate::isolation::{self, Isolation};
use crate::pool::ahead::{Account, Outcome, Post};
use crate::pool::gate::{self, AHEAD, SharedGate, WORDS};
use crate::pool::jobs::JobId;
use crate::pool::link::Link;
use crate::process::Process;
use crate::shared::region::Region;
use crate::start::children::ChildHandle;

/// One chunk of work: `[entry][encoded Vec<Args>]`, and the arguments' descriptors.
#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) job: JobId,
    pub(crate) index: usize,
    /// Items in the chunk: its answer must carry exactly this many results.
    pub(crate) nitems: usize,
    pub(crate) payload: Arc<Vec<u8>>,
    pub(crate) fds: Vec<HandleFd>,
}

/// What a worker's exit means for the pool.
#[derive(Debug)]
pub(crate) struct ExitOutcome {
    /// Its tasks never started, in order: for the next worker, first in line.
    pub(crate) unstarted: Vec<Task>,
    /// The tasks it started and never answered, and what each fails with.
    pub(crate) failed: Vec<(Task, Error)>,
    /// Its initializer failed (or it died before it finished), with this message.
    pub(crate) init_failed: Option<String>,
}

/// The longest a frame begun on a worker's socket may wait for its next byte. A worker
/// writes each frame whole, at once (`framing::write_frame`), so a frame that stops
/// half-way was begun by someone else — a task writing on its worker's socket — and its
/// claimed length would swallow the worker's real answers while the pool waits for
/// bytes that never come: past this the worker is refused.
pub(crate) const FRAME_STALL: Duration = Duration::from_secs(2);

/// A local worker process.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) process: Process<()>,
    pub(crate) child: Arc<ChildHandle>,
    pub(crate) link: Link,
    /// Its tasks: what it runs, what it was sent ahead (see `ahead.rs`).
    tasks: Account<Task, Region>,
    /// Its limits, to tell a death by a limit from another (`isolation::blame`).
    pub(crate) isolation: Option<Isolation>,
    /// It reported dying of its memory limit (`worker::LIMIT_MEMORY`).
    pub(crate) memory_reported: bool,
    /// It said it retires after its next answer (`worker::RETIRING`).
    pub(crate) retiring: bool,
}

impl Slot {
    pub(crate) fn new(
        process: Process<()>,
        child: Arc<ChildHandle>,
        sock: HandleFd,
        rings: Connection<()>,
        bell: HandleFd,
        gate: SharedGate,
    ) -> Slot {
        Slot {
            process,
            child,
            link: Link::new(sock, rings, bell),
            tasks: Account::new(gate),
            isolation: None,
            memory_reported: false,
            retiring: false,
        }
    }

    /// Whether it holds a task.
    pub(crate) fn is_busy(&self) -> bool {
        self.tasks.is_busy()
    }

    /// Whether a frame from it is due (READY, or the answer to its task).
    pub(crate) fn expects_frame(&self) -> bool {
        !self.link.eof && self.tasks.owes_frame()
    }

    /// When its task started, if `task_timeout` still has to watch it.
    pub(crate) fn busy_since(&self) -> Option<Instant> {
        self.tasks.busy_since()
    }

    /// Its initializer finished.
    pub(crate) fn on_ready(&mut self) {
        self.tasks.on_ready();
    }

    /// Its initializer panicked (its exit follows); false if it was past its initializer
    /// (a protocol violation).
    pub(crate) fn on_init_failed(&mut self, message: String) -> bool {
        self.tasks.on_init_failed(message)
    }

    /// An answer naming task `seq` came: the task it answers, or `None` if that is not
    /// the task it runs (a protocol violation). `maxtasks` (0: no limit) retires it once
    /// it has served that many, and so does its saying it retires.
    pub(crate) fn on_answer(&mut self, seq: u64, maxtasks: u64) -> Option<Task> {
        self.tasks.on_answer(seq, maxtasks, self.retiring)
    }

    /// It refused task `seq` at its gate: the task, if the pool still held it (an
    /// impossible state: see [`Account::on_dropped`]), to fail.
    pub(crate) fn on_dropped(&mut self, seq: u64) -> Option<Task> {
        self.tasks.on_dropped(seq)
    }

    /// It broke the protocol (`why`): its stream is no longer read (nothing after the
    /// violation is trusted), it gets no more work and is killed; its exit fails the tasks
    /// it started with [`refused`]. Returns `why`, naming the worker.
    pub(crate) fn refuse(&mut self, why: String) -> String {
        let why = format!(
            "{} (pid {}): {why}",
            self.process.name(),
            self.process.pid().unwrap_or(0)
        );
        if self.link.corrupt.is_none() {
            self.link.corrupt = Some(why.clone());
        }
        self.link.eof = true;
        self.fail_link();
        why
    }

    /// Takes back, for good, the tasks of `job` it was sent ahead and has not started
    /// (`AsyncResult::cancel`; see [`Account::cancel`]).
    pub(crate) fn cancel(&mut self, job: JobId) -> Vec<Task> {
        self.tasks.cancel(|t| t.job == job)
    }

    /// Its task ran past `timeout`: kill it; its exit reports the timeout.
    pub(crate) fn time_out(&mut self, timeout: Duration) {
        self.tasks.time_out(timeout);
        let _ = self.process.kill();
    }

    /// Nothing more can go through its link: it gets no work, and is killed so that its
    /// exit accounts for what it held.
    pub(crate) fn fail_link(&mut self) {
        self.link.broken = true;
        self.tasks.close();
        let _ = self.process.kill();
    }

    /// What its exit (with `code`) means, once every answer that could be read was: the
    /// tasks it never started go back, those it started fail, or its initializer did.
    pub(crate) fn exit(&mut self, code: i32) -> ExitOutcome {
        let exit = self.tasks.exit();
        let mut out = ExitOutcome {
            unstarted: exit.unstarted,
            failed: Vec::new(),
            init_failed: None,
        };
        match exit.outcome {
            Outcome::Clean => {}
            Outcome::NeverReady => {
                let how = Error::WorkerDied {
                    exitcode: code,
                    peak_rss: self.child.peak_rss(),
                };
                out.init_failed = Some(format!("{how} before its initializer finished"));
            }
            Outcome::InitFailed(m) => out.init_failed = Some(m),
            Outcome::Lost { started, timeout } => {
                let corrupt = self.link.corrupt.take();
                out.failed = started
                    .into_iter()
                    .map(|task| {
                        let err = match (timeout, &corrupt) {
                            (Some(timeout), _) => Error::TaskTimedOut { timeout },
                            // Its answers after the refused frame went unread.
                            (None, Some(why)) => refused(why),
                            (None, None) => self.death(code),
                        };
                        (task, err)
                    })
                    .collect();
            }
        }
        out
    }

    /// What its death with `code` while running a task means: a limit it hit, or a death.
    fn death(&self, code: i32) -> Error {
        match isolation::blame(self.isolation.as_ref(), code, self.memory_reported) {
            Some(limit) => Error::LimitExceeded { limit },
            None => Error::WorkerDied {
                exitcode: code,
                peak_rss: self.child.peak_rss(),
            },
        }
    }

    /// Notes what its last read left: a frame begun and not whole starts (or, if bytes of
    /// it came, restarts) its stall clock.
    pub(crate) fn note_read(&mut self) {
        let link = &mut self.link;
        let n = link.incoming.buffered();
        link.partial = match link.partial {
            _ if n == 0 || link.eof => None,
            Some((m, since)) if m == n => Some((m, since)),
            _ => Some((n, Instant::now())),
        };
    }

    /// Whether a frame it began has waited past [`FRAME_STALL`] for its next byte.
    pub(crate) fn stalled(&self) -> bool {
        self.link
            .partial
            .is_some_and(|(_, since)| since.elapsed() >= FRAME_STALL)
    }

    /// Whether an answer waits in its ring, to be read now.
    pub(crate) fn ring_pending(&self) -> bool {
        self.link.ring_pending()
    }

    /// Pushes its queued frames out without waiting (see `link.rs`); true if some is
    /// left to send.
    pub(crate) fn flush(&mut self) -> bool {
        if self.link.broken {
            return false;
        }
        match self.link.flush() {
            Ok(left) => left,
            Err(_) => {
                self.fail_link();
                false
            }
        }
    }
}

/// What a task fails with when its worker broke the protocol (`why`) and was killed.
pub(crate) fn refused(why: &str) -> Error {
    Error::Codec(format!(
        "the worker's reply was refused and it was killed: {why}"
    ))
}

impl Post<Task, Region, AHEAD, WORDS> for Slot {
    fn account(&self) -> &Account<Task, Region> {
        &self.tasks
    }

    fn account_mut(&mut self) -> &mut Account<Task, Region> {
        &mut self.tasks
    }

    fn open(&self) -> bool {
        !self.link.broken
    }

    fn post(&mut self, task: &Task, seq: u64, ahead: bool) {
        let fds: Vec<HandleFd> = task.fds.iter().filter_map(|f| f.try_clone().ok()).collect();
        let frame = gate::task_frame(seq, ahead, &task.payload);
        self.link.post(frame, gate::task_marker(seq), fds, !ahead);
    }

    fn flush(&mut self) -> bool {
        Slot::flush(self)
    }
}
