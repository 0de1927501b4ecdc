//! Loom models of the readiness handshake ([`watch`], [`changed`], [`settle`]).
//!
//! The ring is reduced, as in `doorbell/model.rs`, to a tail the sender moves with a SeqCst
//! swap and a head the receiver moves with one (as `advance` does); `pending` compares them
//! with acquire loads. The eventfd is a flag under a loom mutex (the kernel's lock on the
//! counter), with a condition variable for a poller that sleeps on it with no timeout: a
//! readiness never signalled leaves it asleep and loom reports a deadlock.
//!
//! * [`quiet_flag_matches_the_ring`]: a sender, a receiver that takes what it finds, and a
//!   poller that counts itself while they run; once all are done the flag is set iff an
//!   item waits ("not readable after the ring drained", and no readiness lost to a poller
//!   that registered late).
//! * [`a_polling_receiver_is_always_woken`]: a receiver that sleeps on the flag between
//!   items (the futures' way) gets every item.
//!
//! Without the second look in `settle` (set or clear once and return), both fail: the
//! receiver clears the flag just before the sender sets it for an item already taken
//! (readable with nothing waiting). Without the model fence in `after_change` (the SeqCst
//! order production relies on), the first finds the sender that missed a poller
//! registering as it published. (The fence after the count in `watch` is not needed by
//! the models: the one inside `settle` orders the count before its second look; it stays,
//! as the doorbell's does, for the first look.)

use std::sync::Arc;
use std::sync::atomic::Ordering;

use loom::sync::{Condvar, Mutex};

use super::{Flag, changed, settle, watch};
use crate::shim::Word64;
use crate::shim::model::{MWord, MWord64, check, deep};

/// Items per run: 2 in CI, 3 with `MPROC_MODEL_DEEP=1`.
fn items() -> u64 {
    if deep() { 3 } else { 2 }
}

#[derive(Default)]
struct ModelFlag {
    set: Mutex<bool>,
    readable: Condvar,
}

impl Flag for ModelFlag {
    fn set(&self) {
        *self.set.lock().unwrap() = true;
        self.readable.notify_all();
    }

    fn clear(&self) {
        *self.set.lock().unwrap() = false;
    }
}

impl ModelFlag {
    fn sleep_until_set(&self) {
        let mut s = self.set.lock().unwrap();
        while !*s {
            s = self.readable.wait(s).unwrap();
        }
    }

    fn is_set(&self) -> bool {
        *self.set.lock().unwrap()
    }
}

#[derive(Default)]
struct Shared {
    word: MWord,
    head: MWord64,
    tail: MWord64,
    flag: ModelFlag,
}

impl Shared {
    fn pending(&self) -> bool {
        self.tail.load(Ordering::Acquire) != self.head.load(Ordering::Acquire)
    }

    fn publish(&self, i: u64) {
        self.tail.swap(i, Ordering::SeqCst);
        changed(&self.word, &self.flag, || self.pending());
    }

    /// Takes the next item if one is there.
    fn take(&self) -> bool {
        let head = self.head.load(Ordering::Acquire);
        if self.tail.load(Ordering::Acquire) == head {
            return false;
        }
        self.head.swap(head + 1, Ordering::SeqCst);
        changed(&self.word, &self.flag, || self.pending());
        true
    }
}

fn sender(s: &Arc<Shared>, items: u64) -> loom::thread::JoinHandle<()> {
    let s = s.clone();
    loom::thread::spawn(move || {
        for i in 1..=items {
            s.publish(i);
        }
    })
}

#[test]
fn quiet_flag_matches_the_ring() {
    let items = items();
    check(move || {
        let s = Arc::new(Shared::default());
        let tx = sender(&s, items);
        let poller = {
            let s = s.clone();
            loom::thread::spawn(move || watch(&s.word, &s.flag, || s.pending()))
        };
        // The receiver takes what it finds, once per item at most.
        for _ in 0..items {
            s.take();
        }
        tx.join().unwrap();
        poller.join().unwrap();
        assert_eq!(
            s.flag.is_set(),
            s.pending(),
            "the flag disagrees with the ring once all is quiet"
        );
    });
}

#[test]
fn a_polling_receiver_is_always_woken() {
    let items = items();
    check(move || {
        let s = Arc::new(Shared::default());
        watch(&s.word, &s.flag, || s.pending());
        let tx = sender(&s, items);
        let mut got = 0;
        while got < items {
            s.flag.sleep_until_set();
            if s.take() {
                got += 1;
            } else {
                // Woken for an item already gone: put the flag right, sleep again.
                settle::<MWord, _>(&s.flag, || s.pending());
            }
        }
        tx.join().unwrap();
        assert!(!s.flag.is_set(), "readable after the ring drained");
    });
}
