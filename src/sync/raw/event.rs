//! The event over one word: `SET` and `SLEEPERS` bits, and a set-generation above them.
//!
//! **Who writes what.** `set` makes the word `SET` with the generation bumped and
//! `SLEEPERS` cleared (one CAS), and wakes everyone if the old word had `SLEEPERS`; `clear`
//! removes `SET` only. A waiter notes the word when it begins; if it is unset, the waiter
//! adds `SLEEPERS` (CAS) and sleeps while the word is exactly what it saw: any `set` after
//! that CAS both changes the word and sees the bit, so the sleeper is woken or never
//! sleeps. The waiter returns once the word is `SET` *or its generation moved*, so a
//! `set(); clear()` pulse that lands while it sleeps still ends its wait: a woken waiter
//! that looked only at the flag would find it cleared and sleep through the pulse (the bug
//! this generation fixes). Acquire on the waiter's loads pairs with Release on `set`, so
//! what the setter wrote before `set` is visible to whoever sees it set.
//!
//! **What `wait` returns.** True when it returns because of a `set` (the flag was set when
//! it began, or a `set` came while it waited, even if `clear` followed); false only when
//! its time ran out with no `set` since it began. This is `threading.Event.wait`'s
//! documented contract, which `multiprocessing.Event` claims as "a clone" of it (CPython's
//! `multiprocessing` implementation returns the flag's value at return, so False after a
//! pulse). The generation has 30 bits: a waiter would miss a pulse only if exactly a
//! multiple of 2^30 `set`s happened between two of its looks at the word.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::shim::{Wake, Word};

/// The event is set.
pub(crate) const SET: u32 = 1;
/// Someone may sleep on the word: `set` must wake.
pub(crate) const SLEEPERS: u32 = 2;
/// One `set`: the generation's unit.
const GENERATION: u32 = 4;

/// Whether the event is set.
#[inline]
pub(crate) fn is_set<W: Word>(word: &W) -> bool {
    word.load(Ordering::Acquire) & SET != 0
}

/// Sets the event and wakes every waiter.
pub(crate) fn set<W: Word>(word: &W) {
    let mut v = word.load(Ordering::Relaxed);
    loop {
        let new = ((v & !SLEEPERS) | SET).wrapping_add(GENERATION);
        match word.compare_exchange_weak(v, new, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => v = now,
        }
    }
    if v & SLEEPERS != 0 {
        word.wake_all();
    }
}

/// Clears the event.
pub(crate) fn clear<W: Word>(word: &W) {
    word.fetch_and(!SET, Ordering::Relaxed);
}

/// Where a wait began: the generation it saw, or that the event was set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Began(u32);

/// Notes where a wait begins; a `set` from now on ends it.
#[inline]
pub(crate) fn begin<W: Word>(word: &W) -> Began {
    Began(word.load(Ordering::Acquire))
}

/// Waits until the event is set, or a `set` happened since the call began, or `deadline`
/// passes; returns false only in the last case (see the module docs).
#[inline]
pub(crate) fn wait<W: Word>(word: &W, deadline: Option<Instant>) -> bool {
    wait_from(word, begin(word), deadline)
}

/// Whether the word shows a `set` since `began`.
#[inline]
fn done(v: u32, began: u32) -> bool {
    v & SET != 0 || (v ^ began) & !(SET | SLEEPERS) != 0
}

/// As [`wait`], for a wait that began at `began`.
pub(crate) fn wait_from<W: Word>(word: &W, began: Began, deadline: Option<Instant>) -> bool {
    let began = began.0;
    let mut v = began;
    loop {
        if done(v, began) {
            return true;
        }
        if v & SLEEPERS == 0
            && let Err(now) =
                word.compare_exchange(v, v | SLEEPERS, Ordering::Relaxed, Ordering::Relaxed)
        {
            v = now;
            continue;
        }
        if word.wait(v | SLEEPERS, deadline) == Wake::TimedOut {
            return done(word.load(Ordering::Acquire), began);
        }
        v = word.load(Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    #[test]
    fn set_wakes_all_waiters() {
        let w = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..6)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    wait(&*w, Some(Instant::now() + Duration::from_secs(10)))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        set(&*w);
        for t in waiters {
            assert!(t.join().unwrap());
        }
        clear(&*w);
        assert!(!wait(&*w, Some(Instant::now() + Duration::from_millis(20))));
    }

    #[test]
    fn a_pulse_ends_every_wait_that_began_before_it() {
        let w = Arc::new(AtomicU32::new(0));
        // Each waiter says when its wait has begun, so the pulse surely comes after (a sleep
        // for "long enough" was not, on a loaded machine).
        let begun = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (w, begun) = (w.clone(), begun.clone());
                std::thread::spawn(move || {
                    let b = begin(&*w);
                    begun.fetch_add(1, Ordering::SeqCst);
                    wait_from(&*w, b, Some(Instant::now() + Duration::from_secs(10)))
                })
            })
            .collect();
        while begun.load(Ordering::SeqCst) < 4 {
            std::thread::yield_now();
        }
        set(&*w);
        clear(&*w);
        let t = Instant::now();
        for h in waiters {
            assert!(h.join().unwrap());
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a waiter slept through the pulse"
        );
        assert!(!is_set(&*w));
    }
}

/// The event under loom, over this code.
#[cfg(test)]
mod model {
    use super::*;
    use crate::shim::model::{MWord, check};
    use std::sync::Arc;

    /// A `set(); clear()` pulse while a waiter waits: the wait returns (true), whether the
    /// pulse came before it slept, while it slept, or as it was about to sleep. A wait that
    /// began after the pulse would wait for ever, so the waiter begins first (it says so
    /// in `started` once it has begun).
    #[test]
    fn a_pulse_ends_a_wait() {
        check(|| {
            let w = Arc::new(MWord::new(0));
            let started = Arc::new(MWord::new(0));
            let (w2, s2) = (w.clone(), started.clone());
            let t = loom::thread::spawn(move || {
                let began = begin(&*w2);
                s2.store(1, Ordering::Release);
                wait_from(&*w2, began, None)
            });
            while started.load(Ordering::Acquire) == 0 {
                loom::thread::yield_now();
            }
            set(&*w);
            clear(&*w);
            assert!(t.join().unwrap());
            assert!(!is_set(&*w));
        });
    }

    /// Two waiters and a setter: both return, and a waiter that starts after `set` without a
    /// `clear` returns at once.
    #[test]
    fn set_releases_every_waiter() {
        check(|| {
            let w = Arc::new(MWord::new(0));
            let ts: Vec<_> = (0..2)
                .map(|_| {
                    let w = w.clone();
                    loom::thread::spawn(move || wait(&*w, None))
                })
                .collect();
            set(&*w);
            for t in ts {
                assert!(t.join().unwrap());
            }
            assert!(wait(&*w, None));
        });
    }
}
