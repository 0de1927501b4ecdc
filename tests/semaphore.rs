//! Semaphore and BoundedSemaphore across processes. Ports CPython's `_TestSemaphore`
//! (`_test_multiprocessing.py`, cpython.md §4).

mod util;

use std::time::{Duration, Instant};

use mproc::StartMethod;
use mproc::{BoundedSemaphore, Error, Semaphore, Value, get_context};
use util::*;

fn enter_many(sem: Semaphore, inside: Value<u32>, max_seen: Value<u32>, rounds: u32) {
    for _ in 0..rounds {
        let _permit = sem.guard();
        let now = {
            let mut g = inside.lock();
            *g += 1;
            *g
        };
        {
            let mut m = max_seen.lock();
            *m = (*m).max(now);
        }
        std::thread::yield_now();
        *inside.lock() -= 1;
    }
}

fn release_after(sem: Semaphore, ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    sem.release();
}

// Ports _TestSemaphore.test_semaphore and test_bounded_semaphore: values 2→1→0, a failed
// non-blocking acquire, releases back up (and beyond for the unbounded one).
#[test]
fn values_go_down_and_up() {
    let _s = shared();
    let sem = Semaphore::new(2).unwrap();
    assert_eq!(sem.get_value(), 2);
    sem.acquire();
    assert_eq!(sem.get_value(), 1);
    assert!(sem.try_acquire());
    assert_eq!(sem.get_value(), 0);
    assert!(!sem.try_acquire());
    sem.release();
    sem.release();
    sem.release();
    sem.release();
    assert_eq!(sem.get_value(), 4);

    let b = BoundedSemaphore::new(2).unwrap();
    b.acquire();
    assert!(b.try_acquire());
    assert!(!b.try_acquire());
    b.release().unwrap();
    b.release().unwrap();
    assert!(matches!(b.release(), Err(Error::ValueError(_))));
    assert_eq!(b.get_value(), 2);
}

// Ports _TestSemaphore.test_timeout: non-blocking forms return at once, timed ones after
// about the timeout.
#[test]
fn timeouts() {
    let _s = shared();
    let sem = Semaphore::new(0).unwrap();
    let t = Instant::now();
    assert!(!sem.try_acquire());
    assert!(!sem.acquire_timeout(Duration::ZERO));
    assert!(t.elapsed() < Duration::from_millis(50));
    let t = Instant::now();
    assert!(!sem.acquire_timeout(Duration::from_millis(100)));
    assert!(t.elapsed() >= Duration::from_millis(100));
}

// A release in another process wakes a waiter here.
#[test]
fn a_release_in_a_child_wakes_the_parent_under_every_method() {
    let _s = shared();
    let _w = watchdog("semaphore release from a child", 60);
    for m in METHODS {
        let sem = Semaphore::new(0).unwrap();
        let mut p = get_context(m).process(release_after, (sem.clone(), 50u64));
        p.start().unwrap();
        assert!(sem.acquire_timeout(Duration::from_secs(10)), "{m:?}");
        p.join().unwrap();
    }
}

// Semaphore(2) shared by four processes never admits a third.
#[test]
fn semaphore_of_two_never_admits_a_third() {
    let _s = shared();
    let _w = watchdog("semaphore(2) admission", 60);
    let sem = Semaphore::new(2).unwrap();
    let (inside, max_seen) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
    let mut ps: Vec<_> = (0..4)
        .map(|_| {
            get_context(StartMethod::Fork).process(
                enter_many,
                (sem.clone(), inside.clone(), max_seen.clone(), 2000u32),
            )
        })
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &mut ps {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    let most = max_seen.get();
    assert!(
        (1..=2).contains(&most),
        "{most} processes inside a semaphore of 2"
    );
    assert_eq!(inside.get(), 0);
    assert_eq!(sem.get_value(), 2);
}
