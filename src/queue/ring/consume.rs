//! Consuming: the consumer lock, reading frames, and skipping what a dead consumer left.
//!
//! **Who writes what.** The consumer-lock holder is the only writer of `head` and of the
//! consumer words. It reads frames between `head` and `tail` (loaded with acquire
//! ordering, and re-read only when its cached view, `tail_seen`, is used up: one cache-line
//! transfer per batch of items, not per item), hands a `Whole` frame's bytes to the decoder
//! in place, gathers a streamed item's pieces into a reused buffer, and moves `head` past
//! each frame with one SeqCst swap (the fence the room eventcount needs).
//!
//! **Dead partners.** A consumer that dies holding the lock leaves the kernel's
//! `OWNER_DIED` mark; the next one clears the dead one's registration as a data waiter and
//! goes on. Pieces of an item whose `First` it never saw are skipped (their `Last` still
//! counts as consumed), so nothing torn is delivered. A consumer waiting for the rest of a
//! streamed item looks at the producer lock after each sleep slice (50 ms): a live
//! producer holds it from an item's `First` to its `Last`, so if it is free or its owner
//! died and nothing more is published, the item is abandoned and the consumer closes it
//! with an `Abort` itself (whatever the peer-written `stream` word says). A timed queue
//! call that reaches its deadline mid-item drops the item whole: its remaining pieces
//! lack their `First` and are skipped by whoever reads next; a pipe's `recv_timeout` does
//! the same (see [`Ring::recv_pipe`]).
//!
//! **Hostile words.** `head`, `tail` and frame headers may have been written by another
//! process: a frame is checked against the units published (`read_frame`), and every
//! difference of positions is checked against the capacity (`Ring::room_between`); out
//! of range is the corrupt-ring error (`Error::Codec`), never a panic or a wrapped value.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::control::{Acquired, Consuming, Guard, NO_ITEM};
use super::frame::{BadFrame, FrameHeader, HEADER, Kind};
use super::runtime::Runtime;
use super::{Ring, count_of, pack, pos_of};
use crate::error::{Error, Result};
use crate::shim::{Word, Word64};

thread_local! {
    /// The buffer the last streamed item was gathered in, kept for the next one.
    static RECV_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Whether `RECV_BUF` may hold a large allocation.
    static RECV_BUF_KEPT: Cell<bool> = const { Cell::new(false) };
}

impl<R: Runtime> Ring<R> {
    /// Takes one item and hands its bytes to `decode`. `Err(Error::Empty)` if `deadline`
    /// passes before the item ends (one begun is then dropped whole); untimed, waits for
    /// the end of a begun item while its producer holds its lock (its death or release
    /// without finishing it is found within a probe slice).
    pub(crate) fn recv<T>(
        &self,
        deadline: Option<Instant>,
        decode: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        self.recv_with(deadline, decode, None::<fn(u64, Vec<u8>) -> T>)
    }

    /// As [`recv`](Ring::recv); and a streamed item whose payload starts with a varint `n`
    /// (a byte string's length) is gathered without that prefix into a fresh buffer reserved
    /// for `n` bytes, and handed to `owned(n, body)` to keep (see `queue/bytes.rs`).
    pub(crate) fn recv_with<T>(
        &self,
        deadline: Option<Instant>,
        decode: impl FnOnce(&[u8]) -> T,
        owned: Option<impl FnOnce(u64, Vec<u8>) -> T>,
    ) -> Result<T> {
        self.recv_inner(deadline, deadline, decode, owned, false)
    }

    /// A pipe's [`recv_with`](Ring::recv_with): the same, except that a streamed item
    /// abandoned half-way (its producer died, or its send timed out) is an error for the
    /// receiver that had begun it, as a torn message on a socket is, not skipped silently.
    ///
    /// `deadline` bounds the wait for an item to begin (the pipe passes short slices
    /// of its own deadline, between which it looks at its socket), `item_deadline` the
    /// wait for the rest of a begun one (then dropped whole, as a queue's); untimed, a
    /// begun item is waited for to its end or until its producer is found gone (lock free
    /// or dead with nothing more published: the torn-message error within a probe slice).
    pub(crate) fn recv_pipe<T>(
        &self,
        deadline: Option<Instant>,
        item_deadline: Option<Instant>,
        decode: impl FnOnce(&[u8]) -> T,
        owned: Option<impl FnOnce(u64, Vec<u8>) -> T>,
    ) -> Result<T> {
        self.recv_inner(deadline, item_deadline, decode, owned, true)
    }

    /// `deadline` bounds the wait for an item to begin, `item_deadline` the wait for the
    /// rest of a begun one (which is then dropped whole). A queue's `get_async` passes
    /// "now" and `None`: it takes an item only if one is there, and never drops one begun.
    pub(crate) fn recv_inner<T>(
        &self,
        deadline: Option<Instant>,
        item_deadline: Option<Instant>,
        decode: impl FnOnce(&[u8]) -> T,
        mut owned: Option<impl FnOnce(u64, Vec<u8>) -> T>,
        torn_is_error: bool,
    ) -> Result<T> {
        let ctl = self.ctl();
        let (mut c, acquired) = ctl.lock_consumer(deadline).ok_or(Error::Empty)?;
        if acquired == Acquired::OwnerDied {
            // The dead consumer may have been asleep waiting for data.
            ctl.data.waiters.store(0, Ordering::Relaxed);
        }
        // A dead consumer may have been halfway through a streamed item: its remaining
        // pieces arrive without a `First`, and are skipped below.
        let mut partial: Option<Gather> = None;
        loop {
            let head = ctl.head.0.load(Ordering::Relaxed);
            let pos = pos_of(head);
            let avail = self.avail_units(&c, pos);
            if avail == 0 {
                let got = if partial.is_none() {
                    self.wait_data(&c, pos, deadline, || {})
                } else {
                    self.wait_data(&c, pos, item_deadline, || self.rescue_stream(&c, pos))
                };
                if !got {
                    // Mid-item at the deadline (its producer stalled): the item is dropped
                    // whole. Its pieces still to come lack their `First`, so whoever reads
                    // next skips them; nothing torn is ever delivered.
                    if let Some(Gather::Contiguous(v)) = partial.take() {
                        RECV_BUF.set(v);
                        RECV_BUF_KEPT.set(true);
                    }
                    return Err(Error::Empty);
                }
                continue;
            }
            let frame = self.read_frame(&c, pos, avail)?;
            let next = pos.wrapping_add(frame.units());
            let count = count_of(head).wrapping_add(u32::from(frame.kind.ends_item()));
            let at = self.index(pos, HEADER);
            let len = frame.len as usize;
            match frame.kind {
                Kind::Whole => {
                    if RECV_BUF_KEPT.get() {
                        // Small items again: give back the big buffer the last one used.
                        RECV_BUF_KEPT.set(false);
                        drop(RECV_BUF.take());
                    }
                    let (a, b) = self.mem.read(&c, at, len);
                    let out = if b.is_empty() {
                        decode(a)
                    } else {
                        decode(&[a, b].concat())
                    };
                    self.advance(&mut c, next, count);
                    return Ok(out);
                }
                Kind::First => {
                    let (a, b) = self.mem.read(&c, at, len);
                    let g = match owned.is_some().then(|| byte_string_start(a, b)).flatten() {
                        Some(announced) => Gather::owned(announced),
                        None => {
                            // Reuse the buffer of the last streamed item: a stream of big
                            // items then touches no fresh pages on this side.
                            let mut v = RECV_BUF.take();
                            v.clear();
                            Gather::Contiguous(v)
                        }
                    };
                    partial = Some(g);
                    let skip = match &partial {
                        Some(Gather::Owned { prefix, .. }) => *prefix,
                        _ => 0,
                    };
                    if let Some(g) = partial.as_mut() {
                        g.take(a, b, skip);
                    }
                }
                Kind::More => {
                    if let Some(g) = partial.as_mut() {
                        let (a, b) = self.mem.read(&c, at, len);
                        g.take(a, b, 0);
                    }
                }
                Kind::Last => {
                    if let Some(mut g) = partial.take() {
                        let (a, b) = self.mem.read(&c, at, len);
                        g.take(a, b, 0);
                        self.advance(&mut c, next, count);
                        return Ok(match (g, owned.take()) {
                            (Gather::Owned { n, body, .. }, Some(owned)) => owned(n, body),
                            (g, _) => {
                                let v = g.into_vec();
                                let out = decode(&v);
                                RECV_BUF.set(v);
                                RECV_BUF_KEPT.set(true);
                                out
                            }
                        });
                    }
                }
                // The item's producer gave up or died: drop what we have of it.
                Kind::Abort => {
                    let had = partial.take();
                    let begun = had.is_some();
                    if let Some(Gather::Contiguous(v)) = had {
                        RECV_BUF.set(v);
                        RECV_BUF_KEPT.set(true);
                    }
                    if torn_is_error && begun {
                        self.advance(&mut c, next, count);
                        return Err(crate::connection::framing::died_mid_message());
                    }
                }
            }
            self.advance(&mut c, next, count);
        }
    }

    /// Reads and checks the header of the frame at `pos`, behind which `avail` units are
    /// published.
    fn read_frame(&self, c: &Guard<'_, Consuming, R>, pos: u32, avail: u32) -> Result<FrameHeader> {
        // The tail is another process's word: one past the head by more than the ring
        // holds would let a frame longer than the ring through the check below.
        if avail > self.cap_units {
            return Err(Error::Codec(format!(
                "queue ring is corrupt: {avail} units published in a ring of {}",
                self.cap_units
            )));
        }
        // Headers sit at unit boundaries and never wrap.
        let (h, _) = self.mem.read(c, self.index(pos, 0), HEADER);
        let bytes: [u8; HEADER] = h.try_into().expect("a header never wraps");
        FrameHeader::parse(bytes, avail).map_err(|e| {
            let why = match e {
                BadFrame::Kind(k) => format!("frame kind {k}"),
                BadFrame::TooLong { units, published } => {
                    format!("a frame of {units} units where {published} are published")
                }
            };
            Error::Codec(format!("queue ring is corrupt: {why} at unit {pos}"))
        })
    }

    /// Units published past `pos`, as of the consumer's freshest view of the tail.
    #[inline]
    fn avail_units(&self, _c: &Guard<'_, Consuming, R>, pos: u32) -> u32 {
        let seen = &self.ctl().consumer.tail_seen;
        let avail = seen.load(Ordering::Relaxed).wrapping_sub(pos);
        if avail != 0 {
            return avail;
        }
        let tail = pos_of(self.ctl().tail.0.load(Ordering::Acquire));
        seen.store(tail, Ordering::Relaxed);
        tail.wrapping_sub(pos)
    }

    fn wait_data(
        &self,
        c: &Guard<'_, Consuming, R>,
        pos: u32,
        deadline: Option<Instant>,
        on_probe: impl FnMut(),
    ) -> bool {
        self.ctl()
            .data
            .wait_until(deadline, || self.avail_units(c, pos) != 0, on_probe)
    }

    /// Called while waiting for the rest of a streamed item begun at a frame before `pos`:
    /// if its producer is gone (the lock free, or its owner dead), close the item
    /// ourselves, and forget a dead one's room wait as a producer taking over would.
    ///
    /// A live producer holds the lock from an item's `First` to its `Last`, so once we
    /// hold it, an item with nothing published after `pos` is abandoned, whatever the
    /// peer-written `stream` word says (a dead or hostile peer may have left it clear):
    /// we close it with an `Abort`, which the ring, empty past `pos`, has room for.
    #[cold]
    fn rescue_stream(&self, c: &Guard<'_, Consuming, R>, pos: u32) {
        if let Some((p, acquired)) = self.ctl().try_lock_producer() {
            self.take_over_producer(&p, acquired);
            // Through the lock's acquire: what its last holder published is visible.
            if self.avail_units(c, pos) == 0 {
                self.write_frame(&p, Kind::Abort, &[]);
                self.ctl().producer.stream.store(NO_ITEM, Ordering::Release);
            }
        }
    }

    /// Moves the head (and the consumed-items count) past a frame, and wakes a producer
    /// waiting for room if there is now as much as it asked for. `&mut` of the guard: no
    /// slice of the frames behind the new head may still be alive.
    #[inline]
    fn advance(&self, _c: &mut Guard<'_, Consuming, R>, pos: u32, count: u32) {
        // Dead here: the frame read (an item perhaps decoded) but not consumed; the next
        // consumer reads it again.
        R::W::die_point();
        // As in `commit`: the swap is the store and the fence.
        self.ctl().head.0.swap(pack(pos, count), Ordering::SeqCst);
        // Dead here: the frame consumed, a sleeping producer not woken (its slice ends).
        R::W::die_point();
        // The SeqCst order of the swap before this load, under the model.
        R::W::model_seqcst_fence();
        if self.ctl().room.waiters.load(Ordering::SeqCst) != 0 {
            self.wake_room(pos);
        }
    }

    #[cold]
    fn wake_room(&self, head: u32) {
        let need = self.ctl().room.need.load(Ordering::Relaxed);
        let tail = pos_of(self.ctl().tail.0.load(Ordering::Acquire));
        // Positions another process wrote over wake the producer, which reports them.
        if !self.room_between(tail, head).is_ok_and(|free| free < need) {
            self.ctl().room.wake();
        }
    }
}

/// A streamed item being gathered.
enum Gather {
    /// The whole payload, to decode from one slice.
    Contiguous(Vec<u8>),
    /// A byte string's `n` bytes, without the `prefix` bytes of varint before them.
    Owned {
        n: u64,
        prefix: usize,
        body: Vec<u8>,
    },
}

/// The most a byte string's announced length reserves up front (virtual memory only; a
/// longer item grows the buffer as it comes, and a lying length is caught at the end).
const MAX_RESERVE: u64 = 1 << 32;
/// Buffers from this size on ask for huge pages.
const HUGE: usize = 2 << 20;

impl Gather {
    fn owned(announced: (u64, usize)) -> Gather {
        let (n, prefix) = announced;
        let mut body = Vec::new();
        if body.try_reserve_exact(n.min(MAX_RESERVE) as usize).is_ok() && body.capacity() >= HUGE {
            crate::sys::mman::advise_huge_pages(&mut body);
        }
        Gather::Owned { n, prefix, body }
    }

    /// Appends a piece (`a` then `b`), less its first `skip` bytes.
    fn take(&mut self, a: &[u8], b: &[u8], skip: usize) {
        let v = match self {
            Gather::Contiguous(v) => v,
            Gather::Owned { body, .. } => body,
        };
        let (a, b) = if skip <= a.len() {
            (&a[skip..], b)
        } else {
            (&[][..], &b[skip - a.len()..])
        };
        v.extend_from_slice(a);
        v.extend_from_slice(b);
    }

    /// The whole payload (a byte string's prefix put back, for the ordinary decoder).
    fn into_vec(self) -> Vec<u8> {
        match self {
            Gather::Contiguous(v) => v,
            Gather::Owned { n, prefix, body } => {
                let mut v = Vec::with_capacity(prefix + body.len());
                let mut n = n;
                while n >= 0x80 {
                    v.push(n as u8 | 0x80);
                    n >>= 7;
                }
                v.push(n as u8);
                v.extend_from_slice(&body);
                v
            }
        }
    }
}

/// The varint at the start of a first piece (`a` then `b`): `(value, its length)`.
fn byte_string_start(a: &[u8], b: &[u8]) -> Option<(u64, usize)> {
    let mut head = [0u8; 10];
    let k = a.len().min(10);
    head[..k].copy_from_slice(&a[..k]);
    let m = b.len().min(10 - k);
    head[k..k + m].copy_from_slice(&b[..m]);
    crate::queue::bytes::varint(&head[..k + m])
}
