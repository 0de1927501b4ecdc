//! The ring: a bounded many-producer, many-consumer byte ring in shared memory.
//!
//! See the protocol in [`super`]'s module docs; this file is its only implementation, and
//! the only queue file with `unsafe` (the bulk copies in and out of the shared data area,
//! and the views of its control words).

#![allow(unsafe_code)]

use std::cell::Cell;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::shared::region::Region;
use crate::sync::raw::backoff::Backoff;
use crate::sys::{futex, pid};

// ---- Layout of the control page (byte offsets). Words written by different sides sit
// 128 bytes apart (two cache lines: the adjacent-line prefetcher pairs them). ----

/// `MAGIC`: the first word of every ring, checked when a handle arrives in another process.
const OFF_MAGIC: usize = 0;
/// The item limit (Python's `maxsize`); `UNBOUNDED` for none.
const OFF_MAXSIZE: usize = 4;
/// The size of the data area in bytes, a power of two.
const OFF_CAPACITY: usize = 8;

/// The producer lock (see [`OwnerLock`]) and the producer side's private words.
const OFF_PLOCK: usize = 128;
/// `IN_ITEM` while a streamed item is unfinished, `NO_ITEM` otherwise.
const OFF_P_STREAM: usize = 132;
/// The producer side's last view of `HEAD`'s position: a lower bound, refreshed when short.
const OFF_P_HEAD_SEEN: usize = 136;

/// `TAIL`: (items published << 32) | tail position in units. Written only by the producer
/// lock holder, with one release store per frame, so bytes and item count appear together.
const OFF_TAIL: usize = 256;

/// The consumer lock and the consumer side's private words.
const OFF_CLOCK: usize = 384;
/// The consumer side's last view of `TAIL`'s position: a lower bound, refreshed when short.
const OFF_C_TAIL_SEEN: usize = 388;

/// `HEAD`: (items consumed << 32) | head position in units. Written only by the consumer
/// lock holder.
const OFF_HEAD: usize = 512;

/// Bumped by a producer after publishing, when a consumer waits for data.
const OFF_DATA_SEQ: usize = 640;
/// How many consumers are (about to be) asleep on `DATA_SEQ`.
const OFF_DATA_WAITERS: usize = 644;
/// Bumped by a consumer after freeing room, when a producer waits for room.
const OFF_ROOM_SEQ: usize = 768;
/// How many producers are (about to be) asleep on `ROOM_SEQ`.
const OFF_ROOM_WAITERS: usize = 772;
/// How many free units the sleeping producer waits for (0: any consumption).
const OFF_ROOM_NEED: usize = 776;
/// How many items `task_done` has acknowledged (JoinableQueue); joiners sleep on it.
const OFF_DONE: usize = 896;
/// How many joiners are (about to be) asleep on `DONE`.
const OFF_JOIN_WAITERS: usize = 900;

/// The control page's size; the data area starts here, page-aligned.
const CONTROL_LEN: usize = 4096;

const MAGIC: u32 = u32::from_le_bytes(*b"mpQ1");
const UNBOUNDED: u32 = 0;
const NO_ITEM: u32 = 0;
const IN_ITEM: u32 = 1;

// ---- Frames ----

/// Frames start on 8-byte boundaries; positions count these units.
const UNIT: usize = 8;
/// Every frame starts with `len: u32` (payload bytes) and `kind: u32`.
const HEADER: usize = 8;
/// Kind bits: the frame starts an item / ends an item.
const BEGIN: u32 = 1;
const END: u32 = 2;
/// A whole item in one frame.
const WHOLE: u32 = BEGIN | END;
/// The first piece of a streamed item.
const FIRST: u32 = BEGIN;
/// A middle piece.
const MORE: u32 = 0;
/// The final piece; the item counts as published once this frame is.
const LAST: u32 = END;
/// The streamed item in progress is abandoned: drop what was received of it.
const ABORT: u32 = 4;
/// Room kept free while streaming, so an `ABORT` always fits (one header, one unit).
const ABORT_RESERVE: u32 = 1;

/// The default data area: 1 MiB of frames (pages are touched only as the ring cycles).
pub(crate) const DEFAULT_CAPACITY: usize = 1 << 20;
const MIN_CAPACITY: usize = 256;
/// Positions are u32 units, so the area may span at most 2^31 units.
const MAX_CAPACITY: usize = 1 << 34;

// ---- Waiting ----

/// How often a sleeper checks whether the process it depends on has died.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long a producer waiting for room sleeps before re-checking on its own (see
/// [`Ring::wait_room`]).
const ROOM_SLICE: Duration = Duration::from_millis(2);

// ---- The lock ----

/// Lock word states: `UNLOCKED`, or the holder's pid with `WAITERS` set when someone may be
/// asleep on the word (then the holder wakes one at unlock).
const UNLOCKED: u32 = 0;
const WAITERS: u32 = 1 << 31;
const OWNER: u32 = !WAITERS;

/// A futex lock that records its holder's pid, so a waiter can tell that the holder died
/// and take the lock over (the `OwnerDied` outcome), instead of waiting forever.
struct OwnerLock<'a> {
    word: &'a AtomicU32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acquired {
    /// The previous holder released it.
    Clean,
    /// The previous holder died holding it: its half-done work must be repaired.
    OwnerDied,
}

impl OwnerLock<'_> {
    #[inline]
    fn try_lock(&self, me: u32) -> bool {
        self.word
            .compare_exchange(UNLOCKED, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Locks, or `None` when `deadline` passes first.
    #[inline]
    fn lock(&self, me: u32, deadline: Option<Instant>) -> Option<Acquired> {
        if self.try_lock(me) {
            return Some(Acquired::Clean);
        }
        self.lock_contended(me, deadline)
    }

    #[cold]
    fn lock_contended(&self, me: u32, deadline: Option<Instant>) -> Option<Acquired> {
        if spin_until(deadline, || self.word.load(Ordering::Relaxed) == UNLOCKED)
            && self.try_lock(me)
        {
            return Some(Acquired::Clean);
        }
        loop {
            let cur = self.word.load(Ordering::Relaxed);
            if cur & OWNER == UNLOCKED {
                // Others may be asleep behind us: keep WAITERS so our unlock wakes them.
                if self
                    .word
                    .compare_exchange(cur, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(Acquired::Clean);
                }
                continue;
            }
            if cur & WAITERS == 0
                && self
                    .word
                    .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let until = probe_deadline(deadline);
            if futex::wait(self.word, cur | WAITERS, Some(until)) == futex::Wake::TimedOut {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return None;
                }
                if self.steal_from_dead(cur | WAITERS, me) {
                    return Some(Acquired::OwnerDied);
                }
            }
        }
    }

    /// Takes the lock if it is free or its holder is dead; never waits.
    fn try_lock_or_steal(&self, me: u32) -> Option<Acquired> {
        if self.try_lock(me) {
            return Some(Acquired::Clean);
        }
        let cur = self.word.load(Ordering::Relaxed);
        self.steal_from_dead(cur, me).then_some(Acquired::OwnerDied)
    }

    /// Replaces the word `seen` by ours if its owner is dead. WAITERS is kept: sleepers
    /// behind the dead owner still need our unlock to wake them.
    fn steal_from_dead(&self, seen: u32, me: u32) -> bool {
        let owner = seen & OWNER;
        owner != UNLOCKED
            && !pid::is_alive(owner)
            && self
                .word
                .compare_exchange(
                    seen,
                    me | (seen & WAITERS),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    #[inline]
    fn unlock(&self) {
        if self.word.swap(UNLOCKED, Ordering::Release) & WAITERS != 0 {
            futex::wake(self.word, 1);
        }
    }
}

/// Unlocks on drop, so an early return or a panic in a decoder cannot leave the lock held.
struct Held<'a>(OwnerLock<'a>);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

/// The nearer of `deadline` and the next liveness probe.
fn probe_deadline(deadline: Option<Instant>) -> Instant {
    let probe = Instant::now() + PROBE_INTERVAL;
    deadline.map_or(probe, |d| d.min(probe))
}

/// Backs off (spins, then yields; see [`Backoff`]) until `ready()`, the backoff completes,
/// or `deadline`. Returns the last `ready()`.
#[inline]
fn spin_until(deadline: Option<Instant>, ready: impl FnMut() -> bool) -> bool {
    Backoff::new().wait_until(deadline, ready)
}

// ---- Positions ----

#[inline]
fn pack(pos: u32, count: u32) -> u64 {
    (u64::from(count) << 32) | u64::from(pos)
}

#[inline]
fn pos_of(word: u64) -> u32 {
    word as u32
}

#[inline]
fn count_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// Units a frame of `bytes` (header included) occupies.
#[inline]
fn units(bytes: usize) -> u32 {
    bytes.div_ceil(UNIT) as u32
}

// ---- The ring ----

/// What keeps the ring's memory mapped.
enum Backing {
    Shared(Arc<Region>),
    /// Plain heap memory, for unit tests with threads.
    #[cfg(test)]
    Heap(#[allow(dead_code)] Box<[AtomicU64]>),
}

/// One ring. Cheap to share within a process as `Arc<Ring>`; travels to other processes as
/// its region ([`Ring::region`], [`Ring::attach`]).
pub(crate) struct Ring {
    base: NonNull<u8>,
    /// Data area bytes, a power of two.
    cap: usize,
    cap_units: u32,
    maxsize: u32,
    backing: Backing,
}

// SAFETY: the ring's memory is owned by `backing`, which is Send + Sync; all shared state is
// reached through atomics, and the data bytes only under the lock protocol that already
// tolerates concurrent access from other processes.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.cap)
            .field("maxsize", &self.maxsize)
            .field("len", &self.len())
            .finish()
    }
}

/// A ring's data-area size for a requested `capacity`: rounded up to a power of two.
fn data_len(capacity: usize) -> Result<usize> {
    if capacity > MAX_CAPACITY {
        return Err(Error::ValueError(format!(
            "queue ring capacity {capacity} is above the maximum {MAX_CAPACITY}"
        )));
    }
    Ok(capacity.max(MIN_CAPACITY).next_power_of_two())
}

/// Python's `maxsize`: 0 (or anything past what the counters can hold) is unbounded.
fn maxsize_word(maxsize: usize) -> u32 {
    match u32::try_from(maxsize) {
        Ok(m) if m < 1 << 31 => m,
        _ => UNBOUNDED,
    }
}

impl Ring {
    /// A new ring in a fresh shared region: `capacity` bytes of frames (rounded up to a
    /// power of two), at most `maxsize` items (0: unbounded).
    pub(crate) fn create(capacity: usize, maxsize: usize) -> Result<Ring> {
        let cap = data_len(capacity)?;
        let region = Arc::new(Region::new("mproc-queue", CONTROL_LEN + cap)?);
        let ring = Ring::over(
            NonNull::new(region.as_ptr()).expect("a mapping is never at address 0"),
            cap,
            maxsize_word(maxsize),
            Backing::Shared(region),
        );
        ring.init();
        Ok(ring)
    }

    /// A ring over plain heap memory, for tests with threads.
    #[cfg(test)]
    pub(crate) fn heap(capacity: usize, maxsize: usize) -> Ring {
        let cap = data_len(capacity).expect("test capacity in range");
        let words: Box<[AtomicU64]> = (0..(CONTROL_LEN + cap) / 8)
            .map(|_| AtomicU64::new(0))
            .collect();
        let base = NonNull::new(words.as_ptr().cast_mut().cast::<u8>())
            .expect("a boxed slice is never null");
        let ring = Ring::over(base, cap, maxsize_word(maxsize), Backing::Heap(words));
        ring.init();
        ring
    }

    /// Rebuilds a ring from a region that arrived from another process.
    pub(crate) fn attach(region: Arc<Region>) -> Result<Ring> {
        let bad = |what: &str| Error::Codec(format!("not a queue ring: {what}"));
        if region.len() < CONTROL_LEN + MIN_CAPACITY {
            return Err(bad("region too small"));
        }
        if region.atomic_u32(OFF_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(bad("bad magic"));
        }
        let cap = usize::try_from(region.atomic_u64(OFF_CAPACITY).load(Ordering::Relaxed))
            .map_err(|_| bad("bad capacity"))?;
        if !cap.is_power_of_two()
            || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap)
            || CONTROL_LEN + cap > region.len()
        {
            return Err(bad("bad capacity"));
        }
        let maxsize = region.atomic_u32(OFF_MAXSIZE).load(Ordering::Relaxed);
        let base = NonNull::new(region.as_ptr()).expect("a mapping is never at address 0");
        Ok(Ring::over(base, cap, maxsize, Backing::Shared(region)))
    }

    fn over(base: NonNull<u8>, cap: usize, maxsize: u32, backing: Backing) -> Ring {
        Ring {
            base,
            cap,
            cap_units: (cap / UNIT) as u32,
            maxsize,
            backing,
        }
    }

    fn init(&self) {
        self.word64(OFF_CAPACITY)
            .store(self.cap as u64, Ordering::Relaxed);
        self.word32(OFF_MAXSIZE)
            .store(self.maxsize, Ordering::Relaxed);
        self.word32(OFF_MAGIC).store(MAGIC, Ordering::Release);
    }

    /// The shared region, to serialize the ring into a message.
    pub(crate) fn region(&self) -> Option<&Arc<Region>> {
        match &self.backing {
            Backing::Shared(r) => Some(r),
            #[cfg(test)]
            Backing::Heap(_) => None,
        }
    }

    /// Bytes of frames the ring holds.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// The item limit, `None` if unbounded.
    pub(crate) fn maxsize(&self) -> Option<usize> {
        (self.maxsize != UNBOUNDED).then_some(self.maxsize as usize)
    }

    // ---- Control words ----

    fn word32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off % 4 == 0 && off + 4 <= CONTROL_LEN);
        // SAFETY:
        // * `off` is one of the layout constants: inside the control page, 4-aligned, and
        //   the base is page- (or 8-) aligned;
        // * the memory lives as long as `self.backing`, so as long as `&self`;
        // * every process touches control words only atomically.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().wrapping_add(off).cast()) }
    }

    fn word64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= CONTROL_LEN);
        // SAFETY: as for `word32`, with 8-byte alignment.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().wrapping_add(off).cast()) }
    }

    fn plock(&self) -> OwnerLock<'_> {
        OwnerLock {
            word: self.word32(OFF_PLOCK),
        }
    }

    fn clock(&self) -> OwnerLock<'_> {
        OwnerLock {
            word: self.word32(OFF_CLOCK),
        }
    }

    fn tail(&self) -> &AtomicU64 {
        self.word64(OFF_TAIL)
    }

    fn head(&self) -> &AtomicU64 {
        self.word64(OFF_HEAD)
    }

    // ---- Data area ----

    /// The byte index in the data area of unit position `pos`, plus `offset` bytes.
    #[inline]
    fn index(&self, pos: u32, offset: usize) -> usize {
        (pos as usize * UNIT + offset) & (self.cap - 1)
    }

    #[inline]
    fn data(&self) -> *mut u8 {
        // SAFETY: the data area starts right after the control page, inside the allocation.
        unsafe { self.base.as_ptr().add(CONTROL_LEN) }
    }

    /// Copies `src` into the data area from byte `index`, wrapping at the end.
    ///
    /// # Safety
    /// The caller holds the producer lock, and the `src.len()` bytes from `index` (mod the
    /// capacity) are free: past the tail, before the head. No one reads them until the
    /// caller publishes a tail past them.
    #[inline]
    unsafe fn copy_in(&self, index: usize, src: &[u8]) {
        debug_assert!(src.len() <= self.cap && index < self.cap);
        let first = src.len().min(self.cap - index);
        // SAFETY: `index + first <= cap`: inside the data area; the caller owns those bytes.
        let dst = unsafe { self.data().add(index) };
        // SAFETY: `src[..first]` and the destination are valid and disjoint (`src` is
        // private memory of this process, the destination shared ring bytes).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, first) };
        if first < src.len() {
            // SAFETY: the wrapped rest, `src.len() - first <= cap` bytes from the start of
            // the data area, is free for the same reason.
            unsafe {
                std::ptr::copy_nonoverlapping(src[first..].as_ptr(), self.data(), src.len() - first)
            };
        }
    }

    /// The published bytes `[index, index + len)` of the data area, as one or two slices
    /// (two when they wrap at the end).
    ///
    /// # Safety
    /// The caller holds the consumer lock and the bytes lie between the head and a tail it
    /// has loaded with acquire ordering: published, and not rewritten until the caller
    /// advances the head past them, which it must not do while the slices live.
    #[inline]
    unsafe fn published(&self, index: usize, len: usize) -> (&[u8], &[u8]) {
        debug_assert!(len <= self.cap && index < self.cap);
        let first = len.min(self.cap - index);
        let start = self.data().wrapping_add(index);
        // SAFETY: `index + first <= cap`; the bytes are published and stay unchanged while
        // the slices live (see the contract above).
        let a = unsafe { std::slice::from_raw_parts(start, first) };
        // SAFETY: the wrapped rest starts the data area and is `len - first <= cap` bytes.
        let b = unsafe { std::slice::from_raw_parts(self.data(), len - first) };
        (a, b)
    }

    /// Writes a frame header at unit position `pos`.
    ///
    /// # Safety
    /// As for [`Ring::copy_in`], for the header's 8 bytes.
    #[inline]
    unsafe fn write_header(&self, pos: u32, len: u32, kind: u32) {
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4..].copy_from_slice(&kind.to_le_bytes());
        // SAFETY: headers sit at unit boundaries and the capacity is a multiple of 8, so a
        // header never wraps; the caller owns the bytes.
        unsafe { self.copy_in(self.index(pos, 0), &h) };
    }

    /// Reads the frame header at `pos`: `(len, kind)`.
    ///
    /// # Safety
    /// As for [`Ring::published`], for the header's 8 bytes.
    #[inline]
    unsafe fn read_header(&self, pos: u32) -> (u32, u32) {
        // SAFETY: per the caller's contract; a header never wraps.
        let (h, _) = unsafe { self.published(self.index(pos, 0), HEADER) };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let kind = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        (len, kind)
    }

    // ---- Waiting and waking (eventcounts: seq + waiter count) ----

    /// Sleeps once on an eventcount until woken or `until`; `true` if `ready()` after.
    /// The sleeper registers in `waiters` before its final check; the waker publishes,
    /// fences, then reads `waiters`: with SeqCst fences on both sides one of them sees the
    /// other, so no wake is lost.
    fn sleep_once(
        &self,
        seq_off: usize,
        waiters_off: usize,
        until: Instant,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        let (seq, waiters) = (self.word32(seq_off), self.word32(waiters_off));
        let s = seq.load(Ordering::Acquire);
        waiters.fetch_add(1, Ordering::AcqRel);
        fence(Ordering::SeqCst);
        if !ready() {
            futex::wait(seq, s, Some(until));
        }
        waiters.fetch_sub(1, Ordering::Relaxed);
        ready()
    }

    /// Wakes the sleepers of an eventcount, if there are any (no syscall otherwise).
    #[inline]
    fn notify(&self, seq_off: usize, waiters_off: usize) {
        fence(Ordering::SeqCst);
        if self.word32(waiters_off).load(Ordering::Acquire) != 0 {
            self.notify_slow(seq_off);
        }
    }

    #[cold]
    fn notify_slow(&self, seq_off: usize) {
        let seq = self.word32(seq_off);
        seq.fetch_add(1, Ordering::Release);
        futex::wake_all(seq);
    }

    /// Waits until `ready()`: spins, then sleeps in `PROBE_INTERVAL` slices, calling
    /// `on_probe` after each slice. `false` if `deadline` passes first.
    fn wait_until(
        &self,
        seq_off: usize,
        waiters_off: usize,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
        mut on_probe: impl FnMut(),
    ) -> bool {
        if ready() {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        if spin_until(deadline, &mut ready) {
            return true;
        }
        loop {
            let until = probe_deadline(deadline);
            if self.sleep_once(seq_off, waiters_off, until, &mut ready) {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            if Instant::now() >= until {
                on_probe();
            }
        }
    }

    // ---- Producing ----

    /// Appends one item of raw bytes. `Err(Error::Full)` if `deadline` passes first (then
    /// nothing of it stays in the ring).
    #[cfg(test)]
    pub(crate) fn send(&self, item: &[u8], deadline: Option<Instant>) -> Result<()> {
        let mut w = self.writer(deadline, Vec::new());
        w.write(item)?;
        w.finish().map(drop)
    }

    /// Starts writing one item; see [`ItemWriter`]. `buf` is scratch space to reuse.
    pub(crate) fn writer(&self, deadline: Option<Instant>, mut buf: Vec<u8>) -> ItemWriter<'_> {
        buf.clear();
        // Room for the frame header: a small item goes into the ring in one copy.
        buf.extend_from_slice(&[0; HEADER]);
        ItemWriter {
            ring: self,
            deadline,
            small_limit: HEADER + self.cap / 4,
            buf,
            held: None,
            piece_pos: 0,
            piece_len: 0,
            piece_room: 0,
            cursor: std::ptr::null_mut(),
            contig: 0,
            first: true,
            published: false,
            finished: false,
        }
    }

    /// Takes the producer lock, repairs what a dead or timed-out predecessor left, and waits
    /// until a bounded ring has room for one more item.
    fn acquire_producer(&self, deadline: Option<Instant>) -> Result<Held<'_>> {
        let lock = self.plock();
        let acquired = lock.lock(pid::current(), deadline).ok_or(Error::Full)?;
        let held = Held(lock);
        if acquired == Acquired::OwnerDied {
            // A dead producer may have been asleep waiting for room.
            self.word32(OFF_ROOM_WAITERS).store(0, Ordering::Relaxed);
        }
        if acquired == Acquired::OwnerDied
            || self.word32(OFF_P_STREAM).load(Ordering::Relaxed) != NO_ITEM
        {
            self.repair_producer();
        }
        if self.maxsize != UNBOUNDED {
            let put = count_of(self.tail().load(Ordering::Relaxed));
            let room_for_one =
                || put.wrapping_sub(count_of(self.head().load(Ordering::Acquire))) < self.maxsize;
            // Any consumption is worth a wakeup here.
            self.word32(OFF_ROOM_NEED).store(0, Ordering::Relaxed);
            if !self.wait_until(
                OFF_ROOM_SEQ,
                OFF_ROOM_WAITERS,
                deadline,
                room_for_one,
                || {},
            ) {
                return Err(Error::Full);
            }
        }
        Ok(held)
    }

    /// Closes an item a dead (or timed-out) producer left unfinished, and wakes a consumer
    /// that might have missed the dead one's wakeup. Caller holds the producer lock.
    #[cold]
    fn repair_producer(&self) {
        if self.word32(OFF_P_STREAM).load(Ordering::Acquire) != NO_ITEM {
            // The ABORT reserve guarantees room for this frame.
            if self.free_units() >= 1 {
                self.write_frame(ABORT, &[]);
            }
            self.word32(OFF_P_STREAM).store(NO_ITEM, Ordering::Release);
        }
        self.notify(OFF_DATA_SEQ, OFF_DATA_WAITERS);
    }

    /// Free units, as of a fresh look at the head. Caller holds the producer lock.
    fn free_units(&self) -> u32 {
        let tail = pos_of(self.tail().load(Ordering::Relaxed));
        let head = pos_of(self.head().load(Ordering::Acquire));
        self.word32(OFF_P_HEAD_SEEN).store(head, Ordering::Relaxed);
        self.cap_units - tail.wrapping_sub(head)
    }

    /// Waits until `need` units are free. Caller holds the producer lock.
    ///
    /// Hysteresis: once the ring has been found full, the producer resumes only when a
    /// sixteenth of it is free (or at the end of a 2 ms slice, or at its deadline, if its
    /// own frame fits by then), so a fast producer and a slow consumer trade one wakeup
    /// per many items instead of one per item.
    fn wait_room(&self, need: u32, deadline: Option<Instant>) -> bool {
        let tail = pos_of(self.tail().load(Ordering::Relaxed));
        let seen = self.word32(OFF_P_HEAD_SEEN);
        if self.cap_units - tail.wrapping_sub(seen.load(Ordering::Relaxed)) >= need {
            return true;
        }
        let free = || {
            let head = pos_of(self.head().load(Ordering::Acquire));
            seen.store(head, Ordering::Relaxed);
            self.cap_units - tail.wrapping_sub(head)
        };
        if free() >= need {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        let target = need.max(self.cap_units / 16);
        if spin_until(deadline, || free() >= target) {
            return true;
        }
        self.word32(OFF_ROOM_NEED).store(target, Ordering::Relaxed);
        loop {
            let until = Instant::now() + ROOM_SLICE;
            let until = deadline.map_or(until, |d| d.min(until));
            if self.sleep_once(OFF_ROOM_SEQ, OFF_ROOM_WAITERS, until, || free() >= target) {
                return true;
            }
            if Instant::now() >= until {
                if free() >= need {
                    return true;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return false;
                }
            }
        }
    }

    /// Writes one frame at the tail and publishes it. Caller holds the producer lock and
    /// has made sure the frame fits.
    fn write_frame(&self, kind: u32, payload: &[u8]) {
        let pos = pos_of(self.tail().load(Ordering::Relaxed));
        // SAFETY: the caller holds the producer lock and made room for the whole frame
        // (header and payload), which lies past the tail.
        unsafe { self.copy_in(self.index(pos, HEADER), payload) };
        self.publish(pos, payload.len(), kind);
    }

    /// Writes the header of the frame at `pos` (its payload already in place) and moves the
    /// tail past it. Caller holds the producer lock.
    fn publish(&self, pos: u32, len: usize, kind: u32) {
        // SAFETY: the caller holds the producer lock; the header's unit at `pos` is the
        // tail's, inside the room it made.
        unsafe { self.write_header(pos, len as u32, kind) };
        self.commit(pos, len, kind);
    }

    /// Moves the tail past the frame at `pos`, header and payload already in place.
    #[inline]
    fn commit(&self, pos: u32, len: usize, kind: u32) {
        let tail = self.tail().load(Ordering::Relaxed);
        let count = count_of(tail).wrapping_add(u32::from(kind & END != 0));
        let next = pos.wrapping_add(units(HEADER + len));
        // One store publishes the bytes and, for an END frame, the item. SeqCst (an
        // `xchg`, a full fence on x86) orders it before the waiter check, which pairs with
        // the sleeper's fence in `sleep_once`, without a separate fence instruction.
        self.tail().swap(pack(next, count), Ordering::SeqCst);
        if self.word32(OFF_DATA_WAITERS).load(Ordering::SeqCst) != 0 {
            self.notify_slow(OFF_DATA_SEQ);
        }
    }

    // ---- Consuming ----

    /// Takes one item and hands its bytes to `decode`. `Err(Error::Empty)` if `deadline`
    /// passes before an item begins; once one has begun, waits for its end (which its
    /// producer's progress, deadline or death bounds).
    pub(crate) fn recv<R>(
        &self,
        deadline: Option<Instant>,
        decode: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let me = pid::current();
        let lock = self.clock();
        let acquired = lock.lock(me, deadline).ok_or(Error::Empty)?;
        let _held = Held(lock);
        if acquired == Acquired::OwnerDied {
            self.word32(OFF_DATA_WAITERS).store(0, Ordering::Relaxed);
        }
        // A dead consumer may have been halfway through a streamed item: its remaining
        // pieces arrive without a FIRST, and are skipped below.
        let mut partial: Option<Vec<u8>> = None;
        loop {
            let head = self.head().load(Ordering::Relaxed);
            let pos = pos_of(head);
            if self.avail_units(pos) == 0 {
                let got = if partial.is_none() {
                    self.wait_data(pos, deadline, || {})
                } else {
                    self.wait_data(pos, None, || self.rescue_stream(me))
                };
                if !got {
                    return Err(Error::Empty);
                }
                continue;
            }
            // SAFETY: we hold the consumer lock and `avail_units` loaded the tail past `pos`.
            let (len, kind) = unsafe { self.read_header(pos) };
            let frame = units(HEADER + len as usize);
            if kind > ABORT || frame > self.avail_units(pos) {
                return Err(Error::Codec(format!(
                    "queue ring is corrupt: frame kind {kind}, {len} bytes at unit {pos}"
                )));
            }
            let next = pos.wrapping_add(frame);
            let count = count_of(head).wrapping_add(u32::from(kind & END != 0));
            let at = self.index(pos, HEADER);
            match kind {
                WHOLE => {
                    if RECV_BUF_KEPT.get() {
                        // Small items again: give back the big buffer the last one used.
                        RECV_BUF_KEPT.set(false);
                        drop(RECV_BUF.take());
                    }
                    // SAFETY: the frame is published (checked against the tail above) and
                    // we advance the head only after `decode` is done with the slices.
                    let (a, b) = unsafe { self.published(at, len as usize) };
                    let out = if b.is_empty() {
                        decode(a)
                    } else {
                        decode(&[a, b].concat())
                    };
                    self.advance(next, count);
                    return Ok(out);
                }
                FIRST => {
                    // Reuse the buffer of the last streamed item: a stream of big items
                    // then touches no fresh pages on this side.
                    let mut v = RECV_BUF.take();
                    v.clear();
                    self.take_piece(at, len, &mut v);
                    partial = Some(v);
                    self.advance(next, count);
                }
                MORE => {
                    if let Some(v) = partial.as_mut() {
                        self.take_piece(at, len, v);
                    }
                    self.advance(next, count);
                }
                LAST => {
                    let done = partial.take().map(|mut v| {
                        self.take_piece(at, len, &mut v);
                        v
                    });
                    self.advance(next, count);
                    if let Some(v) = done {
                        let out = decode(&v);
                        RECV_BUF.set(v);
                        RECV_BUF_KEPT.set(true);
                        return Ok(out);
                    }
                }
                // ABORT: the item's producer gave up or died; drop what we have of it.
                _ => {
                    if let Some(v) = partial.take() {
                        RECV_BUF.set(v);
                        RECV_BUF_KEPT.set(true);
                    }
                    self.advance(next, count);
                }
            }
        }
    }

    /// Appends a published piece to `v`.
    fn take_piece(&self, at: usize, len: u32, v: &mut Vec<u8>) {
        // SAFETY: the caller holds the consumer lock, the piece is published, and the
        // slices are dropped before the caller advances the head.
        let (a, b) = unsafe { self.published(at, len as usize) };
        v.extend_from_slice(a);
        v.extend_from_slice(b);
    }

    /// Units published past `pos`, as of the consumer's freshest view of the tail.
    #[inline]
    fn avail_units(&self, pos: u32) -> u32 {
        let seen = self.word32(OFF_C_TAIL_SEEN);
        let avail = seen.load(Ordering::Relaxed).wrapping_sub(pos);
        if avail != 0 {
            return avail;
        }
        let tail = pos_of(self.tail().load(Ordering::Acquire));
        seen.store(tail, Ordering::Relaxed);
        tail.wrapping_sub(pos)
    }

    fn wait_data(&self, pos: u32, deadline: Option<Instant>, on_probe: impl FnMut()) -> bool {
        self.wait_until(
            OFF_DATA_SEQ,
            OFF_DATA_WAITERS,
            deadline,
            || self.avail_units(pos) != 0,
            on_probe,
        )
    }

    /// Called while waiting for the rest of a streamed item: if its producer is gone (the
    /// lock free, or held by a dead pid), close the item ourselves.
    #[cold]
    fn rescue_stream(&self, me: u32) {
        let lock = self.plock();
        if lock.try_lock_or_steal(me).is_some() {
            let _held = Held(lock);
            self.repair_producer();
        }
    }

    /// Moves the head (and the consumed-items count) past a frame, and wakes a producer
    /// waiting for room if there is now as much as it asked for.
    #[inline]
    fn advance(&self, pos: u32, count: u32) {
        // As in `publish`: the swap is the store and the fence.
        self.head().swap(pack(pos, count), Ordering::SeqCst);
        if self.word32(OFF_ROOM_WAITERS).load(Ordering::SeqCst) != 0 {
            self.wake_room(pos);
        }
    }

    #[cold]
    fn wake_room(&self, head: u32) {
        let need = self.word32(OFF_ROOM_NEED).load(Ordering::Relaxed);
        let tail = pos_of(self.tail().load(Ordering::Acquire));
        if self.cap_units - tail.wrapping_sub(head) >= need {
            self.notify_slow(OFF_ROOM_SEQ);
        }
    }

    // ---- Counting ----

    /// Complete items in the ring, exactly: published `LAST`/`WHOLE` frames not yet consumed.
    pub(crate) fn len(&self) -> usize {
        // Head first: the consumed count can then only lag the published one.
        let got = count_of(self.head().load(Ordering::Acquire));
        let put = count_of(self.tail().load(Ordering::Acquire));
        put.wrapping_sub(got) as usize
    }

    /// Whether a bounded ring holds `maxsize` items.
    pub(crate) fn is_full(&self) -> bool {
        self.maxsize != UNBOUNDED && self.len() >= self.maxsize as usize
    }

    /// Acknowledges one item (JoinableQueue). An error if every published item already was.
    pub(crate) fn task_done(&self) -> Result<()> {
        let done = self.word32(OFF_DONE);
        let mut d = done.load(Ordering::Relaxed);
        loop {
            let put = count_of(self.tail().load(Ordering::Acquire));
            if put.wrapping_sub(d) == 0 {
                return Err(Error::ValueError(
                    "task_done() called too many times".to_string(),
                ));
            }
            match done.compare_exchange_weak(
                d,
                d.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => d = now,
            }
        }
        // `DONE` is itself the joiners' futex word (it changed, so no sleeper misses this).
        fence(Ordering::SeqCst);
        if self.word32(OFF_JOIN_WAITERS).load(Ordering::Relaxed) != 0 {
            futex::wake_all(done);
        }
        Ok(())
    }

    /// Items published and not yet acknowledged by `task_done`.
    pub(crate) fn unfinished(&self) -> usize {
        let d = self.word32(OFF_DONE).load(Ordering::Acquire);
        count_of(self.tail().load(Ordering::Acquire)).wrapping_sub(d) as usize
    }

    /// Waits until every published item has been acknowledged; `false` on timeout.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        // `DONE` is the futex word itself: every task_done changes it, so a sleeper that
        // read it before registering cannot miss one.
        let done = self.word32(OFF_DONE);
        let waiters = self.word32(OFF_JOIN_WAITERS);
        loop {
            if self.unfinished() == 0 {
                return true;
            }
            let d = done.load(Ordering::Acquire);
            let until = probe_deadline(deadline);
            waiters.fetch_add(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.unfinished() != 0 {
                futex::wait(done, d, Some(until));
            }
            waiters.fetch_sub(1, Ordering::Relaxed);
            if self.unfinished() == 0 {
                return true;
            }
            if deadline.is_some_and(|dl| Instant::now() >= dl) {
                return false;
            }
        }
    }
}

thread_local! {
    /// The buffer the last streamed item was gathered in, kept for the next one.
    static RECV_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Whether `RECV_BUF` may hold a large allocation.
    static RECV_BUF_KEPT: Cell<bool> = const { Cell::new(false) };
}

/// One item being written. It is buffered while small (then written as one `WHOLE` frame);
/// once it outgrows a quarter of the ring, the writer takes the producer lock and streams
/// it in pieces straight into the ring, each published as soon as it is full, so items of
/// any size need no buffer of their size on this side. Dropping an unfinished writer
/// abandons the item (with an `ABORT` if pieces were published) and releases the lock.
pub(crate) struct ItemWriter<'r> {
    ring: &'r Ring,
    deadline: Option<Instant>,
    /// Items up to this size are buffered and written whole.
    small_limit: usize,
    buf: Vec<u8>,
    /// The producer lock, once streaming.
    held: Option<Held<'r>>,
    /// The open piece: its header's unit (the tail), payload bytes written, bytes it can
    /// still take.
    piece_pos: u32,
    piece_len: usize,
    piece_room: usize,
    /// Where the open piece's next byte goes, and how many bytes fit there before the
    /// piece is full or the data area wraps (0 while buffering): the one-byte writes of a
    /// serializer cost a compare and a store.
    cursor: *mut u8,
    contig: usize,
    /// Whether the open piece is the item's first.
    first: bool,
    /// Whether a piece of this item is visible to consumers.
    published: bool,
    finished: bool,
}

impl fmt::Debug for ItemWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemWriter")
            .field("streaming", &self.held.is_some())
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

impl ItemWriter<'_> {
    /// Appends bytes to the item. `Err(Error::Full)` if the deadline passes while waiting
    /// for the lock or for room.
    #[inline]
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.len() <= self.contig {
            // SAFETY: `contig` bytes from `cursor` are inside the data area and inside the
            // open piece, which is free room past the tail that we own (we hold the
            // producer lock); `data` is private memory of this process.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.cursor, data.len()) };
            // SAFETY: at most `contig` bytes on: still inside the data area (or one past).
            self.cursor = unsafe { self.cursor.add(data.len()) };
            self.contig -= data.len();
            self.piece_len += data.len();
            self.piece_room -= data.len();
            return Ok(());
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

    #[inline]
    fn put_in_piece(&mut self, data: &[u8]) {
        let at = self.ring.index(self.piece_pos, HEADER + self.piece_len);
        // SAFETY: we hold the producer lock, and `open_piece` found `piece_room` bytes free
        // past this piece's header, of which `data` takes no more than what is left.
        unsafe { self.ring.copy_in(at, data) };
        self.piece_len += data.len();
        self.piece_room -= data.len();
        self.aim_cursor();
    }

    /// Points `cursor` at the open piece's next byte.
    fn aim_cursor(&mut self) {
        let at = self.ring.index(self.piece_pos, HEADER + self.piece_len);
        self.contig = self.piece_room.min(self.ring.cap - at);
        // SAFETY: `at < cap`: inside the data area.
        self.cursor = unsafe { self.ring.data().add(at) };
    }

    /// Waits for room for a new piece and opens it at the tail. Any room will do (the rest
    /// of the item may be tiny); `wait_room`'s hysteresis keeps pieces large while a
    /// consumer is draining.
    fn open_piece(&mut self) -> Result<()> {
        let ring = self.ring;
        let need = units(HEADER + UNIT) + ABORT_RESERVE;
        if !ring.wait_room(need, self.deadline) {
            return Err(Error::Full);
        }
        let free = (ring.free_units() - ABORT_RESERVE) as usize * UNIT;
        self.piece_pos = pos_of(ring.tail().load(Ordering::Relaxed));
        self.piece_len = 0;
        // At most a quarter of the ring, so the consumer copies one piece out while we
        // copy the next one in.
        self.piece_room = (free - HEADER).min(ring.cap / 4);
        self.aim_cursor();
        Ok(())
    }

    fn close_piece(&mut self, last: bool) {
        let kind = match (self.first, last) {
            (true, true) => WHOLE,
            (true, false) => FIRST,
            (false, false) => MORE,
            (false, true) => LAST,
        };
        if kind == FIRST {
            // Set before the FIRST frame is visible, so whoever takes the lock after our
            // death knows to close the item with an ABORT (spare ones are ignored).
            self.ring
                .word32(OFF_P_STREAM)
                .store(IN_ITEM, Ordering::SeqCst);
        }
        self.ring.publish(self.piece_pos, self.piece_len, kind);
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
            self.ring
                .word32(OFF_P_STREAM)
                .store(NO_ITEM, Ordering::Release);
        } else {
            let ring = self.ring;
            let _held = ring.acquire_producer(self.deadline)?;
            if !ring.wait_room(units(self.buf.len()), self.deadline) {
                return Err(Error::Full);
            }
            let len = self.buf.len() - HEADER;
            self.buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
            self.buf[4..HEADER].copy_from_slice(&WHOLE.to_le_bytes());
            let pos = pos_of(ring.tail().load(Ordering::Relaxed));
            // SAFETY: we hold the producer lock and waited for room for the whole frame,
            // past the tail; headers start at unit boundaries, so the copy starts the frame.
            unsafe { ring.copy_in(ring.index(pos, 0), &self.buf) };
            ring.commit(pos, len, WHOLE);
        }
        self.finished = true;
        Ok(std::mem::take(&mut self.buf))
    }
}

impl Drop for ItemWriter<'_> {
    fn drop(&mut self) {
        if !self.finished && self.published {
            // A streaming producer always leaves room for this frame (`ABORT_RESERVE`).
            self.ring.write_frame(ABORT, &[]);
            self.ring
                .word32(OFF_P_STREAM)
                .store(NO_ITEM, Ordering::Release);
        }
        // `held`, dropped after this, releases the producer lock.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::thread;

    fn recv_vec(r: &Ring, deadline: Option<Instant>) -> Result<Vec<u8>> {
        r.recv(deadline, |b| b.to_vec())
    }

    fn soon(ms: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(ms))
    }

    #[test]
    fn fifo_and_exact_len() {
        let r = Ring::heap(4096, 0);
        assert_eq!(r.len(), 0);
        for i in 0..10u8 {
            r.send(&vec![i; i as usize * 3], None).unwrap();
            assert_eq!(r.len(), i as usize + 1);
        }
        for i in 0..10u8 {
            assert_eq!(recv_vec(&r, None).unwrap(), vec![i; i as usize * 3]);
        }
        assert_eq!(r.len(), 0);
        assert!(matches!(recv_vec(&r, soon(0)), Err(Error::Empty)));
    }

    #[test]
    fn frames_wrap_around_the_end() {
        let r = Ring::heap(256, 0);
        for i in 0..1000u32 {
            let item: Vec<u8> = (0..(i % 37) as u8).collect();
            r.send(&item, None).unwrap();
            assert_eq!(recv_vec(&r, None).unwrap(), item);
        }
    }

    #[test]
    fn bounded_counts_items() {
        let r = Ring::heap(4096, 2);
        r.send(b"a", soon(0)).unwrap();
        r.send(b"b", soon(0)).unwrap();
        assert!(r.is_full());
        let t = Instant::now();
        assert!(matches!(r.send(b"c", soon(100)), Err(Error::Full)));
        assert!(t.elapsed() >= Duration::from_millis(90));
        assert_eq!(recv_vec(&r, None).unwrap(), b"a");
        r.send(b"c", soon(0)).unwrap();
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn byte_room_blocks_then_frees() {
        let r = Ring::heap(256, 0);
        r.send(&[1; 200], None).unwrap();
        assert!(matches!(r.send(&[2; 100], soon(20)), Err(Error::Full)));
        assert_eq!(recv_vec(&r, None).unwrap(), vec![1; 200]);
        r.send(&[2; 100], soon(0)).unwrap();
    }

    #[test]
    fn an_item_larger_than_the_ring_streams_through() {
        let r = Arc::new(Ring::heap(1024, 0));
        let item: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let r2 = r.clone();
        let it = item.clone();
        let t = thread::spawn(move || r2.send(&it, None).unwrap());
        assert_eq!(recv_vec(&r, soon(10_000)).unwrap(), item);
        t.join().unwrap();
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_timed_out_stream_is_discarded_whole() {
        let r = Ring::heap(1024, 0);
        // Nobody reads: the stream fills the ring and times out.
        assert!(matches!(r.send(&[9; 5000], soon(50)), Err(Error::Full)));
        assert_eq!(r.len(), 0);
        // The pieces and the ABORT drain away; the next item arrives intact.
        let r = Arc::new(r);
        let r2 = r.clone();
        let t = thread::spawn(move || r2.send(b"after", None).unwrap());
        assert_eq!(recv_vec(&r, soon(10_000)).unwrap(), b"after");
        t.join().unwrap();
    }

    /// A pid that is certainly dead: a reaped child's.
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn a_producer_dead_mid_stream_is_aborted_and_the_ring_goes_on() {
        let r = Arc::new(Ring::heap(1024, 0));
        // Simulate a producer that wrote the first pieces of a big item, then died holding
        // the lock: stream from a thread and let it time out, then forge its death.
        let r2 = r.clone();
        thread::spawn(move || {
            let lock = r2.plock();
            assert!(lock.try_lock(pid::current()));
            r2.word32(OFF_P_STREAM).store(IN_ITEM, Ordering::SeqCst);
            r2.write_frame(FIRST, &[5; 300]);
            r2.write_frame(MORE, &[5; 300]);
            lock.word.store(dead_pid() | WAITERS, Ordering::SeqCst);
        })
        .join()
        .unwrap();
        // A consumer takes the first pieces, then sees the producer is dead and aborts the
        // item itself; with no other item it reports Empty at its deadline.
        let t = Instant::now();
        assert!(matches!(recv_vec(&r, soon(300)), Err(Error::Empty)));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(r.plock().word.load(Ordering::SeqCst), UNLOCKED);
        r.send(b"next", soon(1000)).unwrap();
        assert_eq!(recv_vec(&r, soon(1000)).unwrap(), b"next");
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_new_producer_repairs_a_dead_ones_stream() {
        let r = Ring::heap(1024, 0);
        let lock = r.plock();
        assert!(lock.try_lock(pid::current()));
        r.word32(OFF_P_STREAM).store(IN_ITEM, Ordering::SeqCst);
        r.write_frame(FIRST, &[5; 300]);
        lock.word.store(dead_pid(), Ordering::SeqCst);
        r.send(b"fresh", soon(2000)).unwrap();
        assert_eq!(recv_vec(&r, soon(1000)).unwrap(), b"fresh");
        assert!(matches!(recv_vec(&r, soon(0)), Err(Error::Empty)));
    }

    #[test]
    fn a_consumer_dead_mid_stream_leaves_the_rest_skipped() {
        let r = Ring::heap(1024, 0);
        // A complete streamed item whose consumer died after its first piece.
        r.write_frame(FIRST, &[1; 300]);
        r.write_frame(LAST, &[1; 300]);
        r.write_frame(WHOLE, b"ok");
        let first = units(HEADER + 300);
        r.head().store(pack(first, 0), Ordering::SeqCst);
        r.word32(OFF_C_TAIL_SEEN).store(first, Ordering::SeqCst);
        r.clock().word.store(dead_pid() | WAITERS, Ordering::SeqCst);
        assert_eq!(r.len(), 2);
        assert_eq!(recv_vec(&r, soon(2000)).unwrap(), b"ok");
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn task_done_and_join() {
        let r = Ring::heap(4096, 0);
        assert!(r.join(soon(0)));
        assert!(r.task_done().is_err());
        r.send(b"x", None).unwrap();
        r.send(b"y", None).unwrap();
        assert!(!r.join(soon(30)));
        r.task_done().unwrap();
        r.task_done().unwrap();
        assert!(matches!(r.task_done(), Err(Error::ValueError(_))));
        assert!(r.join(soon(0)));
    }

    #[test]
    fn many_producers_many_consumers_exact_sum() {
        const PRODUCERS: u64 = 3;
        const CONSUMERS: usize = 3;
        const N: u64 = 20_000;
        let r = Arc::new(Ring::heap(2048, 0));
        let start = Arc::new(Barrier::new(PRODUCERS as usize + CONSUMERS));
        let mut producers = Vec::new();
        for p in 0..PRODUCERS {
            let (r, start) = (r.clone(), start.clone());
            producers.push(thread::spawn(move || {
                start.wait();
                for i in 0..N {
                    let v = p * N + i;
                    // Mix small, medium and ring-exceeding items.
                    let len = match i % 1000 {
                        0 => 5000,
                        n if n % 10 == 0 => 300,
                        _ => 8,
                    };
                    let mut item = vec![0u8; len];
                    item[..8].copy_from_slice(&v.to_le_bytes());
                    r.send(&item, None).unwrap();
                }
            }));
        }
        let mut consumers = Vec::new();
        for _ in 0..CONSUMERS {
            let (r, start) = (r.clone(), start.clone());
            consumers.push(thread::spawn(move || {
                start.wait();
                let (mut sum, mut n) = (0u64, 0u64);
                while let Ok(v) = r.recv(soon(2000), |b| {
                    u64::from_le_bytes(b[..8].try_into().unwrap())
                }) {
                    if v == u64::MAX {
                        break;
                    }
                    sum += v;
                    n += 1;
                }
                (sum, n)
            }));
        }
        for p in producers {
            p.join().unwrap();
        }
        for _ in 0..CONSUMERS {
            r.send(&u64::MAX.to_le_bytes(), None).unwrap();
        }
        let (mut sum, mut n) = (0, 0);
        for c in consumers {
            let (s, k) = c.join().unwrap();
            sum += s;
            n += k;
        }
        let total = PRODUCERS * N;
        assert_eq!(n, total);
        assert_eq!(sum, total * (total - 1) / 2);
        assert_eq!(r.len(), 0);
    }
}
