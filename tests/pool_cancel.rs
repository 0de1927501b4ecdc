//! Fire-and-forget and cancellation (DESIGN.md, API contract part 3): dropping an
//! `AsyncResult` or an `IMap` never cancels a task already submitted (Python runs an
//! `apply_async` whose result nobody keeps); `AsyncResult::cancel` stops a task that has not
//! started, whether it waits in the pool's queue or was sent ahead to a busy worker, and
//! leaves a started one alone. Side effects are counted in a shared `Value`, in the
//! workers, so "it ran" and "it never ran" are seen as they happened.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mproc::{Error, Pool, Value};
use util::*;

/// Sets bit `bit` of `v`: the task ran.
fn mark(v: Value<u64>, bit: u32) {
    *v.lock() |= 1 << bit;
}

/// Counts one run.
fn touch(v: Value<u64>) {
    *v.lock() += 1;
}

/// Sets bit `bit` as it starts, then sleeps `ms`: a long task whose start can be seen.
fn mark_then_sleep(v: Value<u64>, bit: u32, ms: u64) -> u32 {
    *v.lock() |= 1 << bit;
    std::thread::sleep(Duration::from_millis(ms));
    bit
}

/// Counts one run of item `i` (for `imap`).
fn touch_item(args: (Value<u64>, u64)) -> u64 {
    *args.0.lock() += 1;
    args.1
}

/// Waits (up to 20 s) until bit `bit` of `v` is set: that task has started.
fn wait_bit(v: &Value<u64>, bit: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while v.get() & (1 << bit) == 0 {
        assert!(Instant::now() < deadline, "task {bit} never started");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A pool that keeps every task in its own queue until a worker is idle: `task_timeout`
/// turns off sending tasks ahead (`gate.rs`).
fn queueing_pool(n: usize) -> Pool {
    Pool::builder()
        .processes(n)
        .task_timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

// The reproduction: twenty `let _ = pool.apply_async(..)`, then close and join.
// Before, all twenty were cancelled by the drops and nothing ran (0 of 20).
#[test]
fn dropped_results_still_run() {
    let _s = shared();
    let _w = watchdog("fire_and_forget", 60);
    for pool in [Pool::new(2).unwrap(), queueing_pool(2)] {
        let v = Value::new(0u64).unwrap();
        for _ in 0..20 {
            let _ = pool.apply_async(touch, (v.clone(),));
        }
        // A whole map dropped runs too.
        drop(pool.map_async(touch, vec![v.clone(); 10]));
        pool.close();
        pool.join();
        assert_eq!(v.get(), 30, "every dropped task ran");
    }
}

// A task waiting in the pool's queue is cancelled: true, it never runs, and its handle
// says so (ready, unsuccessful, `Err(Cancelled)`, the error callback gets `Cancelled`).
#[test]
fn cancelling_a_queued_task_stops_it() {
    let _s = shared();
    let _w = watchdog("cancel_queued", 60);
    let pool = queueing_pool(1);
    let v = Value::new(0u64).unwrap();
    let long = pool.apply_async(mark_then_sleep, (v.clone(), 0, 300));
    wait_bit(&v, 0);
    let queued = pool.apply_async(mark, (v.clone(), 1));
    let (tx, rx) = mpsc::channel();
    let with_callback = pool.apply_async(mark, (v.clone(), 2)).on_complete(
        |_| panic!("a cancelled task's success callback ran"),
        move |e| tx.send(e).unwrap(),
    );
    let kept = pool.apply_async(mark, (v.clone(), 3));
    assert!(queued.cancel(), "a queued task had not started");
    assert!(!queued.cancel(), "a second cancel finds it finished");
    assert!(queued.ready());
    assert_eq!(queued.successful(), Some(false));
    assert!(matches!(queued.get(), Err(Error::Cancelled)));
    assert!(with_callback.cancel());
    let e = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(matches!(e, Error::Cancelled), "{e:?}");
    assert_eq!(e.to_string(), "task cancelled");
    assert!(matches!(with_callback.get(), Err(Error::Cancelled)));
    assert_eq!(long.get().unwrap(), 0);
    kept.get().unwrap();
    pool.close();
    pool.join();
    assert_eq!(v.get(), 0b1001, "only the tasks not cancelled ran");
}

// A running task cannot be cancelled, nor a finished one: false, and the result comes.
#[test]
fn a_started_or_finished_task_is_not_cancelled() {
    let _s = shared();
    let _w = watchdog("cancel_started", 60);
    for pool in [Pool::new(1).unwrap(), queueing_pool(1)] {
        let v = Value::new(0u64).unwrap();
        let running = pool.apply_async(mark_then_sleep, (v.clone(), 0, 200));
        wait_bit(&v, 0);
        assert!(!running.cancel(), "it is running");
        assert!(!running.ready());
        assert_eq!(running.get().unwrap(), 0);
        let done = pool.apply_async(mark, (v.clone(), 1));
        done.wait();
        assert!(!done.cancel(), "it finished");
        assert_eq!(done.successful(), Some(true));
        done.get().unwrap();
        assert_eq!(v.get(), 0b11);
    }
}

// Every worker busy with a long task, and quick ones submitted behind: those go to the
// workers ahead, behind their gates (`gate.rs`). Cancelling some revokes their gate words:
// true, and they never run; the others run once the long tasks end.
#[test]
fn cancelling_a_task_sent_ahead_revokes_it() {
    let _s = shared();
    let _w = watchdog("cancel_ahead", 60);
    let pool = Pool::new(2).unwrap();
    let v = Value::new(0u64).unwrap();
    let longs: Vec<_> = (0..2)
        .map(|b| pool.apply_async(mark_then_sleep, (v.clone(), b, 400)))
        .collect();
    wait_bit(&v, 0);
    wait_bit(&v, 1);
    let queued: Vec<_> = (2..10)
        .map(|b| pool.apply_async(mark, (v.clone(), b)))
        .collect();
    let mut cancelled = 0u64;
    for (i, r) in queued.iter().enumerate() {
        if i % 2 == 0 {
            assert!(r.cancel(), "task {} was queued behind a long one", i + 2);
            cancelled |= 1 << (i + 2);
        }
    }
    for (i, r) in queued.into_iter().enumerate() {
        let got = r.get();
        if i % 2 == 0 {
            assert!(matches!(got, Err(Error::Cancelled)), "{got:?}");
        } else {
            got.unwrap();
        }
    }
    for r in longs {
        r.get().unwrap();
    }
    // Nothing is left to run: a cancelled task would have marked by now.
    pool.close();
    pool.join();
    assert_eq!(v.get() & cancelled, 0, "a cancelled task ran");
    assert_eq!(
        v.get() | cancelled,
        (1 << 10) - 1,
        "a task not cancelled did not run"
    );
}

// A map whose chunks all wait is cancelled whole (true); one with a chunk running keeps
// that chunk, cancels the rest, and says false (something ran).
#[test]
fn cancelling_a_map_stops_the_chunks_not_started() {
    let _s = shared();
    let _w = watchdog("cancel_map", 60);
    let pool = queueing_pool(1);
    let v = Value::new(0u64).unwrap();
    let long = pool.apply_async(mark_then_sleep, (v.clone(), 0, 300));
    wait_bit(&v, 0);
    // Two items per chunk (Python's default for eight items on one worker): four chunks.
    let all = pool.map_async(touch, vec![v.clone(); 8]);
    assert!(all.cancel(), "no chunk had started");
    assert!(matches!(all.get(), Err(Error::Cancelled)));
    long.get().unwrap();
    assert_eq!(v.get(), 1, "no item of the cancelled map ran");

    let w = Value::new(0u64).unwrap();
    let items: Vec<(Value<u64>, u32, u64)> = (0..4).map(|b| (w.clone(), b, 300)).collect();
    let part = pool.starmap_async(mark_then_sleep, items); // one item per chunk
    wait_bit(&w, 0);
    assert!(!part.cancel(), "its first chunk is running");
    assert!(matches!(part.get(), Err(Error::Cancelled)));
    pool.close();
    pool.join();
    assert_eq!(w.get(), 1, "only the chunk that had started ran");
}

// An `imap` dropped after two results: no further item is pulled from its input, and the
// tasks it had submitted all run.
#[test]
fn a_dropped_imap_stops_its_input_and_runs_what_it_submitted() {
    let _s = shared();
    let _w = watchdog("imap_drop", 60);
    for (ordered, queueing) in [(true, false), (false, false), (true, true), (false, true)] {
        let pool = if queueing {
            queueing_pool(2)
        } else {
            Pool::new(2).unwrap()
        };
        let v = Value::new(0u64).unwrap();
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pulled);
        let input = (0..1000u64).map(|i| {
            counter.fetch_add(1, Ordering::SeqCst);
            (v.clone(), i)
        });
        let mut it = pool.imap_chunked(touch_item, input, 1, ordered);
        for _ in 0..2 {
            it.next().unwrap().unwrap();
        }
        drop(it);
        let submitted = pulled.load(Ordering::SeqCst);
        assert!(submitted < 1000, "the input was read to its end");
        pool.close();
        pool.join();
        assert_eq!(pulled.load(Ordering::SeqCst), submitted);
        assert_eq!(
            v.get(),
            submitted as u64,
            "every submitted task ran (ordered: {ordered}, queueing: {queueing})"
        );
    }
}
