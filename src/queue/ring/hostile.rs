//! The ring against a peer that writes its shared memory (issue 19): a begun item whose
//! producer stalls or lets go of the lock, and control words and frames written over
//! between operations. Every call returns (within its deadline, or within a probe slice
//! of finding the item abandoned), never panics (debug builds check every subtraction),
//! and reports what it cannot trust as the corrupt-ring error.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::Ring;
use super::frame::Kind;
use super::{pack, pos_of};
use crate::error::{Error, Result};
use crate::sync::raw::mutex;

fn recv_vec(r: &Ring, deadline: Option<Instant>) -> Result<Vec<u8>> {
    r.recv(deadline, |b| b.to_vec())
}

fn soon(ms: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(ms))
}

/// Runs `f` on a thread and waits `secs` for it: a hang fails the test with `what` (the
/// thread is left behind, blocked, as the process ends).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: {what} did not return within {secs} s")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

fn is_corrupt(e: &Error) -> bool {
    matches!(e, Error::Codec(m) if m.contains("queue ring is corrupt"))
}

/// A producer alive but stalled after its first piece: a timed receive returns at its
/// deadline, and the ring stays consistent (the stalled item, finished later, is skipped
/// whole; the next one arrives intact).
#[test]
fn a_timed_recv_mid_item_returns_at_its_deadline() {
    let r = Arc::new(Ring::heap(1024, 0));
    let (begun, wait_begun) = mpsc::channel();
    let (go, wait_go) = mpsc::channel::<()>();
    let r2 = r.clone();
    let producer = thread::spawn(move || {
        let mut w = r2.writer(None, Vec::new());
        // More than a quarter of the ring: streamed, and the first piece is published
        // once the second opens.
        w.write(&[7; 600]).unwrap();
        assert!(w.published());
        begun.send(()).unwrap();
        wait_go.recv().unwrap();
        w.write(&[7; 100]).unwrap();
        w.finish().unwrap();
        r2.send(b"next", None).unwrap();
    });
    wait_begun.recv().unwrap();
    let r3 = r.clone();
    let (got, took) = within(10, "a timed recv mid-item", move || {
        let t = Instant::now();
        (recv_vec(&r3, soon(300)), t.elapsed())
    });
    assert!(matches!(got, Err(Error::Empty)), "{got:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    go.send(()).unwrap();
    producer.join().unwrap();
    // The rest of the stalled item is skipped, never delivered torn.
    assert_eq!(recv_vec(&r, soon(2000)).unwrap(), b"next");
    assert_eq!(r.len(), 0);
}

/// A first piece published by a peer that then released the lock without marking the
/// item open (a hostile or broken producer), and nothing after it: an untimed pipe
/// receive finds the lock free and nothing more published, and reports the torn message
/// within a probe slice or two (it used to wait for ever); the ring goes on.
#[test]
fn a_first_piece_left_without_its_producer_is_dropped() {
    let r = Arc::new(Ring::heap(1024, 0));
    {
        let (p, _) = r.ctl().lock_producer(None).unwrap();
        r.write_frame(&p, Kind::First, &[5; 200]);
        // Released without `stream` set, as a peer that forged the frame leaves it.
    }
    let r2 = r.clone();
    let (got, took) = within(
        10,
        "an untimed recv after an abandoned first piece",
        move || {
            let t = Instant::now();
            let got = r2.recv_pipe(
                None,
                None,
                |b| b.to_vec(),
                None::<fn(u64, Vec<u8>) -> Vec<u8>>,
            );
            (got, t.elapsed())
        },
    );
    let err = got.unwrap_err();
    assert!(err.to_string().contains("mid"), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(!mutex::is_locked(r.ctl().plock.raw_word()));
    r.send(b"next", None).unwrap();
    assert_eq!(recv_vec(&r, soon(1000)).unwrap(), b"next");
    assert_eq!(r.len(), 0);
}

/// A head written past the tail (the units in use then wrap to more than the ring holds):
/// producers and consumers report the corrupt ring; debug builds used to panic with
/// "attempt to subtract with overflow".
#[test]
fn a_forged_head_is_the_corrupt_ring_error_not_a_panic() {
    let forged_ring = |forged: u32| {
        let r = Ring::heap(1024, 0);
        r.send(b"a", None).unwrap();
        let tail = r.ctl().tail.0.load(Ordering::Relaxed);
        r.ctl()
            .head
            .0
            .store(pack(pos_of(tail).wrapping_add(forged), 0), Ordering::SeqCst);
        r
    };
    for forged in [1u32, 5, 1 << 20, u32::MAX - 1000] {
        // A streamed item takes a fresh look at the head.
        let err = forged_ring(forged).send(&[1; 600], soon(100)).unwrap_err();
        assert!(is_corrupt(&err), "{forged}: {err:?}");
        // A small one may go by the producer's cached view of the head (a lower bound,
        // never read from the forged word), or find the forgery.
        let small = forged_ring(forged).send(&[1; 20], soon(100));
        assert!(
            small.as_ref().err().is_none_or(is_corrupt),
            "{forged}: {small:?}"
        );
        let err = recv_vec(&forged_ring(forged), soon(100)).unwrap_err();
        assert!(is_corrupt(&err), "{forged}: {err:?}");
    }
}

/// A bounded ring whose counts claim more items than `maxsize`: the corrupt-ring error,
/// not a producer waiting for room for ever.
#[test]
fn forged_counts_past_maxsize_are_the_corrupt_ring_error() {
    let r = Ring::heap(1024, 2);
    let tail = r.ctl().tail.0.load(Ordering::Relaxed);
    r.ctl()
        .tail
        .0
        .store(pack(pos_of(tail), 7), Ordering::SeqCst);
    let err = within(10, "a put on forged counts", move || r.send(b"x", None)).unwrap_err();
    assert!(is_corrupt(&err), "{err:?}");
}

/// A control word to write over, or data-area bytes.
#[derive(Debug, Clone)]
enum Scribble {
    Head(u64),
    Tail(u64),
    TailSeen(u32),
    HeadSeen(u32),
    Stream(u32),
    Need(u32),
    Data(usize, Vec<u8>),
}

fn scribble() -> impl Strategy<Value = Scribble> {
    let small = || prop_oneof![0u32..64, any::<u32>()];
    let pos = || {
        prop_oneof![
            (0u64..64, 0u64..64).prop_map(|(c, p)| c << 32 | p),
            any::<u64>()
        ]
    };
    prop_oneof![
        pos().prop_map(Scribble::Head),
        pos().prop_map(Scribble::Tail),
        small().prop_map(Scribble::TailSeen),
        small().prop_map(Scribble::HeadSeen),
        small().prop_map(Scribble::Stream),
        small().prop_map(Scribble::Need),
        (0usize..512, proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, b)| Scribble::Data(at, b)),
    ]
}

fn apply(r: &Ring, s: &Scribble) {
    let c = r.ctl();
    match s {
        Scribble::Head(v) => c.head.0.store(*v, Ordering::SeqCst),
        Scribble::Tail(v) => c.tail.0.store(*v, Ordering::SeqCst),
        Scribble::TailSeen(v) => c.consumer.tail_seen.store(*v, Ordering::SeqCst),
        Scribble::HeadSeen(v) => c.producer.head_seen.store(*v, Ordering::SeqCst),
        Scribble::Stream(v) => c.producer.stream.store(*v, Ordering::SeqCst),
        Scribble::Need(v) => c.room.need.store(*v, Ordering::SeqCst),
        Scribble::Data(at, b) => {
            let (p, _) = c.lock_producer(None).unwrap();
            r.mem.write(&p, *at % r.capacity(), b);
        }
    }
}

/// One operation between scribbles.
#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Recv,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop_oneof![1usize..40, 100usize..400].prop_map(Op::Send),
        Just(Op::Recv)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Control words and data bytes written over between operations: every operation
    /// returns within its deadline (a watchdog fails a hang), none panics, and every
    /// error is the corrupt-ring error (or the deadline's `Full`/`Empty`). A fresh ring
    /// afterwards works, and the side locks are never left held.
    #[test]
    fn scribbled_rings_never_hang_panic_or_lie(
        steps in proptest::collection::vec((op(), proptest::option::of(scribble())), 1..12)
    ) {
        let r = Arc::new(Ring::heap(512, 4));
        let rr = r.clone();
        let outcome = within(30, "operations on a scribbled ring", move || {
            for (op, s) in &steps {
                let res = match op {
                    Op::Send(n) => rr.send(&vec![3; *n], soon(20)).map(drop),
                    Op::Recv => recv_vec(&rr, soon(20)).map(drop),
                };
                match res {
                    Ok(()) | Err(Error::Full) | Err(Error::Empty) => {}
                    Err(e) if is_corrupt(&e) => {}
                    Err(e) => return Err(format!("{op:?}: unexpected error {e:?}")),
                }
                if let Some(s) = s {
                    apply(&rr, s);
                }
            }
            Ok(())
        });
        prop_assert!(outcome.is_ok(), "{:?}", outcome);
        prop_assert!(!mutex::is_locked(r.ctl().plock.raw_word()), "producer lock left held");
        prop_assert!(!mutex::is_locked(r.ctl().clock.raw_word()), "consumer lock left held");
        // A re-created ring is untouched by all this.
        let fresh = Ring::heap(512, 4);
        fresh.send(b"fresh", soon(100)).unwrap();
        prop_assert_eq!(recv_vec(&fresh, soon(100)).unwrap(), b"fresh".to_vec());
    }
}
