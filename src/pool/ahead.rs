//! The accounting of one worker's tasks, apart from any I/O: what it is doing
//! ([`Phase`]), the tasks sent to it ahead behind its gate (`gate.rs`), and the decisions
//! on them — which worker gets which task ([`dispatch`]), which task goes back to an idle
//! worker ([`Account::revoke`]), which are taken back for good when their job is
//! cancelled ([`Account::cancel`]), and what a death means ([`Account::exit`]).
//!
//! **Who moves what.** Only the pool's side, under the pool's lock, touches an
//! [`Account`]: callers and the driver dispatch (`Idle → Busy`, and queue tasks ahead);
//! answers move `Busy` on to the next queued task, or `Idle` (`Retiring` once
//! `maxtasksperchild` is reached); the driver times tasks out (`Busy → Overdue`) and
//! accounts for exits. The worker shares only the gate words: it takes a queued task by
//! winning its word (`gate::take`), the pool revokes one by winning it first (to give it
//! to an idle worker, or to cancel it).
//!
//! **A death.** Once the worker's process is gone nothing can take a task any more, so
//! each gate word says for good whether its task was started: a task taken (the one about
//! to start, or any queued one whose answers before it went unread, say after a refused
//! frame) fails with the worker, and is never run again; one not taken goes to the next
//! worker, in order.
//!
//! The I/O (sockets, frames, processes) is the caller's: `slot.rs` in production, a loom
//! model below (`model.rs`), which drives this very code with a gate of a few words, a
//! worker that can die at each step, and answers that can be refused. `AHEAD` and the
//! number of gate words are const parameters, so production pays nothing for the model's
//! small sizes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::pool::gate::{self, AHEAD, Gate, WORDS, Words};

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests;

/// What a worker is doing.
#[derive(Debug)]
pub(crate) enum Phase<T> {
    /// Started; its initializer has not finished. It gets no work yet.
    Starting,
    /// Waiting for a task.
    Idle,
    /// Running `task`, numbered `seq` (its answer must name it), sent at `since` (for
    /// `task_timeout`); `tentative`: it was sent ahead, behind gate word `seq`, so at the
    /// worker's death it counts as started only if the gate says so.
    Busy {
        task: T,
        since: Instant,
        seq: u64,
        tentative: bool,
    },
    /// `task` (numbered `seq`) ran past the pool's `task_timeout`: the worker was killed,
    /// and its exit fails the task with `TaskTimedOut`.
    Overdue {
        task: T,
        seq: u64,
        timeout: Duration,
    },
    /// Gets no more work (it served `maxtasksperchild`, its initializer failed, or its
    /// link broke while idle); waiting for its exit.
    Retiring { init_failure: Option<String> },
}

/// A next task sent to a busy worker, which it may start only if its gate still says so.
#[derive(Debug)]
struct Queued<T> {
    task: T,
    seq: u64,
}

/// What a worker's death means for its tasks.
#[derive(Debug)]
pub(crate) struct Exit<T> {
    /// The tasks it never started, in the order they were given: for another worker.
    pub(crate) unstarted: Vec<T>,
    pub(crate) outcome: Outcome<T>,
}

/// What a worker's exit means for the pool, besides its unstarted tasks.
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    /// It held nothing.
    Clean,
    /// It never said its initializer finished (held no task).
    NeverReady,
    /// Its initializer failed, with this message (held no task).
    InitFailed(String),
    /// It died having started these tasks, whose answers never came (`timeout`: killed
    /// because the first ran past it).
    Lost {
        started: Vec<T>,
        timeout: Option<Duration>,
    },
}

/// One worker's tasks as the pool accounts for them, with at most `A` sent ahead behind
/// a gate of `N` words in `M`.
#[derive(Debug)]
pub(crate) struct Account<T, M, const A: usize = AHEAD, const N: usize = WORDS> {
    phase: Phase<T>,
    queued: VecDeque<Queued<T>>,
    /// Tasks sent to it so far (for `maxtasksperchild`).
    served: u64,
    gate: Gate<M, N>,
}

impl<T, M: Words, const A: usize, const N: usize> Account<T, M, A, N> {
    /// A starting worker's account, over its closed gate.
    pub(crate) fn new(gate: Gate<M, N>) -> Self {
        Account {
            phase: Phase::Starting,
            queued: VecDeque::new(),
            served: 0,
            gate,
        }
    }

    /// Whether it waits for a task (and so could take one, if its link is open).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle)
    }

    /// Whether it holds a task.
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self.phase, Phase::Busy { .. } | Phase::Overdue { .. })
    }

    /// Whether a frame from it is due (READY, or the answer to its task).
    pub(crate) fn owes_frame(&self) -> bool {
        matches!(
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

    /// Numbers a task to hand it while idle (the frame's `seq`, then [`assign`](Self::assign)).
    pub(crate) fn number(&mut self) -> u64 {
        self.gate.number()
    }

    /// Hands it `task`, numbered `seq` by [`number`](Self::number) (it must be idle; its
    /// frame is the caller's to send).
    pub(crate) fn assign(&mut self, task: T, seq: u64) {
        debug_assert!(self.is_idle());
        self.served += 1;
        self.phase = Phase::Busy {
            task,
            since: Instant::now(),
            seq,
            tentative: false,
        };
    }

    /// Whether it can be sent another task ahead now: busy, with fewer than `A` queued,
    /// and the word of the next one free of every task still tracked.
    pub(crate) fn can_queue(&self) -> bool {
        matches!(self.phase, Phase::Busy { .. }) && self.queued.len() < A && self.next_word_free()
    }

    /// Whether the gate word of the next task sent ahead is free of every task still
    /// tracked here: the one about to start (tentative) and those queued.
    fn next_word_free(&self) -> bool {
        let next = self.gate.next_seq();
        let tentative = match &self.phase {
            Phase::Busy {
                seq,
                tentative: true,
                ..
            } => Some(*seq),
            _ => None,
        };
        !tentative
            .into_iter()
            .chain(self.queued.iter().map(|q| q.seq))
            .any(|seq| gate::same_word::<N>(seq, next))
    }

    /// Arms its gate for a task to send it ahead (it must [`can_queue`](Self::can_queue)):
    /// the sequence number to mark the task's frame with, sent after this, and then
    /// given to [`queued`](Self::queued).
    pub(crate) fn arm(&mut self) -> u64 {
        debug_assert!(self.can_queue());
        self.gate.arm()
    }

    /// `task`, sent marked with `seq` from [`arm`](Self::arm), is its next one.
    pub(crate) fn queued(&mut self, task: T, seq: u64) {
        self.queued.push_back(Queued { task, seq });
    }

    /// Takes back the first queued task it has not started (closing the gate on it), so
    /// that tasks still start in the order they were submitted.
    pub(crate) fn revoke(&mut self) -> Option<T> {
        let i = self.queued.iter().position(|q| self.gate.revoke(q.seq))?;
        self.queued.remove(i).map(|q| q.task)
    }

    /// Takes back every task `pick` chooses that it has not started (`AsyncResult::cancel`):
    /// those queued, and the one it is to start next (sent ahead, now `Busy` and tentative),
    /// each by winning its gate word; a task whose word the worker took first stays (it
    /// started). The worker drops a revoked task unrun and without an answer, so when its
    /// next task is revoked it goes on with the queued one after it, or is idle: its next
    /// answer is for that one, or for nothing it holds.
    pub(crate) fn cancel(&mut self, pick: impl Fn(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.queued.len() {
            let q = &self.queued[i];
            if pick(&q.task) && self.gate.revoke(q.seq) {
                out.extend(self.queued.remove(i).map(|q| q.task));
            } else {
                i += 1;
            }
        }
        let next_revoked = match &self.phase {
            Phase::Busy {
                task,
                seq,
                tentative: true,
                ..
            } => pick(task) && self.gate.revoke(*seq),
            _ => false,
        };
        if next_revoked {
            // Revoked before the queued ones it precedes: still first in order.
            out.insert(0, self.skip_next());
        }
        out
    }

    /// Takes its running task (`Busy`) out of its hands: it goes on with the first queued
    /// task, or is idle.
    fn skip_next(&mut self) -> T {
        let next = match self.queued.pop_front() {
            Some(q) => Phase::Busy {
                task: q.task,
                since: Instant::now(),
                seq: q.seq,
                tentative: true,
            },
            None => Phase::Idle,
        };
        match std::mem::replace(&mut self.phase, next) {
            Phase::Busy { task, .. } => task,
            _ => unreachable!("skip_next is called on a busy worker only"),
        }
    }

    /// The worker refused task `seq` at its gate (`worker::DROPPED`). If this account still
    /// holds that task — the pool never revoked it — its word was in a state no honest
    /// party writes: the task, taken out, is returned (to fail; the caller replaces the
    /// worker). `None`: the task was taken back (or never was this worker's), an honest
    /// refusal with nothing to do.
    pub(crate) fn on_dropped(&mut self, seq: u64) -> Option<T> {
        if let Some(i) = self.queued.iter().position(|q| q.seq == seq) {
            return self.queued.remove(i).map(|q| q.task);
        }
        match &self.phase {
            Phase::Busy { seq: s, .. } if *s == seq => Some(self.skip_next()),
            Phase::Overdue { seq: s, .. } if *s == seq => {
                let placeholder = Phase::Retiring { init_failure: None };
                match std::mem::replace(&mut self.phase, placeholder) {
                    Phase::Overdue { task, .. } => Some(task),
                    _ => unreachable!("matched just above"),
                }
            }
            _ => None,
        }
    }

    /// Its queued tasks whose word is not taken (the model's check that none waits while
    /// a worker is idle).
    #[cfg(test)]
    pub(crate) fn untaken(&self) -> usize {
        let taken = |q: &&Queued<T>| self.gate.was_taken(q.seq);
        self.queued.iter().filter(|q| !taken(q)).count()
    }

    /// Its initializer finished.
    pub(crate) fn on_ready(&mut self) {
        if matches!(self.phase, Phase::Starting) {
            self.phase = Phase::Idle;
        }
    }

    /// Its initializer failed (its exit follows); false if it was past its initializer
    /// (a protocol violation: the report is ignored, its tasks stay accounted for).
    pub(crate) fn on_init_failed(&mut self, message: String) -> bool {
        if !matches!(self.phase, Phase::Starting) {
            return false;
        }
        self.phase = Phase::Retiring {
            init_failure: Some(message),
        };
        true
    }

    /// The task numbered `seq` is its running one (an answer naming it is due).
    pub(crate) fn holds(&self, seq: u64) -> bool {
        matches!(&self.phase, Phase::Busy { seq: s, .. } | Phase::Overdue { seq: s, .. } if *s == seq)
    }

    /// An answer naming task `seq` came: the task it answers, or `None` if it does not
    /// hold that task as its running one (a protocol violation; nothing changes).
    /// `maxtasks` (0: no limit) retires it once it has served that many; `retiring`: it
    /// said it retires after this answer.
    pub(crate) fn on_answer(&mut self, seq: u64, maxtasks: u64, retiring: bool) -> Option<T> {
        if !self.holds(seq) {
            return None;
        }
        let retire = retiring || (maxtasks != 0 && self.served >= maxtasks);
        let next = if retire || matches!(self.phase, Phase::Overdue { .. }) {
            Phase::Retiring { init_failure: None }
        } else if let Some(q) = self.queued.pop_front() {
            // It goes on with its next task (it passed the gate, or will: only a queued
            // task can be revoked).
            Phase::Busy {
                task: q.task,
                since: Instant::now(),
                seq: q.seq,
                tentative: true,
            }
        } else {
            Phase::Idle
        };
        match std::mem::replace(&mut self.phase, next) {
            Phase::Busy { task, .. } | Phase::Overdue { task, .. } => Some(task),
            _ => unreachable!("holds(seq): busy or overdue"),
        }
    }

    /// Its task ran past `timeout` (its worker is being killed; its exit reports it).
    pub(crate) fn time_out(&mut self, timeout: Duration) {
        let placeholder = Phase::Retiring { init_failure: None };
        self.phase = match std::mem::replace(&mut self.phase, placeholder) {
            Phase::Busy { task, seq, .. } => Phase::Overdue { task, seq, timeout },
            other => other,
        };
    }

    /// Nothing more can be sent to it: an idle worker retires. A busy one keeps its tasks
    /// (its exit accounts for them); a starting one stays starting (its exit counts
    /// against the initializer, as it never said it was ready).
    pub(crate) fn close(&mut self) {
        if matches!(self.phase, Phase::Idle) {
            self.phase = Phase::Retiring { init_failure: None };
        }
    }

    /// Its worker is gone (no take can follow) and every answer it sent that could be
    /// read was: which of its tasks it started, and which go to another worker. Leaves it
    /// retiring, with nothing.
    pub(crate) fn exit(&mut self) -> Exit<T> {
        let mut unstarted = Vec::new();
        let mut started = Vec::new();
        let placeholder = Phase::Retiring { init_failure: None };
        let mut timeout = None;
        let outcome = match std::mem::replace(&mut self.phase, placeholder) {
            Phase::Starting => Outcome::NeverReady,
            Phase::Retiring {
                init_failure: Some(m),
            } => Outcome::InitFailed(m),
            Phase::Idle | Phase::Retiring { init_failure: None } => Outcome::Clean,
            Phase::Busy {
                task,
                seq,
                tentative: true,
                ..
            } if !self.gate.was_taken(seq) => {
                unstarted.push(task);
                Outcome::Clean
            }
            Phase::Busy { task, .. } => {
                started.push(task);
                Outcome::Clean
            }
            Phase::Overdue {
                task, timeout: t, ..
            } => {
                timeout = Some(t);
                started.push(task);
                Outcome::Clean
            }
        };
        // A queued task the worker took had its answers before it unread (a refused frame
        // ends the reading): it started, and must not run again.
        for q in self.queued.drain(..) {
            if self.gate.was_taken(q.seq) {
                started.push(q.task);
            } else {
                unstarted.push(q.task);
            }
        }
        let outcome = if started.is_empty() {
            outcome
        } else {
            Outcome::Lost { started, timeout }
        };
        Exit { unstarted, outcome }
    }
}

/// One worker as [`dispatch`] sees it: its account, and its link.
pub(crate) trait Post<T, M: Words, const A: usize, const N: usize> {
    fn account(&self) -> &Account<T, M, A, N>;
    fn account_mut(&mut self) -> &mut Account<T, M, A, N>;
    /// Whether a frame can still be sent to it.
    fn open(&self) -> bool;
    /// Queues `task`'s frame on its link, numbered `seq`; `ahead`: sent ahead, behind
    /// its gate word.
    fn post(&mut self, task: &T, seq: u64, ahead: bool);
    /// Pushes what its link has queued out, without blocking (a failure closes the link
    /// and has the worker killed); true if some is left to send.
    fn flush(&mut self) -> bool;
}

/// What [`dispatch`] did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Dispatched {
    /// Some task went to an idle worker.
    pub(crate) assigned: bool,
    /// Some frame could not be sent whole: its link must be watched.
    pub(crate) unsent: bool,
}

/// Hands pending tasks to idle workers; an idle worker with nothing pending takes a next
/// task back from a busy worker that has not started it. Then, while `ahead` allows the
/// task at the front, sends busy workers their next tasks ahead, as long as one can take
/// more.
///
/// Afterwards no worker is idle while a task is pending or queued untaken behind another:
/// the first loop stops only when no revoke wins, that is when every queued task was
/// taken.
pub(crate) fn dispatch<T, M, const A: usize, const N: usize, S>(
    workers: &mut [S],
    pending: &mut VecDeque<T>,
    ahead: impl Fn(&T) -> bool,
) -> Dispatched
where
    M: Words,
    S: Post<T, M, A, N>,
{
    let mut done = Dispatched::default();
    while let Some(i) = workers
        .iter()
        .position(|w| w.open() && w.account().is_idle())
    {
        let task = match pending.pop_front() {
            Some(t) => t,
            None => match workers.iter_mut().find_map(|w| w.account_mut().revoke()) {
                Some(t) => t,
                None => break,
            },
        };
        let w = &mut workers[i];
        let seq = w.account_mut().number();
        w.post(&task, seq, false);
        w.account_mut().assign(task, seq);
        done.assigned = true;
        done.unsent |= w.flush();
    }
    while pending.front().is_some_and(&ahead) {
        let Some(w) = workers
            .iter_mut()
            .find(|w| w.open() && w.account().can_queue())
        else {
            break;
        };
        let task = pending.pop_front().expect("checked non-empty");
        // The gate is armed before the frame goes: the worker may read it at once.
        let seq = w.account_mut().arm();
        w.post(&task, seq, true);
        w.account_mut().queued(task, seq);
        done.unsent |= w.flush();
    }
    done
}
