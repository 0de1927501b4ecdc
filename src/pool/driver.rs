//! The driver thread: reads answers, supervises workers, and winds the pool down.
//!
//! Each round it sleeps until something happens on a worker's socket, answer ring (its
//! pollable descriptor, readable iff an answer waits: `connection/ready.rs`) or pidfd, or
//! on the wake-up socket (it never spins: a caller waiting for a quick answer reads it
//! itself, and meanwhile the driver does not watch the answer rings, see `engine.rs`),
//! then, under the state lock, acts on what the poll saw: reads the answers of the workers
//! that polled readable (never waiting on a ring: `link.rs`), sends what did not fit
//! before (trying again every millisecond while some waits), kills workers whose task ran past
//! `task_timeout`, accounts for the exits its pidfds showed (a dead worker fails exactly
//! the tasks it started), starts replacements, dispatches pending tasks, and wakes the waiters
//! if a job or an `imap` result may be ready. User callbacks run after the lock is
//! released, on this thread.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::codec::HandleFd;
use crate::error::Error;
use crate::pool::engine::{Shared, State};
use crate::pool::jobs::{Callback, ChunkResult};
use crate::pool::slot::{FRAME_STALL, Slot, Task};
use crate::start::children::ChildHandle;
use crate::sys;

mod read;

/// The longest the driver sleeps while a worker owes a frame (see `drive_loop`).
const WATCH_SLICE: Duration = Duration::from_millis(20);

/// How soon the driver tries again to put a task frame into a full ring.
const RETRY_SLICE: Duration = Duration::from_millis(1);

/// What the driver's poll saw: which sockets and pidfds are ready (`all`: look at
/// everything, the poll failed).
struct Woken {
    all: bool,
    wake: bool,
    socks: Vec<*const HandleFd>,
    exited: Vec<*const ChildHandle>,
}

impl Woken {
    fn everything() -> Woken {
        Woken {
            all: true,
            wake: true,
            socks: Vec::new(),
            exited: Vec::new(),
        }
    }

    /// Whether `w`'s socket polled readable (a worker spawned since was not polled: its
    /// READY is read in a later round).
    fn readable(&self, w: &Slot) -> bool {
        self.all || self.socks.contains(&Arc::as_ptr(&w.link.sock))
    }

    /// Whether `w`'s pidfd polled readable: it exited. An exit always shows there, in this
    /// round's poll or the next one.
    fn exited(&self, w: &Slot) -> bool {
        self.all || self.exited.contains(&Arc::as_ptr(&w.child))
    }
}

impl Shared {
    /// The driver thread. If it ever panics, the pool is terminated (workers killed and
    /// reaped, every waiting result failed) rather than left with nobody to finish it.
    pub(crate) fn drive(self: Arc<Self>) {
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
            let (socks, children, timeout) = {
                let mut st = self.lock();
                if self.shutdown_if_done(&mut st) {
                    return;
                }
                // While a caller reads the answers itself, leave the sockets to it (a frame
                // still to be sent is watched all the same); see `State::blind` for who
                // wakes us.
                let blind = st.readers.driver_sleeps();
                // A socket at its end would poll readable for ever: leave them out, and
                // wait for those workers' exits. The control sockets carry READY and the
                // like, rarely; answers come on the rings, whose doorbell sockets are
                // watched only once the driver counts itself asleep on them (then the
                // worker rings after its next answer; `connection/doorbell.rs`).
                let mut socks: Vec<(Arc<HandleFd>, *const HandleFd)> = Vec::new();
                for w in st.workers.iter().filter(|w| !w.link.eof) {
                    let id = Arc::as_ptr(&w.link.sock);
                    socks.push((Arc::clone(&w.link.sock), id));
                    // Every worker, not only those owing a frame: a task a caller hands
                    // out while the driver sleeps is answered into a ring it must watch.
                    if !blind && !w.link.rings_closed {
                        socks.push((Arc::clone(&w.link.bell), id));
                    }
                }
                let unsent = st.workers.iter().any(|w| !w.link.outgoing.is_empty());
                let children: Vec<Arc<ChildHandle>> =
                    st.workers.iter().map(|w| Arc::clone(&w.child)).collect();
                // A safety net under the wake-up protocol: while work is out, look at
                // every worker at least every `WATCH_SLICE`, so that a wake-up lost to a
                // race nobody has found costs that slice, never a hang (an idle pool still
                // sleeps without a timeout). A frame waiting for room in a ring is tried
                // again each `RETRY_SLICE`.
                let watch = st
                    .workers
                    .iter()
                    .any(Slot::expects_frame)
                    .then_some(WATCH_SLICE);
                let retry = unsent.then_some(RETRY_SLICE);
                let timeout = [self.next_deadline(&st), watch, retry]
                    .into_iter()
                    .flatten()
                    .min();
                (socks, children, timeout)
            };
            let mut set: Vec<(std::os::fd::BorrowedFd<'_>, bool)> =
                vec![(self.wake_rx.as_fd(), false)];
            set.extend(socks.iter().map(|(s, _)| (s.as_fd(), false)));
            set.extend(children.iter().map(|c| (c.pidfd(), false)));
            let woken = match sys::fd::poll_rw(&set, timeout) {
                // Nothing stirred within the slice: look at everything.
                Ok(ready) if ready.iter().all(|r| !r.0 && !r.1) => Woken::everything(),
                Ok(ready) => Woken {
                    all: false,
                    wake: ready[0].0,
                    socks: (socks.iter().zip(&ready[1..]))
                        .filter(|(_, r)| r.0)
                        .map(|((_, id), _)| *id)
                        .collect(),
                    exited: (children.iter().zip(&ready[1 + socks.len()..]))
                        .filter(|(_, r)| r.0)
                        .map(|(c, _)| Arc::as_ptr(c))
                        .collect(),
                },
                Err(_) => Woken::everything(),
            };
            drop(set);
            let callbacks = {
                let mut st = self.lock();
                st.readers.driver_woke();
                if woken.all || woken.wake {
                    self.drain_wake();
                }
                let signals = st.jobs.signals();
                let mut callbacks = std::mem::take(&mut st.deferred.0);
                self.service(&mut st, &mut callbacks, &woken);
                // Waiters wait for a job, an `imap` result, or the end: wake them only
                // when one of those may have come.
                if st.jobs.signals() != signals {
                    self.notify(&st);
                }
                callbacks
            };
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
            .filter_map(Slot::busy_since)
            .map(|since| (since + limit).saturating_duration_since(now))
            .min()
    }

    /// Reads the workers' answers, pushes out what waits to be sent, and dispatches; true
    /// if an answer came. Callers waiting for a result run this: they read the workers a
    /// frame is due from.
    pub(crate) fn harvest(&self, st: &mut State, callbacks: &mut Vec<Callback>) -> bool {
        self.harvest_where(st, callbacks, Slot::expects_frame)
    }

    /// [`harvest`](Shared::harvest) from the workers `read` picks. Reading stops after an
    /// answer: a worker holds one task, so nothing more is due, and anything else it sends
    /// (a protocol violation, its end of stream) keeps its socket readable for the next
    /// round.
    fn harvest_where(
        &self,
        st: &mut State,
        callbacks: &mut Vec<Callback>,
        read: impl Fn(&Slot) -> bool,
    ) -> bool {
        let mut answered = false;
        for i in 0..st.workers.len() {
            if read(&st.workers[i]) {
                answered |= self.read_answers(st, i, callbacks, false);
            }
            st.workers[i].flush();
        }
        self.dispatch(st);
        answered
    }

    /// One round of the driver's work, on what its poll saw.
    fn service(&self, st: &mut State, callbacks: &mut Vec<Callback>, woken: &Woken) {
        self.harvest_where(st, callbacks, |w| woken.readable(w));
        // A frame begun and stalled: nobody honest writes half a frame (see FRAME_STALL).
        for w in &mut st.workers {
            if !w.link.eof && w.stalled() {
                let why =
                    format!("a frame it began on its socket got no further for {FRAME_STALL:?}");
                w.refuse(why);
            } else if !w.link.eof && w.link.send_stalled(FRAME_STALL) {
                let why =
                    format!("its task ring took no task for {FRAME_STALL:?} while it was idle");
                w.refuse(why);
            }
        }
        // Overdue tasks: kill the worker; its exit reports the timeout.
        if let Some(limit) = self.config.timeout {
            for w in &mut st.workers {
                if w.busy_since().is_some_and(|since| since.elapsed() >= limit) {
                    w.time_out(limit);
                }
            }
        }
        // Exits. A dead worker's last frames are all in its socket by now: read them
        // first, or a result written just before the exit would be lost.
        let mut i = 0;
        while i < st.workers.len() {
            let exit = if woken.exited(&st.workers[i]) {
                st.workers[i].child.exitcode_now()
            } else {
                None
            };
            match exit {
                Some(code) => {
                    self.read_answers(st, i, callbacks, true);
                    let w = st.workers.swap_remove(i);
                    self.on_exit(st, w, code, callbacks);
                }
                None => i += 1,
            }
        }
        self.replace_workers(st, callbacks);
        self.dispatch(st);
    }

    fn on_exit(&self, st: &mut State, mut w: Slot, code: i32, callbacks: &mut Vec<Callback>) {
        let _ = w.process.join();
        // The process is gone: its gate says for good which tasks it took.
        let exit = w.exit(code);
        // Tasks sent ahead that it never started go to the next worker, first in line.
        for t in exit.unstarted.into_iter().rev() {
            st.pending.push_front(t);
        }
        for (task, err) in exit.failed {
            st.jobs
                .complete(task.job, task.index, ChunkResult::Failed(err), callbacks);
        }
        if let Some(reason) = exit.init_failed {
            st.init_failures += 1;
            // An initializer that fails in every worker would otherwise be retried
            // for ever: after a few in a row, the pool is broken and says why.
            if st.init_failures >= 3 * self.config.processes as u32 {
                let tasks: Vec<Task> = st.pending.drain(..).collect();
                for t in tasks {
                    let err = Error::TaskPanicked {
                        message: format!("pool initializer failed: {reason}"),
                        location: None,
                    };
                    st.jobs
                        .complete(t.job, t.index, ChunkResult::Failed(err), callbacks);
                }
                st.broken = Some(reason);
            }
        }
    }

    /// Starts workers in the place of those that exited, while there is or may be work.
    fn replace_workers(&self, st: &mut State, callbacks: &mut Vec<Callback>) {
        if st.terminated || st.broken.is_some() {
            return;
        }
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
                    let failed = ChunkResult::Failed(e.duplicate());
                    st.jobs.complete(t.job, t.index, failed, callbacks);
                }
                break;
            }
        }
    }

    /// Ends the driver when the pool is terminated, or closed with nothing left to do.
    pub(crate) fn shutdown_if_done(&self, st: &mut State) -> bool {
        // A job still being fed (a `map` encoding its chunks, a live `imap`) is work to
        // come, even if nothing is queued right now.
        let idle = !st.jobs.feeding() && st.pending.is_empty() && !st.any_busy();
        if !(st.terminated || (st.closed && (idle || st.broken.is_some()))) {
            return false;
        }
        if st.terminated {
            for w in &st.workers {
                let _ = w.process.kill();
            }
        }
        let mut held: Vec<Task> = st.pending.drain(..).collect();
        for w in &mut st.workers {
            let exit = w.exit(0);
            held.extend(exit.unstarted);
            held.extend(exit.failed.into_iter().map(|(task, _)| task));
        }
        let mut callbacks = Vec::new();
        for t in held {
            let failed = ChunkResult::Failed(Error::PoolClosed);
            st.jobs.complete(t.job, t.index, failed, &mut callbacks);
        }
        drop(callbacks); // a stopped pool runs no more callbacks
        // Closing our ends tells the workers to exit; then reap them all.
        for mut w in std::mem::take(&mut st.workers) {
            let _ = sys::fd::shutdown(w.link.sock.as_fd(), true);
            let _ = sys::fd::shutdown(w.link.rings.stream_fd(), true);
            if w.process.join_timeout(Duration::from_secs(5)).ok() != Some(true) {
                let _ = w.process.kill();
                let _ = w.process.join();
            }
        }
        st.finished = true;
        self.progress.fetch_add(1, Ordering::Release);
        self.cond.notify_all();
        true
    }
}
