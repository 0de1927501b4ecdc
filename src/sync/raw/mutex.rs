//! The robust mutex (and its reentrant variant) over one futex word.
//!
//! **Word.** `UNLOCKED` (0), or the owner's TID, plus two flag bits the kernel also knows:
//! `WAITERS` (someone sleeps or will sleep on the word: unlock must wake one) and
//! `OWNER_DIED` (set by the kernel when the owner died; the next taker clears it and
//! reports it). The word sits in a [`BLOCK`](super::robust::BLOCK)-byte block that also
//! holds the robust-list entry and, for the reentrant lock, the recursion count.
//!
//! **Who writes what.** Takers CAS a free word (TID bits 0) to their TID; waiters set
//! `WAITERS` before sleeping, so the owner's release (a CAS to 0) sees it and wakes one.
//! A taker that slept keeps `WAITERS` set, since it cannot know whether others still sleep:
//! at worst one needless wake. The kernel writes `WAITERS|OWNER_DIED` (TID cleared) when
//! the owner dies, and wakes one waiter. Acquire on the taking CAS and Release on the
//! releasing CAS order the protected data; the futex syscalls order the sleep checks.
//!
//! **Contention.** A taker that finds the lock held backs off (the shared
//! [`Backoff`](super::backoff::Backoff)) for a bounded while before sleeping, looking at the
//! word with exponentially growing pauses: each look pulls the word's cache line from the
//! holder, and fewer looks let the holder release sooner (two processes hammering one
//! `Value` went from ~7 M to ~20 M increments/s with the backoff). On an oversubscribed
//! machine it yields instead of spinning, so a descheduled holder gets a CPU back.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::robust::{Me, TID_MASK};
use crate::shim::{Wake, Word};

/// The free word.
pub(crate) const UNLOCKED: u32 = 0;
/// `FUTEX_WAITERS`: a waiter may sleep on the word.
pub(crate) const WAITERS: u32 = 0x8000_0000;
/// `FUTEX_OWNER_DIED`: the last owner died holding the lock.
pub(crate) const OWNER_DIED: u32 = 0x4000_0000;
/// Where the reentrant lock keeps its recursion count, from the word: past the list entry
/// (24..40), on the owner's cache line rather than the contended word's.
pub(crate) const COUNT_OFFSET: usize = 48;

/// How long to spin before sleeping: a holder usually releases within a few hundred ns;
/// one that has not after this is likely descheduled, and sleeping frees our CPU for it.
const SPIN_BUDGET: Duration = Duration::from_micros(10);

/// The fast path of both `try_lock` and `lock`: one CAS from `UNLOCKED`, the lock
/// announced to the robust list around it. On failure the announcement stays pending for
/// the caller's slow path, which clears it.
#[inline]
fn take_free<W: Word>(word: &W, me: Me) -> bool {
    word.set_pending(me);
    let taken = word
        .compare_exchange(UNLOCKED, me.tid, Ordering::Acquire, Ordering::Relaxed)
        .is_ok();
    if taken {
        // A death here leaves the word ours but unlinked: the pending slot covers it.
        W::die_point();
        word.link(me);
        W::clear_pending(me);
    }
    taken
}

/// Takes the lock if it is free. `Some(owner_died)` on success.
#[inline]
pub(crate) fn try_lock<W: Word>(word: &W, me: Me) -> Option<bool> {
    if take_free(word, me) {
        return Some(false);
    }
    try_lock_flagged(word, me)
}

/// A free word that still carries flags (a dead owner, a waiter that left).
#[cold]
fn try_lock_flagged<W: Word>(word: &W, me: Me) -> Option<bool> {
    let mut v = word.load(Ordering::Relaxed);
    while v & TID_MASK == 0 {
        match word.compare_exchange(
            v,
            me.tid | (v & WAITERS),
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                // Taken but not linked yet: the pending slot covers a death here.
                W::die_point();
                word.link(me);
                W::clear_pending(me);
                return Some(v & OWNER_DIED != 0);
            }
            Err(now) => v = now,
        }
    }
    W::clear_pending(me);
    None
}

/// Takes the lock, sleeping until `deadline` (monotonic) at most. `Some(owner_died)` on
/// success, `None` when time ran out.
#[inline]
pub(crate) fn lock<W: Word>(word: &W, me: Me, deadline: Option<Instant>) -> Option<bool> {
    if take_free(word, me) {
        return Some(false);
    }
    lock_slow(word, me, deadline)
}

#[cold]
fn lock_slow<W: Word>(word: &W, me: Me, deadline: Option<Instant>) -> Option<bool> {
    // Spin first: a holder on another CPU usually releases within a few hundred ns, far
    // sooner than a futex sleep and wake (microseconds) would hand the lock over.
    let mut backoff = Backoff::with_budget(SPIN_BUDGET);
    while W::SPINS && !backoff.is_completed() {
        let v = word.load(Ordering::Relaxed);
        if v & TID_MASK == 0
            && word
                .compare_exchange(
                    v,
                    me.tid | v & WAITERS,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            word.link(me);
            W::clear_pending(me);
            return Some(v & OWNER_DIED != 0);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        backoff.snooze();
    }
    let mut slept = false;
    let mut cas = Backoff::new();
    loop {
        let v = word.load(Ordering::Relaxed);
        if v & TID_MASK == 0 {
            let keep = if slept { WAITERS } else { v & WAITERS };
            if word
                .compare_exchange(v, me.tid | keep, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                W::die_point();
                word.link(me);
                W::clear_pending(me);
                return Some(v & OWNER_DIED != 0);
            }
            cas.spin();
            continue;
        }
        if v & WAITERS == 0
            && word
                .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            cas.spin();
            continue;
        }
        slept = true;
        // A waiter that dies here holds nothing: the kernel must not mark the word (its
        // TID is another's), and the WAITERS it set costs one needless wake.
        W::die_point();
        if word.wait(v | WAITERS, deadline) == Wake::TimedOut {
            W::clear_pending(me);
            return None;
        }
    }
}

/// Releases the lock, which this thread holds.
#[inline]
pub(crate) fn unlock<W: Word>(word: &W, me: Me) {
    word.set_pending(me);
    word.unlink(me);
    W::die_point();
    // A CAS from exactly our TID, not a blind swap: a word that is not ours (a guard
    // copied into a forked child, say) is never released by mistake.
    if word
        .compare_exchange(me.tid, UNLOCKED, Ordering::Release, Ordering::Relaxed)
        .is_err()
    {
        unlock_slow(word, me);
    }
    W::clear_pending(me);
}

#[cold]
fn unlock_slow<W: Word>(word: &W, me: Me) {
    let mut v = word.load(Ordering::Relaxed);
    while v & TID_MASK == me.tid {
        match word.compare_exchange(v, UNLOCKED, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => {
                if v & WAITERS != 0 {
                    word.wake(1);
                }
                return;
            }
            Err(now) => v = now,
        }
    }
}

/// Whether the lock is held by someone (a dead owner's lock counts as free).
pub(crate) fn is_locked<W: Word>(word: &W) -> bool {
    word.load(Ordering::Relaxed) & TID_MASK != 0
}

/// The owner's TID, if held.
pub(crate) fn owner<W: Word>(word: &W) -> Option<u32> {
    match word.load(Ordering::Relaxed) & TID_MASK {
        0 => None,
        tid => Some(tid),
    }
}

/// The reentrant lock: the same word, plus a recursion count only its owner touches.
pub(crate) mod reentrant {
    use super::*;

    /// Takes the lock or, if this thread holds it, counts one more level.
    /// `Some(owner_died)` on success.
    #[inline]
    pub(crate) fn lock<W: Word>(
        word: &W,
        count: &W,
        me: Me,
        deadline: Option<Instant>,
    ) -> Option<bool> {
        // Only this thread can have written its own TID into the word.
        if word.load(Ordering::Relaxed) & TID_MASK == me.tid {
            let c = count.load(Ordering::Relaxed);
            assert!(c < u32::MAX, "RLock acquired more than u32::MAX times");
            count.store(c + 1, Ordering::Relaxed);
            return Some(false);
        }
        let died = super::lock(word, me, deadline)?;
        count.store(1, Ordering::Relaxed);
        Some(died)
    }

    /// As [`lock`], without waiting.
    #[inline]
    pub(crate) fn try_lock<W: Word>(word: &W, count: &W, me: Me) -> Option<bool> {
        if word.load(Ordering::Relaxed) & TID_MASK == me.tid {
            return lock(word, count, me, None);
        }
        let died = super::try_lock(word, me)?;
        count.store(1, Ordering::Relaxed);
        Some(died)
    }

    /// Drops one level; releases the lock at the last.
    #[inline]
    pub(crate) fn unlock<W: Word>(word: &W, count: &W, me: Me) {
        let c = count.load(Ordering::Relaxed);
        if c <= 1 {
            count.store(0, Ordering::Relaxed);
            super::unlock(word, me);
        } else {
            count.store(c - 1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;

/// The robust mutex under loom, over this code, with a process that dies at each of its
/// die points in turn.
#[cfg(test)]
mod model;
