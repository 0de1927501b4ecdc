//! Event across processes. Ports CPython's `_TestEvent` (`_test_multiprocessing.py`,
//! cpython.md §4), plus a waiter whose setter dies.

mod util;

use std::time::{Duration, Instant};

use mproc::StartMethod;
use mproc::{Event, get_context};
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
