//! Value and RawValue across processes. Ports CPython's `_TestValue` (`_test_multiprocessing.py`,
//! cpython.md §4), plus exact counting under the lock and owner death inside `Value::lock()`.

mod util;

use std::time::Duration;

use mproc::StartMethod;
use mproc::{Pod, Process, RawValue, Value, get_context};
use util::*;

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Point {
    x: i32,
    y: f64,
}
#[allow(unsafe_code)] // the one way to declare a user struct Pod
// SAFETY: an i32 and an f64: zero is valid, any mix of their bytes is valid, no pointers.
unsafe impl Pod for Point {}

fn write_all(
    i: Value<i32>,
    d: Value<f64>,
    h: Value<i16>,
    q: Value<i64>,
    c: Value<u8>,
    p: Value<Point>,
) {
    i.set(-7);
    d.set(2.5);
    h.set(-3);
    q.set(1 << 40);
    c.set(b'x');
    *p.lock() = Point { x: 1, y: -1.5 };
}

fn write_raw(v: RawValue<u64>, b: RawValue<bool>) {
    v.set(v.get() + 41);
    b.set(true);
}

fn add_many(v: Value<u64>, n: u32) {
    for _ in 0..n {
        *v.lock() += 1;
    }
}

fn set_then_abort(v: Value<u64>) {
    let mut g = v.lock();
    *g = 42;
    std::process::abort();
}

fn hold_then_sleep(v: Value<u64>, held: mproc::Event) {
    let _g = v.lock();
    held.set();
    std::thread::sleep(Duration::from_secs(10));
}

// Ports _TestValue.test_value: typecodes i d h q c (and a Structure) round-trip, and a
// child's writes are visible to the parent, under every start method.
#[test]
fn a_childs_writes_are_visible_under_every_method() {
    let _s = shared();
    let _w = watchdog("value writes", 60);
    for m in METHODS {
        let (i, d, h, q, c) = (
            Value::new(0i32).unwrap(),
            Value::new(0.0f64).unwrap(),
            Value::new(0i16).unwrap(),
            Value::new(0i64).unwrap(),
            Value::new(0u8).unwrap(),
        );
        let p = Value::new(Point { x: 0, y: 0.0 }).unwrap();
        let mut child = get_context(m).process(
            write_all,
            (
                i.clone(),
                d.clone(),
                h.clone(),
                q.clone(),
                c.clone(),
                p.clone(),
            ),
        );
        child.start().unwrap();
        child.join().unwrap();
        assert_eq!(child.exitcode(), Some(0), "{m:?}");
        assert_eq!(
            (i.get(), d.get(), h.get(), q.get(), c.get()),
            (-7, 2.5, -3, 1 << 40, b'x')
        );
        assert_eq!(p.get(), Point { x: 1, y: -1.5 });
    }
}

// Ports _TestValue.test_rawvalue (the same for RawValue, no lock).
#[test]
fn raw_values_are_shared_too() {
    let _s = shared();
    let _w = watchdog("raw values", 30);
    let (v, b) = (RawValue::new(1u64).unwrap(), RawValue::new(false).unwrap());
    let mut p = Process::new(write_raw, (v.clone(), b.clone()));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!((v.get(), b.get()), (42, true));
}

// Ports _TestValue.test_getobj_getlock: get_lock() is the value's own lock.
#[test]
fn get_lock_is_the_values_lock() {
    let _s = shared();
    let v = Value::new(5u32).unwrap();
    let g = v.get_lock().acquire();
    let v2 = v.clone();
    let blocked = std::thread::spawn(move || {
        v2.get_lock().try_acquire().is_none()
            && v2
                .lock_timeout(std::time::Duration::from_millis(20))
                .is_none()
    });
    assert!(blocked.join().unwrap());
    drop(g);
    assert_eq!(format!("{v:?}"), "Value(5)");
}

// Four processes, 25 000 increments each, under Value::lock(): nothing is lost.
#[test]
fn four_processes_count_exactly_under_the_lock() {
    let _s = shared();
    let _w = watchdog("4 x 25000 increments", 120);
    let v = Value::new(0u64).unwrap();
    let mut ps: Vec<_> = (0..4)
        .map(|_| get_context(StartMethod::Fork).process(add_many, (v.clone(), 25_000u32)))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &mut ps {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    assert_eq!(v.get(), 100_000);
}

// A child that aborts inside Value::lock(): the parent gets the lock, told the owner died,
// and sees what the child wrote before dying.
#[test]
fn owner_death_inside_value_lock_under_every_method() {
    let _s = shared();
    let _w = watchdog("value owner death", 60);
    for m in METHODS {
        let v = Value::new(0u64).unwrap();
        let mut p = get_context(m).process(set_then_abort, (v.clone(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-6));
        let g = v.lock();
        assert!(g.owner_died(), "{m:?}");
        assert_eq!(*g, 42);
    }
}

#[test]
fn owner_death_by_sigkill_inside_value_lock() {
    let _s = shared();
    let _w = watchdog("value owner SIGKILL", 30);
    let (v, held) = (Value::new(7u64).unwrap(), mproc::Event::new().unwrap());
    let mut p = Process::new(hold_then_sleep, (v.clone(), held.clone()));
    p.start().unwrap();
    assert!(held.wait_timeout(Duration::from_secs(10)));
    p.kill().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-9));
    let g = v.lock();
    assert!(g.owner_died());
    assert_eq!(*g, 7);
}

// Issue 12: `Debug` used to take the lock, so `dbg!(&v)` under `v.lock()` deadlocked its
// own thread. It never blocks now.
#[test]
fn debug_never_blocks() {
    let _s = shared();
    let _w = watchdog("Value debug under its own lock", 30);
    let v = Value::new(7u64).unwrap();
    assert_eq!(format!("{v:?}"), "Value(7)");
    let guard = v.lock();
    assert_eq!(format!("{v:?}"), "Value(<locked>)");
    drop(guard);
    assert_eq!(format!("{v:?}"), "Value(7)");
}
