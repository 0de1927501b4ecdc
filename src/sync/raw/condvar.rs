//! The condition variable: notifications as tokens that only the waiters present at the
//! notify can take.
//!
//! **Words.** A robust lock of its own (the condition's *internal* lock, held only inside
//! these functions, never while sleeping) guards the state: `waiters` (counted waiters, not
//! yet returned), the arrival generation `gen` and `fresh` (someone arrived during `gen`),
//! and [`POOLS`] token pools, each a `(label, count)` pair: `count` notifications issued by
//! a notify that saw every waiter of generation `label` or older. `seq`, bumped by every
//! notify, is the futex word waiters sleep on.
//!
//! **Who writes what.** A waiter counts itself and notes its generation *while still
//! holding the user's lock* ([`Cond::prepare_wait`]), then releases that lock and sleeps on
//! `seq`. `notify(n)` issues `k = min(n, waiters - tokens)` tokens (the waiters not yet
//! notified), labelled with the current generation, which it closes if anyone arrived
//! during it, so a later waiter carries a later generation. A waiter may take a token only
//! from a pool whose label is its own generation or later, and takes the oldest it may:
//! exactly as many waiters return notified as were notified, and a notification issued
//! before a waiter arrived can never be taken by it. This is what the previous single-word
//! design lacked (its tokens were anyone's): the last party of a cyclic barrier re-entered
//! `wait` and took the token of the party it had just notified, which slept for ever.
//! Taking the oldest eligible token strands none: an older waiter may take any token a
//! younger one may, so each notify's tokens can always be matched to its waiters. A waiter
//! whose time runs out takes a token if one is there for it (it was notified after all) or
//! else uncounts itself, under the lock, so no token outlives its waiters.
//!
//! **Wake-ups.** A notify wakes `k` sleepers on `seq` while it holds the internal lock: every
//! thread then queued on `seq` arrived before the notify, so whichever `k` the kernel picks
//! may take these tokens. A sleeper woken for a token another eligible waiter took (one that
//! was between counting itself and sleeping, and saw `seq` move) sleeps again: the count is
//! still exact. All state is read and written under the internal lock (Relaxed; the lock's
//! Acquire/Release orders it), and the futex's own compare orders `seq`.
//!
//! **Bounded pools.** Tokens of [`POOLS`] distinct generations can be outstanding at once;
//! a fourth merges the oldest pool into the next oldest, which lets waiters that arrived
//! between those two generations take the older tokens. This needs three notifies, each with
//! new waiters in between, before any notified waiter has run, or notified waiters that died
//! before taking their tokens. A waiter that dies stays counted: a later notify may spend a
//! token on it, as a signal can be lost to a dead thread in any condition variable. A death
//! inside the internal lock (a few instructions) leaves the counts as they were at that
//! instant; the next holder carries on with them.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::mutex;
use crate::shim::{Wake, Word};

/// How many token pools of distinct generations the state keeps.
pub(crate) const POOLS: usize = 3;
/// The state words, in their order before the internal lock word: `seq`, `gen`, `fresh`,
/// `waiters`, then each pool's label and count.
pub(crate) const STATE_WORDS: usize = 4 + 2 * POOLS;
// The state fits before the lock word, on its cache line, leaving the block's robust-list
// entry (after the word) alone.
const _: () = assert!(4 * STATE_WORDS <= super::robust::LOCK_WORD);

/// A condition's words.
#[derive(Clone, Copy)]
pub(crate) struct Cond<'a, W> {
    lock: &'a W,
    seq: &'a W,
    gen_: &'a W,
    fresh: &'a W,
    waiters: &'a W,
    pools: [(&'a W, &'a W); POOLS],
}

/// What a waiter keeps between counting itself and sleeping.
#[derive(Clone, Copy, Debug)]
#[must_use = "pass it to Cond::wait"]
pub(crate) struct Ticket {
    generation: u32,
    seen: u32,
}

/// The internal lock, held; released on drop unless the holder is dying (a model victim).
struct Held<'c, W: Word> {
    lock: &'c W,
    me: crate::shim::Me,
}

impl<W: Word> Drop for Held<'_, W> {
    fn drop(&mut self) {
        if !W::dying() {
            mutex::unlock(self.lock, self.me);
        }
    }
}

impl<'a, W: Word> Cond<'a, W> {
    /// The condition whose internal lock is `lock` (a robust lock word, in its block) and
    /// whose state word `i` (`0..STATE_WORDS`) is `state(i)`.
    pub(crate) fn new(lock: &'a W, state: impl Fn(usize) -> &'a W) -> Self {
        Cond {
            lock,
            seq: state(0),
            gen_: state(1),
            fresh: state(2),
            waiters: state(3),
            pools: std::array::from_fn(|i| (state(4 + 2 * i), state(5 + 2 * i))),
        }
    }

    fn held(&self) -> Held<'a, W> {
        let me = W::me();
        // A holder that died mid-update left counts we cannot repair: carry on with them.
        let _ = mutex::lock(self.lock, me, None);
        Held {
            lock: self.lock,
            me,
        }
    }

    /// Counts the caller as a waiter; call while holding the user's lock, before releasing
    /// it, so a notify made under that lock after this point sees this waiter.
    pub(crate) fn prepare_wait(&self) -> Ticket {
        let _h = self.held();
        let n = self.waiters.load(Relaxed);
        assert!(n < u32::MAX, "more than 2^32 - 1 waiters on one Condition");
        self.waiters.store(n + 1, Relaxed);
        self.fresh.store(1, Relaxed);
        Ticket {
            generation: self.gen_.load(Relaxed),
            seen: self.seq.load(Relaxed),
        }
    }

    /// Sleeps (the user's lock released) until notified or `deadline`; true if notified.
    pub(crate) fn wait(&self, t: Ticket, deadline: Option<Instant>) -> bool {
        let mut seen = t.seen;
        loop {
            let timed_out = self.seq.wait(seen, deadline) == Wake::TimedOut;
            let _h = self.held();
            if self.take(t.generation) {
                return true;
            }
            if timed_out {
                let n = self.waiters.load(Relaxed);
                self.waiters.store(n.saturating_sub(1), Relaxed);
                return false;
            }
            seen = self.seq.load(Relaxed);
        }
    }

    /// Takes the oldest token the waiter of `generation` may take (under the lock).
    fn take(&self, generation: u32) -> bool {
        let now = self.gen_.load(Relaxed);
        let mut best: Option<(&W, u32, u32)> = None;
        for &(label, count) in &self.pools {
            let (l, c) = (label.load(Relaxed), count.load(Relaxed));
            // Issued after this waiter arrived (or in its generation): wrapping order.
            let eligible = c > 0 && l.wrapping_sub(generation) as i32 >= 0;
            let age = now.wrapping_sub(l);
            if eligible && best.is_none_or(|(_, _, a)| age > a) {
                best = Some((count, c, age));
            }
        }
        let Some((count, c, _)) = best else {
            return false;
        };
        count.store(c - 1, Relaxed);
        let n = self.waiters.load(Relaxed);
        self.waiters.store(n.saturating_sub(1), Relaxed);
        true
    }

    fn tokens(&self) -> u32 {
        self.pools
            .iter()
            .map(|(_, c)| c.load(Relaxed))
            .fold(0, u32::saturating_add)
    }

    /// Notifies up to `n` of the waiters counted now; returns how many were notified.
    pub(crate) fn notify(&self, n: usize) -> usize {
        let _h = self.held();
        let unnotified = self.waiters.load(Relaxed).saturating_sub(self.tokens());
        let k = unnotified.min(u32::try_from(n).unwrap_or(u32::MAX));
        if k == 0 {
            return 0;
        }
        let g = self.gen_.load(Relaxed);
        let label = if self.fresh.load(Relaxed) != 0 {
            // Close the generation: whoever arrives from now on cannot take these tokens.
            self.fresh.store(0, Relaxed);
            self.gen_.store(g.wrapping_add(1), Relaxed);
            g
        } else {
            // Nobody arrived since the last closing notify: its label covers them all.
            g.wrapping_sub(1)
        };
        self.add(label, k);
        self.seq
            .store(self.seq.load(Relaxed).wrapping_add(1), Relaxed);
        // Under the lock: everyone queued on `seq` now arrived before this notify.
        self.seq.wake(k);
        k as usize
    }

    /// Adds `k` tokens for waiters of generation `label` or older (under the lock).
    fn add(&self, label: u32, k: u32) {
        let mut free = None;
        for (i, &(l, c)) in self.pools.iter().enumerate() {
            let count = c.load(Relaxed);
            if count > 0 && l.load(Relaxed) == label {
                c.store(count.saturating_add(k), Relaxed);
                return;
            }
            if count == 0 && free.is_none() {
                free = Some(i);
            }
        }
        let slot = match free {
            Some(i) => i,
            None => self.merge_oldest(),
        };
        let (l, c) = self.pools[slot];
        l.store(label, Relaxed);
        c.store(k, Relaxed);
    }

    /// Every pool is in use: merges the oldest into the next oldest; returns the freed one.
    #[cold]
    fn merge_oldest(&self) -> usize {
        let now = self.gen_.load(Relaxed);
        let mut order: [usize; POOLS] = std::array::from_fn(|i| i);
        order.sort_by_key(|&i| std::cmp::Reverse(now.wrapping_sub(self.pools[i].0.load(Relaxed))));
        let (oldest, next) = (order[0], order[1]);
        let moved = self.pools[oldest].1.load(Relaxed);
        let into = self.pools[next].1;
        into.store(into.load(Relaxed).saturating_add(moved), Relaxed);
        self.pools[oldest].1.store(0, Relaxed);
        oldest
    }

    /// How many waiters are counted and not yet notified (a racy snapshot).
    pub(crate) fn sleepers(&self) -> usize {
        self.waiters.load(Relaxed).saturating_sub(self.tokens()) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::sync::raw::robust::{BLOCK, LOCK_WORD};

    /// A condition block as `Condition` lays it out: state words, then the lock word.
    #[repr(C, align(64))]
    struct Block([AtomicU32; BLOCK / 4]);

    fn block() -> Arc<Block> {
        Arc::new(Block(std::array::from_fn(|_| AtomicU32::new(0))))
    }

    fn cond(b: &Block) -> Cond<'_, AtomicU32> {
        Cond::new(&b.0[LOCK_WORD / 4], |i| &b.0[i])
    }

    #[test]
    fn notify_n_wakes_exactly_n() {
        let b = block();
        let woken = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let t = cond(&b).prepare_wait();
                let (b, woken) = (b.clone(), woken.clone());
                std::thread::spawn(move || {
                    if cond(&b).wait(t, Some(Instant::now() + Duration::from_secs(10))) {
                        woken.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let c = cond(&b);
        assert_eq!(c.notify(2), 2);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        assert_eq!(c.notify(4), 4);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(woken.load(Ordering::SeqCst), 6);
        assert_eq!(c.notify(3), 0);
        assert_eq!(c.sleepers(), 0);
        assert_eq!(c.waiters.load(Relaxed), 0);
    }

    #[test]
    fn a_waiter_that_times_out_uncounts_itself() {
        let b = block();
        let c = cond(&b);
        let t = c.prepare_wait();
        assert!(!c.wait(t, Some(Instant::now() + Duration::from_millis(20))));
        assert_eq!(c.waiters.load(Relaxed), 0);
        assert_eq!(c.notify(1), 0);
    }

    #[test]
    fn a_notified_waiter_that_times_out_takes_its_token() {
        let b = block();
        let c = cond(&b);
        let t = c.prepare_wait();
        assert_eq!(c.notify(1), 1);
        // The deadline has passed, but the notification is there for it.
        assert!(c.wait(t, Some(Instant::now())));
        assert_eq!((c.waiters.load(Relaxed), c.tokens()), (0, 0));
    }

    #[test]
    fn a_later_waiter_cannot_take_an_earlier_token() {
        let b = block();
        let c = cond(&b);
        let early = c.prepare_wait();
        assert_eq!(c.notify(usize::MAX), 1);
        let late = c.prepare_wait();
        assert!(!c.wait(late, Some(Instant::now())));
        assert!(c.wait(early, Some(Instant::now())));
    }

    #[test]
    fn full_pools_merge_the_oldest() {
        let b = block();
        let c = cond(&b);
        let tickets: Vec<Ticket> = (0..=POOLS)
            .map(|_| {
                let t = c.prepare_wait();
                assert_eq!(c.notify(1), 1);
                t
            })
            .collect();
        assert_eq!(c.tokens(), POOLS as u32 + 1);
        for t in tickets.into_iter().rev() {
            assert!(c.wait(t, Some(Instant::now())));
        }
        assert_eq!((c.waiters.load(Relaxed), c.tokens()), (0, 0));
    }
}

/// Models of the condition under loom, over this code and the robust mutex.
#[cfg(test)]
mod model {
    use super::*;
    use crate::shim::model::{MWord, check, deep};
    use crate::sync::raw::mutex;
    use std::sync::Arc;
    use std::time::Duration;

    struct Shared {
        user: MWord,
        lock: MWord,
        state: [MWord; STATE_WORDS],
        count: MWord,
        generation: MWord,
    }

    impl Shared {
        fn new() -> Arc<Shared> {
            Arc::new(Shared {
                user: MWord::new(0),
                lock: MWord::new(0),
                state: std::array::from_fn(|_| MWord::new(0)),
                count: MWord::new(0),
                generation: MWord::new(0),
            })
        }
        fn cond(&self) -> Cond<'_, MWord> {
            Cond::new(&self.lock, |i| &self.state[i])
        }
        /// `Condition::wait_deadline`: count, release, sleep, relock.
        fn wait(&self, deadline: Option<Instant>) -> bool {
            let me = MWord::me();
            let t = self.cond().prepare_wait();
            mutex::unlock(&self.user, me);
            let notified = self.cond().wait(t, deadline);
            mutex::lock(&self.user, me, None);
            notified
        }
    }

    /// The textbook cyclic barrier on a condition variable.
    fn barrier_wait(s: &Shared, parties: u32) {
        let me = MWord::me();
        mutex::lock(&s.user, me, None);
        let g = s.generation.load(Relaxed);
        let n = s.count.load(Relaxed) + 1;
        if n == parties {
            s.count.store(0, Relaxed);
            s.generation.store(g + 1, Relaxed);
            s.cond().notify(usize::MAX);
        } else {
            s.count.store(n, Relaxed);
            while s.generation.load(Relaxed) == g {
                s.wait(None);
            }
        }
        mutex::unlock(&s.user, me);
    }

    /// Every party that waited when `notify_all` was called returns, whoever re-enters
    /// `wait` first (the old single-word condition deadlocks here, in under a second).
    #[test]
    fn cyclic_barrier_on_a_condition() {
        // Two rounds in CI; three under `MPROC_MODEL_DEEP=1`.
        let rounds = if deep() { 3 } else { 2 };
        check(move || {
            let s = Shared::new();
            let s2 = s.clone();
            let t = loom::thread::spawn(move || {
                for _ in 0..rounds {
                    barrier_wait(&s2, 2);
                }
            });
            for _ in 0..rounds {
                barrier_wait(&s, 2);
            }
            t.join().unwrap();
        });
    }

    /// Two notifies of one, two waiters taking one permit each (the semaphore built on a
    /// condition): no wake-up is lost (a lost one deadlocks), and exactly as many waits
    /// return notified as the notifies counted.
    #[test]
    fn notify_one_is_exact() {
        check(|| {
            let s = Shared::new();
            let notified = Arc::new(MWord::new(0));
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let (s, notified) = (s.clone(), notified.clone());
                    loom::thread::spawn(move || {
                        let me = MWord::me();
                        mutex::lock(&s.user, me, None);
                        while s.count.load(Relaxed) == 0 {
                            if s.wait(None) {
                                notified.fetch_add(1, Relaxed);
                            }
                        }
                        s.count.fetch_sub(1, Relaxed);
                        mutex::unlock(&s.user, me);
                    })
                })
                .collect();
            let me = MWord::me();
            let mut counted = 0;
            for _ in 0..2 {
                mutex::lock(&s.user, me, None);
                s.count.fetch_add(1, Relaxed);
                let k = s.cond().notify(1);
                assert!(k <= 1);
                counted += k;
                mutex::unlock(&s.user, me);
            }
            for w in waiters {
                w.join().unwrap();
            }
            assert_eq!(notified.value() as usize, counted);
            assert_eq!(s.cond().waiters.value(), 0);
            assert_eq!(s.cond().tokens(), 0);
        });
    }

    /// A waiter whose deadline has passed returns notified if a notify counted it, else
    /// uncounts itself; either way no token is left behind and the count stays exact.
    #[test]
    fn a_waiter_with_a_past_deadline() {
        check(|| {
            let s = Shared::new();
            let s2 = s.clone();
            let past = MWord::now() - Duration::from_millis(1);
            let t = loom::thread::spawn(move || {
                let me = MWord::me();
                mutex::lock(&s2.user, me, None);
                let notified = s2.wait(Some(past));
                mutex::unlock(&s2.user, me);
                notified
            });
            let me = MWord::me();
            mutex::lock(&s.user, me, None);
            let k = s.cond().notify(1);
            mutex::unlock(&s.user, me);
            let notified = t.join().unwrap();
            assert!(k <= 1);
            assert_eq!(
                notified,
                k == 1,
                "notify counted {k}, waiter notified {notified}"
            );
            assert_eq!(s.cond().waiters.value(), 0);
            assert_eq!(s.cond().tokens(), 0);
        });
    }
}
