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

// Every blocking call has a timeout form: a put into a ring full of items nobody takes
// returns Full by its deadline, leaves nothing of the item, and a put succeeds once a
// child has taken items. (Python's SimpleQueue.put blocks on a full pipe, untimed.)
#[test]
fn put_timeout_on_a_full_ring() {
    let _s = shared();
    let _w = watchdog("simple queue put_timeout", 60);
    let q = SimpleQueue::<Vec<u8>>::new().unwrap();
    let item = vec![5u8; 64 << 10];
    let d = std::time::Duration::from_millis(50);
    let mut put = 0;
    loop {
        let t = std::time::Instant::now();
        match q.put_timeout(item.clone(), d) {
            Ok(()) => put += 1,
            Err(Error::Full) => {
                let took = t.elapsed();
                assert!(took >= d && took < d * 20, "Full after {took:?}");
                break;
            }
            Err(e) => panic!("put {put}: {e}"),
        }
        assert!(put < 1000, "a 1 MiB ring took {put} items of 64 KiB");
    }
    assert!(put >= 8, "only {put} items fit");
    let mut p = mproc::get_context(mproc::StartMethod::Fork).process(take_all, (q.clone(), put));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    q.put_timeout(vec![1, 2, 3], d).unwrap();
    assert_eq!(
        q.get().unwrap(),
        vec![1, 2, 3],
        "the timed-out put left nothing behind"
    );
}

fn take_all(q: SimpleQueue<Vec<u8>>, n: usize) {
    for _ in 0..n {
        assert_eq!(q.get().unwrap().len(), 64 << 10);
    }
}
