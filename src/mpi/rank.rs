//! A worker rank: serves rank 0's tasks until `STOP`, then finalizes and exits.
//!
//! Two threads. The communication thread (the one that called `init`, as MPI wants for
//! `MPI_Finalize`) is the only one that talks MPI: it receives `TASK`s into a queue, sends
//! each finished task's `RESULT`, answers `CANCEL` by dropping the queued tasks (a
//! `CANCELLED` result each), says `BEAT` when it holds tasks and has been silent for
//! [`wire::BEAT_EVERY`],
//! and on `STOP` says `BYE`, finalizes and exits the process — without waiting for a task
//! still running, which the exit ends. The runner thread takes tasks from the queue in
//! order, runs each (catching its panics per item, like a local pool worker), and hands the
//! encoded result back over a channel.
//!
//! Logging: rank 0 says its `log` level (`LEVEL`) before the first task and whenever it
//! changes; from the first level that is not off, this rank's records go through `log.rs`'s
//! forwarder into a datagram socket that the communication thread drains, relaying each
//! record to rank 0 (`LOG`) before the next `RESULT` and before `BYE`, so every record a
//! task logged reaches rank 0 before its result, tagged `Rank-N` and this process's pid.
//!
//! A task's entry offset is trusted because rank 0 checked, at `HELLO`, that this rank runs
//! the very same build (its fingerprint); rank 0 is the launcher's rank 0 of this same job.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use ::mpi::environment::Universe;

use super::wire::{self, Kind, Status};
use super::{Backoff, OnPanic, abort_job, set_on_panic};
use crate::target;

/// A task waiting on this rank.
#[derive(Debug)]
struct Queued {
    seq: u64,
    entry: i64,
    args: Vec<u8>,
}

/// The queue between the two threads.
#[derive(Debug, Default)]
struct Queue {
    tasks: VecDeque<Queued>,
    /// Set at `STOP`: the runner exits instead of waiting for more.
    stopped: bool,
}

type Shared = Arc<(Mutex<Queue>, Condvar)>;

/// Serves tasks until rank 0 says `STOP`; never returns.
pub(super) fn serve(universe: Universe) -> ! {
    set_on_panic(OnPanic::Abort);
    let mut comm = Comm::new();
    {
        use ::mpi::topology::Communicator;
        *crate::name::hold() = format!("Rank-{}", comm.world.rank());
    }
    comm.send(Kind::Hello, &wire::hello(super::build_fingerprint()));
    let shared: Shared = Arc::default();
    let (done_tx, done_rx) = mpsc::channel();
    let runner = Arc::clone(&shared);
    let spawned = std::thread::Builder::new()
        .name("mproc-mpi-runner".into())
        .spawn(move || run_tasks(&runner, &done_tx));
    if let Err(e) = spawned {
        eprintln!("mproc: an MPI worker rank could not start its task thread: {e}");
        abort_job(1);
    }
    let mut backoff = Backoff::default();
    while !comm.stopping {
        let mut busy = comm.receive(&shared);
        while let Ok((seq, result)) = done_rx.try_recv() {
            // What the task logged goes first (it was queued before the result).
            comm.relay_logs(&shared);
            let message = wire::result(seq, &result_status(&result));
            comm.send_draining(Kind::Result, &message, &shared);
            comm.outstanding -= 1;
            busy = true;
        }
        // Beats matter only while rank 0 waits on us; an idle rank stays quiet, so that
        // nothing piles up at a rank 0 that has no pool reading.
        if comm.outstanding > 0 && comm.last_send.elapsed() >= wire::BEAT_EVERY {
            comm.send(Kind::Beat, &[]);
        }
        busy |= comm.relay_logs(&shared);
        if busy {
            backoff.reset();
        } else {
            backoff.idle();
        }
    }
    comm.relay_logs(&shared);
    // Rank 0 reads until it has every BYE, so this send completes.
    comm.send(Kind::Bye, &[]);
    drop(universe); // MPI_Finalize, on the thread that initialized MPI
    std::process::exit(0)
}

/// What the runner hands back for one task: the encoded outcomes, or why it did not run.
type Ran = Result<Vec<u8>, String>;

fn result_status(r: &Ran) -> Status<'_> {
    match r {
        Ok(body) => Status::Ok(body),
        Err(m) => Status::Failed(m.clone()),
    }
}

/// The communication thread's MPI side.
struct Comm {
    world: ::mpi::topology::SimpleCommunicator,
    last_send: Instant,
    /// The next `seq` expected from rank 0.
    next_seq: u64,
    /// Tasks received and not yet answered (queued or running).
    outstanding: u64,
    stopping: bool,
    /// Where this rank's log records wait to be relayed, once rank 0 asked for them, and
    /// the buffer to read one into.
    log: Option<(OwnedFd, Vec<u8>)>,
}

impl Comm {
    fn new() -> Comm {
        Comm {
            world: ::mpi::topology::SimpleCommunicator::world(),
            last_send: Instant::now(),
            next_seq: 0,
            outstanding: 0,
            stopping: false,
            log: None,
        }
    }

    /// Relays every log record waiting in the forwarding socket to rank 0; whether any was.
    fn relay_logs(&mut self, shared: &Shared) -> bool {
        let Some((log, mut buf)) = self.log.take() else {
            return false;
        };
        let mut any = false;
        while let Ok(Some(len)) = crate::sys::dgram::try_recv(log.as_fd(), &mut buf) {
            any = true;
            if len <= buf.len() {
                self.send_draining(Kind::Log, &buf[..len], shared);
            }
        }
        self.log = Some((log, buf));
        any
    }

    /// A small message that rank 0 always reads (it never blocks on us): a plain send.
    fn send(&mut self, kind: Kind, bytes: &[u8]) {
        use ::mpi::point_to_point::Destination;
        use ::mpi::topology::Communicator;
        self.world
            .process_at_rank(0)
            .send_with_tag(bytes, kind.tag());
        self.last_send = Instant::now();
    }

    /// A message of any size: sent without blocking, receiving tasks meanwhile, so that
    /// rank 0, which may be sending us a large task at this very moment, is never waiting
    /// on us while we wait on it.
    fn send_draining(&mut self, kind: Kind, bytes: &[u8], shared: &Shared) {
        use ::mpi::point_to_point::Destination;
        use ::mpi::topology::Communicator;
        let world = ::mpi::topology::SimpleCommunicator::world();
        ::mpi::request::scope(|scope| {
            let mut request =
                world
                    .process_at_rank(0)
                    .immediate_send_with_tag(scope, bytes, kind.tag());
            let mut backoff = Backoff::default();
            loop {
                match request.test() {
                    Ok(_) => break,
                    Err(pending) => request = pending,
                }
                if self.receive(shared) {
                    backoff.reset();
                } else {
                    backoff.idle();
                }
            }
        });
        self.last_send = Instant::now();
    }

    /// Receives one message from rank 0 if there is one; whether there was.
    fn receive(&mut self, shared: &Shared) -> bool {
        use ::mpi::point_to_point::{MatchedReceiveVec, Source};
        use ::mpi::topology::Communicator;
        let Some(probed) = self.world.process_at_rank(0).immediate_matched_probe() else {
            return false;
        };
        let (bytes, status) = probed.matched_receive_vec::<u8>();
        if let Err(m) = self.handle(status.tag(), bytes, shared) {
            eprintln!("mproc: an MPI worker rank got a malformed message from rank 0: {m}");
            abort_job(1);
        }
        true
    }

    fn handle(&mut self, tag: i32, bytes: Vec<u8>, shared: &Shared) -> Result<(), wire::Malformed> {
        let (queue, cond) = &**shared;
        match Kind::from_tag(tag) {
            Some(Kind::Task) => {
                let (seq, entry, args) = wire::read_task(&bytes)?;
                if seq != self.next_seq {
                    return Err(wire::Malformed(format!(
                        "task {seq} came when task {} was expected",
                        self.next_seq
                    )));
                }
                self.next_seq += 1;
                self.outstanding += 1;
                let task = Queued {
                    seq,
                    entry,
                    args: args.to_vec(),
                };
                lock(queue).tasks.push_back(task);
                cond.notify_one();
            }
            Some(Kind::Cancel) => {
                wire::read_empty(Kind::Cancel, &bytes)?;
                let dropped = std::mem::take(&mut lock(queue).tasks);
                for t in dropped {
                    self.send_draining(
                        Kind::Result,
                        &wire::result(t.seq, &Status::Cancelled),
                        shared,
                    );
                    self.outstanding -= 1;
                }
            }
            Some(Kind::Level) => {
                let level = wire::read_level(&bytes)?;
                match crate::log::forward_from_rank(level) {
                    Ok(Some(recv)) => self.log = Some((recv, vec![0; crate::log::MAX_DATAGRAM])),
                    Ok(None) => {}
                    Err(e) => eprintln!("mproc: an MPI worker rank cannot forward its log: {e}"),
                }
            }
            Some(Kind::Stop) => {
                wire::read_empty(Kind::Stop, &bytes)?;
                self.stopping = true;
                lock(queue).stopped = true;
                cond.notify_one();
            }
            other => {
                return Err(wire::Malformed(format!(
                    "a worker rank cannot take a message of kind {other:?} (tag {tag})"
                )));
            }
        }
        Ok(())
    }
}

fn lock(q: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The runner thread: runs queued tasks in order until `STOP`.
fn run_tasks(shared: &Shared, done: &mpsc::Sender<(u64, Ran)>) {
    set_on_panic(OnPanic::Abort);
    let (queue, cond) = &**shared;
    loop {
        let task = {
            let mut q = lock(queue);
            loop {
                if q.stopped {
                    return;
                }
                if let Some(t) = q.tasks.pop_front() {
                    break t;
                }
                q = cond.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let ran = run_one(task.entry, &task.args);
        if done.send((task.seq, ran)).is_err() {
            return;
        }
    }
}

/// Runs one chunk: the item outcomes encoded, or why the chunk could not run.
fn run_one(entry: i64, args: &[u8]) -> Ran {
    let mut out = Vec::new();
    let mut out_fds = Vec::new();
    // Panics in the function are caught per item by the entry; this catches the rest
    // (a panicking `Serialize` impl), which must fail the task, not abort the job.
    let before = set_on_panic(OnPanic::InTask);
    let ran = catch_unwind(AssertUnwindSafe(|| {
        target::run_pool_entry(entry, args, Vec::new(), &mut out, &mut out_fds)
    }));
    set_on_panic(before);
    match ran {
        Ok(Ok(())) if !out_fds.is_empty() => Err(format!(
            "the task's result carries {} handles (descriptors), which cannot travel \
             between MPI ranks",
            out_fds.len()
        )),
        Ok(Ok(())) if !wire::result_fits(out.len()) => Err(format!(
            "the task's result of {} bytes is larger than one MPI message can carry",
            out.len()
        )),
        Ok(Ok(())) => Ok(out),
        Ok(Err(m)) => Err(m),
        Err(p) => Err(format!(
            "the task panicked outside the function: {}",
            target::panic_message(p.as_ref())
        )),
    }
}
