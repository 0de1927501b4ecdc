//! What the ring runs on: its words' types and the checker of its data area.
//!
//! The ring's protocol (`control.rs` to `join.rs`) is written once, generic over a
//! [`Runtime`]: [`Os`], the default type parameter everywhere, is `std`'s atomics in shared
//! memory, the kernel's futex and no checker at all (`()`, whose hooks are empty inline
//! functions), so `Ring` means the production ring and compiles to what it did before the
//! shim. Under the model (`Model`, tests only), the words are `shim::model`'s loom words and
//! every access to the data area is reported to one loom cell per frame unit, so loom
//! flags a producer writing bytes a consumer may still be reading, while a producer and a
//! consumer busy in disjoint units do not conflict.

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::shim::{Word, Word64};

/// A runtime for the ring; see the module docs.
pub(crate) trait Runtime: Sized + 'static {
    /// A 32-bit shared word (locks, eventcounts, flags).
    type W: Word;
    /// A 64-bit shared word (positions, the header's capacity).
    type W64: Word64;
    /// What checks the data area's accesses.
    type Cells: Cells;
}

/// A checker of the data area: told of every access before it happens.
pub(crate) trait Cells: Send + Sync {
    /// The producer-lock holder is about to write `len` bytes from byte `index` (wrapping).
    fn writing(&self, index: usize, len: usize);
    /// The consumer-lock holder is about to read `len` bytes from byte `index` (wrapping).
    fn reading(&self, index: usize, len: usize);
}

/// The operating system: the production runtime.
#[derive(Debug)]
pub(crate) enum Os {}

impl Runtime for Os {
    type W = AtomicU32;
    type W64 = AtomicU64;
    type Cells = ();
}

/// Production checks nothing.
impl Cells for () {
    #[inline(always)]
    fn writing(&self, _index: usize, _len: usize) {}
    #[inline(always)]
    fn reading(&self, _index: usize, _len: usize) {}
}

#[cfg(test)]
pub(crate) use self::model::Model;

/// The model's cells for a data area of `cap` bytes.
#[cfg(test)]
pub(crate) fn model_cells(cap: usize) -> self::model::UnitCells {
    self::model::UnitCells::new(cap)
}

#[cfg(test)]
mod model {
    use super::{Cells, Runtime};
    use crate::queue::ring::frame::UNIT;
    use crate::shim::model::{MWord, MWord64};

    /// The loom model of the runtime.
    #[derive(Debug)]
    pub(crate) enum Model {}

    impl Runtime for Model {
        type W = MWord;
        type W64 = MWord64;
        type Cells = UnitCells;
    }

    /// One loom cell per frame unit of the data area. The bytes themselves live in plain
    /// memory beside (a consumer reads them in place, as borrowed slices); the cells only
    /// carry loom's causality check, which compares each access against every earlier
    /// conflicting one, so it catches an unordered pair however far apart they ran.
    pub(crate) struct UnitCells(Box<[loom::cell::UnsafeCell<()>]>);

    // SAFETY: the cells hold `()`; loom's own bookkeeping, which they update, is shared by
    // design between the model's threads.
    #[allow(unsafe_code)]
    unsafe impl Sync for UnitCells {}
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe impl Send for UnitCells {}

    impl UnitCells {
        pub(crate) fn new(cap: usize) -> UnitCells {
            UnitCells(
                (0..cap / UNIT)
                    .map(|_| loom::cell::UnsafeCell::new(()))
                    .collect(),
            )
        }

        fn units(&self, index: usize, len: usize) -> impl Iterator<Item = usize> + '_ {
            // An empty copy touches nothing (an `Abort`'s payload lies past its frame).
            let n = self.0.len();
            let first = index / UNIT;
            let end = (index + len).div_ceil(UNIT);
            (first..end).map(move |u| u % n)
        }
    }

    impl Cells for UnitCells {
        fn writing(&self, index: usize, len: usize) {
            for u in self.units(index, len) {
                self.0[u].with_mut(|_| ());
            }
        }
        fn reading(&self, index: usize, len: usize) {
            for u in self.units(index, len) {
                self.0[u].with(|_| ());
            }
        }
    }
}
