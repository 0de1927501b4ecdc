//! A manager lock's mutual exclusion holds whatever the other processes try: a refused
//! `try_acquire` or a timed-out `acquire_timeout` changes nothing, and only the holder's
//! connection can release it. Ports CPython's `_TestLock.test_lock` (cpython.md §4, 34–35:
//! `acquire(False)` on a lock held elsewhere is False and the lock stays locked in every
//! process), in its manager variant, with the holder and the contenders in other processes.

mod util;

use std::time::Duration;

use mproc::{EventProxy, LockProxy};
use util::*;

const LONG: Duration = Duration::from_secs(20);

/// Holds `lock` until `done` is set, then releases it (reporting whether that worked).
fn hold_until(lock: LockProxy, held: EventProxy, done: EventProxy) -> mproc::Result<()> {
    let g = lock.acquire()?;
    held.set()?;
    if !done.wait_timeout(LONG)? {
        return Err(mproc::Error::Timeout);
    }
    g.release()
}

/// Tries the lock `n` times without getting it; how many of the tries got it.
fn contend(lock: LockProxy, n: u32) -> mproc::Result<u32> {
    let mut got = 0;
    for i in 0..n {
        let g = if i % 2 == 0 {
            lock.try_acquire()?
        } else {
            lock.acquire_timeout(Duration::from_millis(5))?
        };
        got += u32::from(g.is_some());
    }
    Ok(got)
}

#[test]
fn refused_acquires_leave_another_processs_lock_held() {
    let _s = shared();
    let _w = watchdog("refused_acquires_leave_another_processs_lock_held", 90);
    let m = mproc::Manager::start().unwrap();
    let (lock, held, done) = (m.lock().unwrap(), m.event().unwrap(), m.event().unwrap());
    let holder = mproc::spawn(hold_until, (lock.clone(), held.clone(), done.clone())).unwrap();
    assert!(
        held.wait_timeout(LONG).unwrap(),
        "the holder never got the lock"
    );
    // Two other processes and this one fail to take it, many times over: each refusal
    // used to drop a guard that released the holder's lock.
    let a = mproc::spawn(contend, (lock.clone(), 20)).unwrap();
    let b = mproc::spawn(contend, (lock.clone(), 20)).unwrap();
    assert_eq!(
        a.result().unwrap().unwrap(),
        0,
        "a contender got a held lock"
    );
    assert_eq!(
        b.result().unwrap().unwrap(),
        0,
        "a contender got a held lock"
    );
    assert!(
        lock.try_acquire().unwrap().is_none(),
        "still held by the holder"
    );
    assert!(
        lock.acquire_timeout(Duration::from_millis(20))
            .unwrap()
            .is_none()
    );
    // The holder still holds it, and its release succeeds.
    done.set().unwrap();
    holder.result().unwrap().unwrap();
    assert!(
        lock.try_acquire().unwrap().is_some(),
        "released by its holder"
    );
}
