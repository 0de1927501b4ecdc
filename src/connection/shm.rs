//! Shared-memory pipes: the ends `pipe()` and `pipe_simplex()` make carry their data
//! through a ring in shared memory, one per direction, and keep a socket for what only a
//! socket can do.
//!
//! **What is where.** A pipe is, per direction, one ring (`queue/ring/`: a memfd holding a
//! control page and a [`RING_CAPACITY`]-byte data area, pages touched only as the ring
//! cycles), and two socketpairs: a stream one (the connection's own descriptor) that
//! carries only doorbell bytes and end of stream, and a `SOCK_SEQPACKET` one that carries
//! only descriptor records (`records.rs`). An end holds its two sockets, the ring it sends
//! into (`tx`) and the ring it receives from (`rx`); a simplex end holds one of the two
//! rings. Keeping doorbells and records apart means a receiver drains doorbells blindly,
//! in one `recv`, and can never take a record by mistake.
//! All read and write state (head, tail, side locks) lives in the shared memory, so an end
//! sent to another process, inherited by a child, or shared by several processes under a
//! `Lock` delivers every message exactly once, in order: there is nothing in any process's
//! private memory to strand.
//!
//! **An item** (one message) is `varint(m)`, then `m` bytes: the payload, then a trailer:
//! `[0]` for a message without descriptors, or `seq: u32 LE, nfds: u8` for one with
//! (`1 ≤ nfds ≤ 253`). The varint lets the ring hand a streamed item's bytes over in a
//! buffer reserved at their size (`queue/bytes.rs`'s byte path), so a large `send_bytes`
//! is copied into the ring and out of it once each. Items larger than a quarter of the
//! ring are streamed through it while the receiver drains it, so any size passes, in
//! order, with no other transport.
//!
//! **Descriptors** travel over the record socket as a record numbered `seq`. The
//! sender takes the ring's producer lock first, takes the next `seq` there, sends the
//! record, then writes the item, all under the lock: records are queued in the order of
//! their items, and a record is always queued before its item is visible. The receiver
//! reads the item's descriptors while it still holds the consumer lock (inside the ring's
//! decode callback), closing any older record (its item was never published: its sender
//! died or timed out in between) and leaving a newer one queued: an item whose record a
//! receiver took before it died fails alone, and the items after it keep theirs
//! (`records.rs`).
//!
//! **Waking.** A receiver looks at the ring, spins on it with the crate's one `Backoff`
//! (which parks at once on an oversubscribed machine), then counts itself in the ring's
//! `sleepers`, looks once more, and sleeps in `poll` on its stream socket. A sender
//! publishes (a SeqCst swap) and, only if it then sees a sleeper, writes a doorbell byte,
//! never blocking (a full socket wakes the receiver anyway); a sender that has to wait for
//! room in the ring rings too, so a large message is drained while it streams. The two
//! SeqCst orders pair (`doorbell.rs`, model-checked there): no lost wake-up, no syscall
//! while the receiver is awake, and no CPU while it sleeps. Receivers that share an end
//! without a lock around `recv` may drain each other's doorbells; their sleeps come in
//! [`SLEEP_SLICE`]s, after which they look at the ring again, so that costs latency, never
//! a hang. A receiver that dies while counted as a sleeper leaves the count high: its
//! pipe's senders then write a (harmless) doorbell per message.
//!
//! **End of stream and death.** When every copy of the peer's end is closed, the socket
//! reads end of stream; a receiver reports `Closed` only after it saw that and then found
//! the ring empty (anything sent before the close is in the ring by then). A sender dead
//! mid-message (SIGKILL while streaming) leaves the ring's producer lock marked
//! `OWNER_DIED`; the receiver waiting for the rest repairs the ring (an `Abort` frame) and
//! gets the same "in the middle of a message" error the socket path gives. A sender
//! waiting for room asks every few milliseconds whether the peer is gone (socket hang-up),
//! so a closed receiver makes it fail with `Closed`, never hang. A send also looks (one
//! `poll`) unless the end looked in the last [`ALIVE_FOR`]: a send to a peer closed for
//! longer fails at once, as on a socket; one racing the close may succeed, its message
//! dropped with the ring, as a socket's buffer is.
//!
//! **Readiness for other pollers.** Each ring has a readiness flag, an eventfd shared by
//! both ends (it travels with the end, beside the ring's region), kept readable iff a
//! frame waits while some holder of the receiving end counts itself a poller
//! (`ready.rs`, model-checked there). A receiving end's descriptor (`AsFd`) is an epoll
//! instance of this process (made on first use) over that flag and its stream socket's
//! hang-up (`sys::ready::pollable`): readable iff a message waits or every copy of the peer's end
//! is closed. The first `as_fd` counts the end as a poller until it is dropped; from then
//! on each send and each receive on the ring costs one eventfd syscall, and before it
//! none: the sender's look at the `sleepers` word, which it made anyway for the
//! doorbell, covers pollers too. A flag that arrives with an end is made non-blocking
//! before use (`sys::ready::adopt_flag`), so whatever descriptor a hostile peer sent in
//! its place, no read or write on it waits.
//!
//! **Deadlines.** A `recv_timeout` deadline bounds the whole receive. A message begun
//! (its first piece read, the rest still streaming) that is not whole by the deadline is
//! dropped whole, as a queue's `get_timeout` drops an item: the call returns `Timeout`,
//! the pieces still to come lack their first and are skipped by the next receive, which
//! gets the message after it. Keeping the part read for the next call instead would put
//! part of a message in one process's memory, where another holder of the end (or a
//! child it is sent to) could not find it, and would hold the receive lock between calls:
//! exactly-once delivery to whoever holds the end matters more than one message that its
//! sender stalled past the receiver's own deadline. An untimed receive reads a begun
//! message to its end (which its sender's progress, death or own timeout bounds). A
//! receiver that finds the ring's consumer lock (the end's receive lock) held by another
//! holder of its end sleeps on the lock until it is released (or its holder dies) or the
//! deadline passes, then `Timeout`: a message in the ring that another receiver is taking
//! is not "ready" for this one, so neither a busy holder nor a stopped one makes it look
//! again and again. A `send_timeout` that runs out before any of its message is visible
//! leaves nothing; one that runs out half-way through streaming a large message closes it
//! with an `Abort` (its receiver gets the "in the middle of a message" error) and the end refuses
//! further sends, as a socket connection does.
//!
//! Connections made by `Listener`/`connect` (CPython's wire) and mproc's internal protocol
//! sockets ([`super::socket_pipe`]) have no rings and stay on the socket path.

mod recv;

use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub(crate) use super::doorbell::Ready;
use super::doorbell::{self, Stream};
use super::future::Look;
use super::item::{corrupt, get_varint, put_varint, trailer};
use super::ready::{self, EventFd};
use super::records::{SeqPacket, send_record, take_fds};
use crate::codec::HandleFd;
use crate::error::{Error, Result};
use crate::queue::ring::Ring;
use crate::shared::region::Region;
use crate::sys;

/// Bytes of frames in each direction's ring. Measured (1 MiB `send_bytes` between two
/// processes, `pipe_bw`, busy 2-vCPU VM): 256 KiB 2.96 GB/s, 512 KiB 8.47 GB/s, 1 MiB
/// 8.19 GB/s. Below 512 KiB a 1 MiB message fills the ring and stalls its sender every
/// quarter ring; above it nothing is gained. A pipe costs at most 1 MiB of shared memory
/// once both rings have cycled (less while traffic is light: pages are touched only as
/// the ring reaches them).
pub(crate) const RING_CAPACITY: usize = 512 << 10;
/// The longest a receiver sleeps before it looks at the ring on its own: what a doorbell
/// drained by another receiver (see the module docs) costs at most, and, idle, ten
/// wake-ups a second (measured `pipe_idle_cpu`: ~0.7 ms of CPU per idle second at 50 ms).
pub(crate) const SLEEP_SLICE: Duration = Duration::from_millis(100);
/// The longest one attempt waits for the consumer lock before looking again.
const TAKE_SLICE: Duration = Duration::from_millis(1);
/// How long a look that found the peer alive counts for (see the module docs).
pub(crate) const ALIVE_FOR: Duration = Duration::from_millis(1);

/// The shared-memory half of a pipe end.
pub(crate) struct Link {
    /// The seqpacket socket of descriptor records.
    records: HandleFd,
    tx: Option<Ring>,
    rx: Option<Ring>,
    /// Each ring's readiness flag (an eventfd shared by both ends, `ready.rs`), beside it.
    tx_flag: Option<HandleFd>,
    rx_flag: Option<HandleFd>,
    /// What `AsFd` hands out for a receiving end: readable iff `rx_flag` is or the peer
    /// hung up (`sys::ready::pollable`). Private to this process, made on first use.
    pollable: std::cell::OnceCell<HandleFd>,
    /// Whether this end counts a poller in its `rx` ring (from its first `pollable_fd`
    /// until it is dropped).
    watching: Cell<bool>,
    /// Scratch for the ring writer's small-item buffer, reused between sends.
    scratch: RefCell<Vec<u8>>,
    /// When a look last found the peer alive.
    alive_at: Cell<Option<Instant>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("tx", &self.tx.is_some())
            .field("rx", &self.rx.is_some())
            .finish()
    }
}

/// How a link travels: its record socket, its rings' regions (each a memfd handle) and
/// their readiness flags.
#[derive(Serialize, Deserialize)]
pub(crate) struct LinkWire<F, R> {
    records: F,
    tx: Option<R>,
    rx: Option<R>,
    tx_flag: Option<F>,
    rx_flag: Option<F>,
}

/// The stream socketpair of a pipe's doorbells and end of stream, each with the receive
/// timeout the sleeping receiver relies on.
pub(crate) fn wake_pair() -> Result<(OwnedFd, OwnedFd)> {
    let (a, b) = sys::fd::socketpair()?;
    sys::fd::set_recv_timeout(a.as_fd(), SLEEP_SLICE)?;
    sys::fd::set_recv_timeout(b.as_fd(), SLEEP_SLICE)?;
    Ok((a, b))
}

/// A ring, its region, and its readiness flag (with a second handle on it for the other
/// end).
fn new_ring() -> Result<(Ring, Arc<Region>, HandleFd, HandleFd)> {
    let ring = Ring::create(RING_CAPACITY, 0)?;
    let region = ring.region().expect("a created ring is shared").clone();
    let flag = HandleFd::new(sys::ready::flag()?);
    let other = flag.try_clone()?;
    Ok((ring, region, flag, other))
}

/// A ring and its flag, one direction of a link.
type Half = Option<(Ring, HandleFd)>;

impl Link {
    fn new(records: HandleFd, tx: Half, rx: Half) -> Link {
        let (tx, tx_flag) = tx.unzip();
        let (rx, rx_flag) = rx.unzip();
        Link {
            records,
            tx,
            rx,
            tx_flag,
            rx_flag,
            pollable: std::cell::OnceCell::new(),
            watching: Cell::new(false),
            scratch: RefCell::new(Vec::new()),
            alive_at: Cell::new(None),
        }
    }

    /// The links of a duplex pipe's two ends.
    pub(crate) fn duplex() -> Result<(Link, Link)> {
        let (ra, rb) = sys::fd::seqpacket_pair()?;
        let (ab, ab_region, ab_flag, ab_flag2) = new_ring()?;
        let (ba, ba_region, ba_flag, ba_flag2) = new_ring()?;
        let la = Link::new(
            HandleFd::new(ra),
            Some((ab, ab_flag)),
            Some((Ring::attach(ba_region)?, ba_flag2)),
        );
        let lb = Link::new(
            HandleFd::new(rb),
            Some((ba, ba_flag)),
            Some((Ring::attach(ab_region)?, ab_flag2)),
        );
        Ok((la, lb))
    }

    /// The links of a simplex pipe: `(receiving end, sending end)`.
    pub(crate) fn simplex() -> Result<(Link, Link)> {
        let (rr, rw) = sys::fd::seqpacket_pair()?;
        let (ring, region, flag, flag2) = new_ring()?;
        Ok((
            Link::new(
                HandleFd::new(rr),
                None,
                Some((Ring::attach(region)?, flag2)),
            ),
            Link::new(HandleFd::new(rw), Some((ring, flag)), None),
        ))
    }

    pub(crate) fn wire(&self) -> LinkWire<&HandleFd, &Region> {
        fn region(r: &Option<Ring>) -> Option<&Region> {
            r.as_ref().and_then(|r| r.region()).map(|r| &**r)
        }
        LinkWire {
            records: &self.records,
            tx: region(&self.tx),
            rx: region(&self.rx),
            tx_flag: self.tx_flag.as_ref(),
            rx_flag: self.rx_flag.as_ref(),
        }
    }

    /// Rebuilds a link that arrived in a message; the regions are checked by `attach`.
    pub(crate) fn from_wire(w: LinkWire<HandleFd, Region>) -> Result<Link> {
        let half = |r: Option<Region>, f: Option<HandleFd>| -> Result<Half> {
            match (r, f) {
                (Some(r), Some(f)) => {
                    sys::ready::adopt_flag(f.as_fd())?;
                    Ok(Some((Ring::attach(Arc::new(r))?, f)))
                }
                (None, None) => Ok(None),
                _ => Err(Error::Codec(
                    "a pipe end whose ring and readiness flag disagree".into(),
                )),
            }
        };
        Ok(Link::new(
            w.records,
            half(w.tx, w.tx_flag)?,
            half(w.rx, w.rx_flag)?,
        ))
    }

    // ---- Readiness (`ready.rs`) ----

    /// The descriptor readable iff a message waits or the peer hung up (on `sock`, the
    /// end's stream socket); counts this end as a poller first (once), so senders keep it
    /// in step. `None` for an end that does not receive.
    ///
    /// The epoll instance is made on first use (most ends are never polled). If it cannot
    /// be made (no descriptor left), the flag itself stands in, readable iff a message
    /// waits but not on the peer's hang-up, and the next call tries again.
    pub(crate) fn pollable_fd(&self, sock: BorrowedFd<'_>) -> Option<BorrowedFd<'_>> {
        let flag = self.rx_flag.as_ref()?;
        self.watch();
        if self.pollable.get().is_none() {
            match sys::ready::pollable(flag.as_fd(), sock) {
                Ok(ep) => {
                    let _ = self.pollable.set(HandleFd::new(ep));
                }
                Err(e) => {
                    ::log::warn!("mproc: a pipe end's pollable descriptor: {e}");
                    return Some(flag.as_fd());
                }
            }
        }
        self.pollable.get().map(HandleFd::as_fd)
    }

    /// Counts this end as a poller of its `rx` ring, once.
    pub(crate) fn watch(&self) {
        if let (false, Some(rx), Some(flag)) = (self.watching.get(), &self.rx, &self.rx_flag) {
            self.watching.set(true);
            ready::watch(rx.sleepers(), &EventFd(flag.as_fd()), || rx.pending());
        }
    }

    /// Puts the readiness flag right (after a wake-up that found nothing).
    pub(crate) fn settle(&self) {
        if let (Some(rx), Some(flag)) = (&self.rx, &self.rx_flag) {
            ready::settle::<std::sync::atomic::AtomicU32, _>(&EventFd(flag.as_fd()), || {
                rx.pending()
            });
        }
    }

    /// Whether the peer may still receive; looks (one `poll`) at most every
    /// [`ALIVE_FOR`].
    fn peer_alive(&self, sock: BorrowedFd<'_>) -> bool {
        let now = Instant::now();
        if self
            .alive_at
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) < ALIVE_FOR)
        {
            return true;
        }
        let alive = !peer_gone(sock);
        if alive {
            self.alive_at.set(Some(now));
        }
        alive
    }

    fn tx(&self) -> Result<&Ring> {
        self.tx.as_ref().ok_or(Error::ReadOnly)
    }

    fn rx(&self) -> Result<&Ring> {
        self.rx.as_ref().ok_or(Error::WriteOnly)
    }

    // ---- Sending ----

    /// Sends one message: `payload`, with `fds` beside it. `torn` is set if a timed-out
    /// send had made part of a large message visible (the receiver gets an error for it).
    pub(crate) fn send(
        &self,
        sock: BorrowedFd<'_>,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
        torn: &std::cell::Cell<bool>,
    ) -> Result<()> {
        let ring = self.tx()?;
        if fds.len() > sys::fd::MAX_FDS_PER_MESSAGE {
            return Err(Error::TooManyHandles {
                count: fds.len(),
                max: sys::fd::MAX_FDS_PER_MESSAGE,
            });
        }
        if payload.len() as u64 > super::framing::MAX_FRAME_LEN as u64 {
            return Err(Error::ValueError(format!(
                "a message of {} bytes is over the limit of {}",
                payload.len(),
                super::framing::MAX_FRAME_LEN
            )));
        }
        if !self.peer_alive(sock) {
            return Err(Error::Closed);
        }
        let flag = EventFd(self.tx_flag.as_ref().ok_or(Error::ReadOnly)?.as_fd());
        let ring_bell =
            || doorbell::after_publish(ring.sleepers(), &Stream(sock), &flag, || ring.pending());
        // Waiting for room: wake the receiver to drain, and give up if it is gone.
        let stalled = || {
            ring_bell();
            peer_gone(sock)
        };
        let gone = || peer_gone(sock);
        let trailer = if fds.is_empty() { 1 } else { 5 };
        let mut var = [0u8; 10];
        let vlen = put_varint(payload.len() as u64 + trailer, &mut var);
        let mut scratch = self.scratch.borrow_mut();
        let (mut w, seq) = if fds.is_empty() {
            let mut w = ring.writer(deadline, std::mem::take(&mut *scratch));
            w.on_stall(&stalled);
            (w, None)
        } else {
            let (w, seq) = ring
                .locked_writer(deadline, Some(&stalled))
                .map_err(|e| full_means(e, &gone))?;
            // Under the producer lock, before the item: see the module docs.
            send_record(self.records.as_fd(), seq, fds, deadline, &gone, SLEEP_SLICE)?;
            (w, Some(seq))
        };
        let wrote = (|| {
            w.write(&var[..vlen])?;
            w.write(payload)?;
            match seq {
                None => w.write(&[0]),
                Some(s) => {
                    w.write(&s.to_le_bytes())?;
                    w.write(&[fds.len() as u8])
                }
            }
        })();
        match wrote {
            Ok(()) => match w.finish() {
                Ok(buf) => *scratch = buf,
                Err(e) => return Err(full_means(e, &gone)),
            },
            Err(e) => {
                torn.set(w.published());
                drop(w);
                return Err(full_means(e, &gone));
            }
        }
        ring_bell();
        Ok(())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let (true, Some(rx)) = (self.watching.get(), &self.rx) {
            ready::unwatch(rx.sleepers());
        }
    }
}

/// A ring wait that ran out (`Full`): the peer is gone (`Closed`) or the time is up.
fn full_means(e: Error, gone: &dyn Fn() -> bool) -> Error {
    match e {
        Error::Full if gone() => Error::Closed,
        Error::Full => Error::Timeout,
        e => e,
    }
}

/// Whether every copy of the peer's end is closed (it can no longer receive).
fn peer_gone(sock: BorrowedFd<'_>) -> bool {
    sys::stream::peer_hung_up(sock).unwrap_or(true)
}
