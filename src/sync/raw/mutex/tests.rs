use super::*;
use crate::sync::raw::robust::me;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

#[repr(C, align(64))]
struct Block([AtomicU32; 32]);

fn block() -> Arc<Block> {
    Arc::new(Block(std::array::from_fn(|_| AtomicU32::new(0))))
}

#[test]
fn many_threads_exclude_each_other() {
    let b = block();
    let counter = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (b, counter) = (b.clone(), counter.clone());
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    let m = me();
                    assert_eq!(lock(&b.0[0], m, None), Some(false));
                    // A non-atomic read-modify-write made of atomics: lost updates
                    // would show if two threads were inside together.
                    let v = counter.load(Ordering::Relaxed);
                    counter.store(v + 1, Ordering::Relaxed);
                    unlock(&b.0[0], m);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counter.load(Ordering::Relaxed), 160_000);
    assert_eq!(b.0[0].load(Ordering::Relaxed) & TID_MASK, 0);
}

#[test]
fn timeout_and_try_lock() {
    let b = block();
    let m = me();
    assert_eq!(try_lock(&b.0[0], m), Some(false));
    let b2 = b.clone();
    std::thread::spawn(move || {
        let m = me();
        assert_eq!(try_lock(&b2.0[0], m), None);
        let t = Instant::now();
        assert_eq!(
            lock(
                &b2.0[0],
                m,
                Some(Instant::now() + Duration::from_millis(50))
            ),
            None
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
    })
    .join()
    .unwrap();
    unlock(&b.0[0], m);
    assert!(!is_locked(&b.0[0]));
}

#[test]
fn a_thread_that_dies_holding_the_lock_is_reported() {
    let b = block();
    let b2 = b.clone();
    std::thread::spawn(move || {
        let m = me();
        assert_eq!(lock(&b2.0[0], m, None), Some(false));
        // Exit holding it: the kernel walks this thread's robust list.
    })
    .join()
    .unwrap();
    let m = me();
    assert_eq!(
        lock(&b.0[0], m, Some(Instant::now() + Duration::from_secs(5))),
        Some(true)
    );
    unlock(&b.0[0], m);
    assert_eq!(lock(&b.0[0], m, None), Some(false));
    unlock(&b.0[0], m);
}

#[test]
fn a_sleeping_waiter_is_woken_by_owner_death() {
    let b = block();
    let (tx, rx) = std::sync::mpsc::channel();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let b2 = b.clone();
    let holder = std::thread::spawn(move || {
        let m = me();
        lock(&b2.0[0], m, None);
        locked_tx.send(()).unwrap();
        rx.recv().unwrap();
    });
    locked_rx.recv().unwrap();
    let b3 = b.clone();
    let waiter = std::thread::spawn(move || {
        let m = me();
        let got = lock(&b3.0[0], m, Some(Instant::now() + Duration::from_secs(10)));
        if got.is_some() {
            unlock(&b3.0[0], m);
        }
        got
    });
    std::thread::sleep(Duration::from_millis(50));
    tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(waiter.join().unwrap(), Some(true));
}

#[test]
fn nested_locks_unlink_in_any_order() {
    let (a, b, c) = (block(), block(), block());
    let m = me();
    lock(&a.0[0], m, None);
    lock(&b.0[0], m, None);
    lock(&c.0[0], m, None);
    unlock(&b.0[0], m);
    unlock(&a.0[0], m);
    lock(&a.0[0], m, None);
    unlock(&c.0[0], m);
    unlock(&a.0[0], m);
    // The list is consistent again: a thread death now must not trip over stale entries.
    let a2 = a.clone();
    std::thread::spawn(move || {
        lock(&a2.0[0], me(), None);
    })
    .join()
    .unwrap();
    assert_eq!(lock(&a.0[0], m, None), Some(true));
    unlock(&a.0[0], m);
}

#[test]
fn reentrant_counts_levels() {
    let b = block();
    let m = me();
    let (w, c) = (&b.0[0], &b.0[COUNT_OFFSET / 4]);
    for _ in 0..3 {
        assert_eq!(reentrant::lock(w, c, m, None), Some(false));
    }
    let b2 = b.clone();
    let other = move || {
        let m = me();
        reentrant::try_lock(&b2.0[0], &b2.0[COUNT_OFFSET / 4], m).is_some()
    };
    assert!(!std::thread::spawn(other).join().unwrap());
    for _ in 0..3 {
        assert!(is_locked(w));
        reentrant::unlock(w, c, m);
    }
    assert!(!is_locked(w));
}
