//! Rank 0's pool driver when the workers are MPI ranks: the same job table and pending
//! queue as a local pool, fed by a different kind of worker.
//!
//! **Who does what.** Callers add chunks to the job table and the pending queue exactly as
//! for a local pool, and wake this driver (they never talk MPI). The driver, one thread,
//! is the only one that sends and polls on the [`Link`]: each round it hands pending tasks
//! to ranks with room (pull: a rank gets more only as it answers, up to `in_flight` at
//! once, so heterogeneous tasks balance and the latency of the network is hidden), reads
//! every result, completes chunks in the job table, and wakes the waiters. It sleeps on the
//! pool's wake-up socket when nothing is out, and polls with a backoff while something is.
//!
//! **Supervision.** A rank runs its tasks in the order it got them, so the oldest of its
//! unanswered tasks is the one running, since the moment the previous one was answered.
//! - `task_timeout`: MPI cannot kill one rank (that ends the job), so the overdue task
//!   fails with `TaskTimedOut` on time, the rank's queued tasks are cancelled (they come
//!   back and go to other ranks), and the rank gets no more work until the overdue task
//!   returns, whose late result is dropped. A task that never returns keeps its rank.
//! - A rank that breaks the protocol, or is silent for [`DEAD_AFTER`] (a live rank says
//!   `BEAT` every half second, even while a task runs): the task it was running fails, its
//!   queued tasks go to other ranks, and it gets nothing more. With OpenMPI's defaults a
//!   dead rank ends the whole job within about a second anyway; this covers launchers
//!   that keep the job running (`--enable-recovery`, ULFM) and a hung rank.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::link::{Incoming, Link, Outcome};
use super::{Backoff, OnPanic, set_on_panic};
use crate::error::Error;
use crate::pool::mpi_hooks::{Callback, ChunkResult, Shared, State, Task};
use crate::sys;

/// How long a rank holding tasks may be silent before it is taken for dead.
pub(crate) const DEAD_AFTER: Duration = Duration::from_secs(10);

/// At most this many results are read before the driver books them.
const BATCH: usize = 256;

/// One task out on a rank.
#[derive(Debug)]
struct Sent {
    seq: u64,
    task: Task,
}

/// What a worker rank is to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Takes work.
    Serving,
    /// Still running task `late`, which ran past `task_timeout` and was failed already:
    /// no work until it returns.
    Stuck { late: u64 },
    /// Dead, hung or broken: never used again.
    Lost,
}

#[derive(Debug)]
struct Rank {
    phase: Phase,
    out: VecDeque<Sent>,
    /// Since when the oldest task in `out` has been running.
    head_since: Instant,
}

/// The driver's own state (only its thread touches it).
#[derive(Debug)]
pub(crate) struct Driver {
    shared: Arc<Shared>,
    link: Arc<Link>,
    /// Index `r - 1` for rank `r`.
    ranks: Vec<Rank>,
    in_flight: usize,
    timeout: Option<Duration>,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        link: Arc<Link>,
        in_flight: usize,
        timeout: Option<Duration>,
    ) -> Driver {
        let now = Instant::now();
        let ranks = (1..link.size())
            .map(|_| Rank {
                phase: Phase::Serving,
                out: VecDeque::new(),
                head_since: now,
            })
            .collect();
        Driver {
            shared,
            link,
            ranks,
            in_flight: in_flight.max(1),
            timeout,
        }
    }

    /// The driver thread's body.
    pub(crate) fn run(mut self) {
        // An unwinding panic here would leave every waiter and every rank hanging.
        set_on_panic(OnPanic::Abort);
        let shared = Arc::clone(&self.shared);
        let _ = shared.driver_id.set(std::thread::current().id());
        let mut backoff = Backoff::default();
        loop {
            let mut callbacks = Vec::new();
            let to_send = {
                let mut st = shared.lock();
                self.drain_wake();
                if self.shutdown_if_done(&mut st) {
                    break;
                }
                callbacks.append(&mut st.deferred.0);
                self.take_work(&mut st)
            };
            let mut active = !to_send.is_empty();
            let mut failed = Vec::new();
            for (r, task) in to_send {
                self.send(r, task, &mut failed);
            }
            let mut incoming = Vec::new();
            while incoming.len() < BATCH {
                match self.link.poll() {
                    Some(i) => incoming.push(i),
                    None => break,
                }
            }
            active |= !incoming.is_empty();
            {
                let mut st = shared.lock();
                for (task, err) in failed {
                    st.jobs.complete(
                        task.job,
                        task.index,
                        ChunkResult::Failed(err),
                        &mut callbacks,
                    );
                }
                for i in incoming {
                    self.on_incoming(&mut st, i, &mut callbacks);
                }
                self.supervise(&mut st, &mut callbacks);
            }
            self.shared.progress.fetch_add(1, Ordering::Release);
            self.shared.cond.notify_all();
            for cb in callbacks {
                // A panicking callback must not take the pool down (the hook reported it).
                let before = set_on_panic(OnPanic::Unwind);
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(cb));
                set_on_panic(before);
            }
            if active {
                backoff.reset();
            } else if self.ranks.iter().any(|r| !r.out.is_empty()) {
                backoff.idle();
            } else {
                // Nothing out: sleep until a caller wakes us (bounded, to stay responsive).
                let _ = sys::fd::poll_rw(
                    &[(self.shared.wake_rx.as_fd(), false)],
                    Some(Duration::from_millis(200)),
                );
            }
        }
        self.link.release();
    }

    fn drain_wake(&self) {
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        while let Ok(Some(n)) =
            sys::fd::try_recv_with_fds(self.shared.wake_rx.as_fd(), &mut buf, &mut fds)
        {
            if n == 0 {
                break;
            }
        }
    }

    /// Pending tasks for ranks with room, fairly: one per rank per pass.
    fn take_work(&mut self, st: &mut State) -> Vec<(usize, Task)> {
        let mut out = Vec::new();
        let mut room: Vec<usize> = self
            .ranks
            .iter()
            .map(|r| match r.phase {
                Phase::Serving => self.in_flight.saturating_sub(r.out.len()),
                _ => 0,
            })
            .collect();
        while !st.pending.is_empty() && room.iter().any(|&n| n > 0) {
            for (i, n) in room.iter_mut().enumerate() {
                if *n == 0 {
                    continue;
                }
                let Some(task) = st.pending.pop_front() else {
                    break;
                };
                *n -= 1;
                out.push((i, task));
            }
        }
        out
    }

    /// Sends `task` to rank index `i`; a task that cannot go fails.
    fn send(&mut self, i: usize, task: Task, failed: &mut Vec<(Task, Error)>) {
        if !task.fds.is_empty() {
            let err = Error::ValueError(format!(
                "a task carrying {} handles (descriptors) cannot travel to another MPI rank",
                task.fds.len()
            ));
            failed.push((task, err));
            return;
        }
        match self.link.send_task(i + 1, &task.payload) {
            Ok(seq) => {
                let rank = &mut self.ranks[i];
                if rank.out.is_empty() {
                    rank.head_since = Instant::now();
                }
                rank.out.push_back(Sent { seq, task });
            }
            Err(Error::Closed) => failed.push((task, Error::PoolClosed)),
            Err(e) => failed.push((task, e)),
        }
    }

    fn on_incoming(&mut self, st: &mut State, i: Incoming, callbacks: &mut Vec<Callback>) {
        match i {
            Incoming::Result { rank, seq, outcome } => {
                let Some(r) = rank.checked_sub(1).and_then(|k| self.ranks.get_mut(k)) else {
                    return;
                };
                if r.phase == (Phase::Stuck { late: seq }) {
                    r.phase = Phase::Serving; // the overdue task's late answer: dropped
                    r.head_since = Instant::now();
                    return;
                }
                // Tasks of an earlier pool on this world, or already failed: not ours.
                let Some(pos) = r.out.iter().position(|s| s.seq == seq) else {
                    return;
                };
                let sent = r.out.remove(pos).expect("position found above");
                if pos == 0 {
                    r.head_since = Instant::now();
                }
                let result = match outcome {
                    Outcome::Done(bytes) => ChunkResult::Done(bytes, Vec::new()),
                    Outcome::Failed(why) => ChunkResult::Failed(Error::Codec(why)),
                    Outcome::Cancelled => {
                        // Never started: it runs elsewhere (or here, later).
                        st.pending.push_front(sent.task);
                        return;
                    }
                };
                st.jobs
                    .complete(sent.task.job, sent.task.index, result, callbacks);
            }
            Incoming::Broken { rank, why } => {
                let err = Error::Codec(format!("MPI rank {rank} broke the protocol: {why}"));
                self.lose(st, rank, err, callbacks);
            }
        }
    }

    /// Timeouts and silent ranks.
    fn supervise(&mut self, st: &mut State, callbacks: &mut Vec<Callback>) {
        for k in 0..self.ranks.len() {
            let rank = k + 1;
            let r = &mut self.ranks[k];
            if r.phase == Phase::Lost {
                continue;
            }
            let holding = !r.out.is_empty() || matches!(r.phase, Phase::Stuck { .. });
            // Silent since the later of its last message and its current task's start (an
            // idle rank says nothing, so the silence before its first task does not count).
            let silence = self.link.silent_for(rank).min(r.head_since.elapsed());
            if holding && silence > DEAD_AFTER {
                let err = Error::Io(std::io::Error::other(format!(
                    "MPI rank {rank} has been silent for {DEAD_AFTER:?}: it is taken for dead"
                )));
                self.lose(st, rank, err, callbacks);
                continue;
            }
            let Some(limit) = self.timeout else { continue };
            if r.phase != Phase::Serving || r.head_since.elapsed() < limit {
                continue;
            }
            let Some(head) = r.out.pop_front() else {
                continue;
            };
            r.phase = Phase::Stuck { late: head.seq };
            let err = Error::TaskTimedOut { timeout: limit };
            st.jobs.complete(
                head.task.job,
                head.task.index,
                ChunkResult::Failed(err),
                callbacks,
            );
            if !r.out.is_empty() {
                // Its queued tasks come back `Cancelled` and go to other ranks.
                let _ = self.link.cancel(rank);
            }
        }
        self.fail_if_no_rank_left(st, callbacks);
    }

    /// Rank `rank` is gone for good: its running task fails with `err`, its queued tasks
    /// go back to the queue.
    fn lose(&mut self, st: &mut State, rank: usize, err: Error, callbacks: &mut Vec<Callback>) {
        let Some(r) = rank.checked_sub(1).and_then(|k| self.ranks.get_mut(k)) else {
            return;
        };
        r.phase = Phase::Lost;
        self.link.forget(rank);
        let mut out = std::mem::take(&mut r.out);
        if let Some(head) = out.pop_front() {
            st.jobs.complete(
                head.task.job,
                head.task.index,
                ChunkResult::Failed(err),
                callbacks,
            );
        }
        for s in out.into_iter().rev() {
            st.pending.push_front(s.task);
        }
    }

    /// With every rank lost, nothing queued can ever run: fail it rather than hang.
    fn fail_if_no_rank_left(&mut self, st: &mut State, callbacks: &mut Vec<Callback>) {
        if st.pending.is_empty() || self.ranks.iter().any(|r| r.phase != Phase::Lost) {
            return;
        }
        for t in st.pending.drain(..).collect::<Vec<_>>() {
            let err = Error::Io(std::io::Error::other("no MPI worker rank is left"));
            st.jobs
                .complete(t.job, t.index, ChunkResult::Failed(err), callbacks);
        }
    }

    /// Ends the driver when the pool is terminated, or closed with nothing left to do:
    /// what is still out or queued fails with `PoolClosed`, and the ranks drop what they
    /// have queued (their late results are dropped by whoever polls next).
    fn shutdown_if_done(&mut self, st: &mut State) -> bool {
        let holding = self
            .ranks
            .iter()
            .any(|r| r.phase != Phase::Lost && !r.out.is_empty());
        let idle = !st.jobs.feeding() && st.pending.is_empty() && !holding;
        if !(st.terminated || (st.closed && idle)) {
            return false;
        }
        let mut held: Vec<Task> = st.pending.drain(..).collect();
        for (k, r) in self.ranks.iter_mut().enumerate() {
            if !r.out.is_empty() && r.phase != Phase::Lost {
                let _ = self.link.cancel(k + 1);
            }
            held.extend(r.out.drain(..).map(|s| s.task));
        }
        let mut ignored = Vec::new(); // a stopped pool runs no more callbacks
        for t in held {
            st.jobs.complete(
                t.job,
                t.index,
                ChunkResult::Failed(Error::PoolClosed),
                &mut ignored,
            );
        }
        st.finished = true;
        self.shared.progress.fetch_add(1, Ordering::Release);
        self.shared.cond.notify_all();
        true
    }
}
