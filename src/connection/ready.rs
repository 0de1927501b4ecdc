//! Level-triggered readiness of a ring for any external poller: a flag (an eventfd, shared
//! by every process holding either end of the ring) that is readable iff a frame waits in
//! the ring, kept so at no cost while nobody polls.
//!
//! **Who writes what.** Pollers count themselves in the high half of the ring's
//! `pipe.sleepers` word ([`POLLER`] units; the low half counts receivers asleep on a
//! pipe's socket, `doorbell.rs`), with [`watch`]: a SeqCst add, a SeqCst fence, then
//! [`settle`]. Every side that changes whether the ring is empty (a sender after its
//! publishing SeqCst swap, a receiver after the SeqCst swap that moves the head) reads the
//! word once (SeqCst: the same load the doorbell needs, so a sender's fast path stays one
//! swap and one load) and, only if a poller is counted, settles. Nobody else touches the
//! flag.
//!
//! **Settling** makes the flag say what the ring says: look (`pending`), set or clear the
//! flag to match, fence, look again, and repeat while the second look disagrees. Take the
//! last flag operation of a run, made by some settle `C`: `C` looked after it and agreed
//! (else it would have operated again). Every change of the ring made while a poller was
//! counted is followed by its maker's settle, whose first flag operation comes after the
//! change and no later than `C`'s (it is not the last); the flag's kernel lock orders
//! the two, so `C`'s look sees the change. A change made before the poller counted itself
//! (its maker read no poller) is ordered by the two SeqCst pairs (swap then load, add then
//! fence) before the registering poller's first look, as in `doorbell.rs`. So, once
//! changes stop, the flag is readable iff a frame waits: no lost readiness, and no
//! readiness left behind once the ring is drained.
//!
//! **Limits.** A process killed between its change and its settle leaves the flag stale
//! until the next change or poll; our own pollers (`wait()`, the futures) settle again
//! when woken for nothing, so a stale flag costs a spurious wake-up, never a hang. A poller
//! killed while counted leaves the count high: every change then settles (a syscall),
//! harmless. While pollers are counted, each send and each receive costs one eventfd
//! syscall.

use std::sync::atomic::Ordering;

use crate::shim::Word;

/// One poller in the `sleepers` word.
pub(crate) const POLLER: u32 = 1 << 16;
/// The low half: receivers asleep on a pipe's socket.
pub(crate) const SLEEPERS: u32 = POLLER - 1;

/// The readiness flag's two operations (the eventfd in production, a model flag under
/// loom). Both never block, and each is atomic with respect to the other (the kernel's
/// lock on the counter).
pub(crate) trait Flag {
    fn set(&self);
    fn clear(&self);
}

/// Makes the flag match the ring (see the module docs).
pub(crate) fn settle<W: Word, F: Flag + ?Sized>(flag: &F, pending: impl Fn() -> bool) {
    let mut want = pending();
    loop {
        if want {
            flag.set();
        } else {
            flag.clear();
        }
        // The flag's operation before the second look (production: the syscall is one).
        W::fence(Ordering::SeqCst);
        let now = pending();
        if now == want {
            return;
        }
        want = now;
    }
}

/// Counts a poller in `word`, then settles: from now on every change of the ring keeps the
/// flag in step.
pub(crate) fn watch<W: Word, F: Flag + ?Sized>(word: &W, flag: &F, pending: impl Fn() -> bool) {
    word.fetch_add(POLLER, Ordering::SeqCst);
    // Orders the count before the first look (see the module docs).
    W::fence(Ordering::SeqCst);
    settle::<W, F>(flag, pending);
}

/// Undoes [`watch`]: never below zero, whatever another process wrote.
pub(crate) fn unwatch<W: Word>(word: &W) {
    let mut n = word.load(Ordering::Relaxed);
    while n >= POLLER {
        match word.compare_exchange_weak(n, n - POLLER, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => n = now,
        }
    }
}

/// The word as a side that just changed the ring (with a SeqCst swap) reads it: one load.
#[inline]
pub(crate) fn after_change<W: Word>(word: &W) -> u32 {
    // Production relies on the SeqCst total order of the caller's swap and this load;
    // under the model only a fence stands for it (a no-op in production).
    W::model_seqcst_fence();
    word.load(Ordering::SeqCst)
}

/// A side that changed the ring: settles if [`after_change`]'s word counts a poller.
#[inline]
pub(crate) fn changed<W: Word, F: Flag + ?Sized>(word: &W, flag: &F, pending: impl Fn() -> bool) {
    if after_change(word) >= POLLER {
        settle::<W, F>(flag, pending);
    }
}

/// An eventfd as the flag.
#[derive(Clone, Copy)]
pub(crate) struct EventFd<'a>(pub(crate) std::os::fd::BorrowedFd<'a>);

impl Flag for EventFd<'_> {
    #[inline]
    fn set(&self) {
        crate::sys::ready::flag_set(self.0);
    }

    #[inline]
    fn clear(&self) {
        crate::sys::ready::flag_clear(self.0);
    }
}

#[cfg(test)]
mod model;
