//! The event over one word: `SET` and `SLEEPERS` bits.
//!
//! **Who writes what.** `set` swaps in `SET` and, if the old word had `SLEEPERS`, wakes
//! everyone; `clear` removes `SET` only. A waiter that finds the word unset adds
//! `SLEEPERS` (CAS) and sleeps while the word is exactly `SLEEPERS`; any `set` after that
//! CAS sees the bit. Acquire on the waiter's load pairs with Release on `set`, so what the
//! setter wrote before `set` is visible to whoever sees it set.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::sys::futex::{self, Wake};

/// The event is set.
pub(crate) const SET: u32 = 1;
/// Someone may sleep on the word: `set` must wake.
pub(crate) const SLEEPERS: u32 = 2;

/// Whether the event is set.
#[inline]
pub(crate) fn is_set(word: &AtomicU32) -> bool {
    word.load(Ordering::Acquire) & SET != 0
}

/// Sets the event and wakes every waiter.
pub(crate) fn set(word: &AtomicU32) {
    if word.swap(SET, Ordering::Release) & SLEEPERS != 0 {
        futex::wake_all(word);
    }
}

/// Clears the event.
pub(crate) fn clear(word: &AtomicU32) {
    word.fetch_and(!SET, Ordering::Relaxed);
}

/// Waits until the event is set or `deadline` passes; returns whether it is set.
pub(crate) fn wait(word: &AtomicU32, deadline: Option<Instant>) -> bool {
    loop {
        let v = word.load(Ordering::Acquire);
        if v & SET != 0 {
            return true;
        }
        if v & SLEEPERS == 0
            && word
                .compare_exchange(v, v | SLEEPERS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        if futex::wait(word, v | SLEEPERS, deadline) == Wake::TimedOut {
            return is_set(word);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn set_wakes_all_waiters() {
        let w = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..6)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || wait(&w, Some(Instant::now() + Duration::from_secs(10))))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        set(&w);
        for t in waiters {
            assert!(t.join().unwrap());
        }
        clear(&w);
        assert!(!wait(&w, Some(Instant::now() + Duration::from_millis(20))));
    }
}
