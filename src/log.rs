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
//! Every datagram is bounded ([`MAX_DATAGRAM`]), every string in it too (a longer message is
//! cut, and says so); the hub drops a datagram that does not decode.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use ::log::kv::{self, Key, Value, VisitSource};
use ::log::{Level, LevelFilter, Log, Metadata, Record};
use serde::{Deserialize, Serialize};

use crate::codec::{self, HandleFd};
use crate::error::{Error, Result};
use crate::sys;

/// The largest datagram a child sends, and the hub's receive buffer.
const MAX_DATAGRAM: usize = 96 * 1024;
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
    let send = hub_sender()?;
    Ok(Some((level_to_wire(level), send)))
}

/// The hub of this process: the sending end children get duplicates of, the receiving end
/// and the lock that orders draining (shared with the hub thread).
struct Hub {
    send: HandleFd,
    recv: Arc<HandleFd>,
    drain: Arc<Mutex<()>>,
}

static HUB: Mutex<Option<Hub>> = Mutex::new(None);
/// The pid of the process whose hub [`HUB`] holds: a forked child finds its parent's.
static HUB_PID: AtomicU32 = AtomicU32::new(0);

/// A duplicate of this process's hub sending end, opening the hub on first use.
fn hub_sender() -> Result<HandleFd> {
    let mut hub = HUB.lock().unwrap_or_else(PoisonError::into_inner);
    let me = sys::pid::current();
    if HUB_PID.load(Ordering::Acquire) != me {
        // A forked child's copy of its parent's hub: its descriptors were registered, so
        // the fork closed them; its thread does not exist here. Forget it, never drop it.
        std::mem::forget(hub.take());
    }
    if hub.is_none() {
        let (recv, send) = sys::dgram::pair()?;
        let recv = Arc::new(HandleFd::new(recv));
        let drain = Arc::new(Mutex::new(()));
        let (r, d) = (Arc::clone(&recv), Arc::clone(&drain));
        std::thread::Builder::new()
            .name("mproc-log".into())
            .spawn(move || serve(&r, &d))
            .map_err(Error::Io)?;
        *hub = Some(Hub {
            send: HandleFd::new(send),
            recv,
            drain,
        });
        HUB_PID.store(me, Ordering::Release);
    }
    let send = &hub.as_ref().expect("opened above").send;
    send.try_clone()
}

/// The hub thread: wait for datagrams, drain them into the logger, for ever.
fn serve(recv: &HandleFd, drain: &Mutex<()>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match sys::fd::poll_readable(recv.as_fd(), None) {
            Ok(_) => {
                let _g = drain.lock().unwrap_or_else(PoisonError::into_inner);
                drain_into_logger(recv.as_fd(), &mut buf);
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

/// Delivers every queued record now: `join` calls this once a child has exited, so its
/// records are in the logger when `join` returns.
pub(crate) fn flush() {
    if HUB_PID.load(Ordering::Acquire) != sys::pid::current() {
        return;
    }
    let (recv, drain) = {
        let hub = HUB.lock().unwrap_or_else(PoisonError::into_inner);
        match hub.as_ref() {
            Some(h) => (Arc::clone(&h.recv), Arc::clone(&h.drain)),
            None => return,
        }
    };
    let _g = drain.lock().unwrap_or_else(PoisonError::into_inner);
    drain_into_logger(recv.as_fd(), &mut vec![0u8; MAX_DATAGRAM]);
}

/// Reads datagrams until none is queued, dispatching each. The caller holds the drain lock.
fn drain_into_logger(recv: BorrowedFd<'_>, buf: &mut [u8]) {
    while let Ok(Some(len)) = sys::dgram::try_recv(recv, buf) {
        if len > buf.len() {
            continue; // cut by the kernel: not one of ours
        }
        if let Some(wire) = decode(&buf[..len]) {
            dispatch(&wire);
        }
    }
}

/// A datagram as a record, or `None` if it is not one.
fn decode(bytes: &[u8]) -> Option<WireRecord> {
    let wire: WireRecord = codec::decode_plain(bytes).ok()?;
    level_from_wire(wire.level)?;
    (wire.kvs.len() <= MAX_KVS).then_some(wire)
}

/// A forwarded record's tags and key-values, as `log` key-values.
struct Tags<'a>(&'a WireRecord);

impl kv::Source for Tags<'_> {
    fn visit<'kvs>(
        &'kvs self,
        v: &mut dyn VisitSource<'kvs>,
    ) -> std::result::Result<(), kv::Error> {
        v.visit_pair(
            Key::from_str("process_name"),
            Value::from(self.0.process_name.as_str()),
        )?;
        v.visit_pair(Key::from_str("pid"), Value::from(self.0.pid))?;
        for (k, val) in &self.0.kvs {
            v.visit_pair(Key::from_str(k), Value::from(val.as_str()))?;
        }
        Ok(())
    }
}

/// Hands a forwarded record to this process's logger.
fn dispatch(wire: &WireRecord) {
    let Some(level) = level_from_wire(wire.level) else {
        return;
    };
    if level > ::log::max_level() {
        return;
    }
    let tags = Tags(wire);
    ::log::logger().log(
        &Record::builder()
            .level(level)
            .target(&wire.target)
            .args(format_args!("{}", wire.message))
            .module_path(wire.module_path.as_deref())
            .file(wire.file.as_deref())
            .line(wire.line)
            .key_values(&tags)
            .build(),
    );
}

// ---------------------------------------------------------------------------------------
// log_to_stderr

/// Python's `log_to_stderr` logger.
#[derive(Debug)]
struct Stderr;

static STDERR: Stderr = Stderr;
static STDERR_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Python's level names (`WARNING`, not `WARN`); `TRACE` has no Python name.
fn python_level(l: Level) -> &'static str {
    match l {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= ::log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let name = match record.key_values().get(Key::from_str("process_name")) {
            Some(v) => v.to_string(),
            None => crate::name::get(),
        };
        let line = format!(
            "[{}/{}] {}\n",
            python_level(record.level()),
            name,
            record.args()
        );
        // One write per line, so lines from several threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Python's `multiprocessing.log_to_stderr()`: installs a logger that prints
/// `[LEVEL/ProcessName] message` on stderr, at `level`. Records logged in children (every
/// start method, pool workers) are printed by this process with the child's name.
///
/// Calling it again changes the level. `Err(Error::LoggerAlreadySet)` if another logger is
/// installed (Python would add a handler; the `log` crate has one logger per process).
/// Level names are Python's: `ERROR`, `WARNING`, `INFO`, `DEBUG`, and `TRACE`.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn work(n: u32) -> u32 {
///     log::info!("working on {n}");   // printed by the parent: [INFO/Process-1] working on 3
///     n * 2
/// }
/// mproc::log_to_stderr(log::LevelFilter::Info)?;
/// log::warn!("doomed");               // [WARNING/MainProcess] doomed
/// assert_eq!(mproc::spawn(work, (3,))?.result()?, 6);
/// # Ok(()) }
/// ```
pub fn log_to_stderr(level: LevelFilter) -> Result<()> {
    if !STDERR_INSTALLED.load(Ordering::Acquire) {
        ::log::set_logger(&STDERR).map_err(|_| Error::LoggerAlreadySet)?;
        STDERR_INSTALLED.store(true, Ordering::Release);
    }
    ::log::set_max_level(level);
    Ok(())
}

#[cfg(test)]
mod tests {
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
