//! `log` records from every child reach the parent's logger.
//!
//! **Protocol.** The first time a process that has a logger (its `::log::max_level()` is not
//! `Off`) starts a child by `Spawn` or `ForkServer`, it opens a *hub*: a Unix datagram
//! socket pair and one thread, `mproc-log`, that owns the receiving end. Each child is given
//! a duplicate of the sending end (the last descriptor of its bootstrap) and the parent's
//! level. Before its target runs, the child installs a [`Forwarder`] as its `log` logger,
//! with the parent's level as its maximum: each record that passes is encoded (postcard)
//! and sent as one datagram, tagged with the child's name and pid. The hub thread decodes
//! each datagram and hands it to `::log::logger()` in the parent, that is, to whatever logger
//! the parent installed, which applies its own filters (module filters keep working: the
//! target is the child's own).
//!
//! - **Who writes, who wakes whom.** Children write; the kernel queues; the hub thread waits
//!   in `poll` and drains. `join` (and the exit hook) drain too, under the same lock, so
//!   once `join` has seen a child exit, every record it logged has reached the logger.
//! - **Order.** A datagram socket keeps each sender's datagrams in order, and one lock
//!   serializes draining, so records from one child arrive in the order it logged them.
//! - **Nothing lost.** `send` returns once the datagram is queued in the kernel; a child
//!   that logs and exits at once loses nothing. A full queue makes the child wait, it does
//!   not drop the record.
//! - **Grandchildren** get a duplicate of their parent's forwarding socket: their records go
//!   straight to the top, tagged with their own names.
//! - **Tags.** Each forwarded record carries the key-values `process_name` (`"Process-1"`)
//!   and `pid`, beside its own key-values (as text). Key-values, not a target prefix, so
//!   that `RUST_LOG=my_crate=debug` style filters still match children's records. Loggers
//!   that print key-values show them (env_logger with its `kv` feature);
//!   [`log_to_stderr`] prints the name, as Python does.
//! - **`Fork`.** A forked child is a copy of the parent, logger included: the `log` crate's
//!   logger can be set only once per process, so the child keeps its copy of the parent's
//!   logger, level and configuration, and writes where the parent's would (stderr, a
//!   file). Such records are not tagged by mproc (a logger that prints the pid, or
//!   [`log_to_stderr`], shows who logged), and a logger that keeps records in memory
//!   keeps them in the child. No hub is opened for `Fork` children. (The `log` crate has
//!   no way to replace a logger once set, so a user's logger cannot be swapped for a
//!   forwarder in the fork.) A child forked by a process that forwards (a spawned or
//!   fork-server child, a pool worker) forwards too, under its own name and pid: its logger
//!   is mproc's forwarder, which reads who it runs in at each record.
//!
//! - **MPI worker ranks** (feature `mpi`) have no parent process to hold a hub: once rank 0
//!   says its level, a rank's forwarder writes into a socket of the rank's own, which the
//!   rank relays to rank 0 over MPI; rank 0 hands each record to its logger as the hub
//!   would (`mpi/rank.rs`, `mpi/link.rs`), tagged `Rank-N`.
//!
//! Every datagram is bounded ([`MAX_DATAGRAM`]), every string in it too (a longer message is
//! cut, and says so); the hub drops a datagram that does not decode.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use ::log::kv::{self, Key, Value, VisitSource};
use ::log::{Level, LevelFilter, Log, Metadata, Record};
use serde::{Deserialize, Serialize};

use crate::codec::{self, HandleFd};
use crate::error::Result;
use crate::sys;

mod hub;
mod stderr;

#[cfg(feature = "mpi")]
pub(crate) use hub::deliver;
pub(crate) use hub::flush;
pub use stderr::log_to_stderr;

/// The largest datagram a child sends, and the hub's receive buffer.
pub(crate) const MAX_DATAGRAM: usize = 96 * 1024;
/// The longest message forwarded; longer ones are cut at a character boundary.
const MAX_MESSAGE: usize = 48 * 1024;
/// The longest target, module path, file name or key.
const MAX_NAME: usize = 1024;
/// The most key-values forwarded per record, and the longest value.
const MAX_KVS: usize = 16;
const MAX_VALUE: usize = 1024;

/// One record on the wire.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct WireRecord {
    level: u8,
    target: String,
    message: String,
    module_path: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    process_name: String,
    pid: u32,
    kvs: Vec<(String, String)>,
}

fn level_to_wire(l: LevelFilter) -> u8 {
    l as u8
}

/// The highest level number on the wire (`Trace`).
#[cfg(feature = "mpi")]
pub(crate) const MAX_WIRE_LEVEL: u8 = LevelFilter::Trace as u8;

/// This process's level as its children are told it (0: off).
#[cfg(feature = "mpi")]
pub(crate) fn wire_level() -> u8 {
    level_to_wire(::log::max_level())
}

fn level_filter_from_wire(n: u8) -> LevelFilter {
    LevelFilter::iter()
        .find(|l| *l as u8 == n)
        .unwrap_or(LevelFilter::Off)
}

fn level_from_wire(n: u8) -> Option<Level> {
    level_filter_from_wire(n).to_level()
}

/// `s` cut to at most `max` bytes at a character boundary; a cut says so.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut at {max} bytes)", &s[..end])
}

// ---------------------------------------------------------------------------------------
// The child's side.

/// The logger a child installs: each record goes to the parent as one datagram.
#[derive(Debug)]
struct Forwarder {
    sock: OnceLock<OwnedFd>,
}

static FORWARDER: Forwarder = Forwarder {
    sock: OnceLock::new(),
};
/// Whether [`FORWARDER`] is this process image's `log` logger (a forked child inherits it).
static FORWARDING: AtomicBool = AtomicBool::new(false);

/// Collects a record's key-values as text, bounded.
struct Collect(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Collect {
    fn visit_pair(
        &mut self,
        key: Key<'kvs>,
        value: Value<'kvs>,
    ) -> std::result::Result<(), kv::Error> {
        if self.0.len() < MAX_KVS {
            self.0.push((
                bounded(key.as_str(), MAX_NAME),
                bounded(&value.to_string(), MAX_VALUE),
            ));
        }
        Ok(())
    }
}

impl Log for Forwarder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= ::log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        let Some(sock) = self.sock.get() else { return };
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut kvs = Collect(Vec::new());
        let _ = record.key_values().visit(&mut kvs);
        // Who this process is (`name.rs`: no lock of `start`'s is taken to log).
        let me_name = crate::name::get();
        let wire = WireRecord {
            level: record.level() as u8,
            target: bounded(record.target(), MAX_NAME),
            message: bounded(&record.args().to_string(), MAX_MESSAGE),
            module_path: record.module_path().map(|m| bounded(m, MAX_NAME)),
            file: record.file().map(|f| bounded(f, MAX_NAME)),
            line: record.line(),
            process_name: bounded(&me_name, MAX_NAME),
            pid: crate::sys::pid::current(),
            kvs: kvs.0,
        };
        let mut buf = Vec::new();
        if codec::encode_plain_into(&wire, &mut buf).is_ok() && buf.len() <= MAX_DATAGRAM {
            // The parent gone: nobody to tell.
            let _ = sys::dgram::send(sock.as_fd(), &buf);
        }
    }

    fn flush(&self) {}
}

/// In a new child, before its target runs: if the parent sent a log level, the last of
/// `fds` is the forwarding socket; install the forwarder. Returns the other descriptors.
pub(crate) fn enter_child(level: Option<u8>, mut fds: Vec<OwnedFd>) -> Vec<OwnedFd> {
    let Some(level) = level else { return fds };
    let Some(sock) = fds.pop() else { return fds };
    let level = level_filter_from_wire(level);
    if FORWARDING.load(Ordering::Acquire) {
        // Forked from a forwarding child: its socket, inherited, leads to the same hub.
        ::log::set_max_level(level);
        return fds;
    }
    if FORWARDER.sock.set(sock).is_ok() && ::log::set_logger(&FORWARDER).is_ok() {
        FORWARDING.store(true, Ordering::Release);
        ::log::set_max_level(level);
    }
    // Otherwise a logger came with a fork: it stays (see the module docs).
    fds
}

/// In an MPI worker rank (`mpi/rank.rs`), told rank 0's level: the first time the level is
/// not off, installs the forwarder on a new datagram socket and returns its receiving end,
/// from which the rank relays each record to rank 0 (a rank has no parent to hold a hub);
/// afterwards only follows the level. `None` if there is nothing (new) to relay from.
#[cfg(feature = "mpi")]
pub(crate) fn forward_from_rank(level: u8) -> Result<Option<OwnedFd>> {
    if FORWARDING.load(Ordering::Acquire) {
        ::log::set_max_level(level_filter_from_wire(level));
        return Ok(None);
    }
    if level_filter_from_wire(level) == LevelFilter::Off {
        return Ok(None);
    }
    let (recv, send) = sys::dgram::pair()?;
    let rest = enter_child(Some(level), vec![send]);
    debug_assert!(rest.is_empty());
    // A logger the program installed itself stays (as in a forked child): nothing to relay.
    Ok(FORWARDING.load(Ordering::Acquire).then_some(recv))
}

// ---------------------------------------------------------------------------------------
// The parent's side.

/// What a process gives a child it starts (by `fork` if `forked`) for logging: the level
/// and the socket to send records to, or `None` if this process logs nothing (or the child
/// is forked and keeps a copy of this process's logger).
pub(crate) fn for_child(forked: bool) -> Result<Option<(u8, HandleFd)>> {
    let level = ::log::max_level();
    if level == LevelFilter::Off {
        return Ok(None);
    }
    if FORWARDING.load(Ordering::Acquire) {
        if let Some(sock) = FORWARDER.sock.get() {
            let dup = sys::fd::dup_cloexec(sock.as_fd())?;
            return Ok(Some((level_to_wire(level), HandleFd::new(dup))));
        }
    }
    if forked {
        return Ok(None);
    }
    let send = hub::sender()?;
    Ok(Some((level_to_wire(level), send)))
}

#[cfg(test)]
mod tests {
    use super::hub::decode;
    use super::stderr::python_level;
    use super::*;

    fn sample() -> WireRecord {
        WireRecord {
            level: Level::Info as u8,
            target: "app::worker".into(),
            message: "hello é".into(),
            module_path: Some("app::worker".into()),
            file: Some("src/worker.rs".into()),
            line: Some(12),
            process_name: "Process-1".into(),
            pid: 4242,
            kvs: vec![("job".into(), "7".into())],
        }
    }

    #[test]
    fn a_record_round_trips() {
        let mut buf = Vec::new();
        codec::encode_plain_into(&sample(), &mut buf).unwrap();
        assert_eq!(decode(&buf), Some(sample()));
    }

    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        let s = "é".repeat(100);
        let cut = bounded(&s, 51);
        assert!(cut.starts_with(&"é".repeat(25)) && cut.contains("cut at 51 bytes"));
        assert_eq!(bounded("short", 51), "short");
    }

    #[test]
    fn a_full_size_record_fits_one_datagram() {
        let mut w = sample();
        w.message = bounded(&"x".repeat(MAX_MESSAGE * 2), MAX_MESSAGE);
        w.target = bounded(&"t".repeat(5000), MAX_NAME);
        w.module_path = Some(w.target.clone());
        w.file = Some(w.target.clone());
        w.process_name = w.target.clone();
        w.kvs = (0..MAX_KVS)
            .map(|_| (w.target.clone(), bounded(&"v".repeat(5000), MAX_VALUE)))
            .collect();
        let mut buf = Vec::new();
        codec::encode_plain_into(&w, &mut buf).unwrap();
        assert!(buf.len() <= MAX_DATAGRAM, "{} bytes", buf.len());
    }

    /// Hostile datagrams: random bytes, and every truncation and single-byte corruption of
    /// a real record, decode to a record or to nothing, never a panic or a huge allocation.
    #[test]
    fn garbage_never_panics() {
        let mut buf = Vec::new();
        codec::encode_plain_into(&sample(), &mut buf).unwrap();
        for cut in 0..buf.len() {
            let _ = decode(&buf[..cut]);
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut b = buf.clone();
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
            let _ = decode(&b);
            let len = (next() % 64) as usize;
            let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode(&junk);
        }
        // A level that is not one is refused.
        let mut w = sample();
        w.level = 9;
        let mut b = Vec::new();
        codec::encode_plain_into(&w, &mut b).unwrap();
        assert_eq!(decode(&b), None);
    }

    #[test]
    fn levels_cross_as_numbers() {
        for l in LevelFilter::iter() {
            assert_eq!(level_filter_from_wire(level_to_wire(l)), l);
        }
        assert_eq!(level_from_wire(0), None);
        assert_eq!(python_level(Level::Warn), "WARNING");
    }
}
