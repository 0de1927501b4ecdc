//! [`ItemWriter`]: one item on its way in, whole or streamed.
//!
//! An item is buffered while small, then written as one `Whole` frame with its header in a
//! single copy under the producer lock. Once it outgrows a quarter of the ring, the writer
//! takes the producer lock and streams the rest straight into the ring in pieces (`First`,
//! `More`..., `Last`), each published as soon as it is full, so a consumer drains the ring
//! while the producer fills it and items of any size need no buffer of their size on either
//! side of the copy. Dropping an unfinished writer abandons the item: an `Abort` frame if
//! pieces were published (the room for it is reserved), then the lock is released.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::control::{Guard, Producing};
use super::frame::{FrameHeader, HEADER, Kind, UNIT, units};
use super::produce::{ABORT_RESERVE, corrupt};
use super::runtime::{Os, Runtime};
use super::{Ring, pos_of};
use crate::error::{Error, Result};
use crate::shim::{Word, Word64};

/// One item being written; see the module docs.
pub(crate) struct ItemWriter<'r, R: Runtime = Os> {
    ring: &'r Ring<R>,
    deadline: Option<Instant>,
    /// Items up to this size are buffered and written whole.
    small_limit: usize,
    buf: Vec<u8>,
    /// The producer lock, once streaming.
    held: Option<Guard<'r, Producing, R>>,
    /// The open piece: its header's unit (the tail), payload bytes written, bytes it can
    /// still take.
    piece_pos: u32,
    piece_len: usize,
    piece_room: usize,
    /// Where in the data area the open piece's next byte goes, and how many bytes fit from
    /// there before the piece is full or the area wraps (0 while buffering): the one-byte
    /// writes of a serializer cost a compare and a copy.
    at: usize,
    contig: usize,
    /// Whether the open piece is the item's first.
    first: bool,
    /// Whether a piece of this item is visible to consumers.
    published: bool,
    finished: bool,
    /// Called while waiting for room (see `Ring::wait_room`): a pipe wakes its receiver
    /// and says whether the peer is gone for good, so waiting is pointless.
    stalled: Option<&'r dyn Fn() -> bool>,
}

impl<R: Runtime> fmt::Debug for ItemWriter<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemWriter")
            .field("streaming", &self.held.is_some())
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Ring<R> {
    /// Starts writing one item; see [`ItemWriter`]. `buf` is scratch space to reuse.
    pub(crate) fn writer(&self, deadline: Option<Instant>, mut buf: Vec<u8>) -> ItemWriter<'_, R> {
        buf.clear();
        // Room for the frame header: a small item goes into the ring in one copy.
        buf.extend_from_slice(&[0; HEADER]);
        ItemWriter {
            ring: self,
            deadline,
            small_limit: HEADER + self.mem.cap() / 4,
            buf,
            held: None,
            piece_pos: 0,
            piece_len: 0,
            piece_room: 0,
            at: 0,
            contig: 0,
            first: true,
            published: false,
            finished: false,
            stalled: None,
        }
    }

    /// A writer that holds the producer lock from the start and streams straight into the
    /// ring (a small item still ends up one `Whole` frame), with the number this item
    /// takes from `producer.fd_seq`: a pipe sends the item's descriptor record, under the
    /// lock, before it writes the item (see `pipe.rs`).
    pub(crate) fn locked_writer<'a>(
        &'a self,
        deadline: Option<Instant>,
        stalled: Option<&'a dyn Fn() -> bool>,
    ) -> Result<(ItemWriter<'a, R>, u32)> {
        let mut w = self.writer(deadline, Vec::new());
        w.stalled = stalled;
        let p = self.acquire_producer(deadline)?;
        let seq = &self.ctl().producer.fd_seq;
        let n = seq.load(Ordering::Relaxed).wrapping_add(1);
        seq.store(n, Ordering::Relaxed);
        w.held = Some(p);
        w.open_piece()?;
        Ok((w, n))
    }
}

impl<'r, R: Runtime> ItemWriter<'r, R> {
    /// Calls `stalled()` when a wait for room begins and every few milliseconds during
    /// it; the wait ends (as if the deadline passed) once it returns `true`.
    pub(crate) fn on_stall(&mut self, stalled: &'r dyn Fn() -> bool) {
        self.stalled = Some(stalled);
    }

    /// Whether a piece of this item has been published (an error now leaves an `Abort`).
    pub(crate) fn published(&self) -> bool {
        self.published
    }

    /// Appends bytes to the item. `Err(Error::Full)` if the deadline passes while waiting
    /// for the lock or for room.
    #[inline]
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.len() <= self.contig {
            if let Some(p) = &self.held {
                self.ring.mem.write(p, self.at, data);
                self.at += data.len();
                self.contig -= data.len();
                self.piece_len += data.len();
                self.piece_room -= data.len();
                return Ok(());
            }
        }
        if self.held.is_none() && self.buf.len() + data.len() <= self.small_limit {
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        self.write_slow(data)
    }

    #[cold]
    fn write_slow(&mut self, data: &[u8]) -> Result<()> {
        if self.held.is_none() {
            self.held = Some(self.ring.acquire_producer(self.deadline)?);
            self.open_piece()?;
            let buffered = std::mem::take(&mut self.buf);
            let streamed = self.stream(&buffered[HEADER..]);
            self.buf = buffered;
            streamed?;
        }
        self.stream(data)
    }

    fn stream(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.piece_room == 0 {
                self.close_piece(false);
                self.open_piece()?;
            }
            let n = data.len().min(self.piece_room);
            self.put_in_piece(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    fn put_in_piece(&mut self, data: &[u8]) {
        let p = self.held.as_ref().expect("streaming holds the lock");
        let at = self.ring.index(self.piece_pos, HEADER + self.piece_len);
        // `open_piece` found `piece_room` bytes free past this piece's header, of which
        // `data` takes no more than what is left.
        self.ring.mem.write(p, at, data);
        self.piece_len += data.len();
        self.piece_room -= data.len();
        self.aim();
    }

    /// Points `at` at the open piece's next byte.
    fn aim(&mut self) {
        self.at = self.ring.index(self.piece_pos, HEADER + self.piece_len);
        self.contig = self.piece_room.min(self.ring.mem.cap() - self.at);
    }

    /// Waits for room for a new piece and opens it at the tail. Any room will do (the rest
    /// of the item may be tiny); `wait_room`'s hysteresis keeps pieces large while a
    /// consumer is draining.
    fn open_piece(&mut self) -> Result<()> {
        let ring = self.ring;
        let p = self.held.as_ref().expect("streaming holds the lock");
        let need = units(HEADER + UNIT) + ABORT_RESERVE;
        if !ring.wait_room(p, need, self.deadline, self.stalled)? {
            return Err(Error::Full);
        }
        // A head moved back by another process since `wait_room` looked: less room than
        // it found, which only a corrupt ring shows.
        let free = ring.free_units(p)?;
        let free = free
            .checked_sub(ABORT_RESERVE)
            .and_then(|f| (f as usize * UNIT).checked_sub(HEADER))
            .filter(|&f| f > 0)
            .ok_or_else(|| corrupt(format_args!("the head moved back to {free} free units")))?;
        self.piece_pos = pos_of(ring.ctl().tail.0.load(Ordering::Relaxed));
        self.piece_len = 0;
        // At most a quarter of the ring, so the consumer copies one piece out while we
        // copy the next one in.
        self.piece_room = free.min(ring.mem.cap() / 4);
        self.aim();
        Ok(())
    }

    fn close_piece(&mut self, last: bool) {
        let p = self.held.as_ref().expect("streaming holds the lock");
        let kind = Kind::of_piece(self.first, last);
        if kind == Kind::First {
            self.ring.set_streaming(p, true);
        }
        self.ring.publish(p, self.piece_pos, self.piece_len, kind);
        self.first = false;
        self.published = true;
        self.piece_room = 0;
        self.contig = 0;
    }

    /// Completes the item (it is in the ring when this returns `Ok`), and gives back the
    /// scratch buffer for reuse.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>> {
        if self.held.is_some() {
            self.close_piece(true);
            let p = self.held.as_ref().expect("streaming holds the lock");
            self.ring.set_streaming(p, false);
        } else {
            let ring = self.ring;
            let p = ring.acquire_producer(self.deadline)?;
            if !ring.wait_room(&p, units(self.buf.len()), self.deadline, self.stalled)? {
                return Err(Error::Full);
            }
            let len = self.buf.len() - HEADER;
            let header = FrameHeader {
                len: len as u32,
                kind: Kind::Whole,
            };
            self.buf[..HEADER].copy_from_slice(&header.encode());
            let pos = pos_of(ring.ctl().tail.0.load(Ordering::Relaxed));
            // Room for the whole frame past the tail; headers start at unit boundaries, so
            // the copy starts the frame.
            ring.mem.write(&p, ring.index(pos, 0), &self.buf);
            ring.commit(&p, pos, len, Kind::Whole);
        }
        self.finished = true;
        Ok(std::mem::take(&mut self.buf))
    }
}

impl<R: Runtime> Drop for ItemWriter<'_, R> {
    fn drop(&mut self) {
        // A killed process writes nothing more (a model victim unwinding; never in
        // production): the next holder of the lock closes the item.
        if R::W::dying() {
            return;
        }
        if !self.finished && self.published {
            if let Some(p) = &self.held {
                // A streaming producer always leaves room for this frame (`ABORT_RESERVE`).
                self.ring.write_frame(p, Kind::Abort, &[]);
                self.ring.set_streaming(p, false);
            }
        }
        // `held`, dropped after this, releases the producer lock.
    }
}
