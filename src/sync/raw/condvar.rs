//! The condition variable over one word: `sleepers` (low 16 bits) and `tokens` (high 16).
//!
//! **Who writes what.** A waiter counts itself in `sleepers` *while still holding the
//! lock*, then releases it and sleeps on the word. `notify(n)` turns up to `n` counted
//! sleepers into tokens in one CAS and wakes that many. A waiter returns notified only by
//! taking a token (CAS), so exactly as many waiters return notified as were notified, even
//! when a wake reaches a different sleeper than the one that takes the token. A waiter
//! whose time runs out takes a token if one is there (it was notified after all) or else
//! uncounts itself, in one CAS, so no token is stranded by a waiter that left.
//!
//! Every change is a CAS on the one word, so the word itself orders them; SeqCst keeps the
//! reasoning simple and costs nothing beside the syscalls around it. A waiter that dies
//! stays counted: a later notify may spend a token on it, as a signal can be lost to a
//! dead thread in any condition variable.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::shim::{Wake, Word};

/// One counted sleeper.
const SLEEPER: u32 = 1;
/// One token: a notification not yet taken.
const TOKEN: u32 = 1 << 16;
/// The sleepers' field.
const SLEEPER_MASK: u32 = TOKEN - 1;

/// Counts the caller as a sleeper; call while holding the lock, before releasing it.
pub(crate) fn prepare_wait<W: Word>(word: &W) {
    let old = word.fetch_add(SLEEPER, Ordering::SeqCst);
    assert!(
        old & SLEEPER_MASK < SLEEPER_MASK,
        "more than 65534 waiters on one Condition"
    );
}

/// Sleeps (the lock released) until notified or `deadline`; true if notified.
pub(crate) fn wait<W: Word>(word: &W, deadline: Option<Instant>) -> bool {
    loop {
        let v = word.load(Ordering::SeqCst);
        if v >= TOKEN {
            if word
                .compare_exchange(v, v - TOKEN, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return true;
            }
            continue;
        }
        if word.wait(v, deadline) == Wake::TimedOut {
            return leave(word);
        }
    }
}

/// Stops waiting: takes a token if there is one, else uncounts the caller.
fn leave<W: Word>(word: &W) -> bool {
    let mut v = word.load(Ordering::SeqCst);
    loop {
        let (new, notified) = if v >= TOKEN {
            (v - TOKEN, true)
        } else {
            (v - SLEEPER, false)
        };
        match word.compare_exchange(v, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return notified,
            Err(now) => v = now,
        }
    }
}

/// Wakes up to `n` counted sleepers; returns how many were notified.
pub(crate) fn notify<W: Word>(word: &W, n: usize) -> usize {
    let mut v = word.load(Ordering::SeqCst);
    loop {
        let k = (v & SLEEPER_MASK).min(n.min(u32::MAX as usize) as u32);
        if k == 0 {
            return 0;
        }
        match word.compare_exchange(
            v,
            v - k * SLEEPER + k * TOKEN,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => {
                word.wake(k);
                return k as usize;
            }
            Err(now) => v = now,
        }
    }
}

/// How many waiters are counted (not yet notified).
pub(crate) fn sleepers<W: Word>(word: &W) -> usize {
    (word.load(Ordering::Relaxed) & SLEEPER_MASK) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, AtomicUsize};
    use std::time::Duration;

    #[test]
    fn notify_n_wakes_exactly_n() {
        let w = Arc::new(AtomicU32::new(0));
        let woken = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                prepare_wait(&*w);
                let (w, woken) = (w.clone(), woken.clone());
                std::thread::spawn(move || {
                    if wait(&*w, Some(Instant::now() + Duration::from_secs(10))) {
                        woken.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        assert_eq!(notify(&*w, 2), 2);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        assert_eq!(notify(&*w, 4), 4);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(woken.load(Ordering::SeqCst), 6);
        assert_eq!(notify(&*w, 3), 0);
        assert_eq!(w.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_waiter_that_times_out_uncounts_itself() {
        let w = AtomicU32::new(0);
        prepare_wait(&w);
        assert!(!wait(&w, Some(Instant::now() + Duration::from_millis(20))));
        assert_eq!(w.load(Ordering::SeqCst), 0);
    }
}

/// The textbook cyclic barrier on a condition variable, under the model: every party that
/// waited when `notify_all` was called must return, whoever re-enters `wait` first.
#[cfg(test)]
mod model {
    use super::*;
    use crate::shim::model::{MWord, check};
    use crate::sync::raw::mutex;
    use loom::sync::Arc;

    struct Shared {
        lock: MWord,
        cond: MWord,
        count: MWord,
        generation: MWord,
    }

    fn barrier_wait(s: &Shared, parties: u32) {
        let me = MWord::me();
        mutex::lock(&s.lock, me, None);
        let g = s.generation.load(Ordering::Relaxed);
        let n = s.count.load(Ordering::Relaxed) + 1;
        if n == parties {
            s.count.store(0, Ordering::Relaxed);
            s.generation.store(g + 1, Ordering::Relaxed);
            notify(&s.cond, usize::MAX);
        } else {
            s.count.store(n, Ordering::Relaxed);
            while s.generation.load(Ordering::Relaxed) == g {
                prepare_wait(&s.cond);
                mutex::unlock(&s.lock, me);
                wait(&s.cond, None);
                mutex::lock(&s.lock, me, None);
            }
        }
        mutex::unlock(&s.lock, me);
    }

    #[test]
    fn cyclic_barrier_on_a_condition() {
        check(|| {
            let s = Arc::new(Shared {
                lock: MWord::new(0),
                cond: MWord::new(0),
                count: MWord::new(0),
                generation: MWord::new(0),
            });
            let s2 = s.clone();
            let t = loom::thread::spawn(move || {
                for _ in 0..2 {
                    barrier_wait(&s2, 2);
                }
            });
            for _ in 0..2 {
                barrier_wait(&s, 2);
            }
            t.join().unwrap();
        });
    }
}
