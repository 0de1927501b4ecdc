//! mproc's side of every row. A row whose capability has not landed in mproc yet answers
//! `NotBuilt`, and the table says so instead of failing.

use mproc::{Connection, StartMethod, get_context};

use crate::measure::{reps, rounds};

/// What mproc's side of a row produced.
pub enum MprocCell {
    /// Seconds per operation, one per repetition.
    Samples(Vec<f64>),
    /// The capability this row needs is not in mproc yet.
    NotBuilt,
}

/// Runs mproc's side of workload `w`; a failure panics with what failed (the harness
/// shows the cell as failed with that message).
pub fn run(w: &str, n: u64, r: usize) -> MprocCell {
    MprocCell::Samples(match w {
        "start_fork" => start(StartMethod::Fork, n, r),
        "start_spawn" => start(StartMethod::Spawn, n, r),
        "start_forkserver" => start(StartMethod::ForkServer, n, r),
        "pipe_rtt" => pipe_rtt(n, r),
        "pipe_bw" => pipe_bw(n, r),
        _ => return MprocCell::NotBuilt,
    })
}

fn ok<T>(what: &str, r: mproc::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("mproc: {what}: {e}"))
}

fn noop() {}

fn start(m: StartMethod, n: u64, r: usize) -> Vec<f64> {
    let ctx = get_context(m);
    // The warm-up also starts the fork server.
    rounds(r, 2, n, |k| {
        for _ in 0..k {
            let mut p = ctx.process(noop, ());
            ok("start", p.start());
            ok("join", p.join());
            assert_eq!(p.exitcode(), Some(0), "the no-op child failed");
        }
    })
}

fn echo(c: Connection<u64>) {
    while let Ok(x) = c.recv() {
        if c.send(&x).is_err() {
            break;
        }
    }
}

fn pipe_rtt(n: u64, r: usize) -> Vec<f64> {
    let (a, b) = ok("pipe", mproc::pipe::<u64>());
    let mut p = get_context(StartMethod::Fork).process(echo, (b,));
    ok("start", p.start());
    let v = rounds(r, 1000, n, |k| {
        for i in 0..k {
            ok("send", a.send(&i));
            assert_eq!(ok("recv", a.recv()), i);
        }
    });
    drop(a);
    ok("join", p.join());
    v
}

/// Receives rounds of `k` byte messages (k first, as a typed message) and acks the total.
fn bytes_sink(c: Connection<u64>) {
    while let Ok(k) = c.recv() {
        let mut got = 0u64;
        for _ in 0..k {
            got += ok("recv_bytes", c.recv_bytes()).len() as u64;
        }
        ok("ack", c.send(&got));
    }
}

fn pipe_bw(n: u64, r: usize) -> Vec<f64> {
    const MIB: u64 = 1 << 20;
    let (a, b) = ok("pipe", mproc::pipe::<u64>());
    let mut p = get_context(StartMethod::Fork).process(bytes_sink, (b,));
    ok("start", p.start());
    let payload = vec![7u8; MIB as usize];
    let v = rounds(r, 4, n, |k| {
        ok("send", a.send(&k));
        for _ in 0..k {
            ok("send_bytes", a.send_bytes(&payload));
        }
        assert_eq!(ok("ack", a.recv()), k * MIB);
    });
    drop(a);
    ok("join", p.join());
    v
}

#[allow(dead_code)]
fn unused() -> Vec<f64> {
    reps(1, || (), || 0.0)
}
