//! The counting semaphore over two words: `value` (permits) and `sleepers`.
//!
//! **Who writes what.** Takers CAS `value` down by one while it is positive; releasers add
//! one (bounded: only below `max`). A taker that finds no permit counts itself in
//! `sleepers`, then sleeps on `value` while it reads 0. A releaser adds its permit *then*
//! reads `sleepers`, and wakes one sleeper if any. Both sides use SeqCst on these two
//! words (a Dekker pair): either the releaser sees the sleeper counted, or the sleeper's
//! futex check sees the new permit; a wake is never lost.
//!
//! A process that dies holding permits takes them with it, as with every semaphore; one
//! that dies asleep leaves `sleepers` one too high, which costs only spurious wakes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::sys::futex::{self, Wake};

/// No permit left: takers sleep.
pub(crate) const EMPTY: u32 = 0;

/// Takes a permit if one is there.
#[inline]
pub(crate) fn try_acquire(value: &AtomicU32) -> bool {
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
pub(crate) fn acquire(value: &AtomicU32, sleepers: &AtomicU32, deadline: Option<Instant>) -> bool {
    try_acquire(value) || acquire_slow(value, sleepers, deadline)
}

#[cold]
fn acquire_slow(value: &AtomicU32, sleepers: &AtomicU32, deadline: Option<Instant>) -> bool {
    for _ in 0..50 {
        std::hint::spin_loop();
        if try_acquire(value) {
            return true;
        }
    }
    loop {
        sleepers.fetch_add(1, Ordering::SeqCst);
        let woke = if value.load(Ordering::SeqCst) == EMPTY {
            futex::wait(value, EMPTY, deadline)
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
pub(crate) fn release(value: &AtomicU32, sleepers: &AtomicU32, max: Option<u32>) -> bool {
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
    if sleepers.load(Ordering::SeqCst) != 0 {
        futex::wake(value, 1);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
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
