//! A pool worker: a long-lived child that runs chunks until its links close.
//!
//! It has two links to the pool (`link.rs`): a socket and a shared-memory pipe (one ring
//! each way). Frames, and where they go:
//! - worker → pool, once, on the socket: `[READY]`, or `[INIT_FAILED] message` if the
//!   initializer panicked (then the worker exits with code 1);
//! - pool → worker, per task, in the ring: `[kind u8][seq u64 LE] entry (i64 LE) ++
//!   encoded Vec<Args>`, with the arguments' descriptors (`gate::task_frame`); one too
//!   large for the ring ([`RING_MAX`]) is announced there (`[gate::ON_SOCKET][seq]`) and
//!   comes on the socket. A task sent ahead (its kind says so) runs only if the worker
//!   wins its gate word, else the worker drops it unrun and says so: `[DROPPED][seq][0
//!   u64] word (u64 LE)`, the word it found;
//! - worker → pool, per task, in order, in the ring: an answer that names its task,
//!   `[CHUNK_OK][seq][count u64 LE] encoded Vec<ItemOutcome<R>>` (`count`: the items it
//!   carries) with its descriptors, or `[CHUNK_FAILED][seq][0 u64] message`; one too large
//!   for the ring goes on the socket, announced in the ring by its header with the kind
//!   [`ON_SOCKET`]. Just before it, `[RETIRING]` if the worker's resident memory is past
//!   `max_worker_memory`: it exits after this answer, and the pool sends it nothing more
//!   (what it sent ahead goes to another worker);
//! - worker → pool, at most once, on the socket, from its SIGABRT handler:
//!   `[LIMIT_MEMORY]`, when it dies of an allocation its memory limit refused (see
//!   `sys/limits.rs`).
//!
//! A worker under [`Isolation`] applies it after its links and gate are set up, before its
//! initializer; if that fails it answers `[INIT_FAILED] message` and exits.
//!
//! A task comes either when the worker is idle, or ahead, behind the gate: so the pool
//! knows which task a dead worker was running (see `slot.rs`).
//!
//! **Hostile tasks.** A task runs in this process and can write what it likes on the
//! socket, the rings and the gate. So the pool trusts no answer blindly (`driver.rs`): one
//! naming a task other than the worker's running one, a count other than the chunk's, a
//! body whose length disagrees with its count, a refusal of a task the pool still holds, a
//! frame begun and left unfinished (`slot::FRAME_STALL`), or a ring holding anything but
//! whole items (`link.rs`) marks the worker broken — killed and replaced, its tasks failed
//! with the reason — and never shifts a result onto another task. A worker whose own
//! answer finds no room in its ring for [`ANSWER_STUCK`] while the pool lives (a task
//! wrote over the ring) exits rather than hang, and its task fails as a death.
//!
//! After each answer the worker's receive looks at its ring for a few microseconds before
//! it sleeps on the pipe's doorbell (through the shared `Backoff`).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::codec::HandleFd;
use crate::connection::{Connection, framing};
use crate::isolation::{self, Isolation, child::Armed};
use crate::pool::gate;
use crate::pool::link::RING_MAX;
use crate::sys::limits::Resident;
use crate::target::{self, ItemOutcome};

pub(crate) const READY: u8 = 0x10;
pub(crate) const INIT_FAILED: u8 = 0x11;
pub(crate) const CHUNK_OK: u8 = 0x00;
pub(crate) const CHUNK_FAILED: u8 = 0x01;
pub(crate) const RETIRING: u8 = 0x12;
pub(crate) const LIMIT_MEMORY: u8 = 0x13;
pub(crate) const DROPPED: u8 = 0x14;
/// `[ON_SOCKET][seq][count]` in the ring: the answer to task `seq`, too large for the
/// ring, follows on the socket (`link.rs`).
pub(crate) const ON_SOCKET: u8 = 0x15;

/// How long a worker tries to put an answer into its ring while the pool lives.
const ANSWER_STUCK: Duration = Duration::from_secs(10);

/// Bytes of an answer before its body: `[status u8][seq u64 LE][count u64 LE]`.
pub(crate) const ANSWER_HEADER: usize = 17;

/// Starts `out` as an answer of `status` for task `seq` (count 0 until [`set_count`]).
fn answer(out: &mut Vec<u8>, status: u8, seq: u64) {
    out.clear();
    out.push(status);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
}

/// Writes the number of results the encoded body of `out` carries into its header.
fn set_count(out: &mut [u8]) {
    let count = leading_len(&out[ANSWER_HEADER..]).unwrap_or(0);
    out[9..ANSWER_HEADER].copy_from_slice(&count.to_le_bytes());
}

/// An answer's status, task and count; `None` if the frame is too short to be one.
pub(crate) fn parse_answer(frame: &[u8]) -> Option<(u8, u64, u64)> {
    let header = frame.get(..ANSWER_HEADER)?;
    let seq = u64::from_le_bytes(header[1..9].try_into().ok()?);
    let count = u64::from_le_bytes(header[9..17].try_into().ok()?);
    Some((header[0], seq, count))
}

/// The element count an encoded sequence starts with (postcard writes a `Vec`'s length
/// first, as a LEB128 varint); `None` if it is not a well-formed varint.
pub(crate) fn leading_len(body: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for (i, &b) in body.iter().take(10).enumerate() {
        let bits = u64::from(b & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return None; // past 64 bits
        }
        n |= bits << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// How a worker runs, besides its initializer.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Settings {
    /// `maxtasksperchild` (0: no limit).
    pub(crate) maxtasks: u64,
    pub(crate) isolation: Option<Isolation>,
    /// `max_worker_memory` in bytes (0: none).
    pub(crate) max_rss: u64,
}

/// The initializer a worker runs first: a pool entry over one argument tuple.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct InitSpec {
    pub(crate) entry: i64,
    pub(crate) args: Vec<u8>,
    pub(crate) fds: Vec<HandleFd>,
}

impl InitSpec {
    fn duplicate(&self) -> crate::Result<InitSpec> {
        Ok(InitSpec {
            entry: self.entry,
            args: self.args.clone(),
            fds: self
                .fds
                .iter()
                .map(HandleFd::try_clone)
                .collect::<crate::Result<_>>()?,
        })
    }
}

/// A clone for each new worker (the descriptors are duplicated).
pub(crate) fn init_for_worker(init: &Option<InitSpec>) -> crate::Result<Option<InitSpec>> {
    init.as_ref().map(InitSpec::duplicate).transpose()
}

/// The worker's main function (a process target).
pub(crate) fn worker_main(
    conn: Connection<()>,
    init: Option<InitSpec>,
    settings: Settings,
    (gate, rings): (crate::shared::region::Region, Connection<()>),
) {
    // Ctrl-C reaches the whole process group: the parent decides (it dies, and its workers
    // with it through the parent-death watch; or it handles SIGINT and keeps its pool).
    crate::sys::signal::ignore_interrupts();
    let sock = conn.as_fd();
    let maxtasks = settings.maxtasks;
    let (armed, resident) = match isolate(&conn, &settings) {
        Ok(v) => v,
        Err(m) => {
            let mut msg = vec![INIT_FAILED];
            msg.extend_from_slice(format!("worker isolation failed: {m}").as_bytes());
            let _ = framing::write_frame(sock, &msg, &[]);
            crate::start::child::finish(1);
        }
    };
    if let Some(init) = init {
        let fds: crate::Result<Vec<_>> = init.fds.into_iter().map(HandleFd::into_owned).collect();
        let mut out = Vec::new();
        let mut out_fds = Vec::new();
        let ran = fds.map_err(|e| e.to_string()).and_then(|fds| {
            target::run_pool_entry(init.entry, &init.args, fds, &mut out, &mut out_fds)
        });
        let failure = match ran {
            Err(m) => Some(m),
            Ok(()) => match decode_own(&out, out_fds) {
                Ok(v) => v.into_iter().find_map(|o| match o {
                    ItemOutcome::Panicked(p) => Some(init_panicked(p)),
                    ItemOutcome::Returned(()) => None,
                }),
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(m) = failure {
            let mut msg = vec![INIT_FAILED];
            msg.extend_from_slice(m.as_bytes());
            let _ = framing::write_frame(sock, &msg, &[]);
            crate::start::child::finish(1);
        }
    }
    if framing::write_frame(sock, &[READY], &[]).is_err() {
        return;
    }
    let Some(link) = rings.link() else {
        return; // not a pipe end: the pool did not make it
    };
    let rsock = rings.stream_fd();
    let torn = std::cell::Cell::new(false);
    // The pool drains answers as they come: an answer that finds no room (or the ring's
    // lock taken) for ANSWER_STUCK while the pool lives means a task wrote over the ring.
    // Waiting on would hang its task for ever; exiting makes it a death the pool reports.
    let send = |bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]| {
        let until = Instant::now() + ANSWER_STUCK;
        loop {
            let slice = Some(Instant::now() + Duration::from_millis(100));
            match link.send(rsock, bytes, fds, slice, &torn) {
                Err(crate::Error::Timeout) if !torn.get() && Instant::now() < until => {}
                Err(crate::Error::Timeout) if !torn.get() => {
                    eprintln!(
                        "mproc: pool worker {}: its answer ring took nothing for {ANSWER_STUCK:?}, \
                         though the pool lives: written over by a task; the worker exits",
                        crate::name::get()
                    );
                    crate::start::child::finish(1);
                }
                r => return r,
            }
        }
    };
    // An answer too large for the ring: a marker in its place there, the frame on the
    // socket (`link.rs`).
    let answer_out = |out: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]| {
        if out.len() <= RING_MAX {
            return send(out, fds);
        }
        let mut marker = out[..ANSWER_HEADER].to_vec();
        marker[0] = ON_SOCKET;
        send(&marker, &[]).and_then(|()| framing::write_frame(sock, out, fds))
    };
    let mut task = Vec::new();
    let mut out = Vec::new();
    let mut done = 0u64;
    let mut reader = framing::Reader::default();
    while maxtasks == 0 || done < maxtasks {
        let mut fds = Vec::new();
        // The ring's receive spins a while before it sleeps (the next task often follows
        // the last answer within microseconds), then sleeps on the doorbell.
        if link.recv(rsock, &mut task, &mut fds, None).is_err() {
            return; // the pool closed our link (or died): we are done
        }
        // A task too large for the ring comes on the socket, announced in the ring.
        if let Some(seq) = gate::parse_marker(&task) {
            if reader.read_frame(sock, &mut task, &mut fds).is_err()
                || gate::parse_task(&task) != Some((seq, false))
            {
                return; // the pool closed our socket, or this is not its frame
            }
        }
        let Some((seq, ahead)) = gate::parse_task(&task) else {
            return; // not the pool's frame: nothing here can be trusted
        };
        // A task sent ahead is ours only if the pool has not taken it back meanwhile
        // (then its descriptors are closed here, unused). Say so either way: only the
        // pool knows whether it took it back, or a task scribbled the word.
        if ahead && !gate::take(&gate, seq) {
            answer(&mut out, DROPPED, seq);
            out.extend_from_slice(&gate::word_now(&gate, seq).to_le_bytes());
            if send(&out, &[]).is_err() {
                return;
            }
            continue;
        }
        if let Err(m) = armed.before_task() {
            answer(&mut out, CHUNK_FAILED, seq);
            out.extend_from_slice(m.as_bytes());
            let _ = send(&out, &[]);
            return;
        }
        let task = &task[gate::TASK_HEADER..];
        answer(&mut out, CHUNK_OK, seq);
        let mut out_fds = Vec::new();
        let result = match task.get(..8) {
            Some(entry) => {
                let entry = i64::from_le_bytes(entry.try_into().expect("8 bytes"));
                target::run_pool_entry(entry, &task[8..], fds, &mut out, &mut out_fds)
            }
            None => Err("malformed task frame".to_string()),
        };
        match result {
            Ok(()) => set_count(&mut out),
            Err(m) => {
                answer(&mut out, CHUNK_FAILED, seq);
                out.extend_from_slice(m.as_bytes());
                out_fds.clear();
            }
        }
        // Past max_worker_memory: say so before the answer, so the pool never hands this
        // worker another task, and leave after it.
        let retire = resident
            .as_ref()
            .is_some_and(|r| r.bytes().is_ok_and(|b| b > settings.max_rss));
        if retire && send(&[RETIRING], &[]).is_err() {
            return;
        }
        if answer_out(&out, &crate::sys::fd::borrowed(&out_fds)).is_err() {
            return;
        }
        done += 1;
        if retire {
            return;
        }
    }
}

/// Applies the pool's isolation to this worker; returns what it does per task, and the
/// resident-memory probe for `max_worker_memory` (opened first: the sandbox may forbid it).
fn isolate(
    conn: &Connection<()>,
    settings: &Settings,
) -> Result<(Armed, Option<Resident>), String> {
    let resident = match settings.max_rss {
        0 => None,
        _ => Some(Resident::open().map_err(|e| format!("max_worker_memory: {e}"))?),
    };
    let Some(iso) = &settings.isolation else {
        return Ok((Armed::default(), resident));
    };
    if iso.limits_memory() {
        let frame = isolation::child::frame(&[LIMIT_MEMORY])?;
        isolation::child::report_memory_death_to(conn.as_fd(), frame);
    }
    let armed = isolation::child::enter(iso)?;
    Ok((armed, resident))
}

/// An initializer's panic, caught quietly as a task's is: printed here all the same (as
/// Python's worker prints its initializer's traceback as it dies, unlike a task's
/// exception, which the pool only returns), and the text the pool reports.
fn init_panicked(p: target::Panic) -> String {
    let text = match &p.location {
        Some(at) => format!("{} (at {at})", p.message),
        None => p.message,
    };
    eprintln!(
        "mproc: pool worker {}: the initializer panicked: {text}",
        crate::name::get()
    );
    text
}

/// Decodes what this process just encoded itself (the initializer's outcome).
fn decode_own(bytes: &[u8], fds: Vec<HandleFd>) -> crate::Result<Vec<ItemOutcome<()>>> {
    let fds = fds
        .into_iter()
        .map(HandleFd::into_owned)
        .collect::<crate::Result<_>>()?;
    crate::codec::decode(bytes, fds)
}
