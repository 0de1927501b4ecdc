//! Shared-memory pipes: the ends `pipe()` and `pipe_simplex()` make carry their data
//! through a ring in shared memory, one per direction, and keep a socket for what only a
//! socket can do.
//!
//! **What is where.** A pipe is a `SOCK_SEQPACKET` socketpair plus, per direction, one
//! ring (`queue/ring/`: a memfd holding a control page and a [`RING_CAPACITY`]-byte data
//! area, pages touched only as the ring cycles). An end holds its socket, the ring it sends
//! into (`tx`) and the ring it receives from (`rx`); a simplex end holds one of the two.
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
//! **Descriptors** travel over the socket as a record (`records.rs`) numbered `seq`. The
//! sender takes the ring's producer lock first, takes the next `seq` there, sends the
//! record, then writes the item, all under the lock: records are queued in the order of
//! their items, and a record is always queued before its item is visible. The receiver
//! reads the item's descriptors while it still holds the consumer lock (inside the ring's
//! decode callback), skipping doorbells and closing any record with another number: one
//! whose item was never published (its sender died or timed out in between).
//!
//! **Waking.** A receiver looks at the ring, spins on it with the crate's one `Backoff`
//! (which parks at once on an oversubscribed machine), then counts itself in the ring's
//! `sleepers`, looks once more, and sleeps in `poll` on its socket. A sender publishes
//! (a SeqCst swap) and, only if it then sees a sleeper, sends a one-byte doorbell record,
//! never blocking (a full socket wakes the receiver anyway). The two SeqCst orders pair
//! (`queue/ring/pipe.rs`): no lost wake-up, no syscall while the receiver is awake, and no
//! CPU while it sleeps. Doorbells are drained under the consumer lock (so a drain never
//! takes a descriptor record another receiver is about to read). Receivers that share an
//! end without a lock around `recv` may consume each other's doorbells; their sleeps come
//! in [`SLEEP_SLICE`]s, after which they look at the ring again, so that costs latency,
//! never a hang.
//!
//! **End of stream and death.** When every copy of the peer's end is closed, the socket
//! reads end of stream; a receiver reports `Closed` only after it saw that and then found
//! the ring empty (anything sent before the close is in the ring by then). A sender dead
//! mid-message (SIGKILL while streaming) leaves the ring's producer lock marked
//! `OWNER_DIED`; the receiver waiting for the rest repairs the ring (an `Abort` frame) and
//! gets the same "in the middle of a message" error the socket path gives. A sender
//! waiting for room asks every few milliseconds whether the peer is gone (socket hang-up),
//! so a closed receiver makes it fail with `Closed`, never hang; each send also looks
//! once (one `poll`), so a send to a closed peer fails at once, as on a socket.
//!
//! Connections made by `Listener`/`connect` (CPython's wire) and mproc's internal protocol
//! sockets ([`super::socket_pipe`]) have no rings and stay on the socket path.

use std::cell::RefCell;
use std::io::IoSlice;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::records::{self, RECORD_LEN, Record};
use crate::error::{Error, Result};
use crate::queue::ring::Ring;
use crate::shared::region::Region;
use crate::sync::raw::backoff::{self, Backoff};
use crate::sys;
use crate::sys::stream::Peek;

/// Bytes of frames in each direction's ring. Measured (1 MiB `send_bytes` between two
/// processes): 256 KiB streams as fast as larger rings while its working set stays in the
/// L2 cache, and a pipe costs at most 512 KiB of shared memory once both rings have
/// cycled (less while traffic is light: pages are touched only as the ring reaches them).
pub(crate) const RING_CAPACITY: usize = 256 << 10;
/// The longest a receiver sleeps in `poll` before it looks at the ring on its own.
pub(crate) const SLEEP_SLICE: Duration = Duration::from_millis(50);
/// The longest one attempt waits for the consumer lock before looking again.
const TAKE_SLICE: Duration = Duration::from_millis(1);
const FIRST_PAUSE: Duration = Duration::from_micros(50);
const MAX_PAUSE: Duration = Duration::from_millis(10);

/// The shared-memory half of a pipe end.
pub(crate) struct Link {
    tx: Option<Ring>,
    rx: Option<Ring>,
    /// Scratch for the ring writer's small-item buffer, reused between sends.
    scratch: RefCell<Vec<u8>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("tx", &self.tx.is_some())
            .field("rx", &self.rx.is_some())
            .finish()
    }
}

/// How a link travels: its rings' regions (each a memfd handle).
#[derive(Serialize, Deserialize)]
pub(crate) struct LinkWire<R> {
    tx: Option<R>,
    rx: Option<R>,
}

fn new_ring() -> Result<(Ring, Arc<Region>)> {
    let ring = Ring::create(RING_CAPACITY, 0)?;
    let region = ring.region().expect("a created ring is shared").clone();
    Ok((ring, region))
}

impl Link {
    fn new(tx: Option<Ring>, rx: Option<Ring>) -> Link {
        Link {
            tx,
            rx,
            scratch: RefCell::new(Vec::new()),
        }
    }

    /// The links of a duplex pipe's two ends.
    pub(crate) fn duplex() -> Result<(Link, Link)> {
        let (ab, ab_region) = new_ring()?;
        let (ba, ba_region) = new_ring()?;
        let a = Link::new(Some(ab), Some(Ring::attach(ba_region)?));
        let b = Link::new(Some(ba), Some(Ring::attach(ab_region)?));
        Ok((a, b))
    }

    /// The links of a simplex pipe: `(receiving end, sending end)`.
    pub(crate) fn simplex() -> Result<(Link, Link)> {
        let (ring, region) = new_ring()?;
        Ok((
            Link::new(None, Some(Ring::attach(region)?)),
            Link::new(Some(ring), None),
        ))
    }

    pub(crate) fn wire(&self) -> LinkWire<&Region> {
        fn region(r: &Option<Ring>) -> Option<&Region> {
            r.as_ref().and_then(|r| r.region()).map(|r| &**r)
        }
        LinkWire {
            tx: region(&self.tx),
            rx: region(&self.rx),
        }
    }

    /// Rebuilds a link that arrived in a message; the regions are checked by `attach`.
    pub(crate) fn from_wire(w: LinkWire<Region>) -> Result<Link> {
        let attach = |r: Option<Region>| r.map(|r| Ring::attach(Arc::new(r))).transpose();
        Ok(Link::new(attach(w.tx)?, attach(w.rx)?))
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
        if peer_gone(sock) {
            return Err(Error::Closed);
        }
        let gone = || peer_gone(sock);
        let trailer = if fds.is_empty() { 1 } else { 5 };
        let mut var = [0u8; 10];
        let vlen = put_varint(payload.len() as u64 + trailer, &mut var);
        let mut scratch = self.scratch.borrow_mut();
        let (mut w, seq) = if fds.is_empty() {
            let mut w = ring.writer(deadline, std::mem::take(&mut *scratch));
            w.abandon_if(&gone);
            (w, None)
        } else {
            let (w, seq) = ring
                .locked_writer(deadline, Some(&gone))
                .map_err(|e| full_means(e, &gone))?;
            // Under the producer lock, before the item: see the module docs.
            send_record(sock, seq, fds, deadline)?;
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
        if ring.has_sleepers() {
            ring_doorbell(sock);
        }
        Ok(())
    }

    // ---- Receiving ----

    /// Receives one message: its payload replaces `out`'s contents, its descriptors are
    /// appended to `fds`. `Err(Timeout)` if none began by `deadline`; `Err(Closed)` at end
    /// of stream.
    pub(crate) fn recv(
        &self,
        sock: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        fds: &mut Vec<OwnedFd>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let rx = self.rx()?;
        // Both callbacks fill these (only one runs per item).
        let out = RefCell::new(out);
        let fds = RefCell::new(fds);
        loop {
            match self.wait(sock, deadline)? {
                Ready::Data => {}
                Ready::Eof => return Err(Error::Closed),
                Ready::TimedOut => return Err(Error::Timeout),
            }
            let attempt = Instant::now() + TAKE_SLICE;
            let got = rx.recv_pipe(
                Some(deadline.map_or(attempt, |d| d.min(attempt))),
                |bytes| {
                    let (m, prefix) = get_varint(bytes).ok_or_else(|| corrupt("no length"))?;
                    if prefix as u64 + m != bytes.len() as u64 {
                        return Err(corrupt("a length that disagrees with the item"));
                    }
                    let body = &bytes[prefix..];
                    let (len, fd_seq) = trailer(body)?;
                    let mut out = out.borrow_mut();
                    out.clear();
                    out.extend_from_slice(&body[..len]);
                    take_fds(sock, fd_seq, &mut fds.borrow_mut())
                },
                Some(|m: u64, mut body: Vec<u8>| {
                    if m != body.len() as u64 {
                        return Err(corrupt("a length that disagrees with the item"));
                    }
                    let (len, fd_seq) = trailer(&body)?;
                    body.truncate(len);
                    **out.borrow_mut() = body;
                    take_fds(sock, fd_seq, &mut fds.borrow_mut())
                }),
            );
            match got {
                Ok(r) => return r,
                // Another holder of this end took it first, or holds the consumer lock.
                Err(Error::Empty) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until a frame is in the ring, the stream ended, or `deadline` passed (see the
    /// module docs for the order of looks).
    pub(crate) fn wait(&self, sock: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<Ready> {
        let rx = self.rx()?;
        if rx.pending() {
            return Ok(Ready::Data);
        }
        if !backoff::oversubscribed(Instant::now())
            && Backoff::new().wait_until(deadline, || rx.pending())
        {
            return Ok(Ready::Data);
        }
        let mut pause = FIRST_PAUSE;
        loop {
            let head = drain_doorbells(rx, sock)?;
            if rx.pending() {
                return Ok(Ready::Data);
            }
            let now = Instant::now();
            match head {
                Head::Eof => return Ok(Ready::Eof),
                Head::Record => {
                    // A descriptor record with no item in the ring: its sender is between
                    // the two (wait a moment), or it died or gave up there (drop it).
                    if rx.when_idle(|| discard_records(sock)) {
                        continue;
                    }
                    if deadline.is_some_and(|d| now >= d) {
                        return Ok(Ready::TimedOut);
                    }
                    let p = deadline.map_or(pause, |d| pause.min(d - now));
                    sys::stream::pause(p);
                    pause = (pause * 2).min(MAX_PAUSE);
                    continue;
                }
                Head::Empty | Head::Busy => {}
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Ready::TimedOut);
            }
            if rx.begin_sleep() {
                rx.end_sleep();
                return Ok(Ready::Data);
            }
            let slice = deadline.map_or(SLEEP_SLICE, |d| SLEEP_SLICE.min(d - now));
            let polled = sys::fd::poll_readable(sock, Some(slice));
            rx.end_sleep();
            polled?;
        }
    }

    /// Whether a frame is in the ring this end receives from.
    pub(crate) fn pending(&self) -> bool {
        self.rx.as_ref().is_some_and(Ring::pending)
    }

    /// Counts the caller as asleep (for `wait()` over many objects): whether a frame is
    /// already there.
    pub(crate) fn begin_sleep(&self) -> bool {
        self.rx.as_ref().is_some_and(|rx| rx.begin_sleep())
    }

    /// Undoes [`begin_sleep`](Link::begin_sleep) (a no-op for an end without `rx`, as
    /// `begin_sleep` was).
    pub(crate) fn end_sleep(&self) {
        if let Some(rx) = &self.rx {
            rx.end_sleep();
        }
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    Data,
    Eof,
    TimedOut,
}

/// What is at the head of the socket once doorbells are drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    Empty,
    Eof,
    /// A descriptor record (or something that will be refused as one).
    Record,
    /// Another receiver holds the consumer lock: it drains.
    Busy,
}

/// Takes the doorbells at the head of the socket, under the consumer lock (so no
/// descriptor record is taken by mistake), and says what is left at the head.
fn drain_doorbells(rx: &Ring, sock: BorrowedFd<'_>) -> Result<Head> {
    let head = rx.with_consumer(|| {
        let mut peeked = [0u8; RECORD_LEN + 1];
        loop {
            match sys::stream::peek(sock, &mut peeked).map_err(super::framing::map_recv_error)? {
                Peek::Empty => return Ok(Head::Empty),
                Peek::Eof => return Ok(Head::Eof),
                Peek::Bytes(n) if records::looks_like_doorbell(&peeked[..n]) => {
                    let mut fds = Vec::new();
                    sys::fd::try_recv_with_fds(sock, &mut [0u8; RECORD_LEN + 1], &mut fds)
                        .map_err(super::framing::map_recv_error)?;
                }
                Peek::Bytes(_) => return Ok(Head::Record),
            }
        }
    });
    head.unwrap_or(Ok(Head::Busy))
}

/// Drops every record queued on the socket (called with both side locks held and the ring
/// empty, when none of them can belong to an item).
fn discard_records(sock: BorrowedFd<'_>) {
    let mut buf = [0u8; RECORD_LEN + 1];
    loop {
        let mut fds = Vec::new();
        match sys::fd::try_recv_with_fds(sock, &mut buf, &mut fds) {
            Ok(Some(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// Reads the descriptors of the item whose trailer said `seq` (if any) off the socket.
/// Runs under the consumer lock, after the item was published: its record is queued.
fn take_fds(sock: BorrowedFd<'_>, seq: Option<(u32, usize)>, fds: &mut Vec<OwnedFd>) -> Result<()> {
    let Some((seq, nfds)) = seq else {
        return Ok(());
    };
    let mut buf = [0u8; RECORD_LEN + 1];
    loop {
        let mut got = Vec::new();
        let n = sys::fd::try_recv_with_fds(sock, &mut buf, &mut got)
            .map_err(super::framing::map_recv_error)?;
        let n = match n {
            Some(n) if n > 0 => n,
            _ => return Err(corrupt("a message's descriptors never arrived")),
        };
        match records::parse_record(&buf[..n], got.len()) {
            Ok(Record::Doorbell) => {}
            Ok(Record::Fds { seq: s }) if s == seq => {
                if got.len() != nfds {
                    return Err(super::framing::fd_mismatch(nfds, got.len()));
                }
                fds.extend(got);
                return Ok(());
            }
            // A record whose item was never published: its descriptors close here.
            Ok(Record::Fds { .. }) => {}
            Err(why) => return Err(corrupt(&why)),
        }
    }
}

/// Splits an item's body into its payload length and its descriptor trailer.
fn trailer(body: &[u8]) -> Result<(usize, Option<(u32, usize)>)> {
    match body.split_last() {
        None => Err(corrupt("an empty item")),
        Some((&0, rest)) => Ok((rest.len(), None)),
        Some((&nfds, rest)) if rest.len() >= 4 => {
            let len = rest.len() - 4;
            let seq = u32::from_le_bytes([rest[len], rest[len + 1], rest[len + 2], rest[len + 3]]);
            if usize::from(nfds) > sys::fd::MAX_FDS_PER_MESSAGE {
                return Err(corrupt("a trailer announcing too many descriptors"));
            }
            Ok((len, Some((seq, usize::from(nfds)))))
        }
        Some(_) => Err(corrupt("a truncated trailer")),
    }
}

fn corrupt(why: &str) -> Error {
    Error::Codec(format!("corrupt pipe message: {why}"))
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

/// Sends a one-byte doorbell record, never blocking; a full socket already wakes.
fn ring_doorbell(sock: BorrowedFd<'_>) {
    let _ = sys::fd::try_send_with_fds(sock, &[IoSlice::new(&[records::DOORBELL])], &[]);
}

/// Sends the descriptor record numbered `seq`, waiting for room until `deadline`.
fn send_record(
    sock: BorrowedFd<'_>,
    seq: u32,
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> Result<()> {
    let record = records::encode_record(seq, fds.len());
    loop {
        match sys::fd::try_send_with_fds(sock, &[IoSlice::new(&record)], fds) {
            Ok(0) => {}
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe) => {
                return Err(Error::Closed);
            }
            Err(e) => return Err(super::framing::map_recv_error(e)),
        }
        let left = match deadline {
            None => None,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(Error::Timeout);
                }
                Some(d - now)
            }
        };
        if peer_gone(sock) {
            return Err(Error::Closed);
        }
        sys::fd::poll_rw(&[(sock, true)], Some(left.map_or(SLEEP_SLICE, |l| l.min(SLEEP_SLICE))))?;
    }
}

fn put_varint(mut n: u64, out: &mut [u8; 10]) -> usize {
    let mut i = 0;
    while n >= 0x80 {
        out[i] = n as u8 | 0x80;
        n >>= 7;
        i += 1;
    }
    out[i] = n as u8;
    i + 1
}

/// The varint at the start of `b`: `(value, its length)`; `None` if malformed.
fn get_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().take(10).enumerate() {
        if i == 9 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The item decoder's pieces (length prefix, trailer) accept only what fits.
        #[test]
        fn item_parts_stay_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some((v, n)) = get_varint(&bytes) {
                prop_assert!(n <= bytes.len() && n <= 10);
                let mut out = [0u8; 10];
                let k = put_varint(v, &mut out);
                prop_assert!(k <= n);
            }
            if let Ok((len, fds)) = trailer(&bytes) {
                let extra = if fds.is_some() { 5 } else { 1 };
                prop_assert_eq!(len + extra, bytes.len());
                if let Some((_, n)) = fds {
                    prop_assert!(n <= sys::fd::MAX_FDS_PER_MESSAGE);
                }
            }
        }

        #[test]
        fn varints_round_trip(v in any::<u64>()) {
            let mut out = [0u8; 10];
            let k = put_varint(v, &mut out);
            prop_assert_eq!(get_varint(&out[..k]), Some((v, k)));
        }
    }
}
