//! SimpleQueue across processes. Ports CPython's `test_SimpleQueue` behaviours
//! (`_test_multiprocessing.py` test 127, cpython.md §4).

mod util;

use mproc::{Error, SimpleQueue};
use util::*;

fn put_two(q: SimpleQueue<String>) {
    q.put("first".to_string()).expect("put");
    q.put("second".to_string()).expect("put");
}

// Ports test_empty / test_close of SimpleQueue (test 127): empty, then not empty after a
// child's puts; values arrive in order; close twice is fine; use after close is an error.
#[test]
fn empty_order_close_under_every_method() {
    let _s = shared();
    let _w = watchdog("simple queue", 60);
    for m in METHODS {
        let q = SimpleQueue::new().unwrap();
        assert!(q.is_empty());
        let mut p = mproc::get_context(m).process(put_two, (q.clone(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0), "{m:?}");
        assert!(!q.is_empty());
        assert_eq!(q.get().unwrap(), "first");
        assert_eq!(q.get().unwrap(), "second");
        assert!(q.is_empty());
        q.close();
        q.close();
        assert!(matches!(q.put(String::new()), Err(Error::QueueClosed)));
    }
}

// Every blocking call has a timeout form: an empty SimpleQueue's get_timeout returns Empty.
#[test]
fn get_timeout_on_an_empty_queue() {
    let q = mproc::SimpleQueue::<u8>::new().unwrap();
    let t = std::time::Instant::now();
    assert!(matches!(
        q.get_timeout(std::time::Duration::from_millis(50)),
        Err(mproc::Error::Empty)
    ));
    assert!(t.elapsed() >= std::time::Duration::from_millis(45));
    q.put(7).unwrap();
    assert_eq!(q.get_timeout(std::time::Duration::from_secs(5)).unwrap(), 7);
}
