//! Event across processes. Ports CPython's `_TestEvent` (`_test_multiprocessing.py`,
//! cpython.md §4), plus a waiter whose setter dies.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mproc::StartMethod;
use mproc::{Event, Semaphore, get_context};
use util::*;

fn set_after(ev: Event, ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    ev.set();
}

fn die_before_setting(_ev: Event) {
    std::process::abort();
}

// Ports _TestEvent.test_event: unset, wait(0) and wait(t) false after about t; set makes
// every wait return true at once; after clear, a child's set wakes the parent's wait.
#[test]
fn set_clear_wait_under_every_method() {
    let _s = shared();
    let _w = watchdog("event", 60);
    let ev = Event::new().unwrap();
    assert!(!ev.is_set());
    assert!(!ev.wait_timeout(Duration::ZERO));
    let t = Instant::now();
    assert!(!ev.wait_timeout(Duration::from_millis(100)));
    assert!(t.elapsed() >= Duration::from_millis(100));
    ev.set();
    assert!(ev.is_set());
    ev.wait();
    let t = Instant::now();
    assert!(ev.wait_timeout(Duration::from_secs(5)));
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(format!("{ev:?}"), "Event(set)");
    for m in METHODS {
        ev.clear();
        assert!(!ev.is_set());
        let mut p = get_context(m).process(set_after, (ev.clone(), 50u64));
        p.start().unwrap();
        assert!(ev.wait_timeout(Duration::from_secs(10)), "{m:?}");
        p.join().unwrap();
    }
}

// A waiter whose only setter dies gets its timeout, not a hang.
#[test]
fn a_waiter_whose_setter_dies_times_out() {
    let _s = shared();
    let _w = watchdog("event setter death", 30);
    let ev = Event::new().unwrap();
    let mut p = mproc::Process::new(die_before_setting, (ev.clone(),));
    p.start().unwrap();
    let t = Instant::now();
    assert!(!ev.wait_timeout(Duration::from_millis(300)));
    assert!(t.elapsed() >= Duration::from_millis(300));
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-6));
}

// Many threads of two processes wait; one set wakes all of them.
#[test]
fn one_set_wakes_every_waiter() {
    let _s = shared();
    let _w = watchdog("event wakes all", 30);
    let ev = Event::new().unwrap();
    let waiters: Vec<_> = (0..6)
        .map(|_| {
            let ev = ev.clone();
            std::thread::spawn(move || ev.wait_timeout(Duration::from_secs(10)))
        })
        .collect();
    let mut p = get_context(StartMethod::Fork).process(set_after, (ev.clone(), 50u64));
    p.start().unwrap();
    for w in waiters {
        assert!(w.join().unwrap());
    }
    p.join().unwrap();
}

const PULSE_WAITERS: usize = 4;
const PULSES: usize = 20;

/// Waits for each of `PULSES` pulses, a round at a time (`go`); returns how many waits
/// returned false.
fn pulse_waiter(ev: Event, go: Semaphore, ready: Semaphore, done: Semaphore) -> usize {
    let mut missed = 0;
    for _ in 0..PULSES {
        go.acquire();
        ready.release();
        if !ev.wait_timeout(Duration::from_secs(30)) {
            missed += 1;
        }
        done.release();
    }
    missed
}

// `set(); clear()` while 4 child processes wait, 20 times: every child that was waiting
// returns, and its wait says it was set. Before the fix a woken waiter saw the flag
// cleared again and slept on (16 of 20 pulses missed). The pulse comes once every child
// sleeps (after it said it was about to wait), and a thread of the parent, spinning only
// around the pulse, clears the flag the moment it is set: a woken child (which the
// scheduler often runs before the setter's own `clear()`) always finds it cleared.
#[test]
fn a_set_clear_pulse_releases_every_waiter() {
    let _s = shared();
    let _w = watchdog("event pulses", 120);
    let ev = Event::new().unwrap();
    let go = Semaphore::new(0).unwrap();
    let (ready, done) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let ps: Vec<_> = (0..PULSE_WAITERS)
        .map(|_| {
            let args = (ev.clone(), go.clone(), ready.clone(), done.clone());
            let mut p = get_context(StartMethod::Fork).process(pulse_waiter, args);
            p.start().unwrap();
            p
        })
        .collect();
    let pids: Vec<u32> = ps.iter().map(|p| p.pid().unwrap()).collect();
    let mut failure = None;
    for pulse in 0..PULSES {
        // One round per child: none can wait for the next pulse before this one is over.
        for _ in 0..PULSE_WAITERS {
            go.release();
        }
        for _ in 0..PULSE_WAITERS {
            assert!(
                ready.acquire_timeout(Duration::from_secs(30)),
                "pulse {pulse}: a waiter never came"
            );
        }
        // Every child is asleep in its wait: the only sleep after `ready` in its round.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pids.iter().all(|&pid| proc_state(pid) == Some('S')) {
            assert!(Instant::now() < deadline, "the waiters never slept");
            std::thread::sleep(Duration::from_millis(1));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clearer = {
            let (ev, stop) = (ev.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if ev.is_set() {
                        ev.clear();
                    }
                    std::hint::spin_loop();
                }
            })
        };
        ev.set();
        ev.clear();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut returned = 0;
        while returned < PULSE_WAITERS {
            let left = deadline.saturating_duration_since(Instant::now());
            if !done.acquire_timeout(left) {
                break;
            }
            returned += 1;
        }
        stop.store(true, Ordering::Relaxed);
        clearer.join().unwrap();
        if returned < PULSE_WAITERS {
            failure = Some(format!(
                "pulse {pulse}: only {returned} of {PULSE_WAITERS} waiters returned within 10 s"
            ));
            break;
        }
    }
    if failure.is_some() {
        // Release the sleepers for good and open every round, so the children finish.
        ev.set();
        for _ in 0..PULSES * PULSE_WAITERS {
            go.release();
        }
    }
    let missed: Vec<usize> = ps.into_iter().map(|p| p.result().unwrap()).collect();
    if let Some(f) = failure {
        panic!("{f}: a set(); clear() pulse was slept through");
    }
    assert_eq!(
        missed,
        vec![0; PULSE_WAITERS],
        "waits that returned false after a pulse"
    );
}
