//! Pipes under a peer that stalls (issue 19): a timed receive is bounded by its deadline
//! even in the middle of a message, and the pipe still works afterwards.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mproc::{Connection, Error, Process, pipe};
use rustix::process::{Pid, Signal, kill_process};
use util::*;

const BIG: usize = 4 << 20;

/// Sends a message eight times the ring, then a short one, then waits to be told to go.
fn big_then_small(c: Connection<String>) -> mproc::Result<()> {
    c.send(&"x".repeat(BIG))?;
    c.send(&"after".to_string())?;
    let _ = c.recv_timeout(Duration::from_secs(30));
    Ok(())
}

/// A started daemon child: if the test hangs, its watchdog's exit terminates it rather
/// than waiting for it.
fn spawn<A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
    f: impl mproc::Target<A, mproc::Result<()>>,
    args: A,
) -> mproc::Result<Process<mproc::Result<()>>> {
    let mut p = Process::new(f, args);
    p.set_daemon(true);
    p.start()?;
    Ok(p)
}

fn signal(pid: u32, s: Signal) {
    let pid = Pid::from_raw(pid as i32).expect("a child's pid is positive");
    kill_process(pid, s).expect("signal the child");
}

// The child streams a message larger than the ring and is stopped (alive) half-way:
// `recv_timeout(200 ms)` has begun the message and returns `Timeout` at its deadline
// instead of waiting for the rest; the message is dropped whole, and once the child goes
// on, the next receive gets the message after it.
#[test]
fn recv_timeout_mid_message_returns_at_its_deadline() {
    let _s = shared();
    let _w = watchdog("pipe_mid_message_deadline", 60);
    let (a, b) = pipe::<String>().unwrap();
    let p = spawn(big_then_small, (b,)).unwrap();
    let pid = p.pid().unwrap();
    assert!(
        a.poll(Some(Duration::from_secs(10))).unwrap(),
        "nothing sent"
    );
    // Let the child fill the ring and wait for room, then stop it there.
    std::thread::sleep(Duration::from_millis(100));
    signal(pid, Signal::STOP);
    // Were the deadline ignored mid-message, the receive would wait for the child for
    // ever: let it go on after 3 s, so that failure is an assertion, not a hang.
    let released = Arc::new(AtomicBool::new(false));
    let rescue = {
        let released = released.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until && !released.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !released.swap(true, Ordering::Relaxed) {
                signal(pid, Signal::CONT);
            }
        })
    };
    let t = Instant::now();
    let got = a.recv_timeout(Duration::from_millis(200));
    let took = t.elapsed();
    if !released.swap(true, Ordering::Relaxed) {
        signal(pid, Signal::CONT);
    }
    rescue.join().unwrap();
    assert!(
        matches!(got, Err(Error::Timeout)),
        "expected Timeout, got {:?} after {took:?}",
        got.map(|s| s.len())
    );
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(700),
        "recv_timeout(200 ms) returned after {took:?}"
    );
    // The rest of the dropped message is skipped; the next one arrives.
    assert_eq!(a.recv_timeout(Duration::from_secs(10)).unwrap(), "after");
    a.send(&String::new()).unwrap();
    p.result().unwrap().unwrap();
}
