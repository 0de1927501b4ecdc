//! Receiving into the caller's buffer, across real processes: `Queue::get_into` (and its
//! `JoinableQueue`/`SimpleQueue` forms, timed and untimed) and a pipe's
//! `recv_bytes_into`. Sizes around and far above a quarter of the ring (where items start
//! to stream) and the ring itself; a buffer too small, reused, or holding old content; a
//! deadline and a producer killed in the middle of an item; the ring usable afterwards.

mod util;

use std::time::Duration;

use mproc::{
    Connection, Error, Event, JoinableQueue, Queue, SimpleQueue, get_context, pipe, pipe_simplex,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use util::*;

const LONG: Duration = Duration::from_secs(20);
/// The rings of these tests: items above 16 KiB stream.
const RING: usize = 64 << 10;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed ^ (i >> 12) as u8)
        })
        .collect()
}

/// Around a quarter of the ring (the largest whole item, the smallest streamed one), the
/// ring's size, and far above it.
fn sizes() -> Vec<usize> {
    let q = RING / 4;
    vec![
        0,
        1,
        1000,
        q - 16,
        q - 8,
        q,
        q + 1,
        RING - 8,
        RING,
        RING + 1,
        3 * RING + 5,
        64 * RING,
    ]
}

fn put_sizes(q: Queue<Blob>, sizes: Vec<usize>) {
    for (i, n) in sizes.into_iter().enumerate() {
        q.put(Blob(pattern(n, i as u8))).expect("put");
    }
}

fn put_vecs(q: Queue<Vec<u8>>, sizes: Vec<usize>) {
    for (i, n) in sizes.into_iter().enumerate() {
        q.put(pattern(n, i as u8)).expect("put");
    }
}

// Every size, from a child, into one buffer that starts with old content and too little
// room: each item replaces the contents exactly, and the buffer grows only when an item is
// larger than it, so a run of items no larger than it reuses its allocation.
#[test]
fn items_of_every_size_arrive_into_one_buffer() {
    let _s = shared();
    let _w = watchdog("get_into sizes", 120);
    let q = Queue::<Blob>::with_ring_size(0, RING).unwrap();
    let mut p = get_context(Fork).process(put_sizes, (q.clone(), sizes()));
    p.start().unwrap();
    let mut buf = b"old content, longer than some items".to_vec();
    for (i, n) in sizes().into_iter().enumerate() {
        assert_eq!(q.get_into_timeout(&mut buf, LONG).unwrap(), n, "item {i}");
        assert!(
            buf == pattern(n, i as u8),
            "item {i} ({n} bytes) arrived altered"
        );
    }
    p.join().unwrap();
    assert!(buf.capacity() >= 64 * RING);
    // Reused: the same allocation for a second round of every size.
    let at = buf.as_ptr();
    let mut p = get_context(Fork).process(put_sizes, (q.clone(), sizes()));
    p.start().unwrap();
    for (i, n) in sizes().into_iter().enumerate() {
        assert_eq!(q.get_into_timeout(&mut buf, LONG).unwrap(), n, "item {i}");
        assert!(
            buf == pattern(n, i as u8),
            "item {i} ({n} bytes) arrived altered"
        );
        assert_eq!(buf.as_ptr(), at, "item {i}: the buffer was reallocated");
    }
    p.join().unwrap();
    assert!(q.is_empty());
}

// `Vec<u8>` (a sequence of u8, written by postcard as a byte string) and `String` (its
// UTF-8) qualify too, whole and streamed.
#[test]
fn byte_vectors_and_strings_arrive_into_the_buffer() {
    let _s = shared();
    let _w = watchdog("get_into Vec<u8> and String", 120);
    let sizes = vec![0, 5, RING / 4 + 1, 5 * RING];
    let q = Queue::<Vec<u8>>::with_ring_size(0, RING).unwrap();
    let mut p = get_context(Fork).process(put_vecs, (q.clone(), sizes.clone()));
    p.start().unwrap();
    let mut buf = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        assert_eq!(q.get_into_timeout(&mut buf, LONG).unwrap(), n);
        assert!(
            buf == pattern(n, i as u8),
            "item {i} ({n} bytes) arrived altered"
        );
    }
    p.join().unwrap();

    let q = Queue::<String>::with_ring_size(0, RING).unwrap();
    let long = "é€".repeat(RING);
    q.put("short".to_string()).unwrap();
    let t = {
        let (q, long) = (q.clone(), long.clone());
        std::thread::spawn(move || q.put(long).unwrap())
    };
    assert_eq!(q.get_into(&mut buf).unwrap(), 5);
    assert_eq!(buf, b"short");
    assert_eq!(q.get_into(&mut buf).unwrap(), long.len());
    assert!(buf == long.as_bytes());
    t.join().unwrap();
}

// Items that are not bytes are refused before anything is taken; `try_get_into` on an
// empty queue is `Empty`; either way `buf` is left empty, never with part of an item.
#[test]
fn other_items_are_refused_and_left_in_the_queue() {
    let _s = shared();
    let q = Queue::<u64>::new().unwrap();
    q.put(7).unwrap();
    let mut buf = b"old".to_vec();
    let err = q.get_into(&mut buf).unwrap_err();
    assert!(matches!(err, Error::ValueError(_)), "{err}");
    assert!(err.to_string().contains("u64"), "{err}");
    assert!(buf.is_empty());
    assert_eq!(q.get().unwrap(), 7);
    for q in [
        Queue::<Vec<u16>>::new().unwrap().try_get_into(&mut buf),
        Queue::<(u8, u8)>::new().unwrap().try_get_into(&mut buf),
    ] {
        assert!(matches!(q, Err(Error::ValueError(_))));
    }
    let q = Queue::<Blob>::new().unwrap();
    buf.extend_from_slice(b"old");
    assert!(matches!(q.try_get_into(&mut buf), Err(Error::Empty)));
    assert!(buf.is_empty());
    let t = std::time::Instant::now();
    assert!(matches!(
        q.get_into_timeout(&mut buf, Duration::from_millis(100)),
        Err(Error::Empty)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    q.close();
    assert!(matches!(q.get_into(&mut buf), Err(Error::QueueClosed)));
}

#[test]
fn joinable_and_simple_queues_have_it_too() {
    let _s = shared();
    let _w = watchdog("get_into joinable and simple", 60);
    let j = JoinableQueue::<Blob>::with_ring_size(0, RING).unwrap();
    let big = pattern(2 * RING, 3);
    // The 128 KiB item does not fit the 64 KiB ring: it streams while we take it.
    let t = {
        let (j, big) = (j.clone(), big.clone());
        std::thread::spawn(move || j.put(Blob(big)).unwrap())
    };
    let mut buf = Vec::new();
    assert_eq!(j.get_into(&mut buf).unwrap(), big.len());
    assert!(buf == big);
    t.join().unwrap();
    assert_eq!(j.unfinished_tasks(), 1);
    j.task_done().unwrap();
    assert!(j.join_timeout(LONG));
    j.put(Blob(b"x".to_vec())).unwrap();
    assert_eq!(j.get_into_timeout(&mut buf, LONG).unwrap(), 1);
    assert!(matches!(j.try_get_into(&mut buf), Err(Error::Empty)));

    let s = SimpleQueue::<Vec<u8>>::new().unwrap();
    s.put(vec![1, 2]).unwrap();
    assert_eq!(s.get_into(&mut buf).unwrap(), 2);
    assert_eq!(buf, [1, 2]);
    assert!(matches!(
        s.get_into_timeout(&mut buf, Duration::from_millis(10)),
        Err(Error::Empty)
    ));
}

/// A byte sequence whose encoding sets `halfway` and pauses `ms` after its first
/// [`PAUSE_AT`] bytes: streamed pieces of at most a quarter of the ring are published by
/// then, and a consumer that takes them is left in the middle of the item.
struct Paused(Vec<u8>, Option<Event>, u64);

/// Less than the ring holds, so the producer gets there with no consumer.
const PAUSE_AT: usize = 5 * RING / 8;

impl Serialize for Paused {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (i, b) in self.0.iter().enumerate() {
            if i == PAUSE_AT {
                if let Some(e) = &self.1 {
                    e.set();
                }
                std::thread::sleep(Duration::from_millis(self.2));
            }
            seq.serialize_element(b)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Paused {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<u8>::deserialize(d).map(|v| Paused(v, None, 0))
    }
}

fn put_paused_then(q: Queue<Paused>, halfway: Event, ms: u64) {
    q.put(Paused(pattern(4 * RING, 1), Some(halfway), ms))
        .expect("put of the paused item");
    q.put(Paused(b"after".to_vec(), None, 0))
        .expect("put after");
}

// A deadline in the middle of a streamed item: `Empty`, the buffer empty; the rest of
// the item is skipped by the next call, which gets the item after it, in the same buffer.
#[test]
fn a_deadline_mid_item_drops_it_and_the_next_arrives() {
    let _s = shared();
    let _w = watchdog("get_into deadline mid-item", 60);
    let q = Queue::<Paused>::with_ring_size(0, RING).unwrap();
    let halfway = Event::new().unwrap();
    let mut p = get_context(Fork).process(put_paused_then, (q.clone(), halfway.clone(), 1500u64));
    p.start().unwrap();
    let mut buf = b"old content".to_vec();
    buf.reserve(8 * RING);
    let at = buf.as_ptr();
    assert!(halfway.wait_timeout(LONG));
    let err = q
        .get_into_timeout(&mut buf, Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, Error::Empty), "{err}");
    assert!(buf.is_empty(), "part of an item was left in the buffer");
    assert_eq!(buf.as_ptr(), at, "the buffer was not handed back");
    assert_eq!(q.get_into_timeout(&mut buf, LONG).unwrap(), 5);
    assert_eq!(buf, b"after");
    assert_eq!(buf.as_ptr(), at);
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert!(q.is_empty());
}

fn put_blob_after(q: Queue<Blob>, started: Event, len: usize) {
    started.set();
    let _ = q.put(Blob(pattern(len, 1)));
}

// A producer SIGKILLed in the middle of a streamed item, under every start method: the
// item is dropped (a timed call says `Empty`, an untimed one goes on to the next item),
// never delivered torn into the buffer, and the ring carries items afterwards.
#[test]
fn a_producer_killed_mid_item_leaves_no_torn_bytes() {
    let _s = shared();
    let _w = watchdog("get_into producer killed", 90);
    for m in METHODS {
        for timed in [true, false] {
            let q = Queue::<Blob>::with_ring_size(0, RING).unwrap();
            let started = Event::new().unwrap();
            let mut p =
                get_context(m).process(put_blob_after, (q.clone(), started.clone(), 1 << 20));
            p.start().unwrap();
            assert!(started.wait_timeout(LONG), "{m:?}");
            // Let it fill the ring and block, holding the producer lock.
            std::thread::sleep(Duration::from_millis(100));
            assert!(p.is_alive(), "{m:?}: the producer should be blocked in put");
            p.kill().unwrap();
            p.join().unwrap();
            let mut buf = b"old".to_vec();
            if timed {
                let err = q
                    .get_into_timeout(&mut buf, Duration::from_millis(300))
                    .unwrap_err();
                assert!(matches!(err, Error::Empty), "{m:?}: {err}");
                assert!(buf.is_empty(), "{m:?}");
            } else {
                // The ring is full of the dead one's pieces: put from a thread.
                let t = {
                    let q = q.clone();
                    std::thread::spawn(move || q.put(Blob(b"next".to_vec())).unwrap())
                };
                assert_eq!(q.get_into(&mut buf).unwrap(), 4, "{m:?}");
                assert_eq!(buf, b"next", "{m:?}");
                t.join().unwrap();
            }
            assert_eq!(q.qsize(), 0, "{m:?}");
            let item = pattern(3 * RING, 9);
            let t = {
                let (q, item) = (q.clone(), item.clone());
                std::thread::spawn(move || q.put(Blob(item)).unwrap())
            };
            assert_eq!(q.get_into_timeout(&mut buf, LONG).unwrap(), item.len());
            assert!(buf == item, "{m:?}");
            t.join().unwrap();
        }
    }
}

fn send_sizes(c: Connection<u8>, sizes: Vec<usize>) {
    for (i, n) in sizes.into_iter().enumerate() {
        c.send_bytes(&pattern(n, i as u8)).expect("send_bytes");
    }
}

// A pipe's `recv_bytes_into` gathers a message larger than its ring into the caller's
// buffer too: one allocation for every message no larger than it.
#[test]
fn a_pipe_receives_large_messages_into_the_same_buffer() {
    let _s = shared();
    let _w = watchdog("recv_bytes_into reuse", 120);
    let (a, b) = pipe::<u8>().unwrap();
    let sizes = vec![4 << 20, 0, 1, 100 << 10, 1 << 20, 4 << 20, 3];
    let mut p = get_context(Fork).process(send_sizes, (b, sizes.clone()));
    p.start().unwrap();
    let mut buf = b"old".to_vec();
    assert_eq!(a.recv_bytes_into(&mut buf).unwrap(), 4 << 20);
    assert!(buf == pattern(4 << 20, 0));
    let at = buf.as_ptr();
    for (i, &n) in sizes.iter().enumerate().skip(1) {
        assert_eq!(a.recv_bytes_into(&mut buf).unwrap(), n, "message {i}");
        assert!(buf == pattern(n, i as u8), "message {i} arrived altered");
        assert_eq!(buf.as_ptr(), at, "message {i}: the buffer was reallocated");
    }
    p.join().unwrap();
}

fn stream_forever(c: Connection<u8>, ready: mproc::Sender<u8>) {
    let big = vec![9u8; 16 << 20];
    ready.send(&1).expect("ready");
    // Blocks once the ring is full, holding the producer lock, until killed.
    let _ = c.send_bytes(&big);
}

// A sender killed mid-message: `recv_bytes_into` gets the "in the middle of a message"
// error with the buffer empty (its allocation kept), then end of stream.
#[test]
fn a_sender_killed_mid_message_leaves_the_buffer_empty() {
    let _s = shared();
    let _w = watchdog("recv_bytes_into killed sender", 60);
    let (a, b) = pipe::<u8>().unwrap();
    let (ready_rx, ready_tx) = pipe_simplex::<u8>().unwrap();
    let mut p = get_context(Fork).process(stream_forever, (b, ready_tx));
    p.start().unwrap();
    ready_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    p.kill().unwrap();
    p.join().unwrap();
    let mut buf = Vec::with_capacity(32 << 20);
    buf.extend_from_slice(b"old");
    let at = buf.as_ptr();
    let err = a.recv_bytes_into(&mut buf).unwrap_err();
    assert!(
        err.to_string().contains("in the middle of a message"),
        "{err}"
    );
    assert!(buf.is_empty());
    assert_eq!(buf.as_ptr(), at);
    assert!(matches!(a.recv_bytes_into(&mut buf), Err(Error::Closed)));
}
