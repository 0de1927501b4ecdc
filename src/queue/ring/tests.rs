//! The ring with threads over heap memory: order, wrap-around, bounds, streaming, timeouts,
//! and owners that die holding a side's lock (threads that exit holding it: the kernel's
//! robust list reports them exactly as it reports a killed process).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::Ring;
use super::control::IN_ITEM;
use super::frame::{HEADER, Kind, units};
use super::{pack, pos_of};
use crate::error::{Error, Result};
use crate::sync::raw::mutex;

fn recv_vec(r: &Ring, deadline: Option<Instant>) -> Result<Vec<u8>> {
    r.recv(deadline, |b| b.to_vec())
}

fn soon(ms: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(ms))
}

#[test]
fn fifo_and_exact_len() {
    let r = Ring::heap(4096, 0);
    assert_eq!(r.len(), 0);
    for i in 0..10u8 {
        r.send(&vec![i; i as usize * 3], None).unwrap();
        assert_eq!(r.len(), i as usize + 1);
    }
    for i in 0..10u8 {
        assert_eq!(recv_vec(&r, None).unwrap(), vec![i; i as usize * 3]);
    }
    assert_eq!(r.len(), 0);
    assert!(matches!(recv_vec(&r, soon(0)), Err(Error::Empty)));
}

#[test]
fn frames_wrap_around_the_end() {
    let r = Ring::heap(256, 0);
    for i in 0..1000u32 {
        let item: Vec<u8> = (0..(i % 37) as u8).collect();
        r.send(&item, None).unwrap();
        assert_eq!(recv_vec(&r, None).unwrap(), item);
    }
}

#[test]
fn bounded_counts_items() {
    let r = Ring::heap(4096, 2);
    r.send(b"a", soon(0)).unwrap();
    r.send(b"b", soon(0)).unwrap();
    assert!(r.is_full());
    let t = Instant::now();
    assert!(matches!(r.send(b"c", soon(100)), Err(Error::Full)));
    assert!(t.elapsed() >= Duration::from_millis(90));
    assert_eq!(recv_vec(&r, None).unwrap(), b"a");
    r.send(b"c", soon(0)).unwrap();
    assert_eq!(r.len(), 2);
}

#[test]
fn byte_room_blocks_then_frees() {
    let r = Ring::heap(256, 0);
    r.send(&[1; 200], None).unwrap();
    assert!(matches!(r.send(&[2; 100], soon(20)), Err(Error::Full)));
    assert_eq!(recv_vec(&r, None).unwrap(), vec![1; 200]);
    r.send(&[2; 100], soon(0)).unwrap();
}

#[test]
fn an_item_larger_than_the_ring_streams_through() {
    let r = Arc::new(Ring::heap(1024, 0));
    let item: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let r2 = r.clone();
    let it = item.clone();
    let t = thread::spawn(move || r2.send(&it, None).unwrap());
    assert_eq!(recv_vec(&r, soon(10_000)).unwrap(), item);
    t.join().unwrap();
    assert_eq!(r.len(), 0);
}

#[test]
fn a_timed_out_stream_is_discarded_whole() {
    let r = Ring::heap(1024, 0);
    // Nobody reads: the stream fills the ring and times out.
    assert!(matches!(r.send(&[9; 5000], soon(50)), Err(Error::Full)));
    assert_eq!(r.len(), 0);
    // The pieces and the Abort drain away; the next item arrives intact.
    let r = Arc::new(r);
    let r2 = r.clone();
    let t = thread::spawn(move || r2.send(b"after", None).unwrap());
    assert_eq!(recv_vec(&r, soon(10_000)).unwrap(), b"after");
    t.join().unwrap();
}

#[test]
fn a_corrupt_header_is_an_error_not_a_wild_read() {
    let r = Ring::heap(1024, 0);
    r.send(b"ok", None).unwrap();
    // Scribble over the frame header as a hostile process could: a huge length.
    let (p, _) = r.ctl().lock_producer(None).unwrap();
    r.mem.write(&p, 0, &[0xff, 0xff, 0xff, 0x7f, 3, 0, 0, 0]);
    drop(p);
    let err = recv_vec(&r, soon(100)).unwrap_err();
    assert!(err.to_string().contains("queue ring is corrupt"), "{err}");
}

/// Runs `f` on a thread that then exits holding the lock `f` leaked: the kernel marks it
/// `OWNER_DIED`, as for a process killed holding it.
fn die_holding(r: &Arc<Ring>, f: impl FnOnce(&Ring) + Send + 'static) {
    let r = r.clone();
    thread::spawn(move || f(&r)).join().unwrap();
}

#[test]
fn a_producer_dead_mid_stream_is_aborted_and_the_ring_goes_on() {
    let r = Arc::new(Ring::heap(1024, 0));
    die_holding(&r, |r| {
        let (p, _) = r.ctl().lock_producer(None).unwrap();
        r.ctl().producer.stream.store(IN_ITEM, Ordering::SeqCst);
        r.write_frame(&p, Kind::First, &[5; 300]);
        r.write_frame(&p, Kind::More, &[5; 300]);
        std::mem::forget(p);
    });
    // A consumer takes the first pieces, then finds the producer dead and aborts the item
    // itself; with no other item it reports Empty at its deadline.
    let t = Instant::now();
    assert!(matches!(recv_vec(&r, soon(300)), Err(Error::Empty)));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(!mutex::is_locked(r.ctl().plock.raw_word()));
    r.send(b"next", soon(1000)).unwrap();
    assert_eq!(recv_vec(&r, soon(1000)).unwrap(), b"next");
    assert_eq!(r.len(), 0);
}

#[test]
fn a_new_producer_repairs_a_dead_ones_stream() {
    let r = Arc::new(Ring::heap(1024, 0));
    die_holding(&r, |r| {
        let (p, _) = r.ctl().lock_producer(None).unwrap();
        r.ctl().producer.stream.store(IN_ITEM, Ordering::SeqCst);
        r.write_frame(&p, Kind::First, &[5; 300]);
        std::mem::forget(p);
    });
    r.send(b"fresh", soon(2000)).unwrap();
    assert_eq!(recv_vec(&r, soon(1000)).unwrap(), b"fresh");
    assert!(matches!(recv_vec(&r, soon(0)), Err(Error::Empty)));
}

#[test]
fn a_producer_dead_while_waiting_for_room_is_replaced() {
    let r = Arc::new(Ring::heap(4096, 1));
    r.send(b"a", None).unwrap();
    // A producer that registered as a room waiter and died holding the lock.
    die_holding(&r, |r| {
        let (p, _) = r.ctl().lock_producer(None).unwrap();
        r.ctl().room.waiters.fetch_add(1, Ordering::SeqCst);
        std::mem::forget(p);
    });
    assert_eq!(recv_vec(&r, soon(1000)).unwrap(), b"a");
    r.send(b"b", soon(2000)).unwrap();
    assert_eq!(r.ctl().room.waiters.load(Ordering::SeqCst), 0);
    assert_eq!(recv_vec(&r, soon(1000)).unwrap(), b"b");
}

/// Issue 18's room-waiter leak: a producer killed asleep waiting for room, mid-item, is
/// found dead by the consumer's probe (`rescue_stream`), not by a producer. The rescue must
/// forget its registration, or every later `get` wakes the room futex for nobody (counted
/// here by the room eventcount's sequence, which each wake bumps).
#[test]
fn a_producer_dead_waiting_for_room_is_forgotten_by_the_consumers_rescue() {
    let r = Arc::new(Ring::heap(1024, 0));
    die_holding(&r, |r| {
        let (p, _) = r.ctl().lock_producer(None).unwrap();
        r.ctl().producer.stream.store(IN_ITEM, Ordering::SeqCst);
        r.write_frame(&p, Kind::First, &[5; 300]);
        // As `wait_room` leaves it when the process is killed in its sleep.
        r.ctl().room.need.store(40, Ordering::Relaxed);
        r.ctl().room.waiters.fetch_add(1, Ordering::SeqCst);
        std::mem::forget(p);
    });
    // The consumer takes the first piece, waits for the rest, and its probe (every 50 ms)
    // finds the producer dead and closes the item.
    assert!(matches!(recv_vec(&r, soon(300)), Err(Error::Empty)));
    assert!(!mutex::is_locked(r.ctl().plock.raw_word()));
    assert_eq!(r.ctl().room.waiters.load(Ordering::SeqCst), 0);
    let wakes = r.ctl().room.seq.load(Ordering::SeqCst);
    for i in 0..100u8 {
        r.send(&[i], soon(1000)).unwrap();
        assert_eq!(recv_vec(&r, soon(1000)).unwrap(), [i]);
    }
    assert_eq!(
        r.ctl().room.seq.load(Ordering::SeqCst) - wakes,
        0,
        "room wakes for nobody"
    );
}

#[test]
fn a_consumer_dead_mid_stream_leaves_the_rest_skipped() {
    let r = Arc::new(Ring::heap(1024, 0));
    {
        let (p, _) = r.ctl().lock_producer(None).unwrap();
        // A complete streamed item whose consumer died after its first piece.
        r.write_frame(&p, Kind::First, &[1; 300]);
        r.write_frame(&p, Kind::Last, &[1; 300]);
        r.write_frame(&p, Kind::Whole, b"ok");
    }
    die_holding(&r, |r| {
        let (c, _) = r.ctl().lock_consumer(None).unwrap();
        let first = units(HEADER + 300);
        r.ctl().head.0.store(pack(first, 0), Ordering::SeqCst);
        r.ctl().consumer.tail_seen.store(first, Ordering::SeqCst);
        std::mem::forget(c);
    });
    assert_eq!(r.len(), 2);
    assert_eq!(recv_vec(&r, soon(2000)).unwrap(), b"ok");
    assert_eq!(r.len(), 0);
}

/// A consumer asleep on the lock while its holder dies is woken by the kernel (no polling
/// of pids: a thread of a live process can die holding it too).
#[test]
fn a_waiter_behind_a_dying_consumer_takes_over() {
    let r = Arc::new(Ring::heap(1024, 0));
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (die_tx, die_rx) = std::sync::mpsc::channel::<()>();
    let r2 = r.clone();
    let holder = thread::spawn(move || {
        let (c, _) = r2.ctl().lock_consumer(None).unwrap();
        locked_tx.send(()).unwrap();
        die_rx.recv().unwrap();
        std::mem::forget(c);
    });
    locked_rx.recv().unwrap();
    r.send(b"x", None).unwrap();
    let r3 = r.clone();
    let waiter = thread::spawn(move || recv_vec(&r3, soon(10_000)));
    thread::sleep(Duration::from_millis(50));
    die_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), b"x");
    assert_eq!(
        pos_of(r.ctl().head.0.load(Ordering::SeqCst)),
        units(HEADER + 1)
    );
}

#[test]
fn task_done_and_join() {
    let r = Ring::heap(4096, 0);
    assert!(r.join(soon(0)));
    assert!(r.task_done().is_err());
    r.send(b"x", None).unwrap();
    r.send(b"y", None).unwrap();
    assert!(!r.join(soon(30)));
    r.task_done().unwrap();
    r.task_done().unwrap();
    assert!(matches!(r.task_done(), Err(Error::ValueError(_))));
    assert!(r.join(soon(0)));
}

#[test]
fn many_producers_many_consumers_exact_sum() {
    const PRODUCERS: u64 = 3;
    const CONSUMERS: usize = 3;
    const N: u64 = 20_000;
    let r = Arc::new(Ring::heap(2048, 0));
    let start = Arc::new(Barrier::new(PRODUCERS as usize + CONSUMERS));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let (r, start) = (r.clone(), start.clone());
        producers.push(thread::spawn(move || {
            start.wait();
            for i in 0..N {
                let v = p * N + i;
                // Mix small, medium and ring-exceeding items.
                let len = match i % 1000 {
                    0 => 5000,
                    n if n % 10 == 0 => 300,
                    _ => 8,
                };
                let mut item = vec![0u8; len];
                item[..8].copy_from_slice(&v.to_le_bytes());
                r.send(&item, None).unwrap();
            }
        }));
    }
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let (r, start) = (r.clone(), start.clone());
        consumers.push(thread::spawn(move || {
            start.wait();
            let (mut sum, mut n) = (0u64, 0u64);
            while let Ok(v) = r.recv(soon(2000), |b| {
                u64::from_le_bytes(b[..8].try_into().unwrap())
            }) {
                if v == u64::MAX {
                    break;
                }
                sum += v;
                n += 1;
            }
            (sum, n)
        }));
    }
    for p in producers {
        p.join().unwrap();
    }
    for _ in 0..CONSUMERS {
        r.send(&u64::MAX.to_le_bytes(), None).unwrap();
    }
    let (mut sum, mut n) = (0, 0);
    for c in consumers {
        let (s, k) = c.join().unwrap();
        sum += s;
        n += k;
    }
    let total = PRODUCERS * N;
    assert_eq!(n, total);
    assert_eq!(sum, total * (total - 1) / 2);
    assert_eq!(r.len(), 0);
}

/// A hostile peer moves the tail (or the consumer's cached view of it) far past the head:
/// the consumer reports a corrupt ring instead of reading (or asserting) past the ring.
#[test]
fn hostile_tail_is_an_error_not_a_panic() {
    for far in [0x1000_0000u32, u32::MAX] {
        let r = Ring::heap(256, 0);
        r.send(&[1, 2, 3], None).unwrap();
        r.ctl().tail.0.store(pack(far, 1), Ordering::SeqCst);
        let got =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| recv_vec(&r, soon(100))));
        match got {
            Ok(Err(Error::Codec(m))) => assert!(m.contains("corrupt"), "{m}"),
            other => panic!("expected a codec error, got {other:?}"),
        }
        // The consumer lock was released: the next call fails the same way, promptly.
        assert!(matches!(recv_vec(&r, soon(100)), Err(Error::Codec(_))));
    }
    // Just one unit more than the ring holds is already corrupt.
    let r = Ring::heap(256, 0);
    let cap = r.cap_units;
    r.ctl().tail.0.store(pack(cap + 1, 1), Ordering::SeqCst);
    assert!(matches!(recv_vec(&r, soon(100)), Err(Error::Codec(_))));
    // The cached view is another process's word too.
    let r = Ring::heap(256, 0);
    r.ctl()
        .consumer
        .tail_seen
        .store(0x1000_0000, Ordering::Relaxed);
    assert!(matches!(recv_vec(&r, soon(100)), Err(Error::Codec(_))));
}
