//! The barrier: Python's `threading.Barrier` state machine, under a robust mutex.
//!
//! **Words.** After the lock block: `state` (`FILLING`, `DRAINING`, `RESETTING`, `BROKEN`),
//! `count` (parties inside `wait`), `parties`, and `seq`, a change counter. Every field but
//! `seq` is read and written only under the lock. A party that must wait reads `seq` under
//! the lock, releases it, and sleeps while `seq` is unchanged; every state change bumps
//! `seq` under the lock and wakes all. Reading and bumping under the same lock means no
//! change can slip between a waiter's check and its sleep.
//!
//! **States.** As in CPython: the last arriving party turns `FILLING` into `DRAINING`; the
//! parties leave one by one and the last one out turns it back to `FILLING`, so a party of
//! the next round cannot overtake a slow leaver of this one. `abort` and a timeout set
//! `BROKEN`; `reset` sets `RESETTING` (waiters leave with `BrokenBarrier`, the last one out
//! makes it `FILLING`). A party process that dies inside `wait` stays counted: the others
//! see their timeouts, as with CPython's barrier.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::mutex;
use crate::shim::{Me, Wake, Word};

/// Parties are arriving.
pub(crate) const FILLING: u32 = 0;
/// The round is complete; its parties are leaving.
pub(crate) const DRAINING: u32 = 1;
/// `reset` was called while parties waited; they are leaving broken.
pub(crate) const RESETTING: u32 = 2;
/// Aborted or timed out: every `wait` fails until `reset`.
pub(crate) const BROKEN: u32 = 3;

/// The barrier's words.
pub(crate) struct Words<'a, W> {
    /// The robust lock word (start of its block).
    pub(crate) lock: &'a W,
    /// The state, one of the consts above.
    pub(crate) state: &'a W,
    /// Parties inside `wait`.
    pub(crate) count: &'a W,
    /// The change counter waiters sleep on.
    pub(crate) seq: &'a W,
    /// How many parties make a round.
    pub(crate) parties: u32,
}

impl<W> Clone for Words<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W> Copy for Words<'_, W> {}

/// Why a `wait` failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Broken;

struct Held<'a, W: Word> {
    w: Words<'a, W>,
    me: Me,
}

impl<'a, W: Word> Held<'a, W> {
    fn lock(w: Words<'a, W>, deadline: Option<Instant>) -> Option<Self> {
        let me = W::me();
        let died = mutex::lock(w.lock, me, deadline)?;
        if died {
            // A party died mid-update: nothing it left can be trusted.
            w.state.store(BROKEN, Ordering::Relaxed);
            w.count.store(0, Ordering::Relaxed);
        }
        Some(Held { w, me })
    }
    fn state(&self) -> u32 {
        self.w.state.load(Ordering::Relaxed)
    }
    fn set_state(&self, s: u32) {
        self.w.state.store(s, Ordering::Relaxed);
        self.w.seq.fetch_add(1, Ordering::Relaxed);
        self.w.seq.wake_all();
    }
    fn count(&self) -> u32 {
        self.w.count.load(Ordering::Relaxed)
    }
    /// Releases the lock, sleeps for a change, retakes it; false if time ran out.
    fn wait_change(self, deadline: Option<Instant>) -> (Option<Self>, bool) {
        let w = self.w;
        let seen = w.seq.load(Ordering::Relaxed);
        drop(self);
        let mut timed_out = false;
        while w.seq.load(Ordering::Relaxed) == seen {
            if w.seq.wait(seen, deadline) == Wake::TimedOut {
                timed_out = true;
                break;
            }
        }
        // Retake the lock even after a timeout: the caller must leave under it.
        (Held::lock(w, None), !timed_out)
    }
}

impl<W: Word> Drop for Held<'_, W> {
    fn drop(&mut self) {
        // A dying party (a model victim) leaves the lock to the kernel, as a killed one does.
        if !W::dying() {
            mutex::unlock(self.w.lock, self.me);
        }
    }
}

/// Waits for the round; `Ok(index)` (arrival order, distinct per party).
pub(crate) fn wait<W: Word>(w: Words<'_, W>, deadline: Option<Instant>) -> Result<usize, Broken> {
    let Some(mut held) = Held::lock(w, deadline) else {
        return Err(Broken);
    };
    // Wait for the previous round's parties to leave.
    while matches!(held.state(), DRAINING | RESETTING) {
        let (h, in_time) = held.wait_change(deadline);
        held = h.ok_or(Broken)?;
        if !in_time && matches!(held.state(), DRAINING | RESETTING) {
            return Err(Broken);
        }
    }
    if held.state() == BROKEN {
        return Err(Broken);
    }
    let index = held.count();
    w.count.store(index + 1, Ordering::Relaxed);
    let result = if index + 1 == w.parties {
        held.set_state(DRAINING);
        Ok(index as usize)
    } else {
        loop {
            if held.state() != FILLING {
                break;
            }
            let (h, in_time) = held.wait_change(deadline);
            held = h.ok_or(Broken)?;
            if !in_time && held.state() == FILLING {
                held.set_state(BROKEN);
                break;
            }
        }
        if matches!(held.state(), BROKEN | RESETTING) {
            Err(Broken)
        } else {
            Ok(index as usize)
        }
    };
    let left = held.count().saturating_sub(1);
    w.count.store(left, Ordering::Relaxed);
    if left == 0 && matches!(held.state(), DRAINING | RESETTING) {
        held.set_state(FILLING);
    }
    result
}

/// Breaks the barrier: current and future waiters fail until `reset`.
pub(crate) fn abort<W: Word>(w: Words<'_, W>) {
    if let Some(held) = Held::lock(w, None) {
        held.set_state(BROKEN);
    }
}

/// Returns the barrier to its initial state; current waiters fail.
pub(crate) fn reset<W: Word>(w: Words<'_, W>) {
    if let Some(held) = Held::lock(w, None) {
        if held.count() > 0 {
            if matches!(held.state(), FILLING | BROKEN) {
                held.set_state(RESETTING);
            }
        } else {
            held.set_state(FILLING);
        }
    }
}

/// Parties waiting in the current round.
pub(crate) fn n_waiting<W: Word>(w: Words<'_, W>) -> usize {
    if w.state.load(Ordering::Relaxed) == FILLING {
        w.count.load(Ordering::Relaxed) as usize
    } else {
        0
    }
}

/// Whether the barrier is broken.
pub(crate) fn is_broken<W: Word>(w: Words<'_, W>) -> bool {
    w.state.load(Ordering::Relaxed) == BROKEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    #[repr(C, align(64))]
    struct Block([AtomicU32; 20]);

    fn words(b: &Block, parties: u32) -> Words<'_, AtomicU32> {
        Words {
            lock: &b.0[0],
            state: &b.0[16],
            count: &b.0[17],
            seq: &b.0[18],
            parties,
        }
    }

    #[test]
    fn rounds_give_distinct_indices() {
        let b = Arc::new(Block(std::array::from_fn(|_| AtomicU32::new(0))));
        let threads: Vec<_> = (0..5)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .map(|_| wait(words(&b, 5), None).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Vec<usize>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for round in 0..200 {
            let mut idx: Vec<usize> = all.iter().map(|v| v[round]).collect();
            idx.sort();
            assert_eq!(idx, vec![0, 1, 2, 3, 4]);
        }
        assert_eq!(n_waiting(words(&b, 5)), 0);
        assert!(!is_broken(words(&b, 5)));
    }

    #[test]
    fn timeout_breaks_and_reset_repairs() {
        let b = Block(std::array::from_fn(|_| AtomicU32::new(0)));
        let w = words(&b, 2);
        let d = Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(wait(w, d), Err(Broken));
        assert!(is_broken(w));
        assert_eq!(wait(w, None), Err(Broken));
        reset(w);
        assert!(!is_broken(w));
        assert_eq!(words(&b, 1).parties, 1);
        assert_eq!(wait(words(&b, 1), None), Ok(0));
    }
}

/// The barrier under loom, over this code and the robust mutex.
#[cfg(test)]
mod model {
    use super::*;
    use crate::shim::model::{MWord, check};
    use std::sync::Arc;

    struct Shared([MWord; 4]);

    fn shared() -> Arc<Shared> {
        Arc::new(Shared(std::array::from_fn(|_| MWord::new(0))))
    }

    fn words(s: &Shared) -> Words<'_, MWord> {
        Words {
            lock: &s.0[0],
            state: &s.0[1],
            count: &s.0[2],
            seq: &s.0[3],
            parties: 2,
        }
    }

    /// Two parties, two rounds: each round gives indices 0 and 1, whoever leaves last or
    /// arrives first for the next round.
    #[test]
    fn two_parties_two_rounds() {
        check(|| {
            let s = shared();
            let s2 = s.clone();
            let t = loom::thread::spawn(move || [wait(words(&s2), None), wait(words(&s2), None)]);
            let mine = [wait(words(&s), None), wait(words(&s), None)];
            let theirs = t.join().unwrap();
            for round in 0..2 {
                let (a, b) = (mine[round].as_ref(), theirs[round].as_ref());
                let mut idx = [*a.unwrap(), *b.unwrap()];
                idx.sort();
                assert_eq!(idx, [0, 1], "round {round}");
            }
            assert_eq!(n_waiting(words(&s)), 0);
            assert!(!is_broken(words(&s)));
        });
    }

    /// A party waits while another aborts: the wait fails (before or after it slept), the
    /// barrier stays broken until `reset`, and then a full round works again.
    #[test]
    fn abort_breaks_and_reset_repairs() {
        check(|| {
            let s = shared();
            let s2 = s.clone();
            let t = loom::thread::spawn(move || wait(words(&s2), None));
            abort(words(&s));
            assert_eq!(t.join().unwrap(), Err(Broken));
            assert!(is_broken(words(&s)));
            assert_eq!(wait(words(&s), None), Err(Broken));
            reset(words(&s));
            assert!(!is_broken(words(&s)));
            let s2 = s.clone();
            let t = loom::thread::spawn(move || wait(words(&s2), None));
            let mine = wait(words(&s), None).unwrap();
            assert_eq!(mine + t.join().unwrap().unwrap(), 1);
        });
    }
}
