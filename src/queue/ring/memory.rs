//! The ring's memory: the only file of the queue with `unsafe`.
//!
//! It turns the mapping into a typed [`Control`] page and gives bounds-checked, lock-gated
//! access to the data area behind it. Writes into the data area take a producer
//! [`Guard`], reads a consumer one: the lock protocol (see `super`) is what makes the bytes
//! written and the bytes read disjoint, and the guard types make each side name its lock.
//! Every index is checked against the capacity here, so a corrupt head or tail in shared
//! memory can make a consumer read garbage (which the frame decoder then refuses), but
//! never read or write outside the mapping.
//!
//! Under the model (`Memory::<Model>::model`) the control page is built of loom's words in
//! a heap allocation laid out as the mapping is, and every copy is first reported to the
//! runtime's [`Cells`], one loom cell per unit, which checks that the lock protocol really
//! orders each write after every read of the same bytes (and each read after their write).

#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::AtomicU64;

use super::control::{CONTROL_LEN, Consuming, Control, Guard, Producing};
use super::runtime::{Cells, Os, Runtime};
use crate::error::{Error, Result};
use crate::shared::region::Region;

/// What keeps the ring's memory mapped.
enum Backing {
    Shared(Arc<Region>),
    /// Plain heap memory, for unit tests with threads.
    #[cfg(test)]
    Heap(#[allow(dead_code)] Box<[AtomicU64]>),
    /// Heap memory holding a control page of model words, for the loom models.
    #[cfg(test)]
    Model(#[allow(dead_code)] ModelArea),
}

/// A control page followed by a data area of `cap` bytes (a power of two).
pub(crate) struct Memory<R: Runtime = Os> {
    base: NonNull<u8>,
    cap: usize,
    cells: R::Cells,
    backing: Backing,
    runtime: PhantomData<R>,
}

// SAFETY: the memory is owned by `backing`, which is Send + Sync; shared state is reached
// through atomics (the control page) or under the lock protocol (the data area), which
// already tolerates concurrent access from other processes, so other threads are no worse.
unsafe impl<R: Runtime> Send for Memory<R> {}
// SAFETY: as above.
unsafe impl<R: Runtime> Sync for Memory<R> {}

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
            cells: (),
            backing: Backing::Shared(region),
            runtime: PhantomData,
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
            cells: (),
            backing: Backing::Heap(words),
            runtime: PhantomData,
        }
    }
}

/// The model's memory: a control page of loom words, written in place at the aligned
/// start of `words`, and dropped before them.
#[cfg(test)]
struct ModelArea {
    ctl: NonNull<Control<super::runtime::Model>>,
    #[allow(dead_code)]
    words: Box<[AtomicU64]>,
}

#[cfg(test)]
impl Drop for ModelArea {
    fn drop(&mut self) {
        // SAFETY: `ctl` was written by `Memory::model` and is dropped only here, once.
        unsafe { std::ptr::drop_in_place(self.ctl.as_ptr()) };
    }
}

#[cfg(test)]
impl Memory<super::runtime::Model> {
    /// A model ring's memory: a control page of loom words and a data area of `cap` bytes
    /// (any power of two of at least a unit: models shrink it below the production minimum).
    pub(crate) fn model(cap: usize) -> Self {
        type C = Control<super::runtime::Model>;
        assert!(cap.is_power_of_two() && cap >= super::frame::UNIT);
        assert!(size_of::<C>() <= CONTROL_LEN && align_of::<C>() <= 128);
        let words: Box<[AtomicU64]> = (0..(CONTROL_LEN + cap + 128) / 8)
            .map(|_| AtomicU64::new(0))
            .collect();
        let raw = words.as_ptr().cast_mut().cast::<u8>();
        let base = raw.wrapping_add(raw.align_offset(128));
        let ctl = NonNull::new(base)
            .expect("a boxed slice is never null")
            .cast::<C>();
        // SAFETY: `base` is 128-aligned (checked above to suffice for `C`) and
        // `CONTROL_LEN >= size_of::<C>()` bytes from it lie in `words`, which nobody else
        // reaches yet.
        unsafe { ctl.as_ptr().write(Control::model()) };
        Memory {
            base: ctl.cast(),
            cap,
            cells: super::runtime::model_cells(cap),
            backing: Backing::Model(ModelArea { ctl, words }),
            runtime: PhantomData,
        }
    }
}

impl<R: Runtime> Memory<R> {
    /// The shared region, to serialize the ring into a message.
    pub(crate) fn region(&self) -> Option<&Arc<Region>> {
        match &self.backing {
            Backing::Shared(r) => Some(r),
            #[cfg(test)]
            Backing::Heap(_) | Backing::Model(_) => None,
        }
    }

    /// Bytes in the data area.
    #[inline]
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// The control page.
    #[inline]
    pub(crate) fn control(&self) -> &Control<R> {
        // SAFETY:
        // * `base` is 128-aligned (a page-aligned mapping, or aligned heap memory), and
        //   `CONTROL_LEN >= size_of::<Control>()` bytes from it are ours (checked when made);
        // * for `Os`, `Control` is made only of atomics, for which any bit pattern (and
        //   all-zero, a fresh memfd) is valid, and which every process touches only
        //   atomically; a `Memory<Model>` is made only by `model`, which wrote a
        //   `Control<Model>` there;
        // * the memory lives as long as `self.backing`, so as long as `&self`.
        unsafe { self.base.cast::<Control<R>>().as_ref() }
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
    pub(crate) fn write(&self, _p: &Guard<'_, Producing, R>, index: usize, src: &[u8]) {
        assert!(
            index < self.cap && src.len() <= self.cap,
            "ring write out of range"
        );
        self.cells.writing(index, src.len());
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
        c: &'a Guard<'_, Consuming, R>,
        index: usize,
        len: usize,
    ) -> (&'a [u8], &'a [u8]) {
        let _ = c;
        assert!(
            index < self.cap && len <= self.cap,
            "ring read out of range"
        );
        self.cells.reading(index, len);
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
