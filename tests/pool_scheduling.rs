//! Pool scheduling and iteration: an idle worker takes the next task (no task waits behind
//! another while a worker is free), `imap`'s `size_hint`, `chunksize` 0, and an `imap`
//! whose input panics. The timelines have wide margins: they check the order of events
//! against a schedule that would put short tasks behind a long one, not speed.

mod util;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use mproc::{Error, Pool};
use util::*;

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn sqr(x: i64) -> i64 {
    x * x
}

// Python's Pool(2) with one 1000 ms task then six 10 ms ones: the short ones are ready at
// about 10, 20, ... 60 ms, all on the worker the long task does not hold.
#[test]
fn short_tasks_do_not_wait_behind_a_long_one() {
    let _s = shared();
    let _w = watchdog("heterogeneous_apply", 60);
    let pool = Pool::new(2).unwrap();
    // Both workers up and idle.
    assert_eq!(pool.map_chunked(sleep_ms, [1, 1], 1).unwrap(), vec![1, 1]);
    let (tx, rx) = mpsc::channel::<(u64, Duration)>();
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for (i, ms) in [1000u64, 10, 10, 10, 10, 10, 10].into_iter().enumerate() {
        let tx = tx.clone();
        let r = pool.apply_async(sleep_ms, (ms,)).on_complete(
            move |_| tx.send((i as u64, t0.elapsed())).unwrap(),
            |e| panic!("task failed: {e}"),
        );
        handles.push(r);
    }
    let mut ready = [Duration::ZERO; 7];
    for _ in 0..7 {
        let (i, at) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        ready[i as usize] = at;
    }
    for h in handles {
        h.get().unwrap();
    }
    let ms: Vec<u128> = ready.iter().map(Duration::as_millis).collect();
    // With tasks queued per worker, three short ones would finish after the long one
    // (~1010 ms and later). Pulled, all six are done long before it.
    assert!(ms[0] >= 1000, "the long task took {} ms", ms[0]);
    for (k, &t) in ms[1..].iter().enumerate() {
        assert!(t < 800, "short task {} ready at {t} ms: {ms:?}", k + 1);
    }
    // One worker runs them one after another, in submission order.
    assert!(ms[1..].windows(2).all(|w| w[0] <= w[1]), "{ms:?}");
}

// imap_unordered over [1000, 10 × 12]: the short ones come out while the long one runs.
#[test]
fn imap_unordered_finishes_short_tasks_first() {
    let _s = shared();
    let _w = watchdog("heterogeneous_imap", 60);
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map_chunked(sleep_ms, [1, 1], 1).unwrap(), vec![1, 1]);
    let input: Vec<u64> = std::iter::once(1000).chain([10; 12]).collect();
    let t0 = Instant::now();
    let mut order = Vec::new();
    for r in pool.imap_unordered(sleep_ms, input) {
        order.push((r.unwrap(), t0.elapsed()));
    }
    let values: Vec<u64> = order.iter().map(|(v, _)| *v).collect();
    assert_eq!(values.len(), 13);
    assert_eq!(values[12], 1000, "the long task is last: {values:?}");
    assert!(
        order[11].1 < Duration::from_millis(800),
        "the twelfth short task came at {:?}",
        order[11].1
    );
}

// The long task also does not hold up an ordered map's short items on the other worker.
#[test]
fn map_with_chunksize_one_balances() {
    let _s = shared();
    let _w = watchdog("heterogeneous_map", 60);
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map_chunked(sleep_ms, [1, 1], 1).unwrap(), vec![1, 1]);
    let input: Vec<u64> = std::iter::once(600).chain([50; 12]).collect();
    let t0 = Instant::now();
    let out = pool.map_chunked(sleep_ms, input.clone(), 1).unwrap();
    let took = t0.elapsed();
    assert_eq!(out, input);
    // Ideal: max(600, 12 × 50) = 600 ms; per-worker queues would make it ~900 ms or more.
    assert!(took < Duration::from_millis(850), "took {took:?}");
}

// size_hint is exact when the input's is, and counts down; unknown inputs give a bound.
#[test]
fn imap_size_hint_counts_down() {
    let _s = shared();
    let _w = watchdog("size_hint", 60);
    let pool = Pool::new(2).unwrap();
    let mut it = pool.imap(sqr, 0..100);
    assert_eq!(it.size_hint(), (100, Some(100)));
    for k in 1..=10 {
        it.next().unwrap().unwrap();
        assert_eq!(it.size_hint(), (100 - k, Some(100 - k)));
    }
    assert_eq!(it.count(), 90);
    let mut it = pool.imap_chunked(sqr, 0..100, 7, false);
    assert_eq!(it.size_hint(), (100, Some(100)));
    it.next().unwrap().unwrap();
    assert_eq!(it.size_hint(), (99, Some(99)));
    assert_eq!(it.count(), 99);
    let it = pool.imap_unordered(sqr, (0..100).filter(|x| x % 2 == 0));
    assert_eq!(it.size_hint(), (0, Some(100)));
    assert_eq!(it.count(), 50);
    let mut it = pool.imap(sqr, 0..);
    assert_eq!(it.size_hint(), (usize::MAX, None));
    it.next().unwrap().unwrap();
    assert_eq!(it.size_hint().1, None);
}

// Python raises ValueError for chunksize=0; so do we, and the pool is fine after.
#[test]
fn chunksize_zero_is_a_value_error() {
    let _s = shared();
    let _w = watchdog("chunksize_zero", 60);
    let pool = Pool::new(1).unwrap();
    assert!(matches!(
        pool.map_chunked(sqr, 0..10, 0),
        Err(Error::ValueError(m)) if m.contains("chunksize")
    ));
    let mut it = pool.imap_chunked(sqr, 0..10, 0, true);
    assert_eq!(it.size_hint(), (1, Some(1)));
    assert!(matches!(it.next(), Some(Err(Error::ValueError(_)))));
    assert!(it.next().is_none());
    assert_eq!(pool.map_chunked(sqr, 0..10, 3).unwrap().len(), 10);
}

// An input iterator that panics at item 40: every result of items 0..40 is delivered, then
// the panic reaches the consumer (Python yields what came before, then raises).
#[test]
fn imap_input_panic_delivers_what_came_before() {
    let _s = shared();
    let _w = watchdog("imap_input_panic", 60);
    let pool = Pool::new(2).unwrap();
    for ordered in [true, false] {
        let input = (0..100i64).inspect(|&i| {
            if i == 40 {
                panic!("input broke at 40");
            }
        });
        let mut got = Vec::new();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for r in pool.imap_chunked(sqr, input, 1, ordered) {
                got.push(r.unwrap());
            }
        }));
        let payload = caught.expect_err("the input's panic reaches the consumer");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"input broke at 40"));
        got.sort();
        assert_eq!(got, (0..40).map(|x| x * x).collect::<Vec<_>>(), "{ordered}");
    }
    // The pool goes on.
    assert_eq!(pool.apply(sqr, (3,)).unwrap(), 9);
}
