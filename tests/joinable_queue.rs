//! JoinableQueue across processes: task_done and join. Ports CPython's `_TestQueue`
//! task_done/join behaviours (`_test_multiprocessing.py`, cpython.md §4).

mod util;

use std::time::Duration;

use mproc::{Error, JoinableQueue, Process};
use util::*;

fn worker(q: JoinableQueue<Option<u32>>) {
    while let Some(_item) = q.get().expect("get") {
        q.task_done().expect("task_done");
    }
    q.task_done().expect("task_done for the sentinel");
}

// Ports _TestQueue.test_task_done (test 28): join() returns once 4 workers have called
// task_done() for every item.
#[test]
fn join_returns_once_workers_are_done_under_every_method() {
    let _s = shared();
    let _w = watchdog("joinable queue join", 60);
    for m in METHODS {
        let q = JoinableQueue::new().unwrap();
        let mut workers: Vec<Process<()>> = (0..4)
            .map(|_| {
                let mut p = mproc::get_context(m).process(worker, (q.clone(),));
                p.start().unwrap();
                p
            })
            .collect();
        for i in 0..10 {
            q.put(Some(i)).unwrap();
        }
        q.join();
        assert_eq!(q.unfinished_tasks(), 0, "{m:?}");
        for _ in &workers {
            q.put(None).unwrap();
        }
        q.join();
        for p in &mut workers {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0), "{m:?}");
        }
    }
}

// Ports the ValueError of task_done() "called too many times" (tests 28 and 33).
#[test]
fn task_done_too_often_is_a_value_error() {
    let _s = shared();
    let q = JoinableQueue::new().unwrap();
    assert!(matches!(q.task_done(), Err(Error::ValueError(m)) if m.contains("too many")));
    q.put(1u8).unwrap();
    assert_eq!(q.unfinished_tasks(), 1);
    assert!(!q.join_timeout(Duration::from_millis(50)));
    assert_eq!(q.get().unwrap(), 1);
    q.task_done().unwrap();
    assert!(q.task_done().is_err());
    assert!(q.join_timeout(Duration::ZERO));
}

// The seeds' joinable queue: a daemon consumer that never returns, join, then terminate.
fn daemon_consumer(q: JoinableQueue<String>) {
    loop {
        let _item = q.get().expect("get");
        q.task_done().expect("task_done");
    }
}

#[test]
fn daemon_consumer_join_then_terminate() {
    let _s = shared();
    let _w = watchdog("daemon consumer", 60);
    let q = JoinableQueue::new().unwrap();
    let mut p = Process::new(daemon_consumer, (q.clone(),));
    p.set_daemon(true);
    p.start().unwrap();
    for s in ["a", "b", "c"] {
        q.put(s.to_string()).unwrap();
    }
    assert!(q.join_timeout(Duration::from_secs(20)));
    assert!(q.is_empty());
    p.terminate().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-15));
}
