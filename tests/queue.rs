//! Queue across real processes: FIFO, sizes, bounds, timeouts, close, big items, many
//! producers and consumers, and what happens when producers and consumers die (abort,
//! SIGKILL) in the middle of a put or a get, under every start method. Ports CPython's
//! `_TestQueue` behaviours (`_test_multiprocessing.py`, cpython.md §4).

mod util;

use std::time::{Duration, Instant};

use mproc::{Error, Event, Process, Queue, get_context, pipe};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use util::*;

const LONG: Duration = Duration::from_secs(20);

fn pattern(len: usize, seed: u8) -> Blob {
    Blob(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect(),
    )
}

fn put_range(q: Queue<u64>, from: u64, to: u64) {
    for i in from..to {
        q.put(i).expect("put");
    }
}

fn put_then_abort(q: Queue<String>) {
    q.put("last words".to_string()).expect("put");
    std::process::abort();
}

fn put_blob(q: Queue<Blob>, len: usize, seed: u8) {
    q.put(pattern(len, seed)).expect("put");
}

fn put_blob_after(q: Queue<Blob>, started: Event, len: usize) {
    started.set();
    let _ = q.put(pattern(len, 1));
}

fn get_one(q: Queue<u64>, waiting: Event) -> u64 {
    waiting.set();
    q.get().expect("get")
}

fn put_when_full(q: Queue<u64>, waiting: Event) {
    waiting.set();
    let _ = q.put(99);
}

fn sum_until_none(q: Queue<Option<u64>>) -> (u64, u64) {
    let (mut sum, mut n) = (0, 0);
    while let Some(v) = q.get_timeout(LONG).expect("an item or the sentinel") {
        sum += v;
        n += 1;
    }
    (sum, n)
}

fn produce(q: Queue<Option<u64>>, from: u64, to: u64) {
    for i in from..to {
        q.put(Some(i)).expect("put");
    }
}

fn echo_through(conn: mproc::Connection<Queue<u64>>) -> u64 {
    let q = conn.recv().expect("a queue");
    let x = q.get_timeout(LONG).expect("an item");
    q.put(x * 2).expect("put");
    x
}

// Ports _TestQueue.test_put / test_get (tests 24-25): FIFO order, the put and get variants,
// empty/full, and qsize tracking puts and gets (test 27, 0 -> 1 -> 2 -> 1 -> 0).
#[test]
fn fifo_qsize_empty_full() {
    let _s = shared();
    let q = Queue::bounded(6).unwrap();
    assert!(q.is_empty() && !q.is_full());
    assert_eq!(q.qsize(), 0);
    q.put(1).unwrap();
    assert_eq!(q.qsize(), 1);
    q.put_timeout(2, Duration::from_secs(1)).unwrap();
    assert_eq!(q.qsize(), 2);
    q.try_put(3).unwrap();
    q.put(4).unwrap();
    q.put_timeout(5, Duration::ZERO).unwrap();
    q.try_put(6).unwrap();
    assert!(q.is_full() && !q.is_empty());
    assert_eq!(q.qsize(), 6);
    assert_eq!(q.maxsize(), Some(6));
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.qsize(), 5);
    assert_eq!(q.get_timeout(Duration::from_secs(1)).unwrap(), 2);
    assert_eq!(q.try_get().unwrap(), 3);
    assert_eq!(q.get().unwrap(), 4);
    assert_eq!(q.get_timeout(Duration::ZERO).unwrap(), 5);
    assert_eq!(q.try_get().unwrap(), 6);
    assert!(q.is_empty() && !q.is_full());
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    let unbounded = Queue::<u8>::new().unwrap();
    assert_eq!(unbounded.maxsize(), None);
    assert!(!unbounded.is_full());
    // Python: maxsize 0 is unbounded.
    assert_eq!(Queue::<u8>::bounded(0).unwrap().maxsize(), None);
}

// Ports _TestQueue.test_put / test_get timing: at maxsize a timed put raises Full after about
// the timeout, a non-blocking one at once; on an empty queue likewise for get (Empty).
#[test]
fn timeouts_raise_full_and_empty_after_about_the_timeout() {
    let _s = shared();
    let q = Queue::bounded(1).unwrap();
    q.put(0u8).unwrap();
    let t = Instant::now();
    assert!(matches!(q.try_put(1), Err(Error::Full)));
    assert!(t.elapsed() < Duration::from_millis(100));
    let t = Instant::now();
    assert!(matches!(
        q.put_timeout(1, Duration::from_millis(200)),
        Err(Error::Full)
    ));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    q.get().unwrap();
    let t = Instant::now();
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    assert!(t.elapsed() < Duration::from_millis(100));
    let t = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(200)),
        Err(Error::Empty)
    ));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

// Ports _TestQueue.test_fork (test 26): items put by the parent before the child starts and
// by the child after are all received in order, then Empty; under every start method.
#[test]
fn parent_and_child_items_arrive_in_order_under_every_method() {
    let _s = shared();
    let _w = watchdog("parent and child items in order", 60);
    for m in METHODS {
        let q = Queue::new().unwrap();
        put_range(q.clone(), 0, 10);
        let mut p = get_context(m).process(put_range, (q.clone(), 10, 20));
        p.start().unwrap();
        for i in 0..20 {
            assert_eq!(q.get_timeout(LONG).unwrap(), i, "{m:?}");
        }
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0), "{m:?}");
        assert!(matches!(q.try_get(), Err(Error::Empty)), "{m:?}");
    }
}

// Ports _TestQueue.test_closed_queue_put_get_exceptions and test_closed_queue_empty_exceptions
// (test 32): close on an unused queue is a no-op and it stays empty; put and get after close
// are errors (`Error::QueueClosed`; Python raises ValueError); close twice is fine.
#[test]
fn close() {
    let _s = shared();
    let q = Queue::<u32>::new().unwrap();
    q.close();
    q.close();
    assert!(q.is_empty());
    let q = Queue::new().unwrap();
    q.put(1u32).unwrap();
    let other = q.clone();
    q.close();
    assert!(matches!(q.put(2), Err(Error::QueueClosed)));
    assert!(matches!(other.get(), Err(Error::QueueClosed)));
    assert_eq!(q.qsize(), 1, "items put before close stay in the queue");
}

// Ports _TestQueue.test_queue_feeder_donot_stop_onexc (test 30): an item that cannot be
// encoded (here: one containing a handle) is an error at put, and the next item is still
// delivered; with maxsize=1 qsize stays right.
#[test]
fn an_item_holding_a_handle_is_refused_at_put() {
    let _s = shared();
    let q = Queue::<Option<Queue<u8>>>::bounded(1).unwrap();
    let inner = Queue::new().unwrap();
    let err = q.put(Some(inner)).unwrap_err();
    assert!(
        matches!(&err, Error::Codec(m) if m.contains("handle")),
        "{err}"
    );
    assert_eq!(q.qsize(), 0);
    q.put(None).unwrap();
    assert_eq!(q.qsize(), 1);
    assert!(q.get().unwrap().is_none());
}

// A queue travels inside a connection message, and the child uses it.
#[test]
fn a_queue_travels_through_a_pipe() {
    let _s = shared();
    let _w = watchdog("queue through a pipe", 60);
    let (here, there) = pipe().unwrap();
    let q = Queue::new().unwrap();
    let p = mproc::spawn(echo_through, (there,)).unwrap();
    here.send(&q).unwrap();
    q.put(21).unwrap();
    // The child takes 21 and puts back 42; once it has returned, only 42 is left.
    assert_eq!(p.result().unwrap(), 21);
    assert_eq!(q.get_timeout(LONG).unwrap(), 42);
}

// The seeds' producer/consumer (examples/queue.rs): a producer child puts names; the parent
// joins it before anyone reads, then adds one more item and the None sentinel; the consumer
// child takes everything up to the sentinel, in order.
fn seed_producer(q: Queue<Option<String>>) {
    for name in ["sudh", "kumar", "pwskills", "krish", "naik"] {
        q.put(Some(name.to_string())).expect("put");
    }
}

fn seed_consumer(q: Queue<Option<String>>) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(s) = q.get_timeout(LONG).expect("item") {
        got.push(s);
    }
    got
}

#[test]
fn seeds_producer_consumer_with_a_sentinel_and_an_extra_item() {
    let _s = shared();
    let _w = watchdog("seeds producer/consumer", 60);
    let q = Queue::new().unwrap();
    let mut producer = Process::new(seed_producer, (q.clone(),));
    let mut consumer = Process::new(seed_consumer, (q.clone(),));
    producer.start().unwrap();
    consumer.start().unwrap();
    producer.join().unwrap();
    q.put(Some("xyz".to_string())).unwrap();
    q.put(None).unwrap();
    assert_eq!(
        consumer.result().unwrap(),
        ["sudh", "kumar", "pwskills", "krish", "naik", "xyz"]
    );
    assert!(q.is_empty());
}

// 2 producers x 100 000 items, 3 consumers: every item arrives exactly once.
#[test]
fn two_producers_three_consumers_exact_total() {
    let _s = shared();
    let _w = watchdog("2 producers x 3 consumers", 120);
    const N: u64 = 100_000;
    let q = Queue::new().unwrap();
    let mut consumers: Vec<_> = (0..3)
        .map(|_| mproc::spawn(sum_until_none, (q.clone(),)).unwrap())
        .collect();
    let mut producers: Vec<_> = (0..2)
        .map(|k| mproc::spawn(produce, (q.clone(), k * N, (k + 1) * N)).unwrap())
        .collect();
    for p in &mut producers {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    for _ in 0..3 {
        q.put(None).unwrap();
    }
    let (mut sum, mut n) = (0, 0);
    for c in consumers.drain(..) {
        let (s, k) = c.result().unwrap();
        sum += s;
        n += k;
    }
    assert_eq!(n, 2 * N);
    assert_eq!(sum, (2 * N) * (2 * N - 1) / 2);
    assert!(q.is_empty());
}

// A 64 MiB item (64 times the ring) arrives whole from a child.
#[test]
fn a_64_mib_item() {
    let _s = shared();
    let _w = watchdog("64 MiB item", 120);
    let q = Queue::new().unwrap();
    let p = mproc::spawn(put_blob, (q.clone(), 64 << 20, 7u8)).unwrap();
    let got = q.get_timeout(LONG).unwrap();
    assert!(
        got == pattern(64 << 20, 7),
        "the 64 MiB item arrived altered"
    );
    p.result().unwrap();
}

// CPython's "joining processes that use queues" deadlock does not happen: a producer that
// put less than the ring holds exits and can be joined before anyone reads.
#[test]
fn a_producer_can_be_joined_before_draining() {
    let _s = shared();
    let _w = watchdog("join before draining", 60);
    let q = Queue::new().unwrap();
    // 1 000 items of 600 bytes: about 600 KB of the 1 MiB ring.
    let mut p = Process::new(put_blobs, (q.clone(), 1000usize, 600usize));
    p.start().unwrap();
    assert!(p.join_timeout(LONG).unwrap(), "the producer did not exit");
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(q.qsize(), 1000);
    for i in 0..1000 {
        assert_eq!(q.get().unwrap(), pattern(600, i as u8));
    }
}

fn put_blobs(q: Queue<Blob>, n: usize, len: usize) {
    for i in 0..n {
        q.put(pattern(len, i as u8)).expect("put");
    }
}

// No feeder thread: an item whose put returned arrives even if the producer aborts at once
// (CPython loses it: cpython.md problem 5).
#[test]
fn an_item_put_right_before_abort_arrives_under_every_method() {
    let _s = shared();
    let _w = watchdog("put then abort", 60);
    for m in METHODS {
        let q = Queue::new().unwrap();
        let mut p = get_context(m).process(put_then_abort, (q.clone(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-6), "{m:?}");
        assert_eq!(q.get_timeout(LONG).unwrap(), "last words", "{m:?}");
    }
}

// A producer SIGKILLed in the middle of streaming a large item: the half-written item is
// discarded, never delivered torn, and the queue carries new items afterwards.
#[test]
fn a_producer_killed_mid_stream_does_not_wedge_the_queue() {
    let _s = shared();
    let _w = watchdog("producer killed mid-stream", 60);
    for m in METHODS {
        // A 64 KiB ring: the 1 MiB item fills it and its producer blocks mid-stream.
        let q = Queue::with_ring_size(0, 64 << 10).unwrap();
        let started = Event::new().unwrap();
        let mut p = get_context(m).process(put_blob_after, (q.clone(), started.clone(), 1 << 20));
        p.start().unwrap();
        assert!(started.wait_timeout(LONG), "{m:?}");
        std::thread::sleep(Duration::from_millis(100));
        assert!(p.is_alive(), "{m:?}: the producer should be blocked in put");
        p.kill().unwrap();
        p.join().unwrap();
        // What there is of the item is read and dropped; no item comes out.
        assert!(
            matches!(q.get_timeout(Duration::from_millis(300)), Err(Error::Empty)),
            "{m:?}"
        );
        assert_eq!(q.qsize(), 0);
        // New items, small and streamed, go through.
        let mut p = get_context(m).process(put_blob, (q.clone(), 200_000usize, 3u8));
        p.start().unwrap();
        assert_eq!(q.get_timeout(LONG).unwrap(), pattern(200_000, 3), "{m:?}");
        p.join().unwrap();
        q.put(Blob(b"after".to_vec())).unwrap();
        assert_eq!(q.get().unwrap().0, b"after");
    }
}

// A consumer SIGKILLed while it holds the consumer side (blocked in get on an empty queue)
// does not wedge the others: the kernel marks its lock, and the next get takes the side
// over. Under every start method.
#[test]
fn a_consumer_killed_in_get_does_not_wedge_the_queue() {
    let _s = shared();
    let _w = watchdog("consumer killed in get", 60);
    for m in METHODS {
        let q = Queue::new().unwrap();
        let waiting = Event::new().unwrap();
        let mut p = get_context(m).process(get_one, (q.clone(), waiting.clone()));
        p.start().unwrap();
        assert!(waiting.wait_timeout(LONG), "{m:?}");
        std::thread::sleep(Duration::from_millis(50));
        p.kill().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-9), "{m:?}: the consumer was killed");
        q.put(5).unwrap();
        assert_eq!(q.get_timeout(LONG).unwrap(), 5, "{m:?}");
    }
}

// A producer SIGKILLed while it holds the producer side (blocked in put on a full queue)
// does not wedge the others. Under every start method.
#[test]
fn a_producer_killed_in_put_does_not_wedge_the_queue() {
    let _s = shared();
    let _w = watchdog("producer killed in put", 60);
    for m in METHODS {
        let q = Queue::bounded(1).unwrap();
        q.put(1).unwrap();
        let waiting = Event::new().unwrap();
        let mut p = get_context(m).process(put_when_full, (q.clone(), waiting.clone()));
        p.start().unwrap();
        assert!(waiting.wait_timeout(LONG), "{m:?}");
        std::thread::sleep(Duration::from_millis(50));
        p.kill().unwrap();
        p.join().unwrap();
        assert_eq!(q.get().unwrap(), 1, "{m:?}");
        q.put_timeout(2, LONG).unwrap();
        assert_eq!(q.get().unwrap(), 2, "{m:?}");
        assert!(q.is_empty(), "{m:?}");
    }
}

// Queues are memfds: nothing in /dev/shm, and every descriptor is closed once the handles
// and the children are gone.
#[test]
fn no_shm_entries_or_fds_left_over() {
    let _x = exclusive();
    let _w = watchdog("leaks", 60);
    let shm_before = std::fs::read_dir("/dev/shm")
        .map(|d| d.count())
        .unwrap_or(0);
    let fds_before = fd_count();
    for m in METHODS {
        let q = Queue::new().unwrap();
        let mut p = get_context(m).process(put_range, (q.clone(), 0, 100));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(q.qsize(), 100);
    }
    let shm_after = std::fs::read_dir("/dev/shm")
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(shm_before, shm_after, "/dev/shm entries appeared");
    assert_eq!(fds_before, fd_count(), "descriptors leaked");
}

/// An item whose encoding pauses 300 ms between its two halves, after setting `halfway`.
/// Through a 64 KiB ring, its consumer is then left holding the first half, waiting for the
/// rest.
#[derive(Debug, Clone)]
struct Halves(Blob, Blob, Option<Event>);

impl PartialEq for Halves {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 && self.1 == other.1
    }
}

impl Serialize for Halves {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        struct Pause<'a>(&'a Option<Event>);
        impl Serialize for Pause<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if let Some(e) = self.0 {
                    e.set();
                }
                std::thread::sleep(Duration::from_millis(300));
                s.serialize_unit()
            }
        }
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.0)?;
        t.serialize_element(&Pause(&self.2))?;
        t.serialize_element(&self.1)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Halves {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <(Blob, (), Blob)>::deserialize(d).map(|(a, (), b)| Halves(a, b, None))
    }
}

fn get_halves(q: Queue<Halves>, started: Event) {
    started.set();
    let _ = q.get();
}

// A consumer SIGKILLed halfway through receiving a streamed item: that item is lost with it
// (its producer's put still completes), the rest of it is skipped by the next consumer,
// never delivered torn, and the queue goes on. Under every start method.
#[test]
fn a_consumer_killed_mid_stream_does_not_wedge_the_queue() {
    let _s = shared();
    let _w = watchdog("consumer killed mid-stream", 60);
    for m in METHODS {
        let q = Queue::with_ring_size(0, 64 << 10).unwrap();
        let started = Event::new().unwrap();
        let mut consumer = get_context(m).process(get_halves, (q.clone(), started.clone()));
        consumer.start().unwrap();
        assert!(started.wait_timeout(LONG), "{m:?}");
        let halfway = Event::new().unwrap();
        let producer = {
            let q = q.clone();
            let item = Halves(
                pattern(128 << 10, 1),
                pattern(128 << 10, 2),
                Some(halfway.clone()),
            );
            std::thread::spawn(move || q.put(item).map_err(|e| e.to_string()))
        };
        // The first 128 KiB are in: the consumer has taken at least half of them (the ring
        // holds 64 KiB) and waits for the rest, which comes after the pause.
        assert!(halfway.wait_timeout(LONG), "{m:?}");
        consumer.kill().unwrap();
        consumer.join().unwrap();
        assert_eq!(
            consumer.exitcode(),
            Some(-9),
            "{m:?}: the consumer was killed"
        );
        // The next consumer takes the dead one's place and drains the rest of the item as
        // it comes (the producer needs the room to finish), but delivers none of it.
        while !producer.is_finished() {
            assert!(
                matches!(q.get_timeout(Duration::from_millis(100)), Err(Error::Empty)),
                "{m:?}: the rest of the item must be skipped, not delivered"
            );
        }
        producer.join().unwrap().expect("the put completes");
        assert!(matches!(q.try_get(), Err(Error::Empty)), "{m:?}");
        assert_eq!(q.qsize(), 0, "{m:?}");
        let item = Halves(pattern(100, 5), pattern(10_000, 6), None);
        q.put(item.clone()).unwrap();
        assert_eq!(q.get_timeout(LONG).unwrap(), item, "{m:?}");
    }
}

fn put_forever(q: Queue<Blob>, started: Event) {
    started.set();
    for i in 0u64.. {
        let len = [10, 3000, 70_000, 200_000][i as usize % 4];
        if q.put(pattern(len, i as u8)).is_err() {
            return;
        }
    }
}

fn get_forever(q: Queue<Blob>, started: Event) {
    started.set();
    while q.get().is_ok() {}
}

fn intact(b: &Blob) -> bool {
    !b.0.is_empty() && *b == pattern(b.0.len(), b.0[0])
}

// Producers and consumers SIGKILLed at arbitrary points of a stream of small and streamed
// items, under every start method: every item that comes out is whole, and the queue goes
// on. (The targeted tests above pin the kill inside a streamed item; this one does not aim.)
#[test]
fn kills_at_arbitrary_points_never_deliver_a_torn_item() {
    let _s = shared();
    let _w = watchdog("kills at arbitrary points", 120);
    for (round, m) in METHODS.into_iter().enumerate() {
        let q = Queue::with_ring_size(0, 64 << 10).unwrap();
        // A producer killed mid-stream while the parent consumes.
        let started = Event::new().unwrap();
        let mut p = get_context(m).process(put_forever, (q.clone(), started.clone()));
        p.start().unwrap();
        assert!(started.wait_timeout(LONG), "{m:?}");
        let deadline = Instant::now() + Duration::from_millis(100 + 37 * round as u64);
        let mut got = 0;
        while Instant::now() < deadline {
            let b = q.get_timeout(LONG).unwrap();
            assert!(intact(&b), "{m:?}: a torn item of {} bytes", b.0.len());
            got += 1;
        }
        p.kill().unwrap();
        p.join().unwrap();
        while let Ok(b) = q.get_timeout(Duration::from_millis(300)) {
            assert!(intact(&b), "{m:?}: a torn item of {} bytes", b.0.len());
        }
        assert!(got > 0, "{m:?}");
        // A consumer killed mid-stream while the parent produces.
        let started = Event::new().unwrap();
        let mut c = get_context(m).process(get_forever, (q.clone(), started.clone()));
        c.start().unwrap();
        assert!(started.wait_timeout(LONG), "{m:?}");
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let len = [10, 3000, 70_000, 200_000][i as usize % 4];
                    q.put(pattern(len, i as u8)).unwrap();
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20 + 13 * round as u64));
        c.kill().unwrap();
        c.join().unwrap();
        let mut n = 0;
        while let Ok(b) = q.get_timeout(Duration::from_millis(500)) {
            assert!(intact(&b), "{m:?}: a torn item of {} bytes", b.0.len());
            n += 1;
        }
        producer.join().unwrap();
        while let Ok(b) = q.get_timeout(Duration::from_millis(100)) {
            assert!(intact(&b), "{m:?}: a torn item of {} bytes", b.0.len());
            n += 1;
        }
        assert!(n <= 40, "{m:?}");
        q.put(pattern(1000, 9)).unwrap();
        assert_eq!(q.get_timeout(LONG).unwrap(), pattern(1000, 9), "{m:?}");
        assert_eq!(q.qsize(), 0, "{m:?}");
    }
}

// Items larger than the ring of each shape: a byte string (handed over in the buffer it was
// gathered in), a `String` (the same, checked as UTF-8), and a `Vec<u8>`, which serde
// encodes as a sequence (decoded element by element from one gathered buffer).
#[test]
fn large_strings_byte_strings_and_byte_vectors_arrive_whole() {
    let _s = shared();
    let _w = watchdog("large items of each shape", 60);
    let blobs = Queue::with_ring_size(0, 64 << 10).unwrap();
    let strings = Queue::<String>::with_ring_size(0, 64 << 10).unwrap();
    let vecs = Queue::<Vec<u8>>::with_ring_size(0, 64 << 10).unwrap();
    let text: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let t = {
        let (blobs, strings, vecs, text) =
            (blobs.clone(), strings.clone(), vecs.clone(), text.clone());
        std::thread::spawn(move || {
            blobs.put(pattern(1 << 20, 4)).unwrap();
            strings.put(text).unwrap();
            strings.put("é".repeat(100_000)).unwrap();
            vecs.put(pattern(200_000, 5).0).unwrap();
        })
    };
    assert_eq!(blobs.get_timeout(LONG).unwrap(), pattern(1 << 20, 4));
    assert_eq!(strings.get_timeout(LONG).unwrap(), text);
    assert_eq!(strings.get_timeout(LONG).unwrap(), "é".repeat(100_000));
    assert_eq!(vecs.get_timeout(LONG).unwrap(), pattern(200_000, 5).0);
    t.join().unwrap();
}

/// CPU time (utime + stime) of the calling thread, in clock ticks (10 ms).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3) here.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

// The spin before sleeping stops: a consumer blocked for a second on an empty queue, and a
// producer blocked on a full one, each use at most 2% of a CPU.
#[test]
fn a_blocked_get_or_put_burns_no_cpu() {
    let _s = shared();
    let _w = watchdog("blocked get and put", 60);
    let q = Queue::<u64>::bounded(1).unwrap();
    let q2 = q.clone();
    let getter = std::thread::spawn(move || {
        let t0 = thread_cpu_ticks();
        assert!(matches!(
            q2.get_timeout(Duration::from_secs(1)),
            Err(Error::Empty)
        ));
        thread_cpu_ticks() - t0
    });
    assert!(getter.join().unwrap() <= 2, "a blocked get spun");
    q.put(1).unwrap();
    let putter = std::thread::spawn(move || {
        let t0 = thread_cpu_ticks();
        assert!(matches!(
            q.put_timeout(2, Duration::from_secs(1)),
            Err(Error::Full)
        ));
        thread_cpu_ticks() - t0
    });
    assert!(putter.join().unwrap() <= 2, "a blocked put spun");
}
