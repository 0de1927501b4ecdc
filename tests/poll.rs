//! Pollable pipe ends and queues, and async receiving (`connection/ready.rs`,
//! `connection/future.rs`): a pipe end's descriptor is readable iff a message waits or the
//! peer is gone, for `poll(2)` and tokio's `AsyncFd`; a queue's likewise iff an item
//! waits; `recv_async`/`get_async` complete under tokio and under a hand-written
//! `block_on`, and a dropped future loses nothing. Real child processes throughout.

mod util;

use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use mproc::{Connection, Error, Process, Queue, pipe, pipe_simplex};
use util::*;

/// A started daemon child: if a test hangs, its watchdog's exit terminates it rather than
/// waiting for it (a stuck non-daemon child would hold the exit up).
fn spawn<F, A, R>(f: F, args: A) -> mproc::Result<Process<R>>
where
    F: mproc::Target<A, R>,
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let mut p = Process::new(f, args);
    p.set_daemon(true);
    p.start()?;
    Ok(p)
}

/// `poll(2)` on one descriptor: whether it is readable within `ms`.
fn readable(fd: BorrowedFd<'_>, ms: i32) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut p = [PollFd::new(&fd, PollFlags::IN)];
    let ts = rustix::time::Timespec {
        tv_sec: i64::from(ms / 1000),
        tv_nsec: i64::from(ms % 1000) * 1_000_000,
    };
    loop {
        match poll(&mut p, Some(&ts)) {
            Ok(_) => return !p[0].revents().is_empty(),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll failed: {e}"),
        }
    }
}

/// The monotonic clock in nanoseconds: the same clock in every process.
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Sends the monotonic time, `n` times, `ms` apart; then waits for one message.
fn send_times(c: Connection<u64>, n: u32, ms: u64) -> mproc::Result<()> {
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(ms));
        c.send(&mono_ns())?;
    }
    let _ = c.recv_timeout(Duration::from_secs(30));
    Ok(())
}

// A poller asleep in `poll(2)` is woken within milliseconds of a child's send (the
// sender sees the poller counted and sets the flag at once): the slowest of 20 wake-ups,
// measured on the one clock both processes share.
#[test]
fn a_polled_end_turns_readable_within_milliseconds_of_a_send() {
    let _s = shared();
    let _w = watchdog("poll_latency", 60);
    let (a, b) = pipe::<u64>().unwrap();
    let p = spawn(send_times, (b, 20u32, 20u64)).unwrap();
    let mut worst = 0;
    for _ in 0..20 {
        assert!(readable(a.as_fd(), 5000), "not readable 5 s after a send");
        let woke = mono_ns();
        let sent = a.recv().unwrap();
        worst = worst.max(woke.saturating_sub(sent));
        assert!(
            !readable(a.as_fd(), 0),
            "readable after the message was received"
        );
    }
    assert!(
        // Milliseconds quiet; the bound leaves room for a CPU hog beside the test (a lost
        // readiness would show as the 5 s wait above, not here).
        worst < 250_000_000,
        "a poller woke {} ms after a send",
        worst / 1_000_000
    );
    a.send(&0).unwrap();
    p.result().unwrap().unwrap();
}

/// Sends `v` after `ms`, then waits for one message (any) before it returns.
fn send_later(c: Connection<u32>, v: u32, ms: u64) -> mproc::Result<()> {
    std::thread::sleep(Duration::from_millis(ms));
    c.send(&v)?;
    let _ = c.recv_timeout(Duration::from_secs(30));
    Ok(())
}

/// Sends `v` after `ms`, then sleeps until killed.
fn send_then_hang(c: Connection<u32>, v: u32, ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    c.send(&v).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

// Not readable while empty; readable soon after a child sends; not readable once the
// message is received; readable when the peer process exits (and `recv` says `Closed`).
#[test]
fn a_pipe_end_is_readable_iff_a_message_waits_or_the_peer_is_gone() {
    let _s = shared();
    let _w = watchdog("poll_pipe_end", 60);
    let (a, b) = pipe::<u32>().unwrap();
    let p = spawn(send_later, (b, 7u32, 300u64)).unwrap();
    let fd = a.as_fd();
    assert!(!readable(fd, 0), "readable before anything was sent");
    let t = Instant::now();
    assert!(readable(fd, 5000), "not readable 5 s after the child sent");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "readable early: {took:?}"
    );
    assert!(readable(fd, 0), "readability is level-triggered");
    assert_eq!(a.recv().unwrap(), 7);
    assert!(
        !readable(a.as_fd(), 0),
        "still readable after the message was received"
    );
    assert!(!readable(a.as_fd(), 100), "readable with nothing sent");
    a.send(&0).unwrap(); // the child exits
    assert!(
        readable(a.as_fd(), 5000),
        "not readable after the peer exited"
    );
    assert!(matches!(a.recv(), Err(Error::Closed)));
    p.result().unwrap().unwrap();
}

#[test]
fn a_pipe_end_turns_readable_when_its_peer_is_killed() {
    let _s = shared();
    let _w = watchdog("poll_pipe_end_killed", 60);
    let (rx, tx) = pipe_simplex::<u32>().unwrap();
    let (a, b) = pipe::<u32>().unwrap();
    drop(tx);
    let p = spawn(send_then_hang, (b, 1u32, 0u64)).unwrap();
    assert!(readable(a.as_fd(), 5000));
    assert_eq!(a.recv().unwrap(), 1);
    assert!(!readable(a.as_fd(), 50));
    p.kill().unwrap();
    let t = Instant::now();
    assert!(
        readable(a.as_fd(), 5000),
        "not readable after SIGKILL of the peer"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(matches!(a.recv(), Err(Error::Closed)));
    // A simplex receiver whose sender is gone is readable at once.
    assert!(readable(rx.as_fd(), 0));
    assert!(matches!(rx.recv(), Err(Error::Closed)));
    let _ = p.result();
}

// Ports CPython's `_TestPoll.test_empty_string` and `test_boundaries` (research notes,
// cpython.md #93 and #96) through the descriptor, as `select.poll()` on `conn.fileno()`
// does there: an empty message makes the end readable, and it stays readable until read;
// between two messages it stays readable. (Before pipes were pollable this port found
// `revents 0 after 2 s`.)
#[test]
fn cpython_poll_empty_message_and_boundaries() {
    let _s = shared();
    let _w = watchdog("poll_cpython_port", 60);
    fn two(c: Connection<u32>) -> mproc::Result<()> {
        c.send_bytes(b"")?;
        c.send_bytes(b"x")?;
        let _ = c.recv_timeout(Duration::from_secs(30));
        Ok(())
    }
    let (a, b) = pipe::<u32>().unwrap();
    let p = spawn(two, (b,)).unwrap();
    let fd = a.as_fd();
    assert!(readable(fd, 2000), "revents 0 after 2 s");
    assert!(readable(fd, 0), "poll consumed the message");
    assert_eq!(a.recv_bytes().unwrap(), b"");
    assert!(
        readable(a.as_fd(), 2000),
        "not readable between two messages"
    );
    assert_eq!(a.recv_bytes().unwrap(), b"x");
    assert!(!readable(a.as_fd(), 0));
    a.send(&0).unwrap();
    p.result().unwrap().unwrap();
}

fn put_later(q: Queue<u32>, v: u32, ms: u64) -> mproc::Result<()> {
    std::thread::sleep(Duration::from_millis(ms));
    q.put(v)
}

#[test]
fn a_queue_fd_is_readable_iff_an_item_waits() {
    let _s = shared();
    let _w = watchdog("poll_queue", 60);
    let q = Queue::<u32>::new().unwrap();
    // An item put before anyone polled counts too.
    q.put(1).unwrap();
    assert!(
        readable(q.as_pollable_fd(), 0),
        "an item put before polling is missed"
    );
    assert_eq!(q.get().unwrap(), 1);
    assert!(
        !readable(q.as_pollable_fd(), 0),
        "readable after the queue drained"
    );
    let p = spawn(put_later, (q.clone(), 5u32, 200u64)).unwrap();
    assert!(!readable(q.as_pollable_fd(), 0));
    assert!(
        readable(q.as_pollable_fd(), 5000),
        "not readable after a child put"
    );
    p.result().unwrap().unwrap();
    assert!(readable(q.as_pollable_fd(), 0));
    assert_eq!(q.try_get().unwrap(), 5);
    assert!(!readable(q.as_pollable_fd(), 0));
    // `wait()` takes it too, beside a pipe end.
    let (a, b) = pipe::<u32>().unwrap();
    let qfd = q.as_pollable_fd();
    assert!(
        mproc::wait(&[&a, &qfd], Some(Duration::from_millis(50)))
            .unwrap()
            .is_empty()
    );
    q.put(9).unwrap();
    assert_eq!(
        mproc::wait(&[&a, &qfd], Some(Duration::from_secs(5))).unwrap(),
        vec![1]
    );
    b.send(&3).unwrap();
    assert_eq!(
        mproc::wait(&[&a, &qfd], Some(Duration::from_secs(5))).unwrap(),
        vec![0, 1]
    );
}

#[test]
#[allow(unsafe_code)]
fn tokio_async_fd_waits_on_a_pipe_end() {
    let _s = shared();
    let _w = watchdog("poll_async_fd", 60);
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;
    let (a, b) = pipe::<u32>().unwrap();
    let p = spawn(send_later, (b, 11u32, 200u64)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let (got, a) = rt.block_on(async {
        // SAFETY: the `AsyncFd` owns the end, whose descriptor stays open and the same
        // for as long as the end lives (it is the end's epoll instance).
        let afd = unsafe { AsyncFd::register_with_interest(a, Interest::READABLE) }
            .map_err(|e| e.to_string())
            .unwrap();
        loop {
            let mut guard = afd.readable().await.unwrap();
            if afd.get_ref().poll(Some(Duration::ZERO)).unwrap() {
                break (afd.get_ref().recv().unwrap(), afd.into_inner());
            }
            guard.clear_ready();
        }
    });
    assert_eq!(got, 11);
    a.send(&0).unwrap();
    p.result().unwrap().unwrap();
}

/// A `block_on` with no runtime: parks the thread until the waker unparks it.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn send_n(c: Connection<u32>, n: u32, pause_us: u64) -> mproc::Result<()> {
    for i in 0..n {
        c.send(&i)?;
        if pause_us > 0 {
            std::thread::sleep(Duration::from_micros(pause_us));
        }
    }
    let _ = c.recv_timeout(Duration::from_secs(30));
    Ok(())
}

fn put_n(q: Queue<u32>, n: u32, pause_us: u64) -> mproc::Result<()> {
    for i in 0..n {
        q.put(i)?;
        if pause_us > 0 {
            std::thread::sleep(Duration::from_micros(pause_us));
        }
    }
    Ok(())
}

#[test]
fn recv_async_and_get_async_without_a_runtime() {
    let _s = shared();
    let _w = watchdog("async_block_on", 60);
    let (mut a, b) = pipe::<u32>().unwrap();
    let p = spawn(send_n, (b, 50u32, 500u64)).unwrap();
    for i in 0..50 {
        assert_eq!(block_on(a.recv_async()).unwrap(), i);
    }
    a.send(&0).unwrap();
    p.result().unwrap().unwrap();
    assert!(matches!(block_on(a.recv_async()), Err(Error::Closed)));

    let q = Queue::<u32>::new().unwrap();
    let p = spawn(put_n, (q.clone(), 50u32, 500u64)).unwrap();
    for i in 0..50 {
        assert_eq!(block_on(q.get_async()).unwrap(), i);
    }
    p.result().unwrap().unwrap();

    // The other queues' futures are the same.
    let jq = mproc::JoinableQueue::<u32>::new().unwrap();
    let sq = mproc::SimpleQueue::<u32>::new().unwrap();
    jq.put(3).unwrap();
    sq.put(4).unwrap();
    assert_eq!(block_on(jq.get_async()).unwrap(), 3);
    jq.task_done().unwrap();
    jq.join();
    assert_eq!(block_on(sq.get_async()).unwrap(), 4);
    assert!(!readable(jq.as_pollable_fd(), 0) && !readable(sq.as_pollable_fd(), 0));
}

async fn pipe_and_queue(mut a: Connection<u32>, q: Queue<u32>, n: u32) -> Connection<u32> {
    for i in 0..n {
        assert_eq!(a.recv_async().await.unwrap(), i);
        assert_eq!(q.get_async().await.unwrap(), i);
    }
    a
}

#[test]
fn recv_async_and_get_async_under_tokio() {
    let _s = shared();
    let _w = watchdog("async_tokio", 120);
    for multi in [false, true] {
        let rt = if multi {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        };
        let (a, b) = pipe::<u32>().unwrap();
        let q = Queue::<u32>::new().unwrap();
        let p1 = spawn(send_n, (b, 100u32, 200u64)).unwrap();
        let p2 = spawn(put_n, (q.clone(), 100u32, 300u64)).unwrap();
        // Spawned: the futures are `Send`.
        let a = rt
            .block_on(async { tokio::spawn(pipe_and_queue(a, q, 100)).await })
            .unwrap();
        a.send(&0).unwrap();
        p1.result().unwrap().unwrap();
        p2.result().unwrap().unwrap();
    }
}

/// A waker that does nothing: the future is polled once and dropped.
fn noop() -> Waker {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    Waker::from(Arc::new(Noop))
}

// A thousand futures polled once and dropped while a child sends: every message is
// received exactly once, in order, by one of them or by the receives after.
#[test]
fn dropped_futures_lose_no_message() {
    let _s = shared();
    let _w = watchdog("async_cancel", 120);
    const N: u32 = 400;
    let (mut a, b) = pipe::<u32>().unwrap();
    let q = Queue::<u32>::new().unwrap();
    let p1 = spawn(send_n, (b, N, 20u64)).unwrap();
    let p2 = spawn(put_n, (q.clone(), N, 20u64)).unwrap();
    let waker = noop();
    let mut cx = Context::from_waker(&waker);
    let (mut pipe_got, mut queue_got) = (Vec::new(), Vec::new());
    let (mut pipe_dropped, mut queue_dropped) = (0, 0);
    let (mut pipe_raced, mut queue_raced) = (0, 0);
    while pipe_dropped < 1000
        || queue_dropped < 1000
        || pipe_got.len() < N as usize
        || queue_got.len() < N as usize
    {
        {
            let mut f = pin!(a.recv_async());
            match f.as_mut().poll(&mut cx) {
                Poll::Ready(v) => pipe_got.push(v.unwrap()),
                Poll::Pending => {
                    pipe_dropped += 1;
                    pipe_raced += usize::from(pipe_got.len() < N as usize);
                }
            }
        }
        {
            let mut f = pin!(q.get_async());
            match f.as_mut().poll(&mut cx) {
                Poll::Ready(v) => queue_got.push(v.unwrap()),
                Poll::Pending => {
                    queue_dropped += 1;
                    queue_raced += usize::from(queue_got.len() < N as usize);
                }
            }
        }
        if pipe_dropped >= 1000 && pipe_got.len() < N as usize {
            // Enough dropped: the rest arrive through plain receives.
            pipe_got.push(a.recv_timeout(Duration::from_secs(10)).unwrap());
        }
        if queue_dropped >= 1000 && queue_got.len() < N as usize {
            queue_got.push(q.get_timeout(Duration::from_secs(10)).unwrap());
        }
    }
    // Most drops happened while messages were still coming (the race this is about).
    assert!(
        pipe_raced > 100 && queue_raced > 100,
        "too few futures dropped during the sends: {pipe_raced}, {queue_raced}"
    );
    let want: Vec<u32> = (0..N).collect();
    assert_eq!(pipe_got, want, "pipe messages lost, doubled or reordered");
    assert_eq!(queue_got, want, "queue items lost, doubled or reordered");
    assert!(matches!(
        a.recv_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert!(q.try_get().is_err());
    a.send(&0).unwrap();
    p1.result().unwrap().unwrap();
    p2.result().unwrap().unwrap();
}

const BIG: usize = 3 << 20;

fn send_big(c: Connection<String>) -> mproc::Result<()> {
    std::thread::sleep(Duration::from_millis(200));
    c.send(&"p".repeat(BIG))?;
    let _ = c.recv_timeout(Duration::from_secs(30));
    Ok(())
}

fn put_big(q: Queue<String>) -> mproc::Result<()> {
    std::thread::sleep(Duration::from_millis(200));
    q.put("q".repeat(BIG))
}

// Items larger than the ring (streamed while the receiver drains it) arrive through
// futures already waiting when the sends begin: the sender, waiting for room, keeps a
// poller's flag in step, so the future waiting on it and the sender waiting for it do not
// wait for each other.
#[test]
fn async_receives_of_items_larger_than_the_ring() {
    let _s = shared();
    let _w = watchdog("async_big", 60);
    // One at a time: a future woken for the other would look at this one's ring too.
    let q = Queue::<String>::new().unwrap();
    let p = spawn(put_big, (q.clone(),)).unwrap();
    let item = block_on(q.get_async()).unwrap();
    assert!(item.len() == BIG && item.bytes().all(|c| c == b'q'));
    assert!(!readable(q.as_pollable_fd(), 0));
    p.result().unwrap().unwrap();
    let (mut a, b) = pipe::<String>().unwrap();
    let p = spawn(send_big, (b,)).unwrap();
    let m = block_on(a.recv_async()).unwrap();
    assert!(m.len() == BIG && m.bytes().all(|c| c == b'p'));
    a.send(&String::new()).unwrap();
    p.result().unwrap().unwrap();
}
