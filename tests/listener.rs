//! Listener and connect: typed messages between processes over TCP and Unix sockets, the
//! authentication handshake, and hostile peers.
//! Ports CPython's `_TestListener`, `_TestListenerClient` and the `_TestConnection` auth
//! behaviours (cpython.md §4, items 88–92).

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mproc::{Address, Connection, Error, Listener, connect, connect_timeout, get_context};
use serde::{Deserialize, Serialize};
use util::*;

const KEY: &[u8] = b"the key";

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Msg {
    Hello(String),
    Numbers(Vec<i64>),
    Done,
}

fn client(at: Address, key: Option<Vec<u8>>) -> mproc::Result<Vec<i64>> {
    let conn = connect::<Msg>(at, key.as_deref())?;
    conn.send(&Msg::Hello("from the client".into()))?;
    let Msg::Numbers(n) = conn.recv()? else {
        return Err(Error::ValueError("expected numbers".into()));
    };
    conn.send(&Msg::Done)?;
    Ok(n)
}

fn addresses() -> Vec<Address> {
    let dir = std::env::temp_dir().join(format!("mproc-listener-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    vec![
        "127.0.0.1:0".parse().unwrap(),
        Address::unique().unwrap(),
        Address::Unix(dir.join(format!("{}.sock", rand_suffix()))),
    ]
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

// Ports _TestListenerClient.test_listener_client, over TCP, abstract and path addresses,
// under every start method, with and without a key.
#[test]
fn typed_messages_between_processes_every_address_every_method() {
    let _s = shared();
    let _w = watchdog("typed_messages_between_processes", 120);
    for m in METHODS {
        // Fresh addresses for each bind: a forked client holds a copy of the listening
        // socket until it has exited, which may be just after its result arrived, and an
        // abstract name stays bound while any copy is open (as in Python).
        for key in [Some(KEY), None] {
            for at in addresses() {
                let l = Listener::<Msg>::bind(at.clone(), key).unwrap();
                let p = get_context(m).process(client, (l.address(), key.map(<[u8]>::to_vec)));
                let mut p = p;
                p.start().unwrap();
                let conn = l.accept().unwrap();
                assert_eq!(conn.recv().unwrap(), Msg::Hello("from the client".into()));
                conn.send(&Msg::Numbers(vec![1, -2, 3])).unwrap();
                assert_eq!(conn.recv().unwrap(), Msg::Done);
                assert_eq!(p.result().unwrap().unwrap(), vec![1, -2, 3], "{m:?} {at}");
            }
        }
    }
}

#[test]
fn tcp_port_zero_reports_the_chosen_port() {
    let _s = shared();
    let l = Listener::<u8>::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let Address::Tcp(a) = l.address() else {
        panic!("not tcp")
    };
    assert_ne!(a.port(), 0);
}

fn wrong_key_client(at: Address) -> mproc::Result<()> {
    match connect::<Msg>(at, Some(b"not the key")) {
        Err(Error::AuthenticationError) => Ok(()),
        other => Err(Error::ValueError(format!(
            "expected AuthenticationError, got {other:?}"
        ))),
    }
}

// Ports _TestConnection auth behaviours: a wrong key fails on both sides, and the listener
// goes on accepting.
#[test]
fn wrong_key_fails_both_sides_and_the_listener_goes_on() {
    let _s = shared();
    let _w = watchdog("wrong_key", 60);
    for m in METHODS {
        let l = Listener::<Msg>::bind("127.0.0.1:0".parse().unwrap(), Some(KEY)).unwrap();
        let mut bad = get_context(m).process(wrong_key_client, (l.address(),));
        bad.start().unwrap();
        assert!(matches!(l.accept(), Err(Error::AuthenticationError)));
        bad.result().unwrap().unwrap();
        // The listener is still good for the next peer.
        let mut good = get_context(m).process(client, (l.address(), Some(KEY.to_vec())));
        good.start().unwrap();
        let conn = l.accept().unwrap();
        assert_eq!(conn.recv().unwrap(), Msg::Hello("from the client".into()));
        conn.send(&Msg::Numbers(vec![])).unwrap();
        assert_eq!(conn.recv().unwrap(), Msg::Done);
        good.result().unwrap().unwrap();
    }
    // A listener without a key facing a client with one: the client waits for a challenge
    // that never comes, and times out rather than hang.
    let l = Listener::<Msg>::bind(Address::unique().unwrap(), None).unwrap();
    let start = Instant::now();
    let r = connect_timeout::<Msg>(l.address(), Some(KEY), Duration::from_millis(200));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

// Ports _TestListener.test_multiple_bind.
#[test]
fn a_second_bind_to_the_same_address_fails() {
    let _s = shared();
    for at in addresses() {
        let l = Listener::<u8>::bind(at, None).unwrap();
        let again = Listener::<u8>::bind(l.address(), None);
        let Err(Error::Io(e)) = again else {
            panic!("second bind succeeded: {again:?}")
        };
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    }
}

// Ports _TestListener.test_context / accept after close: `close` consumes the listener (a
// compile error to accept afterwards, see the doc test), and the address stops answering;
// a path listener removes its socket file.
#[test]
fn a_closed_listener_answers_no_one() {
    let _s = shared();
    for at in addresses() {
        let l = Listener::<u8>::bind(at, None).unwrap();
        let at = l.address();
        l.close();
        assert!(connect::<u8>(at.clone(), None).is_err(), "{at}");
        if let Address::Unix(p) = at {
            assert!(!p.exists(), "socket file left behind");
        }
    }
}

// Ports _TestConnection.test_empty_authkey (bpo-43952): b"" is a key like any other.
#[test]
fn empty_authkey_authenticates() {
    let _s = shared();
    let _w = watchdog("empty_authkey", 30);
    let l = Listener::<u32>::bind(Address::unique().unwrap(), Some(b"")).unwrap();
    let at = l.address();
    let t = std::thread::spawn(move || {
        let c = connect::<u32>(at, Some(b"")).unwrap();
        c.send(&7).unwrap();
        let bad = connect::<u32>(c_address_of_nothing(), Some(b""));
        assert!(bad.is_err());
    });
    assert_eq!(l.accept().unwrap().recv().unwrap(), 7);
    t.join().unwrap();
}

fn c_address_of_nothing() -> Address {
    Address::unique().unwrap()
}

// Ports _TestListenerClient.test_issue14725: a client that connected, sent and closed
// before `accept` is still read.
#[test]
fn a_client_gone_before_accept_is_still_read() {
    let _s = shared();
    let _w = watchdog("gone_before_accept", 30);
    for at in addresses() {
        let l = Listener::<String>::bind(at, None).unwrap();
        let c = connect::<String>(l.address(), None).unwrap();
        c.send(&"left early".to_string()).unwrap();
        drop(c);
        std::thread::sleep(Duration::from_millis(20));
        let conn = l.accept().unwrap();
        assert_eq!(conn.recv().unwrap(), "left early");
        assert!(matches!(conn.recv(), Err(Error::Closed)));
    }
}

#[test]
fn accept_timeout_times_out_and_raw_bytes_interoperate() {
    let _s = shared();
    let _w = watchdog("accept_timeout", 30);
    let l = Listener::<u8>::bind(Address::unique().unwrap(), Some(KEY)).unwrap();
    let start = Instant::now();
    assert!(matches!(
        l.accept_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(50));
    let at = l.address();
    let t = std::thread::spawn(move || {
        let c = connect::<u8>(at, Some(KEY)).unwrap();
        let big = vec![0xabu8; 3 << 20];
        c.send_bytes(&big).unwrap();
        c.send_bytes(b"").unwrap();
        assert_eq!(c.recv_bytes().unwrap(), b"ok");
    });
    let conn = l.accept_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(conn.recv_bytes().unwrap().len(), 3 << 20);
    assert!(conn.poll(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(conn.recv_bytes().unwrap(), b"");
    conn.send_bytes(b"ok").unwrap();
    t.join().unwrap();
}

fn pass_a_pipe_end(at: Address) -> mproc::Result<String> {
    let conn = connect::<Connection<String>>(at, Some(KEY))?;
    let end = conn.recv()?;
    end.send(&"through a handle".to_string())?;
    end.recv()
}

// Handles travel over Unix listener connections as over pipes; over TCP they are a clear
// error.
#[test]
fn handles_over_unix_and_a_clear_error_over_tcp() {
    let _s = shared();
    let _w = watchdog("handles", 60);
    for m in METHODS {
        let l =
            Listener::<Connection<String>>::bind(Address::unique().unwrap(), Some(KEY)).unwrap();
        let mut p = get_context(m).process(pass_a_pipe_end, (l.address(),));
        p.start().unwrap();
        let conn = l.accept().unwrap();
        let (mine, theirs) = mproc::pipe::<String>().unwrap();
        conn.send(&theirs).unwrap();
        drop(theirs);
        assert_eq!(mine.recv().unwrap(), "through a handle");
        mine.send(&"back".to_string()).unwrap();
        assert_eq!(p.result().unwrap().unwrap(), "back", "{m:?}");
    }
    let l = Listener::<Connection<String>>::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let c = connect::<Connection<String>>(l.address(), None).unwrap();
    let (_a, b) = mproc::pipe::<String>().unwrap();
    let err = c.send(&b).unwrap_err();
    assert!(err.to_string().contains("cannot travel over TCP"), "{err}");
    // Nothing half-sent: the connection still works.
    let server = l.accept().unwrap();
    c.send_bytes(b"still fine").unwrap();
    assert_eq!(server.recv_bytes().unwrap(), b"still fine");
}

fn raw_peer(at: std::net::SocketAddr, bytes: Vec<u8>) {
    if let Ok(mut s) = TcpStream::connect(at) {
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

// Hostile peers: garbage, truncated handshakes and huge announced lengths are errors for
// that peer only, with no allocation of the claimed size; the listener then serves a
// good client.
#[test]
fn garbage_and_truncated_handshakes_are_errors() {
    let _s = shared();
    let _w = watchdog("garbage_handshakes", 60);
    let l = Listener::<Msg>::bind("127.0.0.1:0".parse().unwrap(), Some(KEY)).unwrap();
    let Address::Tcp(at) = l.address() else {
        panic!()
    };
    let mut huge = (-1i32).to_be_bytes().to_vec();
    huge.extend_from_slice(&(1u64 << 60).to_be_bytes());
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"\x00\x00".to_vec(),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        huge,
        0x7fff_ffffu32.to_be_bytes().to_vec(),
        [&20u32.to_be_bytes()[..], b"{sha256}short"].concat(),
        (0..300u32).map(|i| (i * 7919 % 251) as u8).collect(),
    ];
    for bytes in cases {
        let t = std::thread::spawn(move || raw_peer(at, bytes));
        let r = l.accept_timeout(Duration::from_secs(10));
        assert!(r.is_err(), "garbage accepted");
        assert!(!matches!(r, Err(Error::Timeout)), "{r:?}");
        t.join().unwrap();
    }
    let mut good =
        get_context(mproc::StartMethod::Fork).process(client, (l.address(), Some(KEY.to_vec())));
    good.start().unwrap();
    let conn = l.accept().unwrap();
    conn.recv().unwrap();
    conn.send(&Msg::Numbers(vec![5])).unwrap();
    assert_eq!(conn.recv().unwrap(), Msg::Done);
    assert_eq!(good.result().unwrap().unwrap(), vec![5]);
}

// After authentication, a peer announcing a huge length and sending a few bytes costs what
// it sent: beyond the frame limit (1 TiB) it is refused from the header; below, the body
// is read as it comes and the early end of stream is an error.
#[test]
fn a_huge_announced_length_is_not_allocated() {
    let _s = shared();
    let _w = watchdog("huge_length", 30);
    let l = Listener::<u8>::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let Address::Tcp(at) = l.address() else {
        panic!()
    };
    for claim in [1u64 << 60, 1 << 39] {
        let mut huge = (-1i32).to_be_bytes().to_vec();
        huge.extend_from_slice(&claim.to_be_bytes());
        huge.extend_from_slice(b"only this");
        let t = std::thread::spawn(move || raw_peer(at, huge));
        let conn = l.accept().unwrap();
        let r = conn.recv_bytes();
        if claim == 1 << 60 {
            assert!(matches!(r, Err(Error::Codec(_))), "{r:?}");
        } else {
            assert!(
                matches!(r, Err(Error::Io(ref e)) if e.kind() == std::io::ErrorKind::UnexpectedEof),
                "{r:?}"
            );
        }
        drop(conn);
        t.join().unwrap();
    }
}
