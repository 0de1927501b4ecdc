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

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::sys::futex::{self, Wake};

/// One counted sleeper.
const SLEEPER: u32 = 1;
/// One token: a notification not yet taken.
const TOKEN: u32 = 1 << 16;
/// The sleepers' field.
const SLEEPER_MASK: u32 = TOKEN - 1;

/// Counts the caller as a sleeper; call while holding the lock, before releasing it.
pub(crate) fn prepare_wait(word: &AtomicU32) {
    let old = word.fetch_add(SLEEPER, Ordering::SeqCst);
    assert!(
        old & SLEEPER_MASK < SLEEPER_MASK,
        "more than 65534 waiters on one Condition"
    );
}

/// Sleeps (the lock released) until notified or `deadline`; true if notified.
pub(crate) fn wait(word: &AtomicU32, deadline: Option<Instant>) -> bool {
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
        if futex::wait(word, v, deadline) == Wake::TimedOut {
            return leave(word);
        }
    }
}

/// Stops waiting: takes a token if there is one, else uncounts the caller.
fn leave(word: &AtomicU32) -> bool {
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
pub(crate) fn notify(word: &AtomicU32, n: usize) -> usize {
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
                futex::wake(word, k);
                return k as usize;
            }
            Err(now) => v = now,
        }
    }
}

/// How many waiters are counted (not yet notified).
pub(crate) fn sleepers(word: &AtomicU32) -> usize {
    (word.load(Ordering::Relaxed) & SLEEPER_MASK) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn notify_n_wakes_exactly_n() {
        let w = Arc::new(AtomicU32::new(0));
        let woken = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                prepare_wait(&w);
                let (w, woken) = (w.clone(), woken.clone());
                std::thread::spawn(move || {
                    if wait(&w, Some(Instant::now() + Duration::from_secs(10))) {
                        woken.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        assert_eq!(notify(&w, 2), 2);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        assert_eq!(notify(&w, 4), 4);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(woken.load(Ordering::SeqCst), 6);
        assert_eq!(notify(&w, 3), 0);
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
