//! Loom models of the ring, over the production code (`Ring<Model>`: the same protocol on
//! loom's words, with one checked cell per data unit; see `runtime.rs`).
//!
//! Sizes are shrunk so the checker reaches deep states: a 32-byte data area (4 units: two
//! 2-byte items fill it) and a `maxsize` of 1 where room waits are wanted. Items carry
//! their producer and number and a pattern derived from them, so a torn, duplicated,
//! reordered or foreign item fails the check. Every wait in a model is untimed or already
//! past (the model's clock is frozen): a lost wake-up is a loom deadlock, not a delay;
//! once a model process has died, sleep slices end (see `shim::model`), which is how the
//! survivors' probes find it.
//!
//! `MPROC_MODEL_BOUND` sets the preemption bound (default 2; the die-point models run at 1
//! unless `MPROC_MODEL_DEEP=1`, which also adds items). In CI all of them take about 45 s
//! in a debug build (a few minutes at bound 2 with `MPROC_MODEL_DEEP=1`).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

// std's Arc, not loom's, in every model: a failing model then fails its test instead of
// aborting the test binary (a loom Arc's drop takes a model step while unwinding).
use std::sync::Arc;

use super::control::{EventCount, NO_ITEM};
use super::frame::Kind;
use super::runtime::Model;
use super::{Ring, pos_of};
use crate::error::Error;
use crate::shim::model::{Fate, MWord, check, check_with, deep, victim};
use crate::shim::{Word, Word64};
use crate::sync::raw::mutex;

type R = Ring<Model>;

/// A deadline that has passed: a call that would wait returns at once.
fn now() -> Option<Instant> {
    Some(MWord::now())
}

/// Item `i` of producer `p`: `len` bytes, `[p, i, pattern...]`.
fn item(p: u8, i: u8, len: usize) -> Vec<u8> {
    let mut v = vec![p, i];
    v.extend((2..len).map(|k| p.wrapping_mul(31).wrapping_add(i).wrapping_add(k as u8)));
    v.truncate(len.max(2));
    v
}

/// Checks an item is one of `item`'s, whole, and names it.
fn parse(b: &[u8], len_of: impl Fn(u8, u8) -> usize) -> (u8, u8) {
    assert!(b.len() >= 2, "a torn item: {b:?}");
    let (p, i) = (b[0], b[1]);
    assert_eq!(b, &item(p, i, len_of(p, i))[..], "a torn or foreign item");
    (p, i)
}

fn recv(r: &R, deadline: Option<Instant>, len_of: impl Fn(u8, u8) -> usize) -> Option<(u8, u8)> {
    match r.recv(deadline, |b| b.to_vec()) {
        Ok(b) => Some(parse(&b, len_of)),
        Err(Error::Empty) => None,
        Err(e) => panic!("recv failed: {e}"),
    }
}

/// Takes what is left, without waiting (after every other model thread has finished).
fn drain(r: &R, len_of: impl Fn(u8, u8) -> usize + Copy) -> Vec<(u8, u8)> {
    std::iter::from_fn(|| recv(r, now(), len_of)).collect()
}

/// What a ring must look like once everyone is done: empty, unlocked, nobody registered
/// as a waiter, no item open.
fn assert_quiet(r: &R) {
    let c = r.ctl();
    assert_eq!(r.len(), 0, "items left");
    assert!(!mutex::is_locked(c.plock.raw_word()), "producer lock held");
    assert!(!mutex::is_locked(c.clock.raw_word()), "consumer lock held");
    assert_eq!(c.room.waiters.value(), 0, "a room waiter left registered");
    assert_eq!(c.data.waiters.value(), 0, "a data waiter left registered");
    assert_eq!(
        c.producer.stream.value(),
        NO_ITEM,
        "a streamed item left open"
    );
}

/// Asserts each producer's items arrived in order, none twice.
fn assert_in_order(got: &[(u8, u8)]) {
    let mut seen = BTreeSet::new();
    let mut last = [None::<u8>; 256];
    for &(p, i) in got {
        assert!(seen.insert((p, i)), "item {p}/{i} delivered twice");
        assert!(
            last[p as usize].is_none_or(|l| l < i),
            "producer {p}'s items out of order: {got:?}"
        );
        last[p as usize] = Some(i);
    }
}

/// Two producers and one consumer on a ring that holds one item at a time: every item
/// arrives once, in its producer's order, and the producers' waits for room all end.
#[test]
fn two_producers_one_consumer() {
    let n = if deep() { 2 } else { 1 };
    check(move || {
        let r = Arc::new(R::model(32, 1));
        let producers: Vec<_> = (1..=2u8)
            .map(|p| {
                let r = r.clone();
                loom::thread::spawn(move || {
                    for i in 0..n {
                        r.send(&item(p, i, 2), None).unwrap();
                    }
                })
            })
            .collect();
        let got: Vec<_> = (0..2 * n)
            .map(|_| recv(&r, None, |_, _| 2).expect("an item"))
            .collect();
        for t in producers {
            t.join().unwrap();
        }
        assert_in_order(&got);
        assert_quiet(&r);
    });
}

/// One producer and two consumers, each stopping at its end marker (item 0xff): every
/// item arrives once, and each consumer sees them in order. (Just the markers in CI: one
/// item more takes the checker over two minutes.)
#[test]
fn one_producer_two_consumers() {
    let n = if deep() { 1 } else { 0 };
    check(move || {
        let r = Arc::new(R::model(32, 1));
        let consumer = |r: Arc<R>| {
            move || {
                let mut got = Vec::new();
                loop {
                    let (p, i) = recv(&r, None, |_, _| 2).expect("an item");
                    if i == 0xff {
                        return got;
                    }
                    got.push((p, i));
                }
            }
        };
        let c = loom::thread::spawn(consumer(r.clone()));
        let r2 = r.clone();
        let p = loom::thread::spawn(move || {
            for i in 0..n {
                r2.send(&item(1, i, 2), None).unwrap();
            }
            r2.send(&item(1, 0xff, 2), None).unwrap();
            r2.send(&item(2, 0xff, 2), None).unwrap();
        });
        let mut got = consumer(r.clone())();
        let theirs = c.join().unwrap();
        p.join().unwrap();
        assert_in_order(&got);
        assert_in_order(&theirs);
        got.extend(theirs);
        got.sort();
        assert_eq!(got, (0..n).map(|i| (1, i)).collect::<Vec<_>>());
        assert_quiet(&r);
    });
}

/// Streamed item lengths: producer 1's item 0 is streamed in two pieces (a `First` that
/// half fills the ring, then a `Last` that waits for room); `BIG`, larger than the ring.
fn streamed_len(p: u8, i: u8) -> usize {
    match (p, i) {
        (1, 0) => 12,
        (1, 1) => BIG,
        _ => 2,
    }
}

/// Longer than the 32-byte ring: five pieces of at most a quarter of it.
const BIG: usize = 40;

/// An item larger than the ring streams through in pieces while the consumer drains it,
/// and arrives whole.
#[test]
fn an_item_larger_than_the_ring_streams_through() {
    check(|| {
        let r = Arc::new(R::model(32, 0));
        let r1 = r.clone();
        let big = loom::thread::spawn(move || r1.send(&item(1, 1, BIG), None).unwrap());
        assert_eq!(recv(&r, None, streamed_len), Some((1, 1)));
        big.join().unwrap();
        assert_quiet(&r);
    });
}

/// A streamed item and a small one from another producer: the small one arrives whole
/// before or after the other, never inside it.
#[test]
fn a_small_item_never_lands_inside_a_streamed_one() {
    check(|| {
        let r = Arc::new(R::model(32, 0));
        let r1 = r.clone();
        let big = loom::thread::spawn(move || r1.send(&item(1, 0, 12), None).unwrap());
        let r2 = r.clone();
        let small = loom::thread::spawn(move || r2.send(&item(2, 0, 2), None).unwrap());
        let mut got: Vec<_> = (0..2)
            .map(|_| recv(&r, None, streamed_len).expect("an item"))
            .collect();
        big.join().unwrap();
        small.join().unwrap();
        got.sort();
        assert_eq!(got, [(1, 0), (2, 0)]);
        assert_quiet(&r);
    });
}

/// Runs `model(k)` for k = 0, 1, ... until the victim in it no longer dies in any
/// execution: every die point in turn. `model` returns whether its victim died.
///
/// At preemption bound 1 in CI (a victim's death already forces the schedule to change
/// hands, and bound 2 takes minutes per model); `MPROC_MODEL_DEEP=1` runs the bound of
/// `MPROC_MODEL_BOUND` (default 2).
fn at_every_die_point(model: fn(u32) -> bool) {
    let bound = if deep() { None } else { Some(1) };
    for k in 0.. {
        let died = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = died.clone();
        check_with(bound, move || {
            if model(k) {
                d.store(true, Ordering::Relaxed);
            }
        });
        if !died.load(Ordering::Relaxed) {
            assert!(k > 0, "the victim never reached a die point");
            return;
        }
    }
}

/// A producer dying at each of its steps while it streams an item in two pieces (so it
/// dies holding the lock, mid-item, or asleep waiting for room), while another producer
/// waits for the lock (the kernel's OWNER_DIED mark wakes it): the consumer never gets a
/// torn item, the other producer's item arrives, whoever takes the lock next (that
/// producer in `acquire_producer`, or the consumer's probe in `rescue_stream`) repairs, and
/// the ring ends quiet and usable, with no room waiter left registered.
#[test]
fn a_producer_dying_at_every_step() {
    at_every_die_point(|k| {
        let r = Arc::new(R::model(32, 0));
        let r1 = r.clone();
        let dying = loom::thread::spawn(move || {
            victim(Some(k), || r1.send(&item(1, 0, 12), None).unwrap()) == Fate::Died
        });
        // The consumer takes what comes until the end marker, sent once the victim is done,
        // so a live victim always finds room.
        let r3 = r.clone();
        let consumer = loom::thread::spawn(move || {
            let mut got = Vec::new();
            while !got.contains(&(3, 0)) {
                got.push(recv(&r3, None, streamed_len).expect("an item"));
            }
            got
        });
        // The live producer.
        r.send(&item(2, 0, 2), None).unwrap();
        let died = dying.join().unwrap();
        r.send(&item(3, 0, 2), None).unwrap();
        let got = consumer.join().unwrap();
        assert_in_order(&got);
        assert!(got.contains(&(2, 0)), "the live producer's item was lost");
        if !died {
            assert!(got.contains(&(1, 0)), "a finished item was lost");
        }
        assert_quiet(&r);
        died
    });
}

/// The room-waiter leak (issue 18): a producer killed asleep waiting for room, found dead
/// by the consumer's probe (`rescue_stream`), not by another producer. The repair must
/// forget its registration in `room.waiters`; left at 1, every later `get` makes a futex
/// wake for nobody.
#[test]
fn a_producer_killed_waiting_for_room_is_forgotten_by_the_rescue() {
    at_every_die_point(|k| {
        let r = Arc::new(R::model(32, 0));
        let r1 = r.clone();
        let dying = loom::thread::spawn(move || {
            victim(Some(k), || r1.send(&item(1, 0, 12), None).unwrap()) == Fate::Died
        });
        // The consumer takes what comes until the end marker, which is sent only once the
        // victim is done: until then only the consumer's probe can find it dead.
        let r2 = r.clone();
        let consumer = loom::thread::spawn(move || {
            let mut got = Vec::new();
            while !got.contains(&(3, 0)) {
                got.push(recv(&r2, None, streamed_len).expect("an item"));
            }
            got
        });
        let died = dying.join().unwrap();
        // With the leak, this send finds the lock clean (the consumer repaired it) and the
        // registration stays.
        r.send(&item(3, 0, 2), None).unwrap();
        let got = consumer.join().unwrap();
        // A victim dead after publishing its last piece still delivered its item.
        let whole: &[(u8, u8)] = &[(1, 0), (3, 0)];
        assert!(got == whole || died && got == [(3, 0)], "got {got:?}");
        assert_eq!(
            r.ctl().room.waiters.value(),
            0,
            "a dead room waiter left registered"
        );
        assert_quiet(&r);
        died
    });
}

/// A consumer dying at each of its steps while it takes two items, and a second consumer
/// waits behind it (asleep on the lock, woken by the kernel's OWNER_DIED mark): nothing
/// torn, nothing twice, at most the one item the victim was taking lost, and the ring
/// ends quiet and usable. (Room waits are the other models' business: this ring holds all
/// three items.)
#[test]
fn a_consumer_dying_at_every_step() {
    at_every_die_point(|k| {
        let r = Arc::new(R::model(64, 0));
        let r1 = r.clone();
        let producer = loom::thread::spawn(move || {
            for i in 0..3 {
                r1.send(&item(1, i, 2), None).unwrap();
            }
        });
        let r2 = r.clone();
        let dying = loom::thread::spawn(move || {
            let mut got = Vec::new();
            let fate = victim(Some(k), || {
                for _ in 0..2 {
                    let (p, i) = recv(&r2, None, |_, _| 2).expect("an item");
                    got.push((p, i));
                }
            });
            (got, fate == Fate::Died)
        });
        // Three items; the victim takes at most two: one is always left for us.
        let mine = recv(&r, None, |_, _| 2).expect("an item");
        let (theirs, died) = dying.join().unwrap();
        producer.join().unwrap();
        let mut all = vec![mine];
        all.extend(drain(&r, |_, _| 2));
        assert_in_order(&all);
        assert_in_order(&theirs);
        all.extend(theirs);
        all.sort();
        // Sorted, the whole is in order exactly when no item came twice.
        assert_in_order(&all);
        let lost = 3 - all.len();
        assert!(lost <= usize::from(died), "{lost} items lost: {all:?}");
        r.send(&item(2, 0, 2), None).unwrap();
        assert_eq!(recv(&r, now(), |_, _| 2), Some((2, 0)));
        assert_quiet(&r);
        died
    });
}

/// The eventcount alone: a waiter for a count and a changer that raises it twice, once
/// with a SeqCst store (`notify_after_seqcst`), once with a relaxed one (`notify`). No
/// wake-up is lost (a lost one is a loom deadlock: the waiter's sleep has no timeout).
#[test]
fn eventcount_loses_no_wake_up() {
    check(|| {
        let s = Arc::new((
            EventCount::<Model> {
                seq: MWord::new(0),
                waiters: MWord::new(0),
                need: MWord::new(0),
            },
            MWord::new(0),
        ));
        let s2 = s.clone();
        let changer = loom::thread::spawn(move || {
            let (ec, count) = &*s2;
            count.store(1, Ordering::SeqCst);
            ec.notify_after_seqcst();
            count.fetch_add(1, Ordering::Relaxed);
            ec.notify();
        });
        let (ec, count) = &*s;
        for want in 1..=2 {
            assert!(ec.wait_until(None, || count.load(Ordering::Acquire) >= want, || {}));
        }
        changer.join().unwrap();
        assert_eq!(ec.waiters.value(), 0);
    });
}

/// Issue 19: an abandoned first piece. A hostile producer publishes an item's `First`
/// and lets go of the lock without marking the item open (`stream` clear), then dies; or
/// dies at any step before, holding the lock. Once its first piece is published and it
/// is dead, an untimed pipe receive must not hang: time flows after a death, so the
/// consumer's probe takes the lock, finds nothing after the piece, closes the item and
/// reports the torn message. (The old rescue trusted `stream` and probed for ever: loom's
/// branch limit.) Otherwise a marker item ends the receive.
#[test]
fn an_abandoned_first_piece_never_hangs_the_consumer() {
    at_every_die_point(|k| {
        let r = Arc::new(R::model(32, 0));
        let r1 = r.clone();
        let hostile = loom::thread::spawn(move || {
            let fate = victim(Some(k), || {
                {
                    let (p, _) = r1.ctl().lock_producer(None).unwrap();
                    r1.write_frame(&p, Kind::First, &item(1, 0, 6));
                }
                // Released without an `Abort`, the item never marked open.
                MWord::die_point();
            });
            fate == Fate::Died
        });
        let r2 = r.clone();
        let consumer = loom::thread::spawn(move || {
            r2.recv_pipe(
                None,
                None,
                |b| b.to_vec(),
                None::<fn(u64, Vec<u8>) -> Vec<u8>>,
            )
        });
        let died = hostile.join().unwrap();
        let published = pos_of(r.ctl().tail.0.load(Ordering::Acquire)) != 0;
        let abandoned = died && published;
        if !abandoned {
            r.send(&item(3, 0, 2), None).unwrap();
        }
        let got = consumer.join().unwrap();
        if abandoned {
            let err = got.expect_err("a torn message delivered");
            assert!(err.to_string().contains("middle of a message"), "{err}");
        } else {
            assert_eq!(parse(&got.expect("the marker"), |_, _| 2), (3, 0));
        }
        assert_quiet(&r);
        died
    });
}

/// A timed receive that reaches its (already past) deadline in the middle of a streamed
/// item drops it whole: whatever the interleaving, the next receive gets the next item
/// intact, never a piece of the dropped one, and the ring ends quiet.
#[test]
fn a_timed_recv_mid_item_leaves_the_ring_consistent() {
    check(|| {
        let r = Arc::new(R::model(32, 0));
        let r1 = r.clone();
        let producer = loom::thread::spawn(move || {
            r1.send(&item(1, 0, 12), None).unwrap();
            r1.send(&item(2, 0, 2), None).unwrap();
        });
        let mut got: Vec<_> = recv(&r, now(), streamed_len).into_iter().collect();
        while !got.contains(&(2, 0)) {
            got.push(recv(&r, None, streamed_len).expect("an item"));
        }
        producer.join().unwrap();
        assert_in_order(&got);
        assert!(got == [(1, 0), (2, 0)] || got == [(2, 0)], "got {got:?}");
        assert_quiet(&r);
    });
}
