//! A loom model of the descriptor records ([`take_fds`]) with a receiver that dies at each
//! of its steps.
//!
//! The record socket is an in-memory queue ([`Queue`]) and the ring a list of published
//! items with a head moved under the production robust mutex (the consumer lock), so a
//! receiver that dies holding it leaves `OWNER_DIED` for the next one, as the kernel does.
//! One sender publishes three items, each record queued before its item as `shm.rs` does
//! under the producer lock (item 0 with descriptors, item 1 without, item 2 with), behind
//! a stale record whose item was never published; the numbers start just below the wrap of
//! the counter, so the comparison crosses it. The first receiver dies at its `k`-th die
//! point, for every `k` until it lives: inside the lock, at every record-socket call, and
//! between taking the item's descriptors and moving the head (the window that once cost
//! every queued record). Two plans ([`Plan`]): the sender races the dying receiver and the
//! next receiver comes after the death; or every item is published first and the next
//! receiver races the dying one.
//!
//! What must hold: each item delivered at most once, with exactly its own descriptor; at
//! most one item (the one the dead receiver was taking) lost or failed, none if it lived;
//! and every record taken by the end, none stranded. The logic before the fix (take the
//! front record, then compare) fails both plans: items 0 and 2 fail when the receiver
//! dies holding item 0's record.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use loom::sync::{Arc, Mutex};

use super::{Records, take_fds};
use crate::shim::Word;
use crate::shim::model::{Fate, MWord, check, victim};
use crate::sync::raw::mutex;

/// The record socket: `(seq, descriptor)` records, front first. A descriptor is the number
/// of the item it was sent with (the stale one's is `STALE`).
struct Queue(Mutex<VecDeque<(u32, u32)>>);

const STALE: u32 = 99;
/// The first record's number: the stale one, then items 0 and 2, cross the wrap.
const FIRST_SEQ: u32 = u32::MAX - 1;
const ITEMS: u32 = 3;

impl Records for Queue {
    type Fd = u32;

    fn peek(&self) -> crate::Result<Option<u32>> {
        MWord::die_point();
        Ok(self.0.lock().unwrap().front().map(|r| r.0))
    }

    fn take(&self, fds: &mut Vec<u32>) -> crate::Result<u32> {
        let (seq, fd) = self.0.lock().unwrap().pop_front().expect("a peeked record");
        // The record is off the socket: a death from here on loses it with the process.
        MWord::die_point();
        fds.push(fd);
        Ok(seq)
    }
}

/// An item's number, and its descriptors or the error it got.
type Delivery = (u32, Result<Vec<u32>, String>);

struct Shared {
    records: Queue,
    /// Published items: `(item, its record's seq if it has descriptors)`.
    items: Mutex<Vec<(u32, Option<u32>)>>,
    /// The ring's head: items consumed (written under `consumer`).
    head: MWord,
    consumer: MWord,
    /// What the receivers delivered: `(item, Ok(descriptors) or Err)`.
    delivered: Mutex<Vec<Delivery>>,
}

fn send(s: &Shared) {
    let mut seq = FIRST_SEQ.wrapping_add(1);
    for item in 0..ITEMS {
        let record = (item != 1).then(|| {
            let n = seq;
            seq = seq.wrapping_add(1);
            s.records.0.lock().unwrap().push_back((n, item));
            n
        });
        s.items.lock().unwrap().push((item, record));
    }
}

/// Takes one item under the consumer lock as `shm.rs` and `consume.rs` do: decode (here,
/// take the descriptors), then move the head. `None` if none is published yet.
fn receive_one(s: &Shared) -> Option<Delivery> {
    let me = MWord::me();
    mutex::lock(&s.consumer, me, None).expect("an untimed lock");
    let head = s.head.load(Ordering::Relaxed);
    let Some(&(item, record)) = s.items.lock().unwrap().get(head as usize) else {
        mutex::unlock(&s.consumer, me);
        return None;
    };
    let mut fds = Vec::new();
    let got = take_fds(&s.records, record.map(|seq| (seq, 1)), &mut fds);
    // The descriptors are taken, the head not yet moved.
    MWord::die_point();
    s.head.store(head + 1, Ordering::Relaxed);
    mutex::unlock(&s.consumer, me);
    Some((item, got.map(|()| fds).map_err(|e| e.to_string())))
}

/// Receives until every item is consumed.
fn receive_all(s: &Shared) {
    loop {
        match receive_one(s) {
            Some(out) => s.delivered.lock().unwrap().push(out),
            None if s.head.load(Ordering::Relaxed) == ITEMS => return,
            None => loom::thread::yield_now(),
        }
    }
}

/// Who runs beside the receiver that dies.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// The sender publishes while the first receiver takes; the next receiver comes after
    /// the death.
    SenderRaces,
    /// Every item is published first; the next receiver takes beside the first (and waits
    /// on the consumer lock the dead one leaves `OWNER_DIED`).
    ReceiversRace,
}

/// One run with the first receiver dying at its `k`-th die point: whether it died.
fn run(k: u32, plan: Plan) -> bool {
    let died = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = died.clone();
    check(move || {
        let s = Arc::new(Shared {
            records: Queue(Mutex::new(VecDeque::from([(FIRST_SEQ, STALE)]))),
            items: Mutex::new(Vec::new()),
            head: MWord::new(0),
            consumer: MWord::new(0),
            delivered: Mutex::new(Vec::new()),
        });
        let doomed = |s: &Arc<Shared>| {
            let s = s.clone();
            loom::thread::spawn(move || victim(Some(k), || receive_all(&s)))
        };
        let fate = match plan {
            Plan::SenderRaces => {
                let sender = {
                    let s = s.clone();
                    loom::thread::spawn(move || send(&s))
                };
                let doomed = doomed(&s);
                sender.join().unwrap();
                let fate = doomed.join().unwrap();
                receive_all(&s);
                fate
            }
            Plan::ReceiversRace => {
                send(&s);
                let doomed = doomed(&s);
                receive_all(&s);
                doomed.join().unwrap()
            }
        };
        let dead = fate == Fate::Died;
        if dead {
            died.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let delivered = s.delivered.lock().unwrap().clone();
        let mut lost = 0;
        for item in 0..ITEMS {
            let got: Vec<_> = delivered.iter().filter(|d| d.0 == item).collect();
            assert!(got.len() <= 1, "item {item} delivered twice: {delivered:?}");
            match got.first() {
                Some((_, Ok(fds))) => {
                    let want: Vec<u32> = if item == 1 { vec![] } else { vec![item] };
                    assert_eq!(fds, &want, "item {item}: wrong descriptors: {delivered:?}");
                }
                _ => lost += 1,
            }
        }
        assert!(
            lost <= u32::from(dead),
            "{lost} items failed or lost with {} receiver dead: {delivered:?}",
            u32::from(dead)
        );
        assert!(
            s.records.0.lock().unwrap().is_empty(),
            "records stranded: {delivered:?}"
        );
    });
    seen.load(std::sync::atomic::Ordering::Relaxed)
}

fn every_death(plan: Plan) {
    for k in 0.. {
        if !run(k, plan) {
            // It lived in every schedule: every die point was tried.
            return;
        }
        assert!(k < 64, "the receiver never runs out of die points");
    }
}

#[test]
fn a_receiver_dying_at_any_step_costs_at_most_its_item() {
    every_death(Plan::SenderRaces);
}

#[test]
fn a_receiver_dying_beside_another_costs_at_most_its_item() {
    every_death(Plan::ReceiversRace);
}
