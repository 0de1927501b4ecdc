//! `AsyncResult` as a future: awaited under a real executor (tokio, current-thread), woken
//! when the result arrives rather than polled in a loop.

mod util;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mproc::{Error, Pool};
use util::*;

fn sleep_then(ms: u64, v: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    v
}

fn boom(x: i64) -> i64 {
    panic!("boom {x}")
}

/// Counts how often the inner future is polled.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

#[test]
fn await_under_tokio_is_woken_not_polled() {
    let _s = shared();
    let _w = watchdog("await_tokio", 60);
    let pool = Pool::new(2).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let polls = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let (a, b, c) = rt.block_on(async {
        let a = Counted {
            inner: Box::pin(pool.apply_async(sleep_then, (300, 1)).into_future()),
            polls: Arc::clone(&polls),
        };
        let b = pool.apply_async(sleep_then, (300, 2));
        let c = pool.apply_async(boom, (3,));
        tokio::join!(a, b.into_future(), c.into_future())
    });
    assert_eq!(a.unwrap(), 1);
    assert_eq!(b.unwrap(), 2);
    assert!(matches!(c, Err(Error::TaskPanicked { message, .. }) if message == "boom 3"));
    // Both sleeps ran at once, on the two workers (the panic waited for a free one).
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Woken once its result arrived: a handful of polls, not a busy loop over 300 ms.
    let n = polls.load(Ordering::Relaxed);
    assert!((2..=4).contains(&n), "polled {n} times");
}

#[test]
fn await_a_map_and_a_result_that_is_ready_already() {
    let _s = shared();
    let _w = watchdog("await_map", 60);
    let pool = Pool::new(2).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ready = pool.apply_async(sleep_then, (0, 5));
    ready.wait();
    let (first, all) = rt.block_on(async {
        let first = ready.await;
        let all = pool
            .starmap_async(sleep_then, [(5, 1), (1, 2), (1, 3)])
            .await;
        (first, all)
    });
    assert_eq!(first.unwrap(), 5);
    assert_eq!(all.unwrap(), vec![1, 2, 3]);
    // A closed pool's refusal comes through the future too.
    pool.close();
    let refused = rt.block_on(pool.apply_async(sleep_then, (0, 1)).into_future());
    assert!(matches!(refused, Err(Error::PoolClosed)));
    pool.join();
}
