//! The runtime shim: everything the shared-memory protocols ask of the machine, behind one
//! trait, so that the same protocol code runs on the operating system in production and
//! under the [loom](https://docs.rs/loom) model checker in tests.
//!
//! A protocol (the futex primitives of `sync::raw`, the ring of `queue::ring`, the pool's
//! gate) is written against [`Word`] and [`Word64`]: the atomic operations it performs on
//! its shared words, the futex wait and wake on a 32-bit word, the fence it relies on, the
//! thread identity and robust-list bookkeeping of a lock owner, and the points where a
//! process may die. In production the words are `std`'s atomics in shared memory, the
//! futex is the kernel's ([`crate::sys::futex`]), and every hook is an empty inline function:
//! the generic code compiles to what it was before the shim (one monomorphic copy, no
//! indirection). In tests, `model` supplies loom atomics, a futex modelled as the kernel
//! implements it (the value compared under the bucket lock), a kernel that marks a dead
//! owner's locks `OWNER_DIED`, and the "process died here" points.
//!
//! Why a trait and not a `cfg(loom)` swap of the atomic types (tokio's way): mproc's words
//! live in mappings shared with other processes and are *cast* from raw memory, which loom's
//! atomics cannot be. A type parameter lets the model build the same structures on the heap
//! out of loom's atomics while production keeps its casts, and both run in one ordinary
//! `cargo test` with no special build.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::sys::futex;

pub(crate) use crate::sys::futex::Wake;

#[cfg(test)]
pub(crate) mod model;

/// A thread as a lock protocol names it: its kernel thread id (or the model's), and where
/// its robust list lives (0: its deaths go unreported).
pub(crate) use crate::sync::raw::robust::Me;

/// A 32-bit shared word: atomics, futex, and the runtime's hooks.
///
/// Every method mirrors the `std` one of the same name; the associated functions are the
/// runtime's (one runtime per word type).
pub(crate) trait Word: Send + Sync {
    fn load(&self, order: Ordering) -> u32;
    fn store(&self, v: u32, order: Ordering);
    fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32>;
    fn compare_exchange_weak(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32>;
    fn fetch_add(&self, v: u32, order: Ordering) -> u32;
    fn fetch_sub(&self, v: u32, order: Ordering) -> u32;
    fn fetch_and(&self, v: u32, order: Ordering) -> u32;

    /// Blocks while the word holds `expected`, until woken or `deadline` passes. The model
    /// treats a deadline in the past as passed and any other as never passing, so a model
    /// that needs a timeout to make progress deadlocks: a lost wake-up is reported, not
    /// hidden by a timer.
    fn wait(&self, expected: u32, deadline: Option<Instant>) -> Wake;
    /// Wakes up to `n` waiters; returns how many were woken.
    fn wake(&self, n: u32) -> usize;
    /// Wakes every waiter.
    fn wake_all(&self) -> usize {
        self.wake(i32::MAX as u32)
    }

    /// The runtime's monotonic clock, for deadlines and sleep slices. The model's is
    /// frozen, so whether a deadline has passed never depends on how fast the checker ran
    /// (a deadline computed as `now()` is past; `now() + slice` never is, unless a
    /// process died: see `model`).
    #[inline]
    fn now() -> Instant {
        Instant::now()
    }

    /// A fence of the runtime's (loom needs its own to see it).
    fn fence(order: Ordering);
    /// A fence that production gets from the SeqCst total order of the accesses around it,
    /// which loom does not model (it treats SeqCst accesses as AcqRel): a no-op in
    /// production, `fence(SeqCst)` under the model. Each use says which order it stands for.
    #[inline]
    fn model_seqcst_fence() {}
    /// Whether waiters may spin and yield before they sleep (`false` under the model, where
    /// a spin is only more states to explore).
    const SPINS: bool = true;
    /// A point at which the calling process may die (the model kills its victim at each in
    /// turn; nothing in production).
    #[inline]
    fn die_point() {}
    /// Whether the calling thread is dying (a model victim unwinding): a lock guard's drop
    /// must then leave the lock to the "kernel", as a killed process would.
    #[inline]
    fn dying() -> bool {
        false
    }

    /// The calling thread's identity for lock words of this type.
    fn me() -> Me;
    /// Robust-list bookkeeping around taking or releasing the lock in this word (see
    /// `sync::raw::robust`): announce, link, unlink, end the announcement.
    fn set_pending(&self, me: Me);
    fn clear_pending(me: Me);
    fn link(&self, me: Me);
    fn unlink(&self, me: Me);
}

/// A 64-bit shared word (positions, counters); no futex.
pub(crate) trait Word64: Send + Sync {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, v: u64, order: Ordering);
    fn swap(&self, v: u64, order: Ordering) -> u64;
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
}

impl Word for AtomicU32 {
    #[inline]
    fn load(&self, order: Ordering) -> u32 {
        AtomicU32::load(self, order)
    }
    #[inline]
    fn store(&self, v: u32, order: Ordering) {
        AtomicU32::store(self, v, order)
    }
    #[inline]
    fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32> {
        AtomicU32::compare_exchange(self, current, new, success, failure)
    }
    #[inline]
    fn compare_exchange_weak(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32> {
        AtomicU32::compare_exchange_weak(self, current, new, success, failure)
    }
    #[inline]
    fn fetch_add(&self, v: u32, order: Ordering) -> u32 {
        AtomicU32::fetch_add(self, v, order)
    }
    #[inline]
    fn fetch_sub(&self, v: u32, order: Ordering) -> u32 {
        AtomicU32::fetch_sub(self, v, order)
    }
    #[inline]
    fn fetch_and(&self, v: u32, order: Ordering) -> u32 {
        AtomicU32::fetch_and(self, v, order)
    }
    #[inline]
    fn wait(&self, expected: u32, deadline: Option<Instant>) -> Wake {
        futex::wait(self, expected, deadline)
    }
    #[inline]
    fn wake(&self, n: u32) -> usize {
        futex::wake(self, n)
    }
    #[inline]
    fn fence(order: Ordering) {
        std::sync::atomic::fence(order)
    }
    #[inline]
    fn me() -> Me {
        crate::sync::raw::robust::me()
    }
    #[inline]
    fn set_pending(&self, me: Me) {
        crate::sync::raw::robust::set_pending(me, self)
    }
    #[inline]
    fn clear_pending(me: Me) {
        crate::sync::raw::robust::clear_pending(me)
    }
    #[inline]
    fn link(&self, me: Me) {
        crate::sync::raw::robust::link(me, self)
    }
    #[inline]
    fn unlink(&self, me: Me) {
        crate::sync::raw::robust::unlink(me, self)
    }
}

impl Word64 for AtomicU64 {
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
    }
    #[inline]
    fn store(&self, v: u64, order: Ordering) {
        AtomicU64::store(self, v, order)
    }
    #[inline]
    fn swap(&self, v: u64, order: Ordering) -> u64 {
        AtomicU64::swap(self, v, order)
    }
    #[inline]
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        AtomicU64::compare_exchange(self, current, new, success, failure)
    }
}
