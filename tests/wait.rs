//! `wait` over connections, receivers, listeners and processes, with and without timeouts.
//! Ports CPython's `_TestWait` (test_wait, test_wait_timeout, test_wait_integer) and the
//! sentinel checks of `_TestProcess.test_sentinel` (cpython.md §4, item 12).

mod util;

use std::time::{Duration, Instant};

use mproc::{Address, Error, Listener, Process, Waitable, get_context, pipe, pipe_simplex, wait};
use util::*;

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn send_after(conn: mproc::Sender<u32>, ms: u64, v: u32) -> mproc::Result<()> {
    sleep_ms(ms);
    conn.send(&v)
}

// Ports _TestWait.test_wait: several children each send after a delay; wait returns the
// ready ones until all have been heard.
#[test]
fn waits_for_messages_from_several_children() {
    let _s = shared();
    let _w = watchdog("wait_messages", 60);
    for m in METHODS {
        let mut readers = Vec::new();
        let mut procs = Vec::new();
        for i in 0..3u32 {
            let (r, s) = pipe_simplex::<u32>().unwrap();
            let mut p = get_context(m).process(send_after, (s, 20 * u64::from(i), i));
            p.start().unwrap();
            readers.push(r);
            procs.push(p);
        }
        let mut heard = Vec::new();
        while heard.len() < 3 {
            let objs: Vec<&dyn Waitable> = readers.iter().map(|r| r as &dyn Waitable).collect();
            for i in wait(&objs, Some(Duration::from_secs(20))).unwrap() {
                if let Ok(v) = readers[i].recv() {
                    heard.push(v);
                }
            }
        }
        heard.sort();
        assert_eq!(heard, [0, 1, 2], "{m:?}");
        for p in procs {
            p.result().unwrap().unwrap();
        }
    }
}

// Ports _TestWait.test_wait_timeout: nothing ready means an empty answer after about the
// timeout; what is ready is returned at once.
#[test]
fn timeouts_return_nothing_after_the_timeout() {
    let _s = shared();
    let _w = watchdog("wait_timeout", 30);
    let (a, b) = pipe::<u32>().unwrap();
    let start = Instant::now();
    assert!(
        wait(&[&a, &b], Some(Duration::from_millis(100)))
            .unwrap()
            .is_empty()
    );
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(wait(&[&a, &b], Some(Duration::ZERO)).unwrap().is_empty());
    b.send(&1).unwrap();
    let start = Instant::now();
    assert_eq!(wait(&[&a, &b], None).unwrap(), vec![0]);
    assert!(start.elapsed() < Duration::from_secs(1));
    // Still ready until it is read; end of stream counts as ready too (recv says Closed).
    assert_eq!(wait(&[&a, &b], Some(Duration::ZERO)).unwrap(), vec![0]);
    a.recv().unwrap();
    drop(b);
    assert_eq!(wait(&[&a], Some(Duration::from_secs(5))).unwrap(), vec![0]);
    assert!(matches!(a.recv(), Err(Error::Closed)));
}

// Ports _TestProcess.test_sentinel and _TestWait.test_wait_integer: a process is ready
// once it has exited, not before; before start it has no sentinel.
#[test]
fn processes_are_ready_when_they_exit() {
    let _s = shared();
    let _w = watchdog("wait_processes", 60);
    for m in METHODS {
        let mut slow = get_context(m).process(sleep_ms, (300,));
        let mut fast = get_context(m).process(sleep_ms, (0,));
        assert!(matches!(slow.sentinel(), Err(Error::NotStarted)));
        assert!(matches!(
            wait(&[&slow], Some(Duration::ZERO)),
            Err(Error::NotStarted)
        ));
        slow.start().unwrap();
        fast.start().unwrap();
        let ready = wait(&[&slow, &fast], Some(Duration::from_secs(20))).unwrap();
        assert_eq!(ready, vec![1], "{m:?}");
        assert!(wait(&[&slow], Some(Duration::ZERO)).unwrap().is_empty());
        let ready = wait(&[&slow], None).unwrap();
        assert_eq!(ready, vec![0]);
        assert!(!slow.is_alive());
        // Joined: the sentinel stays readable.
        slow.join().unwrap();
        assert_eq!(
            wait(&[&slow, &fast], Some(Duration::ZERO)).unwrap(),
            vec![0, 1]
        );
        fast.join().unwrap();
    }
}

fn dial(at: Address) -> mproc::Result<()> {
    sleep_ms(50);
    let c = mproc::connect::<u8>(at, None)?;
    c.send(&9)
}

// A listener is ready when a peer waits to be accepted; mixed with a pipe and a process.
#[test]
fn listeners_mix_with_pipes_and_processes() {
    let _s = shared();
    let _w = watchdog("wait_listener", 30);
    let l = Listener::<u8>::bind(Address::unique().unwrap(), None).unwrap();
    let (a, _b) = pipe::<u8>().unwrap();
    let mut p: Process<mproc::Result<()>> = Process::new(dial, (l.address(),));
    p.start().unwrap();
    assert!(wait(&[&l, &a], Some(Duration::ZERO)).unwrap().is_empty());
    let ready = wait(&[&a, &l], Some(Duration::from_secs(20))).unwrap();
    assert_eq!(ready, vec![1]);
    let conn = l.accept().unwrap();
    assert_eq!(conn.recv().unwrap(), 9);
    assert_eq!(wait(&[&p], Some(Duration::from_secs(20))).unwrap(), vec![0]);
    // The child has exited, so its end is closed too: both are ready.
    assert_eq!(
        wait(&[&conn, &p], Some(Duration::ZERO)).unwrap(),
        vec![0, 1]
    );
    assert!(matches!(conn.recv(), Err(Error::Closed)));
    p.result().unwrap().unwrap();
}
