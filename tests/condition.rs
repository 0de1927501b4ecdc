//! Condition across processes. Ports CPython's `_TestCondition`
//! (`_test_multiprocessing.py`, cpython.md §4), plus a waiter whose notifier dies.

mod util;

use std::time::{Duration, Instant};

use mproc::StartMethod;
use mproc::{Condition, Lock, Semaphore, Value, get_context};
use util::*;

// Generous: on a loaded 2-core machine a Spawn child can take seconds to start.
const LONG: Duration = Duration::from_secs(30);

/// Sleeps on `cond`, counting itself in `sleeping` first and in `woken` once notified.
fn sleeper(cond: Condition, sleeping: Semaphore, woken: Semaphore) {
    let g = cond.acquire();
    sleeping.release();
    let (g, notified) = cond.wait_timeout(g, LONG);
    drop(g);
    if notified {
        woken.release();
    }
}

fn timed_sleeper(cond: Condition, sleeping: Semaphore, woken: Semaphore) {
    let g = cond.acquire();
    sleeping.release();
    let (_g, notified) = cond.wait_timeout(g, Duration::from_millis(100));
    if !notified {
        woken.release();
    }
}

fn bump_state(cond: Condition, state: Value<u32>) {
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(10));
        let _g = cond.acquire();
        *state.lock() += 1;
        cond.notify_all();
    }
}

fn die_without_notifying(_cond: Condition) {
    std::process::abort();
}

fn wait_until(sem: &Semaphore, n: usize) {
    let deadline = Instant::now() + LONG;
    while sem.get_value() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} arrived",
            sem.get_value()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts 3 child processes and 3 threads sleeping on `cond`.
fn six_sleepers(
    cond: &Condition,
    sleeping: &Semaphore,
    woken: &Semaphore,
    timed: bool,
) -> (Vec<mproc::Process<()>>, Vec<std::thread::JoinHandle<()>>) {
    let mut ps = Vec::new();
    let mut ts = Vec::new();
    let f = if timed { timed_sleeper } else { sleeper };
    for _ in 0..3 {
        let args = (cond.clone(), sleeping.clone(), woken.clone());
        let ctx = get_context(StartMethod::Fork);
        let mut p = if timed {
            ctx.process(timed_sleeper, args)
        } else {
            ctx.process(sleeper, args)
        };
        p.start().unwrap();
        ps.push(p);
        let (c, s, w) = (cond.clone(), sleeping.clone(), woken.clone());
        ts.push(std::thread::spawn(move || f(c, s, w)));
    }
    (ps, ts)
}

// Ports _TestCondition.test_notify: each notify wakes exactly one sleeper (a process and a
// thread are asleep); the woken count goes 0 → 1 → 2.
#[test]
fn each_notify_wakes_exactly_one() {
    let _s = shared();
    let _w = watchdog("condition notify", 60);
    let cond = Condition::new().unwrap();
    let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let mut p = get_context(StartMethod::Fork)
        .process(sleeper, (cond.clone(), sleeping.clone(), woken.clone()));
    p.start().unwrap();
    let (c, s, w) = (cond.clone(), sleeping.clone(), woken.clone());
    let t = std::thread::spawn(move || sleeper(c, s, w));
    wait_until(&sleeping, 2);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(woken.get_value(), 0);
    for expected in 1..=2 {
        {
            let _g = cond.acquire();
            cond.notify(1);
        }
        wait_until(&woken, expected);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(woken.get_value(), expected);
    }
    t.join().unwrap();
    p.join().unwrap();
}

// Ports _TestCondition.test_notify_all: timed waiters all time out; then notify_all wakes
// six mixed process and thread waiters.
#[test]
fn notify_all_wakes_six_mixed_waiters() {
    let _s = shared();
    let _w = watchdog("condition notify_all", 60);
    let cond = Condition::new().unwrap();
    let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let (ps, ts) = six_sleepers(&cond, &sleeping, &woken, true);
    for t in ts {
        t.join().unwrap();
    }
    for mut p in ps {
        p.join().unwrap();
    }
    assert_eq!(woken.get_value(), 6, "every timed waiter timed out");

    let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let (ps, ts) = six_sleepers(&cond, &sleeping, &woken, false);
    wait_until(&sleeping, 6);
    {
        let _g = cond.acquire();
        cond.notify_all();
    }
    wait_until(&woken, 6);
    for t in ts {
        t.join().unwrap();
    }
    for mut p in ps {
        p.join().unwrap();
    }
}

// Ports _TestCondition.test_notify_n: notify(2) wakes 2, notify(4) the other 4, and a later
// notify(3) changes nothing.
#[test]
fn notify_n_wakes_n() {
    let _s = shared();
    let _w = watchdog("condition notify(n)", 60);
    let cond = Condition::new().unwrap();
    let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let (ps, ts) = six_sleepers(&cond, &sleeping, &woken, false);
    wait_until(&sleeping, 6);
    {
        let _g = cond.acquire();
        cond.notify(2);
    }
    wait_until(&woken, 2);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(woken.get_value(), 2);
    {
        let _g = cond.acquire();
        cond.notify(4);
    }
    wait_until(&woken, 6);
    {
        let _g = cond.acquire();
        cond.notify(3);
    }
    assert_eq!(woken.get_value(), 6);
    for t in ts {
        t.join().unwrap();
    }
    for mut p in ps {
        p.join().unwrap();
    }
}

// Ports _TestCondition.test_timeout: wait(t) with no notifier returns false after about t.
#[test]
fn wait_timeout_without_notifier() {
    let _s = shared();
    let cond = Condition::new().unwrap();
    let g = cond.acquire();
    let t = Instant::now();
    let (g, notified) = cond.wait_timeout(g, Duration::from_millis(100));
    assert!(!notified);
    assert!(t.elapsed() >= Duration::from_millis(100));
    let (_g, notified) = cond.wait_timeout(g, Duration::ZERO);
    assert!(!notified);
}

// Ports _TestCondition.test_waitfor and test_waitfor_timeout: wait_for with a shared Value
// as the predicate returns once a child makes it true; the timed form gives up.
#[test]
fn wait_for_a_predicate_set_by_a_child_under_every_method() {
    let _s = shared();
    let _w = watchdog("condition wait_for", 60);
    for m in METHODS {
        let lock = Lock::new().unwrap();
        let cond = Condition::with_lock(lock.clone()).unwrap();
        let state = Value::new(0u32).unwrap();
        let mut p = get_context(m).process(bump_state, (cond.clone(), state.clone()));
        p.start().unwrap();
        let g = lock.acquire();
        let g = cond.wait_for(g, || state.get() == 4);
        assert_eq!(state.get(), 4, "{m:?}");
        let t = Instant::now();
        let (_g, ok) = cond.wait_for_timeout(g, || state.get() == 5, Duration::from_millis(100));
        assert!(!ok);
        assert!(t.elapsed() >= Duration::from_millis(100));
        drop(_g);
        p.join().unwrap();
    }
}

// A waiter whose only notifier dies gets its timeout.
#[test]
fn a_waiter_whose_notifier_dies_times_out() {
    let _s = shared();
    let _w = watchdog("condition notifier death", 30);
    let cond = Condition::new().unwrap();
    let mut p = mproc::Process::new(die_without_notifying, (cond.clone(),));
    p.start().unwrap();
    let g = cond.acquire();
    let (g, notified) = cond.wait_timeout(g, Duration::from_millis(300));
    assert!(!notified);
    assert!(!g.owner_died());
    drop(g);
    p.join().unwrap();
}

#[test]
#[should_panic(expected = "not of this condition's lock")]
fn waiting_with_another_locks_guard_panics() {
    let cond = Condition::new().unwrap();
    let other = Lock::new().unwrap();
    let _ = cond.wait_timeout(other.acquire(), Duration::ZERO);
}

fn wait_with_separate_copies(lock: Lock, cond: Condition, ready: Semaphore) -> bool {
    // `lock` and the condition's own copy of it arrive as two mappings of one lock.
    let g = lock.acquire();
    ready.release();
    let (_g, notified) = cond.wait_timeout(g, LONG);
    notified
}

// A lock and a condition built on it, sent separately, are still recognised as one lock.
#[test]
fn a_lock_and_its_condition_sent_separately_work_together() {
    let _s = shared();
    let _w = watchdog("condition with separately sent lock", 30);
    for m in METHODS {
        let lock = Lock::new().unwrap();
        let cond = Condition::with_lock(lock.clone()).unwrap();
        let ready = Semaphore::new(0).unwrap();
        let mut p = get_context(m).process(
            wait_with_separate_copies,
            (lock.clone(), cond.clone(), ready.clone()),
        );
        p.start().unwrap();
        assert!(ready.acquire_timeout(LONG));
        {
            let _g = lock.acquire();
            cond.notify(1);
        }
        assert!(p.result().unwrap(), "{m:?}");
    }
}

const PARTIES: u32 = 3;
const ROUNDS: u32 = 200;
/// How long a party waits for a notification: a wait that times out although its round
/// completed counts as a lost notification (rounds take microseconds; only a machine
/// stalled this long could time out honestly).
const STEP: Duration = Duration::from_secs(5);

/// One party of the textbook cyclic barrier on a `Condition` (count and generation under
/// the condition's lock, `notify_all` by the last to arrive, who at once comes back for the
/// next round). Returns the rounds it completed; on a lost notification it counts it in
/// `lost` and wakes the others, who stop too.
fn barrier_party(
    cond: Condition,
    count: Value<u32>,
    generation: Value<u32>,
    lost: Value<u32>,
) -> u32 {
    for round in 0..ROUNDS {
        let mut g = cond.acquire();
        if lost.get() > 0 {
            return round;
        }
        let mine = generation.get();
        let n = count.get() + 1;
        if n == PARTIES {
            count.set(0);
            generation.set(mine + 1);
            cond.notify_all();
        } else {
            count.set(n);
            while generation.get() == mine && lost.get() == 0 {
                let (g2, notified) = cond.wait_timeout(g, STEP);
                g = g2;
                if !notified && generation.get() != mine {
                    lost.set(lost.get() + 1);
                    cond.notify_all();
                }
            }
            if lost.get() > 0 {
                return round;
            }
        }
        drop(g);
    }
    ROUNDS
}

// The textbook cyclic barrier on a Condition, 3 processes × 200 rounds: every round's
// notify_all reaches every party that waited, even though the notifier is back in `wait`
// for the next round before they run. Before the fix the last party took the token of a
// party it had just woken, which slept on (1 to 8 rounds in).
#[test]
fn a_cyclic_barrier_on_a_condition_across_processes() {
    let _s = shared();
    let _w = watchdog("cyclic barrier on a Condition", 120);
    let cond = Condition::new().unwrap();
    let (count, generation, lost) = (
        Value::new(0u32).unwrap(),
        Value::new(0u32).unwrap(),
        Value::new(0u32).unwrap(),
    );
    let ps: Vec<_> = (0..PARTIES)
        .map(|_| {
            let args = (
                cond.clone(),
                count.clone(),
                generation.clone(),
                lost.clone(),
            );
            let mut p = get_context(StartMethod::Fork).process(barrier_party, args);
            p.start().unwrap();
            p
        })
        .collect();
    let rounds: Vec<u32> = ps.into_iter().map(|p| p.result().unwrap()).collect();
    assert_eq!(
        lost.get(),
        0,
        "a party's wait timed out after its round had completed: a notify_all was lost \
         (rounds completed: {rounds:?}, generation {})",
        generation.get()
    );
    assert_eq!(rounds, vec![ROUNDS; PARTIES as usize]);
    assert_eq!(generation.get(), ROUNDS);
}
