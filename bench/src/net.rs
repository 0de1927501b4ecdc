//! The Listener rows: authenticated round trips over TCP loopback and a Unix socket, and
//! the cost of connect + handshake — mproc's side and the raw socket floor. (CPython's side
//! is in `bench/python/mp_bench.py`.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;

use mproc::{Address, Listener, StartMethod, connect, get_context};

use crate::measure::rounds;
use crate::raw::{close_in_child, fork_with, reap};

const KEY: &[u8] = b"bench key";

fn ok<T>(what: &str, r: mproc::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("mproc: {what}: {e}"))
}

/// mproc's side of a Listener row, if `w` is one.
pub fn mproc(w: &str, n: u64, r: usize) -> Option<Vec<f64>> {
    Some(match w {
        "listener_tcp_rtt" => rtt("127.0.0.1:0".parse().expect("address"), n, r),
        "listener_unix_rtt" => {
            let path =
                std::env::temp_dir().join(format!("mproc-bench-{}.sock", std::process::id()));
            rtt(Address::Unix(path), n, r)
        }
        "listener_connect" => connect_handshake(n, r),
        _ => return None,
    })
}

/// The raw floor of a Listener row, if `w` is one.
pub fn raw(w: &str, n: u64, r: usize) -> Option<Vec<f64>> {
    Some(match w {
        "listener_tcp_rtt" => tcp_pingpong(n, r),
        "listener_unix_rtt" => uds_pingpong(n, r),
        "listener_connect" => tcp_connect_six(n, r),
        _ => return None,
    })
}

fn echo_client(at: Address) -> mproc::Result<()> {
    let c = connect::<u64>(at, Some(KEY))?;
    while let Ok(x) = c.recv() {
        c.send(&x)?;
    }
    Ok(())
}

/// Round trips of a u64 with a forked child that connected (authenticated) to our listener.
fn rtt(at: Address, n: u64, r: usize) -> Vec<f64> {
    let l = ok("bind", Listener::<u64>::bind(at, Some(KEY)));
    let mut p = get_context(StartMethod::Fork).process(echo_client, (l.address(),));
    ok("start", p.start());
    let conn = ok("accept", l.accept());
    let v = rounds(r, 1000, n, |k| {
        for i in 0..k {
            ok("send", conn.send(&i));
            assert_eq!(ok("recv", conn.recv()), i);
        }
    });
    drop(conn);
    ok("join", p.join());
    v
}

fn serve(report: mproc::Connection<Address>, total: u64) -> mproc::Result<()> {
    let l = Listener::<u64>::bind("127.0.0.1:0".parse()?, Some(KEY))?;
    report.send(&l.address())?;
    for _ in 0..total {
        l.accept()?;
    }
    Ok(())
}

/// connect + the mutual handshake, client side, against a forked child that accepts.
fn connect_handshake(n: u64, r: usize) -> Vec<f64> {
    const WARM: u64 = 20;
    let (report, address_in) = ok("pipe", mproc::pipe::<Address>());
    let total = WARM + n * r as u64;
    let mut p = get_context(StartMethod::Fork).process(serve, (report, total));
    ok("start", p.start());
    let at = ok("address", address_in.recv());
    let v = rounds(r, WARM, n, |k| {
        for _ in 0..k {
            drop(ok("connect", connect::<u64>(at.clone(), Some(KEY))));
        }
    });
    ok("server", ok("join", p.result()));
    v
}

fn pingpong(mut a: impl Read + Write, n: u64, r: usize) -> Vec<f64> {
    let mut buf = [0u8; 8];
    rounds(r, 1000, n, |k| {
        for i in 0..k {
            a.write_all(&i.to_le_bytes()).expect("write");
            a.read_exact(&mut buf).expect("read");
        }
    })
}

fn echo_stream(mut s: impl Read + Write) {
    let mut buf = [0u8; 8];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
}

/// 8-byte ping-pong over TCP loopback with TCP_NODELAY, between forked processes.
fn tcp_pingpong(n: u64, r: usize) -> Vec<f64> {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = l.local_addr().expect("address");
    let pid = fork_with(|| {
        let s = TcpStream::connect(at).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        echo_stream(s);
    });
    let (s, _) = l.accept().expect("accept");
    s.set_nodelay(true).expect("nodelay");
    let v = pingpong(&s, n, r);
    drop(s);
    reap(pid);
    v
}

/// 8-byte ping-pong over a Unix socket pair, between forked processes.
fn uds_pingpong(n: u64, r: usize) -> Vec<f64> {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let pid = fork_with(|| {
        close_in_child(&a);
        echo_stream(b);
    });
    let v = pingpong(&a, n, r);
    drop(a);
    reap(pid);
    v
}

/// The handshake's six messages (challenge, answer, welcome, each way), sizes as mproc
/// sends them with CPython's 4-byte header, without the HMACs: the floor of connect + the
/// same exchange.
const SIX: [(bool, usize); 6] = [
    (false, 4 + 59),
    (true, 4 + 40),
    (false, 4 + 9),
    (true, 4 + 59),
    (false, 4 + 40),
    (true, 4 + 9),
];

fn tcp_connect_six(n: u64, r: usize) -> Vec<f64> {
    const WARM: u64 = 20;
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = l.local_addr().expect("address");
    let total = WARM + n * r as u64;
    let pid = fork_with(|| {
        let mut buf = [0u8; 64];
        for _ in 0..total {
            let (mut s, _) = l.accept().expect("accept");
            s.set_nodelay(true).expect("nodelay");
            for (client_sends, len) in SIX {
                if client_sends {
                    s.read_exact(&mut buf[..len]).expect("read");
                } else {
                    s.write_all(&buf[..len]).expect("write");
                }
            }
        }
    });
    let mut buf = [0u8; 64];
    let v = rounds(r, WARM, n, |k| {
        for _ in 0..k {
            let mut s = TcpStream::connect(at).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            for (client_sends, len) in SIX {
                if client_sends {
                    s.write_all(&buf[..len]).expect("write");
                } else {
                    s.read_exact(&mut buf[..len]).expect("read");
                }
            }
        }
    });
    reap(pid);
    v
}
