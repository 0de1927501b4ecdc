//! One worker as the pool sees it: its process, its link (a socket), its [`Phase`], and the
//! tasks sent to it ahead.
//!
//! **Scheduling is pull.** A worker is *given* a task only when it is [`Phase::Idle`]
//! (Python's workers pull from one shared queue, which comes to the same). While every
//! worker is busy, the pool may send a worker its next tasks ahead (`queued`), behind its
//! gate (`gate.rs`): an idle worker takes back any of them not yet started, so no task
//! ever waits behind another while some worker is free. A worker that dies costs exactly
//! the task it was running — its `Busy`/`Overdue` task, if it started it — and its tasks
//! not started go to the next worker ([`Slot::take_unstarted`]).
//!
//! **Who moves the phase.** Callers and the driver dispatch (`Idle → Busy`, and queue
//! tasks ahead) under the pool's lock; answers move `Busy` on to the next queued task, or
//! `Idle` (`Retiring` once `maxtasksperchild` is reached, or once the worker said it
//! retires: past `max_worker_memory`); the driver kills overdue workers
//! (`Busy → Overdue`) and accounts for exits ([`Slot::exit_outcome`]); a worker under
//! limits that dies of one fails its task with `LimitExceeded` (`isolation::blame`).

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::HandleFd;
use crate::connection::framing::{Incoming, Outgoing};
use crate::error::Error;
use crate::isolation::{self, Isolation};
use crate::pool::gate::{self, Gate};
use crate::pool::jobs::JobId;
use crate::process::Process;
use crate::start::children::ChildHandle;

/// One chunk of work: `[entry][encoded Vec<Args>]`, and the arguments' descriptors.
#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) job: JobId,
    pub(crate) index: usize,
    pub(crate) payload: Arc<Vec<u8>>,
    pub(crate) fds: Vec<HandleFd>,
}

/// What a worker is doing.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Started; its initializer has not finished. It gets no work yet.
    Starting,
    /// Waiting for a task.
    Idle,
    /// Running `task`, sent at `since` (for `task_timeout`); `tentative`: it was sent as a
    /// worker's next task under this gate sequence, so at the worker's death it counts as
    /// started only if the gate says so.
    Busy {
        task: Task,
        since: Instant,
        tentative: Option<u64>,
    },
    /// `task` ran past the pool's `task_timeout`: the worker was killed, and its exit
    /// fails the task with `TaskTimedOut`.
    Overdue { task: Task, timeout: Duration },
    /// Gets no more work (it served `maxtasksperchild`, its initializer failed, or its
    /// link broke while idle); waiting for its exit.
    Retiring { init_failure: Option<String> },
}

/// What a worker's exit means for the pool.
#[derive(Debug)]
pub(crate) enum ExitOutcome {
    /// It held nothing.
    Clean,
    /// It never finished its initializer (held no task).
    InitFailed(String),
    /// It died holding `task`, which fails with this error.
    Lost(Task, Error),
}

/// The parent's end of a worker's socket.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) sock: Arc<HandleFd>,
    pub(crate) incoming: Incoming,
    /// The task frame not yet wholly written (a large task goes out in pieces).
    pub(crate) outgoing: VecDeque<Outgoing>,
    /// Its stream ended (or is corrupt): nothing more to read.
    pub(crate) eof: bool,
    /// Sending failed: nothing more can be sent.
    pub(crate) broken: bool,
    /// Why its stream was refused (a corrupt frame): what its task fails with.
    pub(crate) corrupt: Option<String>,
}

/// A next task sent to a busy worker, which it may start only if its gate still says so.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) task: Task,
    pub(crate) seq: u64,
}

/// A local worker process.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) process: Process<()>,
    pub(crate) child: Arc<ChildHandle>,
    pub(crate) link: Link,
    pub(crate) phase: Phase,
    /// Tasks sent to it so far (for `maxtasksperchild`).
    pub(crate) served: u64,
    /// The gate word of its next task (see `gate.rs`).
    pub(crate) gate: Gate,
    /// Its next tasks, in order, sent while it runs the current one (see `gate.rs`).
    pub(crate) queued: VecDeque<Queued>,
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
        gate: Gate,
    ) -> Slot {
        Slot {
            process,
            child,
            link: Link {
                sock: Arc::new(sock),
                incoming: Incoming::default(),
                outgoing: VecDeque::new(),
                eof: false,
                broken: false,
                corrupt: None,
            },
            phase: Phase::Starting,
            served: 0,
            gate,
            queued: VecDeque::new(),
            isolation: None,
            memory_reported: false,
            retiring: false,
        }
    }

    /// Whether it can take a task now.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && !self.link.broken
    }

    /// Whether it holds a task.
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self.phase, Phase::Busy { .. } | Phase::Overdue { .. })
    }

    /// Whether a frame from it is due (READY, or the answer to its task).
    pub(crate) fn expects_frame(&self) -> bool {
        !self.link.eof
            && matches!(
                self.phase,
                Phase::Starting | Phase::Busy { .. } | Phase::Overdue { .. }
            )
    }

    /// When its task started, if `task_timeout` still has to watch it.
    pub(crate) fn busy_since(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Busy { since, .. } => Some(*since),
            _ => None,
        }
    }

    /// Hands it `task` (it must be idle): the frame is queued on its link.
    pub(crate) fn assign(&mut self, task: Task) {
        debug_assert!(self.is_idle());
        let fds: Vec<HandleFd> = task.fds.iter().filter_map(|f| f.try_clone().ok()).collect();
        self.link
            .outgoing
            .push_back(Outgoing::new(Arc::clone(&task.payload), fds));
        self.served += 1;
        self.phase = Phase::Busy {
            task,
            since: Instant::now(),
            tentative: None,
        };
    }

    /// Whether it can be sent another task ahead now: busy, with fewer than
    /// [`gate::AHEAD`] queued.
    pub(crate) fn can_queue(&self) -> bool {
        matches!(self.phase, Phase::Busy { .. })
            && self.queued.len() < gate::AHEAD
            && self.next_word_free()
            && !self.link.broken
    }

    /// Whether the gate word of the next task sent ahead is free of every task still
    /// tracked here: the one about to start (tentative) and those queued.
    fn next_word_free(&self) -> bool {
        let next = self.gate.next_seq();
        let tentative = match &self.phase {
            Phase::Busy {
                tentative: Some(seq),
                ..
            } => Some(*seq),
            _ => None,
        };
        !tentative
            .into_iter()
            .chain(self.queued.iter().map(|q| q.seq))
            .any(|seq| gate::same_word(seq, next))
    }

    /// Sends it `task` as its next one, marked, behind its gate (see `gate.rs`).
    pub(crate) fn queue(&mut self, task: Task) {
        debug_assert!(self.can_queue());
        let seq = self.gate.arm();
        let fds: Vec<HandleFd> = task.fds.iter().filter_map(|f| f.try_clone().ok()).collect();
        let framed = gate::marked(seq, &task.payload);
        self.link
            .outgoing
            .push_back(Outgoing::new(Arc::new(framed), fds));
        self.queued.push_back(Queued { task, seq });
    }

    /// Takes back the first queued task it has not started (closing the gate on it), so
    /// that tasks still start in the order they were submitted.
    pub(crate) fn revoke(&mut self) -> Option<Task> {
        let i = self.queued.iter().position(|q| self.gate.revoke(q.seq))?;
        self.queued.remove(i).map(|q| q.task)
    }

    /// After its death: the tasks it never started (its next task, and its current one
    /// if that came through the gate and the gate still holds it), for someone else to
    /// run. What remains is what `exit_outcome` blames.
    pub(crate) fn take_unstarted(&mut self) -> Vec<Task> {
        let mut out: Vec<Task> = self.queued.drain(..).map(|q| q.task).collect();
        if let Phase::Busy {
            tentative: Some(seq),
            ..
        } = self.phase
        {
            if !self.gate.was_taken(seq) {
                let placeholder = Phase::Idle;
                if let Phase::Busy { task, .. } = std::mem::replace(&mut self.phase, placeholder) {
                    out.insert(0, task);
                }
            }
        }
        out
    }

    /// Its initializer finished.
    pub(crate) fn on_ready(&mut self) {
        if matches!(self.phase, Phase::Starting) {
            self.phase = Phase::Idle;
        }
    }

    /// Its initializer panicked (its exit follows).
    pub(crate) fn on_init_failed(&mut self, message: String) {
        self.phase = Phase::Retiring {
            init_failure: Some(message),
        };
    }

    /// An answer came: the task it answers, or `None` if it held none (a protocol
    /// violation). `maxtasks` (0: no limit) retires it once it has served that many.
    pub(crate) fn on_answer(&mut self, maxtasks: u64) -> Option<Task> {
        let retire = self.retiring || (maxtasks != 0 && self.served >= maxtasks);
        let next = if retire || matches!(self.phase, Phase::Overdue { .. }) {
            Phase::Retiring { init_failure: None }
        } else if let Some(q) = self.queued.pop_front() {
            // It goes on with its next task (it passed the gate, or will: only a queued
            // task can be revoked).
            Phase::Busy {
                task: q.task,
                since: Instant::now(),
                tentative: Some(q.seq),
            }
        } else {
            Phase::Idle
        };
        match std::mem::replace(&mut self.phase, next) {
            Phase::Busy { task, .. } | Phase::Overdue { task, .. } => Some(task),
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// Its task ran past `timeout`: kill it; its exit reports the timeout.
    pub(crate) fn time_out(&mut self, timeout: Duration) {
        let placeholder = Phase::Retiring { init_failure: None };
        self.phase = match std::mem::replace(&mut self.phase, placeholder) {
            Phase::Busy { task, .. } => Phase::Overdue { task, timeout },
            other => other,
        };
        let _ = self.process.kill();
    }

    /// Nothing more can go through its link: it gets no work, and is killed so that its
    /// exit accounts for what it held.
    pub(crate) fn fail_link(&mut self) {
        self.link.broken = true;
        // A busy worker keeps its task (its exit fails it); a starting one stays starting
        // (its exit counts against the initializer, as it never said it was ready).
        if matches!(self.phase, Phase::Idle) {
            self.phase = Phase::Retiring { init_failure: None };
        }
        let _ = self.process.kill();
    }

    /// What its exit (with `code`) means: the task it held fails, or its initializer did.
    pub(crate) fn exit_outcome(&mut self, code: i32) -> ExitOutcome {
        let placeholder = Phase::Retiring { init_failure: None };
        match std::mem::replace(&mut self.phase, placeholder) {
            Phase::Starting => {
                let how = Error::WorkerDied {
                    exitcode: code,
                    peak_rss: self.child.peak_rss(),
                };
                ExitOutcome::InitFailed(format!("{how} before its initializer finished"))
            }
            Phase::Retiring {
                init_failure: Some(m),
            } => ExitOutcome::InitFailed(m),
            Phase::Idle | Phase::Retiring { init_failure: None } => ExitOutcome::Clean,
            Phase::Busy { task, .. } => match self.link.corrupt.take() {
                Some(why) => ExitOutcome::Lost(
                    task,
                    Error::Codec(format!(
                        "the worker's reply was refused and it was killed: {why}"
                    )),
                ),
                None => ExitOutcome::Lost(task, self.death(code)),
            },
            Phase::Overdue { task, timeout } => {
                ExitOutcome::Lost(task, Error::TaskTimedOut { timeout })
            }
        }
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

    /// Pushes its queued frame out without blocking; true if some is left to send.
    pub(crate) fn flush(&mut self) -> bool {
        if self.link.broken {
            return false;
        }
        while let Some(o) = self.link.outgoing.front_mut() {
            match o.advance(self.link.sock.as_fd()) {
                Ok(true) => {
                    self.link.outgoing.pop_front();
                }
                Ok(false) => return true,
                Err(_) => {
                    self.fail_link();
                    return false;
                }
            }
        }
        false
    }
}
