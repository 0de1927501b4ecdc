//! Connections: typed and raw messages, poll, EOF, corrupt frames, handles in messages.
//! Ports CPython's `_TestConnection` and `_TestPoll` behaviours (cpython.md §4, items
//! 79–97) under every start method where a child is involved.

mod util;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mproc::{Connection, Error, Receiver, Sender, get_context, pipe, pipe_simplex, socket_pipe};
use serde::{Deserialize, Serialize};
use util::*;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Msg {
    Text(String),
    Numbers(Vec<i64>),
    Pair { a: u8, b: Option<f64> },
}

fn echo(conn: Connection<Msg>) {
    while let Ok(m) = conn.recv() {
        conn.send(&m).expect("echo send");
    }
}

// Ports _TestConnection.test_connection: objects and bytes round-trip through a child.
#[test]
fn typed_round_trip_through_a_child_under_every_method() {
    let _s = shared();
    let _w = watchdog("typed_round_trip", 60);
    for m in METHODS {
        let (here, there) = pipe::<Msg>().unwrap();
        let mut p = get_context(m).process(echo, (there,));
        p.start().unwrap();
        for msg in [
            Msg::Text("hello".into()),
            Msg::Numbers((0..1000).collect()),
            Msg::Pair { a: 7, b: Some(2.5) },
            Msg::Pair { a: 0, b: None },
        ] {
            here.send(&msg).unwrap();
            assert_eq!(here.recv().unwrap(), msg, "{m:?}");
        }
        drop(here);
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

fn echo_bytes(conn: Connection<()>) {
    while let Ok(b) = conn.recv_bytes() {
        conn.send_bytes(&b).expect("echo send");
    }
}

// Ports _TestConnection 16 MiB round trip and _TestPoll.test_strings: bytes messages,
// empty ones included, arrive intact, in order, never merged.
#[test]
fn bytes_messages_keep_their_boundaries() {
    let _s = shared();
    let _w = watchdog("bytes_boundaries", 60);
    let (here, there) = pipe::<()>().unwrap();
    let p = mproc::spawn(echo_bytes, (there,)).unwrap();
    let msgs: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        vec![],
        b"a".to_vec(),
        vec![],
        vec![],
        vec![0xAB; 16 << 20],
        b"end".to_vec(),
    ];
    for m in &msgs {
        here.send_bytes(m).unwrap();
    }
    for m in &msgs {
        assert_eq!(&here.recv_bytes().unwrap(), m);
    }
    drop(here);
    p.result().unwrap();
}

// Ports _TestPoll: poll() is False on an empty pipe, True with a (possibly empty) message
// waiting, and stays True until it is read.
#[test]
fn poll_semantics() {
    let (a, b) = pipe::<u32>().unwrap();
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
    let t = Instant::now();
    assert!(!a.poll(Some(Duration::from_millis(100))).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(90));
    b.send_bytes(&[]).unwrap();
    assert!(a.poll(Some(Duration::ZERO)).unwrap());
    assert!(a.poll(None).unwrap());
    assert_eq!(a.recv_bytes().unwrap(), Vec::<u8>::new());
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
    b.send(&5).unwrap();
    b.send(&6).unwrap();
    assert!(a.poll(Some(Duration::from_secs(1))).unwrap());
    assert_eq!(a.recv().unwrap(), 5);
    assert!(a.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(a.recv().unwrap(), 6);
    assert!(matches!(
        a.recv_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
}

// Ports _TestConnection: after the peer closes, recv and recv_bytes raise EOFError.
#[test]
fn eof_after_peer_closes() {
    let (a, b) = pipe::<String>().unwrap();
    b.send(&"last".to_string()).unwrap();
    b.close();
    assert_eq!(a.recv().unwrap(), "last");
    assert!(matches!(a.recv(), Err(Error::Closed)));
    assert!(matches!(a.recv_bytes(), Err(Error::Closed)));
    assert!(
        a.poll(Some(Duration::ZERO)).unwrap(),
        "EOF counts as readable"
    );
    // Sending to a closed peer is Closed too, not a SIGPIPE death.
    let (a, b) = pipe::<u8>().unwrap();
    drop(b);
    assert!(matches!(a.send(&1), Err(Error::Closed)));
}

// Ports _TestConnection.test_duplex_false: a simplex pipe has a receiving and a sending end.
#[test]
fn simplex_pipe_goes_one_way() {
    let (rx, tx): (Receiver<u64>, Sender<u64>) = pipe_simplex().unwrap();
    tx.send(&42).unwrap();
    assert_eq!(rx.recv().unwrap(), 42);
    tx.send_bytes(b"raw").unwrap();
    assert_eq!(rx.recv_bytes().unwrap(), b"raw");
    drop(tx);
    assert!(matches!(rx.recv(), Err(Error::Closed)));
}

fn reply_on(inner: Connection<String>, outer: Connection<Connection<String>>) {
    inner.send(&"via argument".into()).expect("send");
    let sent = outer.recv().expect("a connection arrives");
    sent.send(&"via message".into()).expect("send");
}

// Ports the pickling-connections tests (item 97): a connection passed as an argument and
// one sent inside a message both work in the child, under every start method.
#[test]
fn connections_travel_in_arguments_and_messages() {
    let _s = shared();
    let _w = watchdog("connections_travel", 60);
    for m in METHODS {
        let (a, a_child) = pipe::<String>().unwrap();
        let (b, b_child) = pipe::<String>().unwrap();
        let (outer, outer_child) = pipe::<Connection<String>>().unwrap();
        let p = get_context(m).process(reply_on, (a_child, outer_child));
        let mut p = p;
        p.start().unwrap();
        outer.send(&b_child).unwrap();
        drop(b_child);
        assert_eq!(a.recv().unwrap(), "via argument", "{m:?}");
        assert_eq!(b.recv().unwrap(), "via message", "{m:?}");
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        // The child is gone and every copy of the ends was closed: EOF on both.
        assert!(matches!(a.recv(), Err(Error::Closed)), "{m:?}");
        assert!(matches!(b.recv(), Err(Error::Closed)), "{m:?}");
    }
}

fn raw_stream(conn: &Connection<u32>) -> UnixStream {
    UnixStream::from(conn.as_fd().try_clone_to_owned().unwrap())
}

// A corrupt frame is a codec error, never a panic and never read as EOF.
#[test]
fn garbage_frames_are_codec_errors() {
    // The socket path's decoder (pipes carry data in shared memory: `pipe_ring.rs`).
    let (a, b) = socket_pipe::<u32>().unwrap();
    let mut raw = raw_stream(&b);
    raw.write_all(b"this is not a frame header").unwrap();
    let err = a.recv().unwrap_err();
    assert!(matches!(err, Error::Codec(_)), "{err}");
    assert!(err.to_string().contains("bad magic"), "{err}");

    // A well-framed message that does not decode as the type: Codec, with the reason.
    let (a, b) = pipe::<u32>().unwrap();
    b.send_bytes(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap();
    let err = a.recv().unwrap_err();
    assert!(matches!(err, Error::Codec(_)), "{err}");
}

fn die_mid_message(conn: Connection<u32>) {
    let mut raw = UnixStream::from(conn.as_fd().try_clone_to_owned().expect("dup"));
    let mut header = Vec::new();
    header.extend_from_slice(b"MPRF");
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&(1u64 << 20).to_le_bytes());
    raw.write_all(&header).expect("header");
    raw.write_all(&[1, 2, 3]).expect("some payload");
    std::process::abort();
}

// A peer that dies in the middle of a message: a clear error, not EOF, not a hang. (The
// socket path, which raw writes can reach; a pipe's ring: `pipe_ring.rs`.)
#[test]
fn peer_dying_mid_message_is_an_error() {
    let _s = shared();
    let _w = watchdog("peer_dying", 60);
    for m in METHODS {
        let (a, b) = socket_pipe::<u32>().unwrap();
        let mut p = get_context(m).process(die_mid_message, (b,));
        p.start().unwrap();
        let err = a.recv().unwrap_err();
        assert!(
            err.to_string().contains("in the middle of a message"),
            "{m:?}: {err}"
        );
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-6));
    }
}

// Frames carry a 64-bit length: a message over 4 GiB round-trips.
#[test]
fn messages_beyond_4_gib() {
    let _x = exclusive(); // 9 GiB of memory at its peak: run alone
    let _w = watchdog("beyond_4_gib", 300);
    let (a, b) = pipe::<()>().unwrap();
    let len = (4usize << 30) + 3;
    let sender = std::thread::spawn(move || {
        let mut big = vec![0u8; len];
        big[len - 1] = 9;
        b.send_bytes(&big).unwrap();
    });
    let got = a.recv_bytes().unwrap();
    sender.join().unwrap();
    assert_eq!(got.len(), len);
    assert_eq!(got[len - 1], 9);
}

// recv_bytes_into reuses its buffer.
#[test]
fn recv_bytes_into_reuses_the_buffer() {
    let (a, b) = pipe::<()>().unwrap();
    let mut buf = Vec::with_capacity(1 << 20);
    let ptr = buf.as_ptr();
    for i in 0..10u8 {
        b.send_bytes(&[i; 1000]).unwrap();
        assert_eq!(a.recv_bytes_into(&mut buf).unwrap(), 1000);
        assert_eq!(buf, vec![i; 1000]);
    }
    assert_eq!(buf.as_ptr(), ptr);
}

// Every blocking call has a timeout form: a send to a peer that does not read.
#[test]
fn sends_time_out_when_the_peer_does_not_read() {
    let _w = watchdog("send_timeout", 30);
    let (a, _b) = pipe::<Vec<u8>>().unwrap();
    // Fill the socket with whole small messages until one cannot go out at all.
    let small = vec![1u8; 1000];
    let t = Instant::now();
    loop {
        match a.send_timeout(&small, Duration::from_millis(50)) {
            Ok(()) => assert!(
                t.elapsed() < Duration::from_secs(10),
                "the buffer never filled"
            ),
            Err(Error::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
    }
    // A message larger than the room left: part of it goes, then the time runs out; the
    // connection refuses further sends rather than let the peer read half a message.
    let (c, _d) = pipe::<()>().unwrap();
    let big = vec![2u8; 8 << 20];
    let t = Instant::now();
    assert!(matches!(
        c.send_bytes_timeout(&big, Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(90));
    let err = c.send_bytes(b"x").unwrap_err();
    assert!(matches!(err, Error::TornMessage { sending: true }), "{err}");
    assert!(err.to_string().contains("timed-out send"), "{err}");
}

// (The socket path.) recv_timeout keeps its deadline even when the peer stalls in the
// middle of a message, and loses nothing: the message is read whole once the rest arrives.
#[test]
fn recv_timeout_survives_a_peer_stalling_mid_message() {
    let _w = watchdog("recv_timeout_mid_message", 30);
    let (a, b) = socket_pipe::<String>().unwrap();
    b.send(&"x".repeat(1000)).unwrap();
    // Take the frame the sender wrote and replay it in two halves.
    let mut frame = vec![0u8; 4096];
    let mut raw_b = UnixStream::from(b.as_fd().try_clone_to_owned().unwrap());
    let mut raw_a = UnixStream::from(a.as_fd().try_clone_to_owned().unwrap());
    let n = std::io::Read::read(&mut raw_a, &mut frame).unwrap();
    raw_b.write_all(&frame[..n / 2]).unwrap();
    let t = Instant::now();
    assert!(matches!(
        a.recv_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(90));
    raw_b.write_all(&frame[n / 2..n]).unwrap();
    assert_eq!(
        a.recv_timeout(Duration::from_secs(5)).unwrap(),
        "x".repeat(1000)
    );
}

/// A worker of Python's shared-end pattern: receives its end, then takes items under the
/// lock until its sentinel (-1); returns how many items it took and whether it saw one.
fn take_until_sentinel(dist: Connection<Connection<i64>>, lock: mproc::Lock) -> (u32, bool) {
    let conn = dist.recv().expect("the shared end arrives");
    let mut items = 0;
    loop {
        let got = {
            let _g = lock.acquire();
            conn.recv_timeout(Duration::from_secs(20))
        };
        match got {
            Ok(-1) => return (items, true),
            Ok(_) => items += 1,
            Err(_) => return (items, false),
        }
    }
}

// Issue 14: one receiving end shared by three processes, each `recv` under a Lock (the
// pattern of CPython's docs and tests): 300 items then 3 sentinels, and every worker gets
// its sentinel — no message is stranded in a process that did not ask for it.
#[test]
fn an_end_shared_under_a_lock_delivers_each_message_once() {
    let _s = shared();
    let _w = watchdog("shared_end", 120);
    for m in METHODS {
        let (rx, tx) = pipe::<i64>().unwrap();
        let lock = mproc::Lock::new().unwrap();
        let mut workers = Vec::new();
        for _ in 0..3 {
            let (dist_ours, dist_theirs) = pipe::<Connection<i64>>().unwrap();
            let mut p = get_context(m).process(take_until_sentinel, (dist_theirs, lock.clone()));
            p.start().unwrap();
            dist_ours.send(&rx).unwrap();
            workers.push(p);
        }
        drop(rx);
        for i in 0..300 {
            tx.send(&i).unwrap();
        }
        for _ in 0..3 {
            tx.send(&-1).unwrap();
        }
        let got: Vec<(u32, bool)> = workers.into_iter().map(|p| p.result().unwrap()).collect();
        assert!(got.iter().all(|(_, sentinel)| *sentinel), "{m:?}: {got:?}");
        assert_eq!(
            got.iter().map(|(n, _)| n).sum::<u32>(),
            300,
            "{m:?}: {got:?}"
        );
    }
}

fn take_rest(conn: Connection<i64>) -> Vec<i64> {
    (0..3)
        .map(|_| conn.recv().expect("the rest arrives"))
        .collect()
}

// Issue 14: an end that has received message 1 of 3 and is then handed to a child (in its
// arguments) delivers messages 2 and 3 — and what is sent later — to the child, in order.
#[test]
fn an_end_handed_on_after_some_reads_loses_nothing() {
    let _s = shared();
    let _w = watchdog("handed_on", 60);
    for m in METHODS {
        let (a, b) = pipe::<i64>().unwrap();
        for i in 1..=3 {
            a.send(&i).unwrap();
        }
        assert_eq!(b.recv().unwrap(), 1);
        let mut p = get_context(m).process(take_rest, (b,));
        p.start().unwrap();
        a.send(&4).unwrap();
        assert_eq!(p.result().unwrap(), vec![2, 3, 4], "{m:?}");
    }
}

// (The socket path.) A receiver that times out while a message is only half there leaves
// it in the socket: another holder of the end (here, a child it is handed to) reads it
// whole.
#[test]
fn a_timed_out_receive_leaves_the_message_for_the_next_holder() {
    let _s = shared();
    let _w = watchdog("timeout_then_hand_on", 60);
    let (a, b) = socket_pipe::<Vec<u8>>().unwrap();
    let mut raw = raw_stream_of(&a);
    let mut frame = Vec::new();
    let payload = postcard_vec(&[5u8; 100]);
    frame.extend_from_slice(b"MPRF");
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    frame.extend_from_slice(&payload);
    raw.write_all(&frame[..40]).unwrap();
    let err = b.recv_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err}");
    raw.write_all(&frame[40..]).unwrap();
    let mut p = get_context(mproc::StartMethod::Fork).process(take_vec, (b,));
    p.start().unwrap();
    assert_eq!(p.result().unwrap(), vec![5u8; 100]);
}

fn take_vec(conn: Connection<Vec<u8>>) -> Vec<u8> {
    conn.recv().expect("the message arrives whole")
}

fn raw_stream_of<T>(conn: &Connection<T>) -> UnixStream {
    UnixStream::from(conn.as_fd().try_clone_to_owned().unwrap())
}

/// postcard's encoding of a `Vec<u8>` of fewer than 128 bytes: a length byte, the bytes.
fn postcard_vec(bytes: &[u8]) -> Vec<u8> {
    assert!(bytes.len() < 128);
    let mut v = vec![bytes.len() as u8];
    v.extend_from_slice(bytes);
    v
}

fn block_in_recv(conn: Connection<u64>) -> u64 {
    conn.send(&0).expect("ready");
    conn.recv().expect("release")
}

/// Run time of `pid` so far, in nanoseconds (`/proc/<pid>/schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).expect("schedstat");
    s.split_whitespace().next().unwrap().parse().unwrap()
}

// Issue 14: the receiver's spin before it sleeps is bounded — a receiver blocked with
// nothing to read uses ≤ 2% of a CPU (here: measured over half a second).
#[test]
fn a_blocked_receiver_does_not_spin() {
    let _s = shared();
    let _w = watchdog("blocked_receiver_cpu", 60);
    let (a, b) = pipe::<u64>().unwrap();
    let mut p = get_context(mproc::StartMethod::Fork).process(block_in_recv, (b,));
    p.start().unwrap();
    assert_eq!(a.recv().unwrap(), 0);
    let pid = p.pid().unwrap();
    let c0 = cpu_ns(pid);
    std::thread::sleep(Duration::from_millis(500));
    let used = Duration::from_nanos(cpu_ns(pid) - c0);
    a.send(&7).unwrap();
    assert_eq!(p.result().unwrap(), 7);
    assert!(
        used <= Duration::from_millis(10),
        "{used:?} of CPU in 500 ms idle"
    );
}

// (The socket path.) A writer that stops inside a frame header and goes away: the receiver
// says so (it does not spin or wait for the rest of the header for ever), with and without
// a deadline.
#[test]
fn a_writer_gone_mid_header_is_an_error_not_a_hang() {
    let _w = watchdog("mid_header", 30);
    for timed in [false, true] {
        let (a, b) = socket_pipe::<u32>().unwrap();
        let mut raw = raw_stream_of(&a);
        raw.write_all(b"MPRF\x00").unwrap();
        drop(raw);
        drop(a);
        let err = if timed {
            b.recv_timeout(Duration::from_secs(10)).unwrap_err()
        } else {
            b.recv().unwrap_err()
        };
        assert!(
            err.to_string().contains("in the middle of a message"),
            "timed {timed}: {err}"
        );
    }
}
