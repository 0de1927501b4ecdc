//! Lock and RLock across processes: exclusion, timeouts, reentrancy, and recovery when a
//! holder dies (abort, SIGKILL), under every start method. Ports CPython's `_TestLock`
//! (`_test_multiprocessing.py`, cpython.md §4).

mod util;

use std::time::{Duration, Instant};

use mproc::StartMethod;
use mproc::{Event, Lock, Process, RLock, get_context};
use util::*;

const LONG: Duration = Duration::from_secs(10);

fn hold_until(lock: Lock, held: Event, release: Event) {
    let _g = lock.acquire();
    held.set();
    release.wait_timeout(LONG);
}

fn hold_then_abort(lock: Lock) {
    let _g = lock.acquire();
    std::process::abort();
}

fn hold_then_sleep(lock: Lock, held: Event) {
    let g = lock.acquire();
    held.set();
    std::thread::sleep(LONG);
    drop(g);
}

fn rlock_nested_then_abort(lock: RLock) {
    let _a = lock.acquire();
    let _b = lock.acquire();
    std::process::abort();
}

// Ports _TestLock.test_lock: acquire, locked, a failed non-blocking acquire, release.
#[test]
fn acquire_try_release() {
    let _s = shared();
    let lock = Lock::new().unwrap();
    let g = lock.acquire();
    assert!(lock.is_locked());
    assert!(lock.try_acquire().is_none());
    assert!(!g.owner_died());
    drop(g);
    assert!(!lock.is_locked());
    assert!(lock.try_acquire().is_some());
    assert!(format!("{lock:?}").contains("owner=None"));
}

// Ports _TestLock.test_lock_context / the locked() check across processes (test 35): a
// lock held by a child is seen locked by the parent, which cannot take it until released.
#[test]
fn a_lock_held_by_a_child_excludes_the_parent_under_every_method() {
    let _s = shared();
    let _w = watchdog("lock held by a child", 60);
    for m in METHODS {
        let (lock, held, release) = (
            Lock::new().unwrap(),
            Event::new().unwrap(),
            Event::new().unwrap(),
        );
        let mut p =
            get_context(m).process(hold_until, (lock.clone(), held.clone(), release.clone()));
        p.start().unwrap();
        assert!(held.wait_timeout(LONG), "{m:?}: child never took the lock");
        assert!(lock.is_locked());
        assert!(lock.try_acquire().is_none());
        let t = Instant::now();
        assert!(lock.acquire_timeout(Duration::from_millis(100)).is_none());
        assert!(t.elapsed() >= Duration::from_millis(100));
        release.set();
        let g = lock.acquire_timeout(LONG).expect("released by the child");
        assert!(!g.owner_died(), "{m:?}: the child released normally");
        drop(g);
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

#[test]
fn owner_death_by_abort_is_recovered_and_reported_under_every_method() {
    let _s = shared();
    let _w = watchdog("owner death by abort", 60);
    for m in METHODS {
        let lock = Lock::new().unwrap();
        let mut p = get_context(m).process(hold_then_abort, (lock.clone(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-6), "{m:?}");
        let g = lock
            .acquire_timeout(Duration::from_secs(2))
            .expect("recovered");
        assert!(g.owner_died(), "{m:?}");
        drop(g);
        // Reported once: the next holder sees a clean lock.
        assert!(!lock.acquire().owner_died());
    }
}

// A waiter already asleep on the lock is woken by the kernel when the holder is SIGKILLed.
#[test]
fn a_sleeping_waiter_gets_the_lock_promptly_when_the_holder_is_killed() {
    let _s = shared();
    let _w = watchdog("owner death by SIGKILL", 60);
    for m in [StartMethod::Fork, StartMethod::ForkServer] {
        let (lock, held) = (Lock::new().unwrap(), Event::new().unwrap());
        let mut p = get_context(m).process(hold_then_sleep, (lock.clone(), held.clone()));
        p.start().unwrap();
        assert!(held.wait_timeout(LONG));
        let pid = p.pid().unwrap();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            // SIGKILL by pid: the test owns the child, which is still unreaped.
            std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
        });
        let t = Instant::now();
        let g = lock
            .acquire_timeout(LONG)
            .expect("woken by the holder's death");
        let waited = t.elapsed();
        assert!(g.owner_died());
        assert!(waited < Duration::from_secs(3), "took {waited:?}");
        drop(g);
        killer.join().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-9));
    }
}

// Ports _TestLock.test_rlock: nests, stays locked until the last release.
#[test]
fn rlock_nests_and_excludes_other_threads() {
    let _s = shared();
    let lock = RLock::new().unwrap();
    let a = lock.acquire();
    let b = lock.acquire();
    let c = lock.try_acquire().unwrap();
    let l2 = lock.clone();
    assert!(
        std::thread::spawn(move || l2.try_acquire().is_none())
            .join()
            .unwrap()
    );
    drop(c);
    drop(b);
    assert!(lock.is_locked());
    drop(a);
    assert!(!lock.is_locked());
    let l2 = lock.clone();
    assert!(
        std::thread::spawn(move || l2.try_acquire().is_some())
            .join()
            .unwrap()
    );
}

#[test]
fn rlock_owner_death_is_recovered() {
    let _s = shared();
    let _w = watchdog("rlock owner death", 30);
    let lock = RLock::new().unwrap();
    let mut p = Process::new(rlock_nested_then_abort, (lock.clone(),));
    p.start().unwrap();
    p.join().unwrap();
    let g = lock
        .acquire_timeout(Duration::from_secs(2))
        .expect("recovered");
    assert!(g.owner_died());
    drop(g);
    assert!(
        !lock.is_locked(),
        "the dead holder's nesting count is not inherited"
    );
}

// A guard leaked with mem::forget keeps the mapping alive after every handle drops, so
// the thread's robust list never points at unmapped memory; later locks still work.
#[test]
fn a_leaked_guard_does_not_corrupt_later_locks() {
    let _s = shared();
    let lock = Lock::new().unwrap();
    std::mem::forget(lock.acquire());
    drop(lock);
    let other = Lock::new().unwrap();
    for _ in 0..3 {
        drop(other.acquire());
    }
}
