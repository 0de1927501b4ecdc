//! The parent's side of log forwarding: the hub that receives children's records and hands
//! them to this process's logger (the protocol is in `log.rs`).
//!
//! Children write datagrams; the hub thread `mproc-log` waits in `poll` and drains them;
//! `join` drains too ([`flush`]), under the same lock, so records from one child reach the
//! logger in order and all of them before `join` returns.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ::log::Record;
use ::log::kv::{self, Key, Value, VisitSource};

use super::{MAX_DATAGRAM, MAX_KVS, WireRecord, level_from_wire};
use crate::codec::{self, HandleFd};
use crate::error::{Error, Result};
use crate::sys;

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
pub(super) fn sender() -> Result<HandleFd> {
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
pub(super) fn decode(bytes: &[u8]) -> Option<WireRecord> {
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

/// A record relayed by an MPI worker rank (`mpi/link.rs`): handed to this process's logger
/// like a child's datagram, or dropped if it is not one.
#[cfg(feature = "mpi")]
pub(crate) fn deliver(bytes: &[u8]) {
    if bytes.len() > MAX_DATAGRAM {
        return;
    }
    if let Some(wire) = decode(bytes) {
        dispatch(&wire);
    }
}
