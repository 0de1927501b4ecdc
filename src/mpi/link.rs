//! Rank 0's end of the MPI job: sends tasks to the worker ranks and reads what they send.
//!
//! One mutex serializes every MPI call on rank 0 (MPI_THREAD_SERIALIZED): the pool's
//! driver sends and polls, the thread that owns the `World` finalizes. Nothing blocks in
//! MPI: a send that cannot complete at once (a large task, while its worker is itself
//! sending) keeps reading incoming messages into a stash meanwhile, and polling is a
//! single `MPI_Improbe`. `shutdown` sends `STOP` to every worker and reads until each said
//! `BYE` (so a worker's last send always completes), then finalizes MPI. Log records that
//! workers relay (`LOG`) go to this process's logger as they are read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ::mpi::environment::Universe;
use ::mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use ::mpi::topology::{Communicator, SimpleCommunicator};

use super::wire::{self, Kind, Status};
use super::{Backoff, abort_job};
use crate::error::{Error, Result};

/// How long rank 0 waits in `init` for every worker's `HELLO`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// How long rank 0 waits at the end for every worker's `BYE` before aborting the job.
const BYE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a worker rank reported.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// The result of the task `seq` sent to `rank`.
    Result {
        rank: usize,
        seq: u64,
        outcome: Outcome,
    },
    /// `rank` sent something that breaks the protocol; it can no longer be trusted.
    Broken { rank: usize, why: String },
}

/// What became of one task on its worker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The encoded `Vec<ItemOutcome<R>>`.
    Done(Vec<u8>),
    /// The task could not run: why.
    Failed(String),
    /// Cancelled before it started.
    Cancelled,
}

/// Rank 0's link to the worker ranks.
#[derive(Debug)]
pub(crate) struct Link {
    size: usize,
    inner: Mutex<Inner>,
    /// A pool is using the worker ranks (one at a time: its driver reads every result).
    claimed: AtomicBool,
}

struct Inner {
    /// `None` once MPI is finalized: every later call fails with `Closed`.
    universe: Option<Universe>,
    /// Messages received while a send was waiting to complete.
    stash: VecDeque<Incoming>,
    /// Per rank: the `seq` of the next task sent to it.
    next_seq: Vec<u64>,
    /// Per rank: when it was last heard from.
    last_heard: Vec<Instant>,
    /// Per rank: the `log` level it was last told (`LEVEL`), if any.
    level_sent: Vec<Option<u8>>,
    /// Per rank: whether it said `BYE` (or was given up for dead): no more sends to it.
    gone: Vec<bool>,
    /// A rank was given up for dead: MPI cannot finalize without it.
    lost: bool,
}

/// A message as it came off MPI.
struct Raw {
    rank: usize,
    kind: Option<Kind>,
    tag: i32,
    bytes: Vec<u8>,
}

impl Link {
    /// Takes every worker's `HELLO`: `Err(BinaryMismatch)` (after stopping the job cleanly)
    /// if one runs a different build. Aborts the job if a rank never says hello: it is not
    /// an mproc program, and nothing else can stop it.
    pub(crate) fn handshake(universe: Universe, size: usize, fingerprint: u64) -> Result<Link> {
        let now = Instant::now();
        let link = Link {
            size,
            inner: Mutex::new(Inner {
                universe: Some(universe),
                stash: VecDeque::new(),
                next_seq: vec![0; size],
                last_heard: vec![now; size],
                level_sent: vec![None; size],
                gone: vec![false; size],
                lost: false,
            }),
            claimed: AtomicBool::new(false),
        };
        let mut said = vec![false; size];
        let mut mismatched = Vec::new();
        let deadline = now + HELLO_TIMEOUT;
        let mut backoff = Backoff::default();
        let mut waiting = size.saturating_sub(1);
        while waiting > 0 {
            let Some(m) = receive_raw() else {
                if Instant::now() > deadline {
                    eprintln!(
                        "mproc: {waiting} MPI ranks did not say hello within {} s: are they \
                         running an mproc program that calls mproc::mpi::init first?",
                        HELLO_TIMEOUT.as_secs()
                    );
                    abort_job(1);
                }
                backoff.idle();
                continue;
            };
            backoff.reset();
            let fp = match m.kind {
                Some(Kind::Hello) if !said[m.rank] => wire::read_hello(&m.bytes),
                _ => Err(wire::Malformed(format!("tag {} before hello", m.tag))),
            };
            match fp {
                Ok(fp) => {
                    said[m.rank] = true;
                    waiting -= 1;
                    if fp != fingerprint {
                        mismatched.push(m.rank);
                    }
                }
                Err(e) => {
                    eprintln!(
                        "mproc: MPI rank {} broke the start-up protocol: {e}",
                        m.rank
                    );
                    abort_job(1);
                }
            }
        }
        if !mismatched.is_empty() {
            eprintln!(
                "mproc: MPI ranks {mismatched:?} run a different build than rank 0: \
                 every rank must run the same executable"
            );
            link.shutdown();
            return Err(Error::BinaryMismatch);
        }
        Ok(link)
    }

    /// The number of ranks, rank 0 included.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the worker ranks for one pool; `Err` while another pool has them.
    pub(crate) fn claim(&self) -> Result<()> {
        if self.claimed.swap(true, Ordering::AcqRel) {
            return Err(Error::ValueError(
                "the MPI ranks already serve a pool: terminate or join it (or drop it) first"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The pool that claimed the ranks is done with them.
    pub(crate) fn release(&self) {
        self.claimed.store(false, Ordering::Release);
    }

    /// Sends a task (the chunk's `entry ++ args` payload) to `rank`; its `seq`.
    pub(crate) fn send_task(&self, rank: usize, payload: &[u8]) -> Result<u64> {
        let mut inner = self.lock();
        if inner.universe.is_none() || inner.gone[rank] {
            return Err(Error::Closed);
        }
        let seq = inner.next_seq[rank];
        let message = wire::task(seq, payload).map_err(|m| Error::ValueError(m.0))?;
        // The worker logs at our level: tell it first if that changed (it forwards what
        // passes, and we hand each record to our logger in `take`).
        let level = crate::log::wire_level();
        if inner.level_sent[rank] != Some(level) {
            inner.send_draining(rank, Kind::Level, &wire::level(level));
            inner.level_sent[rank] = Some(level);
        }
        inner.send_draining(rank, Kind::Task, &message);
        inner.next_seq[rank] += 1;
        Ok(seq)
    }

    /// Asks `rank` to drop the tasks it has not started (each comes back `Cancelled`).
    pub(crate) fn cancel(&self, rank: usize) -> Result<()> {
        let mut inner = self.lock();
        if inner.universe.is_none() || inner.gone[rank] {
            return Err(Error::Closed);
        }
        inner.send_draining(rank, Kind::Cancel, &[]);
        Ok(())
    }

    /// The next report from a worker, if one has come.
    pub(crate) fn poll(&self) -> Option<Incoming> {
        let mut inner = self.lock();
        if let Some(i) = inner.stash.pop_front() {
            return Some(i);
        }
        inner.universe.as_ref()?;
        loop {
            let m = receive_raw()?;
            if let Some(i) = inner.take(m) {
                return Some(i);
            }
        }
    }

    /// `rank` is dead or broken: nothing more is sent to it, and `shutdown` does not wait
    /// for its `BYE`.
    pub(crate) fn forget(&self, rank: usize) {
        let mut inner = self.lock();
        if let Some(g) = inner.gone.get_mut(rank) {
            *g = true;
            inner.lost = true;
        }
    }

    /// How long `rank` has been silent (a live worker says `BEAT` every half second).
    pub(crate) fn silent_for(&self, rank: usize) -> Duration {
        self.lock().last_heard[rank].elapsed()
    }

    /// Stops every worker rank and finalizes MPI; later calls fail with `Closed`. Call it
    /// from the thread that called `init` (MPI requires it of `MPI_Finalize`). If a rank was
    /// given up for dead, it aborts the job instead: finalizing would wait for that rank.
    pub(crate) fn shutdown(&self) {
        let mut inner = self.lock();
        if inner.universe.is_none() {
            return;
        }
        if inner.lost {
            // `MPI_Finalize` waits for every rank, the lost ones too: it would hang.
            eprintln!(
                "mproc: MPI ranks were lost during the job: aborting it instead of finalizing"
            );
            abort_job(1);
        }
        for rank in 1..self.size {
            if !inner.gone[rank] {
                inner.send_draining(rank, Kind::Stop, &[]);
            }
        }
        let deadline = Instant::now() + BYE_TIMEOUT;
        let mut backoff = Backoff::default();
        while inner.gone.iter().skip(1).any(|g| !g) {
            match receive_raw() {
                Some(m) => {
                    backoff.reset();
                    let _ = inner.take(m); // results nobody waits for any more
                }
                None if Instant::now() > deadline => {
                    eprintln!(
                        "mproc: MPI worker ranks did not stop within {} s",
                        BYE_TIMEOUT.as_secs()
                    );
                    abort_job(1);
                }
                None => backoff.idle(),
            }
        }
        inner.stash.clear();
        drop(inner.universe.take()); // MPI_Finalize
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("finalized", &self.universe.is_none())
            .field("next_seq", &self.next_seq)
            .field("gone", &self.gone)
            .finish()
    }
}

impl Inner {
    /// Books a received message; the report it makes, if any.
    fn take(&mut self, m: Raw) -> Option<Incoming> {
        self.last_heard[m.rank] = Instant::now();
        let broken = |why: String| Some(Incoming::Broken { rank: m.rank, why });
        match m.kind {
            Some(Kind::Result) => match wire::read_result(&m.bytes) {
                Ok((seq, _)) if seq >= self.next_seq[m.rank] => {
                    broken(format!("result for task {seq}, which was never sent"))
                }
                Ok((seq, status)) => {
                    let outcome = match status {
                        Status::Ok(_) => {
                            let mut bytes = m.bytes;
                            bytes.drain(..9); // seq and status byte
                            Outcome::Done(bytes)
                        }
                        Status::Failed(why) => Outcome::Failed(why),
                        Status::Cancelled => Outcome::Cancelled,
                    };
                    Some(Incoming::Result {
                        rank: m.rank,
                        seq,
                        outcome,
                    })
                }
                Err(e) => broken(e.0),
            },
            Some(Kind::Beat) => match wire::read_empty(Kind::Beat, &m.bytes) {
                Ok(()) => None,
                Err(e) => broken(e.0),
            },
            Some(Kind::Bye) => {
                self.gone[m.rank] = true;
                None
            }
            Some(Kind::Log) => {
                // Checked and bounded like a child's datagram; one that is not a record is
                // dropped (it cannot mislead anything but a log line).
                crate::log::deliver(&m.bytes);
                None
            }
            _ => broken(format!("unexpected message with tag {}", m.tag)),
        }
    }

    /// Sends without blocking on the worker: while the send is pending, incoming messages
    /// go to the stash (the worker may itself be sending a large result to us).
    fn send_draining(&mut self, rank: usize, kind: Kind, bytes: &[u8]) {
        let world = SimpleCommunicator::world();
        ::mpi::request::scope(|scope| {
            let mut request = world.process_at_rank(rank as i32).immediate_send_with_tag(
                scope,
                bytes,
                kind.tag(),
            );
            let mut backoff = Backoff::default();
            loop {
                match request.test() {
                    Ok(_) => break,
                    Err(pending) => request = pending,
                }
                match receive_raw() {
                    Some(m) => {
                        backoff.reset();
                        if let Some(i) = self.take(m) {
                            self.stash.push_back(i);
                        }
                    }
                    None => backoff.idle(),
                }
            }
        });
    }
}

/// One message from any worker rank, if one is there.
fn receive_raw() -> Option<Raw> {
    let world = SimpleCommunicator::world();
    let probed = world.any_process().immediate_matched_probe()?;
    let (bytes, status) = probed.matched_receive_vec::<u8>();
    let tag = status.tag();
    Some(Raw {
        rank: status.source_rank() as usize,
        kind: Kind::from_tag(tag),
        tag,
        bytes,
    })
}
