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
mod tests {
    use super::*;
    use crate::sync::raw::robust::me;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, AtomicU64};
    use std::time::Duration;

    #[repr(C, align(64))]
    struct Block([AtomicU32; 32]);

    fn block() -> Arc<Block> {
        Arc::new(Block(std::array::from_fn(|_| AtomicU32::new(0))))
    }

    #[test]
    fn many_threads_exclude_each_other() {
        let b = block();
        let counter = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (b, counter) = (b.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let m = me();
                        assert_eq!(lock(&b.0[0], m, None), Some(false));
                        // A non-atomic read-modify-write made of atomics: lost updates
                        // would show if two threads were inside together.
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                        unlock(&b.0[0], m);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 160_000);
        assert_eq!(b.0[0].load(Ordering::Relaxed) & TID_MASK, 0);
    }

    #[test]
    fn timeout_and_try_lock() {
        let b = block();
        let m = me();
        assert_eq!(try_lock(&b.0[0], m), Some(false));
        let b2 = b.clone();
        std::thread::spawn(move || {
            let m = me();
            assert_eq!(try_lock(&b2.0[0], m), None);
            let t = Instant::now();
            assert_eq!(
                lock(
                    &b2.0[0],
                    m,
                    Some(Instant::now() + Duration::from_millis(50))
                ),
                None
            );
            assert!(t.elapsed() >= Duration::from_millis(50));
        })
        .join()
        .unwrap();
        unlock(&b.0[0], m);
        assert!(!is_locked(&b.0[0]));
    }

    #[test]
    fn a_thread_that_dies_holding_the_lock_is_reported() {
        let b = block();
        let b2 = b.clone();
        std::thread::spawn(move || {
            let m = me();
            assert_eq!(lock(&b2.0[0], m, None), Some(false));
            // Exit holding it: the kernel walks this thread's robust list.
        })
        .join()
        .unwrap();
        let m = me();
        assert_eq!(
            lock(&b.0[0], m, Some(Instant::now() + Duration::from_secs(5))),
            Some(true)
        );
        unlock(&b.0[0], m);
        assert_eq!(lock(&b.0[0], m, None), Some(false));
        unlock(&b.0[0], m);
    }

    #[test]
    fn a_sleeping_waiter_is_woken_by_owner_death() {
        let b = block();
        let (tx, rx) = std::sync::mpsc::channel();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let b2 = b.clone();
        let holder = std::thread::spawn(move || {
            let m = me();
            lock(&b2.0[0], m, None);
            locked_tx.send(()).unwrap();
            rx.recv().unwrap();
        });
        locked_rx.recv().unwrap();
        let b3 = b.clone();
        let waiter = std::thread::spawn(move || {
            let m = me();
            let got = lock(&b3.0[0], m, Some(Instant::now() + Duration::from_secs(10)));
            if got.is_some() {
                unlock(&b3.0[0], m);
            }
            got
        });
        std::thread::sleep(Duration::from_millis(50));
        tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(waiter.join().unwrap(), Some(true));
    }

    #[test]
    fn nested_locks_unlink_in_any_order() {
        let (a, b, c) = (block(), block(), block());
        let m = me();
        lock(&a.0[0], m, None);
        lock(&b.0[0], m, None);
        lock(&c.0[0], m, None);
        unlock(&b.0[0], m);
        unlock(&a.0[0], m);
        lock(&a.0[0], m, None);
        unlock(&c.0[0], m);
        unlock(&a.0[0], m);
        // The list is consistent again: a thread death now must not trip over stale entries.
        let a2 = a.clone();
        std::thread::spawn(move || {
            lock(&a2.0[0], me(), None);
        })
        .join()
        .unwrap();
        assert_eq!(lock(&a.0[0], m, None), Some(true));
        unlock(&a.0[0], m);
    }

    #[test]
    fn reentrant_counts_levels() {
        let b = block();
        let m = me();
        let (w, c) = (&b.0[0], &b.0[COUNT_OFFSET / 4]);
        for _ in 0..3 {
            assert_eq!(reentrant::lock(w, c, m, None), Some(false));
        }
        let b2 = b.clone();
        let other = move || {
            let m = me();
            reentrant::try_lock(&b2.0[0], &b2.0[COUNT_OFFSET / 4], m).is_some()
        };
        assert!(!std::thread::spawn(other).join().unwrap());
        for _ in 0..3 {
            assert!(is_locked(w));
            reentrant::unlock(w, c, m);
        }
        assert!(!is_locked(w));
    }
}

/// The robust mutex under loom, over this code, with a process that dies at each of its
/// die points in turn.
#[cfg(test)]
mod model {
    use super::*;
    use crate::shim::model::{Fate, MWord, check, marked_at_death, victim};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    struct Shared {
        lock: MWord,
        /// Threads inside the critical section (a dead owner's count is reset by the next).
        inside: MWord,
    }

    /// Enters the critical section: nobody else may be in it.
    fn enter(s: &Shared, owner_died: bool) {
        if owner_died {
            // What the dead owner left is the survivor's to repair.
            s.inside.store(0, Ordering::Relaxed);
        }
        assert_eq!(
            s.inside.fetch_add(1, Ordering::Relaxed),
            0,
            "two owners at once"
        );
    }

    fn leave(s: &Shared) {
        s.inside.fetch_sub(1, Ordering::Relaxed);
    }

    /// The victim takes the lock, works (a die point inside), releases it; the survivor
    /// contends, then takes the lock once more after the victim's end. For every die point
    /// the victim can reach: the survivor always gets the lock (a stranded lock deadlocks),
    /// the two never hold it together, and `owner_died` is reported once exactly when the
    /// victim died holding the lock (the kernel marked it), never otherwise.
    #[test]
    fn owner_death_at_every_die_point() {
        static DIED: AtomicBool = AtomicBool::new(false);
        let mut k = 0;
        loop {
            DIED.store(false, std::sync::atomic::Ordering::SeqCst);
            check(move || {
                let s = Arc::new(Shared {
                    lock: MWord::new(0),
                    inside: MWord::new(0),
                });
                let s2 = s.clone();
                let v = loom::thread::spawn(move || {
                    let fate = victim(Some(k), || {
                        let me = MWord::me();
                        let died = lock(&s2.lock, me, None).unwrap();
                        enter(&s2, died);
                        MWord::die_point();
                        leave(&s2);
                        unlock(&s2.lock, me);
                        died
                    });
                    (fate, marked_at_death())
                });
                let me = MWord::me();
                let first = lock(&s.lock, me, None).unwrap();
                enter(&s, first);
                leave(&s);
                unlock(&s.lock, me);
                let (fate, marked) = v.join().unwrap();
                let second = lock(&s.lock, me, None).unwrap();
                unlock(&s.lock, me);
                let reported = usize::from(first) + usize::from(second);
                match fate {
                    Fate::Lived(victim_saw) => {
                        assert!(!victim_saw && reported == 0, "owner_died without a death");
                    }
                    Fate::Died => {
                        DIED.store(true, std::sync::atomic::Ordering::SeqCst);
                        assert!(marked <= 1);
                        assert_eq!(reported, marked, "owner_died reported {reported} times");
                    }
                }
                assert!(!is_locked(&s.lock));
            });
            if !DIED.load(std::sync::atomic::Ordering::SeqCst) {
                // No schedule reaches die point k: every point has been a death.
                assert!(k >= 3, "the victim never reached its die points");
                break;
            }
            k += 1;
        }
    }
}
