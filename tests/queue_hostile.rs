//! Queue against a peer process that stalls or dies in the middle of an item (issue 19):
//! a receiver waiting for the rest of a begun item honours its deadline, and the ring
//! stays consistent for the next call (the begun item is dropped whole, never delivered
//! torn, never half-consumed).

mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mproc::{Error, Event, Queue, get_context};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use util::*;

/// Set in the child that stalls: its item's serializer sleeps half-way.
static STALL: AtomicBool = AtomicBool::new(false);

/// Serializes as nothing; in a stalling child, after a long sleep (the child is killed
/// before it ends).
#[derive(Debug, PartialEq)]
struct Pause;

impl Serialize for Pause {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if STALL.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(120));
        }
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for Pause {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Pause)
    }
}

/// 40 KiB of bytes, then a pause: in a 64 KiB ring the bytes are streamed, and two
/// pieces are published before the pause.
type Stalling = (Vec<u8>, Pause);

fn put_stalling(q: Queue<Stalling>, started: Event) {
    STALL.store(true, Ordering::Relaxed);
    started.set();
    let _ = q.put((vec![7; 40 << 10], Pause));
}

/// A producer alive but stalled after its first pieces: `get_timeout(2 s)` returns
/// `Empty` in about 2 s (it used to wait for the producer to finish); after the producer
/// is killed, an untimed `get` returns the next item promptly, and the stalled item is
/// never delivered. Under every start method.
#[test]
fn a_get_timeout_mid_item_returns_at_its_deadline() {
    let _s = shared();
    let _w = watchdog("a get_timeout mid-item", 90);
    for m in METHODS {
        let q: Queue<Stalling> = Queue::with_ring_size(0, 64 << 10).unwrap();
        let started = Event::new().unwrap();
        let mut p = get_context(m).process(put_stalling, (q.clone(), started.clone()));
        p.start().unwrap();
        assert!(started.wait_timeout(Duration::from_secs(20)), "{m:?}");
        // Let the first pieces reach the ring.
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let got = q.get_timeout(Duration::from_secs(2));
        let took = t.elapsed();
        assert!(matches!(got, Err(Error::Empty)), "{m:?}: {got:?}");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
            "{m:?}: took {took:?}"
        );
        p.kill().unwrap();
        p.join().unwrap();
        // The dead producer's item is closed by the next producer; the next item arrives.
        q.put((b"after".to_vec(), Pause)).unwrap();
        let t = Instant::now();
        let (b, Pause) = q.get().unwrap();
        assert_eq!(b, b"after", "{m:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{m:?}: {:?}",
            t.elapsed()
        );
        assert_eq!(q.qsize(), 0, "{m:?}");
    }
}
