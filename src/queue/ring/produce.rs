//! Producing: the producer lock, room, publishing frames, and repairing a dead producer.
//!
//! **Who writes what.** The producer-lock holder is the only writer of `tail`, of the
//! producer words, and of the data-area bytes past the tail (up to the head). It writes a
//! frame's payload and header first, then moves `tail` past the frame with one SeqCst swap
//! that publishes the bytes and, for a `Whole`/`Last` frame, the item count together (and
//! is the fence the data eventcount needs before it looks for sleeping consumers).
//!
//! **Room.** A bounded ring makes a producer wait, holding its lock, until fewer than
//! `maxsize` items are in it; any ring makes it wait for bytes. A producer that found the
//! ring full asks (`room.need`) to be woken only once a sixteenth of it is free, and
//! re-checks its own need every 2 ms: one wake-up per many items, not per item.
//!
//! **Repair.** The kernel marks the lock `OWNER_DIED` when its holder dies. Whoever takes it
//! next (a producer in `acquire_producer`, or a consumer's `rescue_stream`) goes through
//! [`Ring::take_over_producer`]: it clears the dead one's registration as a room waiter
//! (else every later `get` would see a waiter and make a futex wake for nobody), and if
//! `stream` says an item was half streamed, writes an `Abort` frame to close it (a
//! streaming producer always leaves one unit free for it). A half-written frame is never
//! visible (the tail moves only after it), so nothing torn is ever delivered.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::control::{Acquired, Guard, IN_ITEM, NO_ITEM, Producing, UNBOUNDED};
use super::eventcount::Slept;
use super::frame::{FrameHeader, HEADER, Kind, units};
use super::runtime::Runtime;
use super::{Ring, count_of, pack, pos_of};
use crate::error::{Error, Result};
use crate::shim::{Word, Word64};
use crate::sync::raw::backoff::Backoff;

/// The error for a ring whose shared words were written over by someone (another process
/// maps the same memory): `why` says which value was out of range.
pub(super) fn corrupt(why: std::fmt::Arguments<'_>) -> Error {
    Error::Codec(format!("queue ring is corrupt: {why}"))
}

/// How long a producer waiting for room sleeps before re-checking on its own (see
/// [`Ring::wait_room`]).
const ROOM_SLICE: Duration = Duration::from_millis(2);
/// Room kept free while streaming, so an `Abort` always fits (one header, one unit).
pub(super) const ABORT_RESERVE: u32 = 1;

impl<R: Runtime> Ring<R> {
    /// Appends one item of raw bytes. `Err(Error::Full)` if `deadline` passes first (then
    /// nothing of it stays in the ring).
    #[cfg(test)]
    pub(crate) fn send(&self, item: &[u8], deadline: Option<Instant>) -> Result<()> {
        let mut w = self.writer(deadline, Vec::new());
        w.write(item)?;
        w.finish().map(drop)
    }

    /// Takes the producer lock, repairs what a dead or timed-out predecessor left, and waits
    /// until a bounded ring has room for one more item.
    pub(super) fn acquire_producer(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Guard<'_, Producing, R>> {
        let (held, acquired) = self.ctl().lock_producer(deadline).ok_or(Error::Full)?;
        self.take_over_producer(&held, acquired);
        if self.maxsize != UNBOUNDED {
            let put = count_of(self.ctl().tail.0.load(Ordering::Relaxed));
            let head = &self.ctl().head.0;
            let in_ring = || put.wrapping_sub(count_of(head.load(Ordering::Acquire)));
            // More than `maxsize` items in the ring cannot happen (a producer publishes only
            // below it, under the lock): the counts were written over. Ready, to be refused.
            let room_for_one = || in_ring() < self.maxsize || in_ring() > self.maxsize;
            // Any consumption is worth a wake-up here.
            self.ctl().room.need.store(0, Ordering::Relaxed);
            if !self.ctl().room.wait_until(deadline, room_for_one, || {}) {
                return Err(Error::Full);
            }
            let n = in_ring();
            if n > self.maxsize {
                return Err(corrupt(format_args!(
                    "{n} items in a ring of at most {}",
                    self.maxsize
                )));
            }
        }
        Ok(held)
    }

    /// What whoever takes the producer lock does first: after a dead holder, forget its
    /// registration as a room waiter (only the holder registers, so the count is its) and
    /// repair; after a live one, repair only if it left an item open.
    #[inline]
    pub(super) fn take_over_producer(&self, p: &Guard<'_, Producing, R>, acquired: Acquired) {
        if acquired == Acquired::OwnerDied {
            // A dead producer may have been asleep waiting for room.
            self.ctl().room.waiters.store(0, Ordering::Relaxed);
        }
        if acquired == Acquired::OwnerDied
            || self.ctl().producer.stream.load(Ordering::Relaxed) != NO_ITEM
        {
            self.repair_producer(p);
        }
    }

    /// Closes an item a dead (or timed-out) producer left unfinished, and wakes a consumer
    /// that might have missed the dead one's wake-up.
    #[cold]
    fn repair_producer(&self, p: &Guard<'_, Producing, R>) {
        let stream = &self.ctl().producer.stream;
        if stream.load(Ordering::Acquire) != NO_ITEM {
            // The abort reserve guarantees room for this frame (unless the positions were
            // written over: then nothing is written, and the next call reports it).
            if self.free_units(p).is_ok_and(|f| f >= 1) {
                self.write_frame(p, Kind::Abort, &[]);
            }
            stream.store(NO_ITEM, Ordering::Release);
        }
        self.ctl().data.notify();
    }

    /// Free units, as of a fresh look at the head.
    pub(super) fn free_units(&self, _p: &Guard<'_, Producing, R>) -> Result<u32> {
        let tail = pos_of(self.ctl().tail.0.load(Ordering::Relaxed));
        let head = pos_of(self.ctl().head.0.load(Ordering::Acquire));
        self.ctl().producer.head_seen.store(head, Ordering::Relaxed);
        self.room_between(tail, head)
    }

    /// Free units between `tail` and `head`: the capacity less the units in use, which
    /// another process's words may claim to be more than the ring holds.
    #[inline]
    pub(super) fn room_between(&self, tail: u32, head: u32) -> Result<u32> {
        let used = tail.wrapping_sub(head);
        self.cap_units.checked_sub(used).ok_or_else(|| {
            corrupt(format_args!(
                "{used} units in use in a ring of {}",
                self.cap_units
            ))
        })
    }

    /// Waits until `need` units are free.
    ///
    /// Hysteresis: once the ring has been found full, the producer resumes only when a
    /// sixteenth of it is free (or at the end of a 2 ms slice, or at its deadline, if its
    /// own frame fits by then), so a fast producer and a slow consumer trade one wake-up
    /// per many items instead of one per item.
    ///
    /// `stalled` (a pipe's hook) is called when the wait begins and after each slice: it
    /// may wake the consumers by its own means, and returns `true` to give up (they are
    /// gone for good).
    ///
    /// `Ok(false)` if the deadline passed (or `stalled` gave up); the corrupt-ring error if
    /// the positions claim more units in use than the ring holds.
    pub(super) fn wait_room(
        &self,
        _p: &Guard<'_, Producing, R>,
        need: u32,
        deadline: Option<Instant>,
        stalled: Option<&dyn Fn() -> bool>,
    ) -> Result<bool> {
        let ctl = self.ctl();
        let tail = pos_of(ctl.tail.0.load(Ordering::Relaxed));
        let seen = &ctl.producer.head_seen;
        if self.room_between(tail, seen.load(Ordering::Relaxed))? >= need {
            return Ok(true);
        }
        // A corrupt position counts as ready, so that the waits below end and the check
        // after them reports it.
        let free = || {
            let head = pos_of(ctl.head.0.load(Ordering::Acquire));
            seen.store(head, Ordering::Relaxed);
            self.room_between(tail, head).unwrap_or(u32::MAX)
        };
        let checked = || {
            let head = pos_of(ctl.head.0.load(Ordering::Acquire));
            self.room_between(tail, head).map(|_| true)
        };
        if free() >= need {
            return checked();
        }
        if deadline.is_some_and(|d| R::W::now() >= d) {
            return Ok(false);
        }
        if stalled.is_some_and(|g| g()) {
            return Ok(false);
        }
        let target = need.max(self.cap_units / 16);
        if R::W::SPINS && Backoff::new().wait_until(deadline, || free() >= target) {
            return checked();
        }
        ctl.room.need.store(target, Ordering::Relaxed);
        loop {
            let until = R::W::now() + ROOM_SLICE;
            let until = deadline.map_or(until, |d| d.min(until));
            let slept = ctl.room.sleep_once(until, || free() >= target);
            if slept == Slept::Ready {
                return checked();
            }
            if slept == Slept::SliceOver {
                if free() >= need {
                    return checked();
                }
                if deadline.is_some_and(|d| R::W::now() >= d) || stalled.is_some_and(|g| g()) {
                    return Ok(false);
                }
            }
        }
    }

    /// Writes one frame at the tail and publishes it. The caller made sure it fits.
    pub(super) fn write_frame(&self, p: &Guard<'_, Producing, R>, kind: Kind, payload: &[u8]) {
        let pos = pos_of(self.ctl().tail.0.load(Ordering::Relaxed));
        self.mem.write(p, self.index(pos, HEADER), payload);
        // Dead here: a frame written but not published, so never seen.
        R::W::die_point();
        self.publish(p, pos, payload.len(), kind);
    }

    /// Writes the header of the frame at `pos` (its payload already in place) and moves the
    /// tail past it.
    pub(super) fn publish(&self, p: &Guard<'_, Producing, R>, pos: u32, len: usize, kind: Kind) {
        let header = FrameHeader {
            len: len as u32,
            kind,
        };
        // Headers sit at unit boundaries and the capacity is a multiple of 8: never wraps.
        self.mem.write(p, self.index(pos, 0), &header.encode());
        self.commit(p, pos, len, kind);
    }

    /// Moves the tail past the frame at `pos`, header and payload already in place.
    #[inline]
    pub(super) fn commit(&self, _p: &Guard<'_, Producing, R>, pos: u32, len: usize, kind: Kind) {
        let tail = &self.ctl().tail.0;
        let count =
            count_of(tail.load(Ordering::Relaxed)).wrapping_add(u32::from(kind.ends_item()));
        let next = pos.wrapping_add(units(HEADER + len));
        // Dead here: a whole frame written past the tail, never seen.
        R::W::die_point();
        // One store publishes the bytes and, for an item's last frame, the item. SeqCst (an
        // `xchg`, a full fence on x86) orders it before the waiter check, which pairs with
        // the sleeper's fence in `sleep_once`, without a separate fence instruction.
        tail.swap(pack(next, count), Ordering::SeqCst);
        // Dead here: published, but a sleeping consumer not woken (its probe slice ends).
        R::W::die_point();
        self.ctl().data.notify_after_seqcst();
    }

    /// Marks a streamed item as begun (before its `First` frame is visible), so whoever
    /// takes the lock after our death knows to close it with an `Abort`, or as done.
    pub(super) fn set_streaming(&self, _p: &Guard<'_, Producing, R>, on: bool) {
        let stream = &self.ctl().producer.stream;
        if on {
            stream.store(IN_ITEM, Ordering::SeqCst);
            // Dead here: an item marked open with none of it published; the `Abort` the
            // next holder writes closes nothing, and is skipped.
            R::W::die_point();
        } else {
            stream.store(NO_ITEM, Ordering::Release);
        }
    }
}
