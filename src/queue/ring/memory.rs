//! The ring's memory: the only file of the queue with `unsafe`.
//!
//! It turns the mapping into a typed [`Control`] page and gives bounds-checked, lock-gated
//! access to the data area behind it. Writes into the data area take a producer
//! [`Guard`], reads a consumer one: the lock protocol (see `super`) is what makes the bytes
//! written and the bytes read disjoint, and the guard types make each side name its lock.
//! Every index is checked against the capacity here, so a corrupt head or tail in shared
//! memory can make a consumer read garbage (which the frame decoder then refuses), but
//! never read or write outside the mapping.

#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::AtomicU64;

use super::control::{CONTROL_LEN, Consuming, Control, Guard, Producing};
use crate::error::{Error, Result};
use crate::shared::region::Region;

/// What keeps the ring's memory mapped.
enum Backing {
    Shared(Arc<Region>),
    /// Plain heap memory, for unit tests with threads.
    #[cfg(test)]
    Heap(#[allow(dead_code)] Box<[AtomicU64]>),
}

/// A control page followed by a data area of `cap` bytes (a power of two).
pub(crate) struct Memory {
    base: NonNull<u8>,
    cap: usize,
    backing: Backing,
}

// SAFETY: the memory is owned by `backing`, which is Send + Sync; shared state is reached
// through atomics (the control page) or under the lock protocol (the data area), which
// already tolerates concurrent access from other processes, so other threads are no worse.
unsafe impl Send for Memory {}
// SAFETY: as above.
unsafe impl Sync for Memory {}

impl Memory {
    /// Views `region` as a control page and a data area of `cap` bytes.
    pub(crate) fn shared(region: Arc<Region>, cap: usize) -> Result<Memory> {
        if !cap.is_power_of_two() || CONTROL_LEN + cap > region.len() {
            return Err(Error::Codec(format!(
                "not a queue ring: a {cap}-byte data area does not fit a {}-byte region",
                region.len()
            )));
        }
        // Regions are page-aligned mappings: the control page's 128-byte alignment holds.
        let base = NonNull::new(region.as_ptr()).expect("a mapping is never at address 0");
        Ok(Memory {
            base,
            cap,
            backing: Backing::Shared(region),
        })
    }

    /// Zeroed heap memory, for tests with threads.
    #[cfg(test)]
    pub(crate) fn heap(cap: usize) -> Memory {
        assert!(cap.is_power_of_two());
        // One more 128-byte stretch than needed, to align the control page.
        let words: Box<[AtomicU64]> = (0..(CONTROL_LEN + cap + 128) / 8)
            .map(|_| AtomicU64::new(0))
            .collect();
        let raw = words.as_ptr().cast_mut().cast::<u8>();
        let base = raw.wrapping_add(raw.align_offset(128));
        Memory {
            base: NonNull::new(base).expect("a boxed slice is never null"),
            cap,
            backing: Backing::Heap(words),
        }
    }

    /// The shared region, to serialize the ring into a message.
    pub(crate) fn region(&self) -> Option<&Arc<Region>> {
        match &self.backing {
            Backing::Shared(r) => Some(r),
            #[cfg(test)]
            Backing::Heap(_) => None,
        }
    }

    /// Bytes in the data area.
    #[inline]
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// The control page.
    #[inline]
    pub(crate) fn control(&self) -> &Control {
        // SAFETY:
        // * `base` is 128-aligned (a page-aligned mapping, or aligned heap memory), and
        //   `CONTROL_LEN >= size_of::<Control>()` bytes from it are ours (checked when made);
        // * `Control` is made only of atomics, for which any bit pattern (and all-zero, a
        //   fresh memfd) is valid, and which every process touches only atomically;
        // * the memory lives as long as `self.backing`, so as long as `&self`.
        unsafe { self.base.cast::<Control>().as_ref() }
    }

    #[inline]
    fn data(&self) -> *mut u8 {
        // SAFETY: the data area starts right after the control page, inside the allocation.
        unsafe { self.base.as_ptr().add(CONTROL_LEN) }
    }

    /// Copies `src` into the data area from byte `index`, wrapping at its end.
    ///
    /// The caller holds the producer lock (`_p`) and the bytes lie past the tail and before
    /// the head: no consumer reads them until the caller publishes a tail past them.
    #[inline]
    pub(crate) fn write(&self, _p: &Guard<'_, Producing>, index: usize, src: &[u8]) {
        assert!(
            index < self.cap && src.len() <= self.cap,
            "ring write out of range"
        );
        let first = src.len().min(self.cap - index);
        // SAFETY: `index + first <= cap`: inside the data area.
        let dst = unsafe { self.data().add(index) };
        // SAFETY: `src[..first]` and the destination are valid for `first` bytes and
        // disjoint (`src` is private memory of this process, the destination the ring's).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, first) };
        if first < src.len() {
            let rest = &src[first..];
            // SAFETY: the wrapped rest, fewer than `cap` bytes from the start of the area.
            unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), self.data(), rest.len()) };
        }
    }

    /// The published bytes `[index, index + len)` of the data area, as one or two slices
    /// (two when they wrap at the end).
    ///
    /// The caller holds the consumer lock (`c`) and the bytes lie between the head and a
    /// tail it loaded with acquire ordering: published, and not rewritten until the head
    /// moves past them, which takes `&mut` of the same guard, so not while the slices live.
    #[inline]
    pub(crate) fn read<'a>(
        &'a self,
        c: &'a Guard<'_, Consuming>,
        index: usize,
        len: usize,
    ) -> (&'a [u8], &'a [u8]) {
        let _ = c;
        assert!(
            index < self.cap && len <= self.cap,
            "ring read out of range"
        );
        let first = len.min(self.cap - index);
        // SAFETY: `index < cap`: inside the data area.
        let start = unsafe { self.data().add(index) };
        // SAFETY: `index + first <= cap`; the bytes are published and unchanged while the
        // slices live (the contract above).
        let a = unsafe { std::slice::from_raw_parts(start, first) };
        // SAFETY: the wrapped rest starts the data area and is `len - first <= cap` bytes.
        let b = unsafe { std::slice::from_raw_parts(self.data(), len - first) };
        (a, b)
    }
}
