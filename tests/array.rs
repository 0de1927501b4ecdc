//! Array and RawArray across processes. Ports CPython's `_TestArray`
//! (`_test_multiprocessing.py`, cpython.md §4).

mod util;

use mproc::{Array, RawArray, get_context};
use util::*;

fn prefix_sums(a: Array<i32>) {
    let mut g = a.lock();
    for i in 1..g.len() {
        g[i] += g[i - 1];
    }
}

fn raw_prefix_sums(a: RawArray<i64>) {
    for i in 1..a.len() {
        a.set(i, a.get(i).unwrap() + a.get(i - 1).unwrap());
    }
}

// Ports _TestArray.test_array: len, indexing, slices, and a prefix sum computed in a child
// is visible in the parent, under every start method.
#[test]
fn a_childs_prefix_sum_is_visible_under_every_method() {
    let _s = shared();
    let _w = watchdog("array prefix sums", 60);
    let seq = [681, -35, -5, 5, 3, 18, 1, 22, 0, -9];
    for m in METHODS {
        let a = Array::from_slice(&seq).unwrap();
        assert_eq!(a.len(), 10);
        assert_eq!(a.get(3), Some(5));
        assert_eq!(a.get(10), None);
        assert_eq!(&a.lock()[2..4], &[-5, 5]);
        a.lock()[2..4].copy_from_slice(&[-5, 5]);
        let mut p = get_context(m).process(prefix_sums, (a.clone(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        let expected: Vec<i32> = seq
            .iter()
            .scan(0, |s, x| {
                *s += x;
                Some(*s)
            })
            .collect();
        assert_eq!(a.to_vec(), expected, "{m:?}");
    }
}

// Ports _TestArray.test_rawarray.
#[test]
fn raw_arrays_are_shared_too() {
    let _s = shared();
    let _w = watchdog("raw array", 30);
    let a = RawArray::from_slice(&[1i64, 2, 3, 4]).unwrap();
    let mut p = mproc::Process::new(raw_prefix_sums, (a.clone(),));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(a.to_vec(), [1, 3, 6, 10]);
}

// Ports _TestArray.test_array_from_size: Array(n) is zero-filled, even when memory is reused.
#[test]
fn new_arrays_are_zero_filled() {
    let _s = shared();
    for _ in 0..3 {
        let a = Array::<u32>::new(1000).unwrap();
        assert!(a.to_vec().iter().all(|&x| x == 0));
        a.lock().fill(u32::MAX);
        let r = RawArray::<f64>::new(1000).unwrap();
        assert!(r.to_vec().iter().all(|&x| x == 0.0));
    }
    let empty = Array::<u8>::new(0).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.to_vec(), Vec::<u8>::new());
}

#[test]
#[should_panic(expected = "out of range")]
fn set_past_the_end_panics_like_indexing() {
    Array::<u8>::new(2).unwrap().set(2, 1);
}

// Issue 12: `Debug` used to take the lock, so `dbg!(&a)` under `a.lock()` deadlocked its
// own thread. It never blocks now.
#[test]
fn debug_never_blocks() {
    let _s = shared();
    let _w = watchdog("Array debug under its own lock", 30);
    let a = mproc::Array::from_slice(&[1u8, 2, 3]).unwrap();
    assert_eq!(format!("{a:?}"), "Array([1, 2, 3])");
    let guard = a.lock();
    assert_eq!(format!("{a:?}"), "Array(<locked>, len=3)");
    drop(guard);
    assert_eq!(format!("{a:?}"), "Array([1, 2, 3])");
}
