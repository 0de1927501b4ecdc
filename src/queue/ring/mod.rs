//! The ring: a bounded many-producer, many-consumer byte ring in shared memory.
//!
//! The protocol is told in [`crate::queue`]'s module docs; each file here opens with its
//! part of it:
//!
//! * `control.rs`: the typed control page (who writes which word) and the side locks;
//! * `memory.rs`: the mapping, and the only `unsafe` of the queue (copies in and out of
//!   the data area, gated by the side locks);
//! * `frame.rs`: frame headers and their decoder;
//! * `eventcount.rs`: sleeping and waking without lost wake-ups;
//! * `produce.rs` and `writer.rs`: putting an item (whole or streamed), and repairing what
//!   a dead producer left;
//! * `consume.rs`: getting an item, and skipping what a dead consumer left;
//! * `join.rs`: JoinableQueue's count of acknowledged items;
//! * `pipe.rs`: what a pipe's ring needs besides (sleepers in `poll`, descriptor records);
//! * `runtime.rs`: what the protocol runs on: the operating system by default, the loom
//!   model in tests (`model.rs` holds the models, over this very code).

mod consume;
mod control;
mod eventcount;
pub(crate) mod frame;
mod join;
mod memory;
mod pipe;
mod produce;
mod runtime;
mod writer;

#[cfg(test)]
mod hostile;
#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use self::control::{CONTROL_LEN, Control, MAGIC, UNBOUNDED};
use self::frame::UNIT;
use self::memory::Memory;
use self::runtime::{Os, Runtime};
use crate::error::{Error, Result};
use crate::shared::region::Region;
use crate::shim::{Word, Word64};

pub(crate) use self::writer::ItemWriter;

/// The default data area: 1 MiB of frames (pages are touched only as the ring cycles).
pub(crate) const DEFAULT_CAPACITY: usize = 1 << 20;
const MIN_CAPACITY: usize = 256;
/// Positions are u32 units, so the area may span at most 2^31 units.
const MAX_CAPACITY: usize = 1 << 34;

// ---- Positions: `(items << 32) | position in units` ----

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

/// One ring. Cheap to share within a process as `Arc<Ring>`; travels to other processes as
/// its region ([`Ring::region`], [`Ring::attach`]). Generic over its [`Runtime`] only for
/// the models: `Ring` is the production ring.
pub(crate) struct Ring<R: Runtime = Os> {
    mem: Memory<R>,
    cap_units: u32,
    maxsize: u32,
}

impl<R: Runtime> fmt::Debug for Ring<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.mem.cap())
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
        Ok(Ring::init(
            Memory::shared(region, cap)?,
            maxsize_word(maxsize),
        ))
    }

    /// A ring over plain heap memory, for tests with threads.
    #[cfg(test)]
    pub(crate) fn heap(capacity: usize, maxsize: usize) -> Ring {
        let cap = data_len(capacity).expect("test capacity in range");
        Ring::init(Memory::heap(cap), maxsize_word(maxsize))
    }

    /// Rebuilds a ring from a region that arrived from another process. Everything in it
    /// is checked before use: the region is shared memory anyone may have written.
    pub(crate) fn attach(region: Arc<Region>) -> Result<Ring> {
        let bad = |what: &str| Error::Codec(format!("not a queue ring: {what}"));
        if region.len() < CONTROL_LEN + MIN_CAPACITY {
            return Err(bad("region too small"));
        }
        if region.atomic_u32(0).load(Ordering::Acquire) != MAGIC {
            return Err(bad("bad magic"));
        }
        let cap = usize::try_from(region.atomic_u64(8).load(Ordering::Relaxed))
            .map_err(|_| bad("bad capacity"))?;
        if !cap.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) {
            return Err(bad("bad capacity"));
        }
        let mem = Memory::shared(region, cap)?;
        let maxsize = mem.control().header.maxsize.load(Ordering::Relaxed);
        Ok(Ring::over(mem, maxsize))
    }

    /// The shared region, to serialize the ring into a message.
    pub(crate) fn region(&self) -> Option<&Arc<Region>> {
        self.mem.region()
    }
}

#[cfg(test)]
impl Ring<runtime::Model> {
    /// A ring of model words for the loom models: `capacity` bytes (a power of two, which
    /// may be below the production minimum), at most `maxsize` items (0: unbounded).
    pub(crate) fn model(capacity: usize, maxsize: usize) -> Self {
        Ring::init(Memory::model(capacity), maxsize_word(maxsize))
    }
}

impl<R: Runtime> Ring<R> {
    fn init(mem: Memory<R>, maxsize: u32) -> Self {
        let h = &mem.control().header;
        h.capacity.store(mem.cap() as u64, Ordering::Relaxed);
        h.maxsize.store(maxsize, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ring::over(mem, maxsize)
    }

    fn over(mem: Memory<R>, maxsize: u32) -> Self {
        Ring {
            cap_units: (mem.cap() / UNIT) as u32,
            mem,
            maxsize,
        }
    }

    /// Bytes of frames the ring holds.
    pub(crate) fn capacity(&self) -> usize {
        self.mem.cap()
    }

    /// The item limit, `None` if unbounded.
    pub(crate) fn maxsize(&self) -> Option<usize> {
        (self.maxsize != UNBOUNDED).then_some(self.maxsize as usize)
    }

    #[inline]
    fn ctl(&self) -> &Control<R> {
        self.mem.control()
    }

    /// The byte index in the data area of unit position `pos`, plus `offset` bytes.
    #[inline]
    fn index(&self, pos: u32, offset: usize) -> usize {
        (pos as usize * UNIT + offset) & (self.mem.cap() - 1)
    }

    /// Complete items in the ring, exactly: published `Last`/`Whole` frames not yet
    /// consumed.
    pub(crate) fn len(&self) -> usize {
        // Head first: the consumed count can then only lag the published one.
        let got = count_of(self.ctl().head.0.load(Ordering::Acquire));
        let put = count_of(self.ctl().tail.0.load(Ordering::Acquire));
        put.wrapping_sub(got) as usize
    }

    /// Whether a bounded ring holds `maxsize` items.
    pub(crate) fn is_full(&self) -> bool {
        self.maxsize != UNBOUNDED && self.len() >= self.maxsize as usize
    }
}
