//! A loom model of the doorbell handshake ([`wait`] against [`after_publish`]).
//!
//! The ring is reduced to what the handshake reads of it: a tail word the sender moves with
//! a SeqCst swap (as the ring's `commit` publishes) and a head word the receiver moves past
//! each item it takes; `pending` compares them with acquire loads (as `Ring::pending`
//! does). The stream socket is an in-memory count of doorbell bytes and an end-of-stream
//! flag under a loom mutex; its sleep has no timeout, so a doorbell the sender fails to
//! write leaves the receiver asleep for ever and loom reports a deadlock.
//!
//! One sender publishes [`items()`] items, ringing after each as `shm.rs` does; one receiver
//! waits for each and takes it. With `close`, the sender then closes its end: the receiver
//! must still get every item before end of stream, and end of stream after the last.
//!
//! Without the receiver's second look after it counts itself, or without the model fence
//! in `ready::after_change` (which stands for the SeqCst order production
//! relies on), loom finds the schedule where the sender reads the count before the receiver
//! wrote it and the receiver sleeps for ever.

use std::sync::atomic::Ordering;
use std::time::Duration;

use loom::sync::{Condvar, Mutex};
use std::sync::Arc;

use super::{Bell, Ready, after_publish, wait};
use crate::error::Result;
use crate::shim::Word64;
use crate::shim::model::{MWord, MWord64, check, deep};

/// Items per run: 2 in CI, 4 with `MPROC_MODEL_DEEP=1`.
fn items() -> u64 {
    if deep() { 4 } else { 2 }
}

/// The stream socket: queued doorbell bytes, and whether the peer closed.
#[derive(Default)]
struct Socket {
    state: Mutex<(u32, bool)>,
    readable: Condvar,
}

impl Bell for Socket {
    fn ring(&self) {
        self.state.lock().unwrap().0 += 1;
        self.readable.notify_all();
    }

    fn drain(&self) -> Result<bool> {
        let mut s = self.state.lock().unwrap();
        s.0 = 0;
        Ok(s.1)
    }

    fn sleep(&self, _left: Option<Duration>) -> Result<bool> {
        let mut s = self.state.lock().unwrap();
        while s.0 == 0 && !s.1 {
            s = self.readable.wait(s).unwrap();
        }
        s.0 = 0;
        Ok(s.1)
    }
}

impl Socket {
    fn close(&self) {
        self.state.lock().unwrap().1 = true;
        self.readable.notify_all();
    }
}

/// No poller is counted in this model: the flag is never touched.
struct NoPoller;

impl crate::connection::ready::Flag for NoPoller {
    fn set(&self) {
        unreachable!("no poller counted")
    }

    fn clear(&self) {
        unreachable!("no poller counted")
    }
}

#[derive(Default)]
struct Shared {
    sleepers: MWord,
    head: MWord64,
    tail: MWord64,
    socket: Socket,
}

fn run(close: bool) {
    let items = items();
    check(move || {
        let s = Arc::new(Shared::default());
        let sender = {
            let s = s.clone();
            loom::thread::spawn(move || {
                for i in 1..=items {
                    // The ring's publish (`commit`): one SeqCst swap of the tail.
                    s.tail.swap(i, Ordering::SeqCst);
                    after_publish(&s.sleepers, &s.socket, &NoPoller, || true);
                }
                if close {
                    s.socket.close();
                }
            })
        };
        let pending = || s.tail.load(Ordering::Acquire) != s.head.load(Ordering::Acquire);
        for i in 1..=items {
            let got = wait(&s.sleepers, &s.socket, pending, None).unwrap();
            assert_eq!(got, Ready::Data, "item {i} of {items}");
            s.head.store(i, Ordering::Release);
        }
        if close {
            let got = wait(&s.sleepers, &s.socket, pending, None).unwrap();
            assert_eq!(got, Ready::Eof, "after the last item");
        }
        sender.join().unwrap();
        assert_eq!(s.sleepers.value(), 0, "a sleeper left counted");
    });
}

#[test]
fn a_sleeping_receiver_is_always_rung() {
    run(false);
}

#[test]
fn every_item_arrives_before_end_of_stream() {
    run(true);
}
