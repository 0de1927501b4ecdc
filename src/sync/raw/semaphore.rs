//! The counting semaphore over two words: `value` (permits) and `sleepers`.
//!
//! **Who writes what.** Takers CAS `value` down by one while it is positive; releasers add
//! one (bounded: only below `max`). A taker that finds no permit counts itself in
//! `sleepers`, then sleeps on `value` while it reads 0. A releaser adds its permit *then*
//! reads `sleepers`, and wakes one sleeper if any. Both sides use SeqCst on these two
//! words (a Dekker pair): either the releaser sees the sleeper counted, or the sleeper's
//! futex check sees the new permit; a wake is never lost. Loom treats SeqCst accesses as
//! AcqRel and so misses this total order: the model adds `fence(SeqCst)` after each side's
//! write (`Word::model_seqcst_fence`, nothing in production), which is what the total
//! order gives production.
//!
//! A process that dies holding permits takes them with it, as with every semaphore; one
//! that dies asleep leaves `sleepers` one too high, which costs only spurious wakes.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::shim::{Wake, Word};

/// No permit left: takers sleep.
pub(crate) const EMPTY: u32 = 0;

/// Takes a permit if one is there.
#[inline]
pub(crate) fn try_acquire<W: Word>(value: &W) -> bool {
    let mut v = value.load(Ordering::Relaxed);
    while v != EMPTY {
        match value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => v = now,
        }
    }
    false
}

/// Takes a permit, sleeping until `deadline` at most; false if time ran out.
#[inline]
pub(crate) fn acquire<W: Word>(value: &W, sleepers: &W, deadline: Option<Instant>) -> bool {
    try_acquire(value) || acquire_slow(value, sleepers, deadline)
}

#[cold]
fn acquire_slow<W: Word>(value: &W, sleepers: &W, deadline: Option<Instant>) -> bool {
    for _ in 0..if W::SPINS { 50 } else { 0 } {
        std::hint::spin_loop();
        if try_acquire(value) {
            return true;
        }
    }
    loop {
        sleepers.fetch_add(1, Ordering::SeqCst);
        // Stands for the SeqCst order between this count and the load below.
        W::model_seqcst_fence();
        let woke = if value.load(Ordering::SeqCst) == EMPTY {
            value.wait(EMPTY, deadline)
        } else {
            Wake::Retry
        };
        sleepers.fetch_sub(1, Ordering::SeqCst);
        if try_acquire(value) {
            return true;
        }
        if woke == Wake::TimedOut {
            return false;
        }
    }
}

/// Adds a permit; with `max` set, refuses (returns false) to go above it.
#[inline]
pub(crate) fn release<W: Word>(value: &W, sleepers: &W, max: Option<u32>) -> bool {
    let limit = max.unwrap_or(u32::MAX);
    let mut v = value.load(Ordering::Relaxed);
    loop {
        if v >= limit {
            return false;
        }
        match value.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => v = now,
        }
    }
    // Stands for the SeqCst order between the permit's CAS and this load.
    W::model_seqcst_fence();
    if sleepers.load(Ordering::SeqCst) != 0 {
        value.wake(1);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    #[test]
    fn never_admits_more_than_its_value() {
        let words = Arc::new([AtomicU32::new(2), AtomicU32::new(0), AtomicU32::new(0)]);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let w = words.clone();
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        assert!(acquire(&w[0], &w[1], None));
                        let inside = w[2].fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(inside <= 2, "{inside} inside a semaphore of 2");
                        w[2].fetch_sub(1, Ordering::SeqCst);
                        assert!(release(&w[0], &w[1], Some(2)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(words[0].load(Ordering::SeqCst), 2);
    }

    #[test]
    fn times_out_and_bounds() {
        let (v, s) = (AtomicU32::new(0), AtomicU32::new(0));
        let t = Instant::now();
        assert!(!acquire(&v, &s, Some(t + Duration::from_millis(30))));
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert!(release(&v, &s, Some(1)));
        assert!(!release(&v, &s, Some(1)));
        assert!(try_acquire(&v));
        assert!(!try_acquire(&v));
    }
}

/// The semaphore under loom, over this code.
#[cfg(test)]
mod model {
    use super::*;
    use crate::shim::model::{MWord, check};
    use std::sync::Arc;

    /// A taker that finds no permit and a releaser: the taker always gets the permit (a
    /// wake lost between the release and the sleeper deadlocks), twice over, with a bound
    /// of 1 refusing a second release while the permit is out.
    #[test]
    fn no_lost_wake_up_and_bounded_release() {
        check(|| {
            let w = Arc::new([MWord::new(0), MWord::new(0)]);
            let w2 = w.clone();
            let taker = loom::thread::spawn(move || {
                for _ in 0..2 {
                    assert!(acquire(&w2[0], &w2[1], None));
                }
            });
            let mut released = 0;
            while released < 2 {
                if release(&w[0], &w[1], Some(1)) {
                    released += 1;
                } else {
                    // Refused at the bound: the permit is still there for the taker.
                    loom::thread::yield_now();
                }
            }
            taker.join().unwrap();
            assert_eq!(w[0].value(), 0);
            assert!(!try_acquire(&w[0]));
            assert!(release(&w[0], &w[1], Some(1)));
            assert!(!release(&w[0], &w[1], Some(1)));
            assert_eq!(w[0].value(), 1);
        });
    }
}
