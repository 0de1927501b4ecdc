//! The SyncManager synchronization types a manager serves (reentrant locks, semaphores,
//! conditions, barriers, bounded and joinable queues), shared by real processes, and what
//! happens when a waiting party is killed. Ports CPython's manager variants of
//! `_TestQueue` (cpython.md §4, 24: `Full` at maxsize, timed puts; 28: `JoinableQueue.join`
//! after 4 workers' `task_done`), `_TestLock` (37: an RLock nests and is held until the
//! last release), `_TestSemaphore` (38–39), `_TestCondition` (40–43: one woken per
//! `notify`, `notify(n)`, `notify_all`, timed waits) and `_TestBarrier` (48–51: rounds,
//! distinct indices, `abort`, `reset`, a timed-out party, `Barrier(1)`).

mod util;

use std::time::{Duration, Instant};

use mproc::{
    BarrierProxy, ConditionProxy, Error, EventProxy, JoinableQueueProxy, Manager, QueueProxy,
    RLockProxy, SemaphoreProxy,
};
use util::*;

const LONG: Duration = Duration::from_secs(20);
const SHORT: Duration = Duration::from_millis(100);

fn try_rlock(l: RLockProxy) -> mproc::Result<bool> {
    Ok(l.try_acquire()?.is_some())
}

#[test]
fn rlock_nests_and_is_held_until_the_last_release() {
    let _s = shared();
    let _w = watchdog("rlock_nests", 60);
    let m = Manager::start().unwrap();
    let l = m.rlock().unwrap();
    let a = l.acquire().unwrap();
    let b = l.acquire().unwrap();
    let c = l.try_acquire().unwrap().expect("reentrant");
    let other = || {
        mproc::spawn(try_rlock, (l.clone(),))
            .unwrap()
            .result()
            .unwrap()
            .unwrap()
    };
    assert!(!other(), "held here: another process cannot take it");
    drop(c);
    b.release().unwrap();
    assert!(!other(), "one hold left");
    drop(a);
    assert!(other(), "free after the last release");
}

fn release_later(s: SemaphoreProxy) -> mproc::Result<()> {
    std::thread::sleep(SHORT);
    s.release()
}

#[test]
fn semaphore_values_timeouts_and_bounds() {
    let _s = shared();
    let _w = watchdog("semaphore_values", 60);
    let m = Manager::start().unwrap();
    let s = m.semaphore(2).unwrap();
    assert_eq!(s.get_value().unwrap(), 2);
    s.acquire().unwrap();
    assert_eq!(s.get_value().unwrap(), 1);
    assert!(s.try_acquire().unwrap());
    assert_eq!(s.get_value().unwrap(), 0);
    assert!(!s.try_acquire().unwrap());
    let t = Instant::now();
    assert!(!s.acquire_timeout(SHORT).unwrap());
    assert!(t.elapsed() >= SHORT);
    // Another process's release wakes a blocked acquire.
    let p = mproc::spawn(release_later, (s.clone(),)).unwrap();
    assert!(s.acquire_timeout(LONG).unwrap());
    p.result().unwrap().unwrap();
    for v in 1..=4 {
        s.release().unwrap();
        assert_eq!(s.get_value().unwrap(), v, "an unbounded semaphore grows");
    }
    let b = m.bounded_semaphore(2).unwrap();
    b.acquire().unwrap();
    b.release().unwrap();
    assert!(matches!(b.release(), Err(Error::ValueError(_))));
    assert_eq!(b.get_value().unwrap(), 2);
    let zero = m.semaphore(0).unwrap();
    assert!(!zero.try_acquire().unwrap());
}

fn sleeper(
    c: ConditionProxy,
    sleeping: QueueProxy<u32>,
    woken: QueueProxy<u32>,
) -> mproc::Result<()> {
    let g = c.acquire()?;
    // Announced while holding the lock, which `wait` lets go of only once waiting: when
    // the notifier gets the lock after every announcement, everyone is waiting.
    sleeping.put(std::process::id())?;
    let g = c.wait(g)?;
    woken.put(std::process::id())?;
    drop(g);
    Ok(())
}

/// The `n` waiters that woke, sorted; fails if more woke.
fn count_woken(woken: &QueueProxy<u32>, n: usize) -> Vec<u32> {
    let mut pids: Vec<u32> = (0..n)
        .map(|_| woken.get_timeout(LONG).expect("a notified waiter wakes"))
        .collect();
    std::thread::sleep(SHORT);
    assert!(
        matches!(woken.try_get(), Err(Error::Empty)),
        "more woke than notified"
    );
    pids.sort();
    pids
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort();
    v
}

#[test]
fn condition_notify_wakes_as_many_as_asked_longest_waiting_first() {
    let _s = shared();
    let _w = watchdog("condition_notify", 90);
    let m = Manager::start().unwrap();
    let (c, sleeping, woken) = (
        m.condition().unwrap(),
        m.queue().unwrap(),
        m.queue().unwrap(),
    );
    let mut ps = Vec::new();
    for _ in 0..5 {
        ps.push(mproc::spawn(sleeper, (c.clone(), sleeping.clone(), woken.clone())).unwrap());
    }
    // And a thread of this process.
    let thread = std::thread::spawn({
        let (c, sleeping, woken) = (c.clone(), sleeping.clone(), woken.clone());
        move || sleeper(c, sleeping, woken)
    });
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(sleeping.get_timeout(LONG).unwrap());
    }
    drop(c.acquire().unwrap());
    assert_eq!(c.notify(1).unwrap(), 1);
    assert_eq!(count_woken(&woken, 1), order[..1]);
    assert_eq!(c.notify(2).unwrap(), 2);
    assert_eq!(count_woken(&woken, 2), sorted(order[1..3].to_vec()));
    c.notify_all().unwrap();
    assert_eq!(count_woken(&woken, 3), sorted(order[3..].to_vec()));
    assert_eq!(c.notify(3).unwrap(), 0, "nobody is left waiting");
    for p in ps {
        p.result().unwrap().unwrap();
    }
    thread.join().unwrap().unwrap();
}

#[test]
fn condition_wait_timeout_takes_the_lock_back() {
    let _s = shared();
    let _w = watchdog("condition_wait_timeout", 60);
    let m = Manager::start().unwrap();
    let c = m.condition().unwrap();
    let g = c.acquire().unwrap();
    let t = Instant::now();
    let (g, notified) = c.wait_timeout(g, SHORT).unwrap();
    assert!(!notified);
    assert!(t.elapsed() >= SHORT);
    let (g, notified) = c.wait_timeout(g, Duration::ZERO).unwrap();
    assert!(!notified);
    // Held again: another thread cannot take it until this guard goes.
    let other = std::thread::spawn({
        let c = c.clone();
        move || c.acquire_timeout(SHORT).map(|g| g.is_some())
    });
    assert!(!other.join().unwrap().unwrap());
    drop(g);
    assert!(c.acquire_timeout(SHORT).unwrap().is_some());
}

fn wait_forever(c: ConditionProxy, sleeping: EventProxy, marker: RLockProxy) -> mproc::Result<()> {
    // Held on the same connection as the wait: freed when the server drops the connection.
    let _m = marker.acquire()?;
    let g = c.acquire()?;
    sleeping.set()?;
    let _g = c.wait(g)?;
    Ok(())
}

// A waiter killed mid-wait takes no notify with it, and leaves no lock held.
#[test]
fn a_killed_waiter_does_not_swallow_a_notify() {
    let _s = shared();
    let _w = watchdog("a_killed_waiter", 60);
    let m = Manager::start().unwrap();
    let (c, s1, s2) = (
        m.condition().unwrap(),
        m.event().unwrap(),
        m.event().unwrap(),
    );
    let (m1, m2) = (m.rlock().unwrap(), m.rlock().unwrap());
    let doomed = mproc::spawn(wait_forever, (c.clone(), s1.clone(), m1.clone())).unwrap();
    assert!(s1.wait_timeout(LONG).unwrap());
    let mut kept = mproc::spawn(wait_forever, (c.clone(), s2.clone(), m2)).unwrap();
    assert!(s2.wait_timeout(LONG).unwrap());
    doomed.kill().unwrap();
    // Once the server has dropped the dead connection (its rlock is free), the only
    // waiter left is the live one.
    let deadline = Instant::now() + LONG;
    while m1.try_acquire().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the dead waiter's connection was never dropped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(c.acquire().unwrap());
    assert_eq!(c.notify(1).unwrap(), 1);
    assert!(
        kept.join_timeout(LONG).unwrap(),
        "the notify went to the dead waiter: the live one still waits"
    );
    kept.result().unwrap().unwrap();
}

fn party(b: BarrierProxy, rounds: u32) -> mproc::Result<Vec<usize>> {
    (0..rounds).map(|_| b.wait()).collect()
}

fn broken_party(b: BarrierProxy) -> mproc::Result<bool> {
    Ok(matches!(b.wait(), Err(Error::BrokenBarrier)))
}

#[test]
fn barrier_rounds_indices_abort_reset_and_timeouts() {
    let _s = shared();
    let _w = watchdog("barrier", 120);
    let m = Manager::start().unwrap();
    let b = m.barrier(5).unwrap();
    assert_eq!(b.parties().unwrap(), 5);
    let ps: Vec<_> = (0..4)
        .map(|_| mproc::spawn(party, (b.clone(), 10)).unwrap())
        .collect();
    let mine = party(b.clone(), 10).unwrap();
    let mut all: Vec<Vec<usize>> = ps
        .into_iter()
        .map(|p| p.result().unwrap().unwrap())
        .collect();
    all.push(mine);
    for round in 0..10 {
        let mut seen: Vec<usize> = all.iter().map(|p| p[round]).collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4], "round {round}: distinct indices");
    }
    assert_eq!(b.n_waiting().unwrap(), 0);
    assert!(!b.broken().unwrap());
    // abort: the waiting parties and later ones get BrokenBarrier.
    let ps: Vec<_> = (0..2)
        .map(|_| mproc::spawn(broken_party, (b.clone(),)).unwrap())
        .collect();
    let deadline = Instant::now() + LONG;
    while b.n_waiting().unwrap() < 2 {
        assert!(Instant::now() < deadline, "the parties never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    b.abort().unwrap();
    for p in ps {
        assert!(p.result().unwrap().unwrap(), "a waiter saw the abort");
    }
    assert!(b.broken().unwrap());
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    // reset while parties wait: they get BrokenBarrier; then it is usable again.
    b.reset().unwrap();
    let p = mproc::spawn(broken_party, (b.clone(),)).unwrap();
    while b.n_waiting().unwrap() < 1 {
        assert!(Instant::now() < deadline, "the party never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    b.reset().unwrap();
    assert!(p.result().unwrap().unwrap());
    let ps: Vec<_> = (0..4)
        .map(|_| mproc::spawn(party, (b.clone(), 1)).unwrap())
        .collect();
    party(b.clone(), 1).unwrap();
    for p in ps {
        p.result().unwrap().unwrap();
    }
    // A party that times out breaks the round for everyone.
    let p = mproc::spawn(broken_party, (b.clone(),)).unwrap();
    assert!(matches!(b.wait_timeout(SHORT), Err(Error::BrokenBarrier)));
    assert!(p.result().unwrap().unwrap());
    assert!(b.broken().unwrap());
    // Barrier(1) never blocks; Barrier(0) is refused.
    let one = m.barrier(1).unwrap();
    assert_eq!(one.wait().unwrap(), 0);
    assert!(matches!(m.barrier(0), Err(Error::ValueError(_))));
}

fn wait_on(b: BarrierProxy, arrived: EventProxy) -> mproc::Result<usize> {
    arrived.set()?;
    b.wait()
}

// A party killed while waiting breaks the barrier instead of leaving the others hanging.
#[test]
fn a_killed_party_breaks_the_barrier() {
    let _s = shared();
    let _w = watchdog("a_killed_party", 60);
    let m = Manager::start().unwrap();
    let (b, arrived) = (m.barrier(3).unwrap(), m.event().unwrap());
    let doomed = mproc::spawn(wait_on, (b.clone(), arrived.clone())).unwrap();
    assert!(arrived.wait_timeout(LONG).unwrap());
    let deadline = Instant::now() + LONG;
    while b.n_waiting().unwrap() < 1 {
        assert!(Instant::now() < deadline, "the party never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    doomed.kill().unwrap();
    let t = Instant::now();
    assert!(matches!(b.wait_timeout(LONG), Err(Error::BrokenBarrier)));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "broken when the party died"
    );
}

fn put_three(q: QueueProxy<u32>) -> mproc::Result<()> {
    for i in 0..3 {
        q.put(i)?;
    }
    Ok(())
}

#[test]
fn bounded_queue_put_waits_when_full() {
    let _s = shared();
    let _w = watchdog("bounded_queue", 60);
    let m = Manager::start().unwrap();
    let q = m.queue_bounded::<u32>(2).unwrap();
    assert!(!q.full().unwrap());
    q.put(1).unwrap();
    q.try_put(2).unwrap();
    assert!(q.full().unwrap());
    assert!(matches!(q.try_put(3), Err(Error::Full)));
    let t = Instant::now();
    assert!(matches!(q.put_timeout(3, SHORT), Err(Error::Full)));
    assert!(t.elapsed() >= SHORT);
    assert_eq!(q.qsize().unwrap(), 2);
    // A child's puts wait for room that this process's gets make.
    let p = mproc::spawn(put_three, (q.clone(),)).unwrap();
    std::thread::sleep(SHORT);
    assert_eq!(
        q.qsize().unwrap(),
        2,
        "the child waits while the queue is full"
    );
    let got: Vec<u32> = (0..5).map(|_| q.get_timeout(LONG).unwrap()).collect();
    assert_eq!(got, [1, 2, 0, 1, 2]);
    p.result().unwrap().unwrap();
    let unbounded = m.queue::<u32>().unwrap();
    assert!(!unbounded.full().unwrap());
    assert!(
        !m.queue_bounded::<u32>(0).unwrap().full().unwrap(),
        "0: unbounded"
    );
}

fn consume(q: JoinableQueueProxy<Option<u32>>, out: QueueProxy<u32>) -> mproc::Result<()> {
    while let Some(n) = q.get()? {
        std::thread::sleep(Duration::from_millis(5));
        out.put(n)?;
        q.task_done()?;
    }
    q.task_done()
}

#[test]
fn joinable_queue_join_waits_for_every_task_done() {
    let _s = shared();
    let _w = watchdog("joinable_queue", 60);
    let m = Manager::start().unwrap();
    let (q, out) = (m.joinable_queue().unwrap(), m.queue().unwrap());
    assert!(
        q.join_timeout(Duration::ZERO).unwrap(),
        "nothing put: joined"
    );
    let ps: Vec<_> = (0..4)
        .map(|_| mproc::spawn(consume, (q.clone(), out.clone())).unwrap())
        .collect();
    for n in 0..20 {
        q.put(Some(n)).unwrap();
    }
    q.join_timeout(LONG).unwrap();
    // Every item was handed over before its task_done.
    assert_eq!(out.qsize().unwrap(), 20);
    for _ in 0..4 {
        q.put(None).unwrap();
    }
    q.join().unwrap();
    for p in ps {
        p.result().unwrap().unwrap();
    }
    assert!(matches!(q.task_done(), Err(Error::ValueError(m)) if m.contains("too many")));
    q.put(Some(1)).unwrap();
    assert!(!q.join_timeout(SHORT).unwrap(), "one item is not done");
}
