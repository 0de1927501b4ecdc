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
//! * [`sleepers_and_pollers_share_the_word`]: the sender's production `after_publish`
//!   (one load of the word, then a doorbell for a sleeper and a settle for a poller),
//!   against a receiver that sleeps on the doorbell (`doorbell::wait`, counting itself in
//!   the low half) while a poller counts itself in the high half: the receiver gets every
//!   item it waits for, nobody is left counted as asleep, and once quiet the flag matches
//!   the ring (one item left in it).
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

use super::{Flag, POLLER, SLEEPERS, changed, settle, watch};
use crate::connection::doorbell::{Bell, Ready, after_publish, wait};
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

/// The stream socket of `doorbell.rs`, as its model has it: queued doorbells under a loom
/// mutex, a sleep with no timeout.
#[derive(Default)]
struct Socket {
    bells: Mutex<u32>,
    readable: Condvar,
}

impl Bell for Socket {
    fn ring(&self) {
        *self.bells.lock().unwrap() += 1;
        self.readable.notify_all();
    }

    fn drain(&self) -> crate::error::Result<bool> {
        *self.bells.lock().unwrap() = 0;
        Ok(false)
    }

    fn sleep(&self, _left: Option<std::time::Duration>) -> crate::error::Result<bool> {
        let mut n = self.bells.lock().unwrap();
        while *n == 0 {
            n = self.readable.wait(n).unwrap();
        }
        *n = 0;
        Ok(false)
    }
}

#[test]
fn sleepers_and_pollers_share_the_word() {
    let items = items();
    check(move || {
        let s = Arc::new(Shared::default());
        let socket = Arc::new(Socket::default());
        let tx = {
            let (s, socket) = (s.clone(), socket.clone());
            loom::thread::spawn(move || {
                // One more than the receiver takes: the last is left for the poller.
                for i in 1..=items + 1 {
                    s.tail.swap(i, Ordering::SeqCst);
                    after_publish(&s.word, &*socket, &s.flag, || s.pending());
                }
            })
        };
        let poller = {
            let s = s.clone();
            loom::thread::spawn(move || watch(&s.word, &s.flag, || s.pending()))
        };
        for i in 1..=items {
            let got = wait(&s.word, &*socket, || s.pending(), None).unwrap();
            assert_eq!(got, Ready::Data, "item {i} of {items}");
            assert!(s.take(), "woken for item {i}, and it is not there");
        }
        tx.join().unwrap();
        poller.join().unwrap();
        assert_eq!(s.word.value() & SLEEPERS, 0, "a sleeper left counted");
        assert_eq!(s.word.value(), POLLER, "the poller's count was disturbed");
        assert_eq!(
            s.flag.is_set(),
            s.pending(),
            "the flag disagrees with the ring"
        );
    });
}
