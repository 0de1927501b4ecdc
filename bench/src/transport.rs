//! The transport rows that keep the pipe's spin honest (issue 14):
//!
//! - `pipe_idle_cpu`: CPU burnt by a receiver blocked in `recv` with nothing to receive, per
//!   idle second (a spin that never stops shows up here). Read from the receiver's
//!   `/proc/<pid>/schedstat` (run time in ns; `/proc/<pid>/stat`'s ticks are 10 ms coarse).
//! - `pipe_oversub`: 2 × CPUs ping-pong pairs at once (4 pairs on 2 cores), time per round
//!   trip over all pairs: with more runnable processes than cores a spinning receiver must
//!   yield, so mproc must not fall below the plain blocking socket.
//!
//! Both have an mproc side and a raw side (std `UnixStream`s between forked processes).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mproc::{Connection, Event, StartMethod, get_context};

use crate::measure::reps;
use crate::raw::{close_in_child, fork_with, reap};

/// Run time of `pid` so far, in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/schedstat"));
    if let Some(ns) = schedstat
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
    {
        return ns;
    }
    // Fallback: utime + stime in clock ticks (assumed 100 Hz).
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    let rest = &s[s.rfind(')').expect("stat has a comm field") + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f[11] + f[12]) * 10_000_000
}

/// CPU seconds that `pid` used per second of `idle`, measured over `idle`.
pub fn cpu_per_second(pid: u32, idle: Duration) -> f64 {
    let c0 = cpu_ns(pid);
    std::thread::sleep(idle);
    let c1 = cpu_ns(pid);
    (c1 - c0) as f64 / 1e9 / idle.as_secs_f64()
}

fn ok<T>(what: &str, r: mproc::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("mproc: {what}: {e}"))
}

fn idle_receiver(c: Connection<u64>) {
    let _ = c.send(&0);
    let _ = c.recv();
}

/// mproc: a child says it is ready, then blocks in `recv`; `ms` idle milliseconds per rep.
pub fn mproc_idle_cpu(ms: u64, r: usize) -> Vec<f64> {
    let once = || {
        let (a, b) = ok("pipe", mproc::pipe::<u64>());
        let mut p = get_context(StartMethod::Fork).process(idle_receiver, (b,));
        ok("start", p.start());
        assert_eq!(ok("ready", a.recv()), 0);
        let v = cpu_per_second(p.pid().expect("started"), Duration::from_millis(ms));
        ok("release", a.send(&1));
        ok("join", p.join());
        v
    };
    reps(r, once, once)
}

/// raw: a forked child writes a byte, then blocks in `read`.
pub fn raw_idle_cpu(ms: u64, r: usize) -> Vec<f64> {
    let once = || {
        let (mut a, mut b) = UnixStream::pair().expect("socketpair");
        let pid = fork_with(|| {
            close_in_child(&a);
            let mut byte = [0u8; 1];
            b.write_all(&byte).expect("ready");
            let _ = b.read(&mut byte);
        });
        let mut byte = [0u8; 1];
        a.read_exact(&mut byte).expect("ready");
        let v = cpu_per_second(pid as u32, Duration::from_millis(ms));
        a.write_all(&byte).expect("release");
        reap(pid);
        v
    };
    reps(r, once, once)
}

/// Ping-pong pairs: 2 × the CPUs this process may use (4 on 2 cores).
fn pairs() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn echo_all(c: Connection<u64>) {
    while let Ok(x) = c.recv() {
        if c.send(&x).is_err() {
            break;
        }
    }
}

/// Waits for `go`, then `n` round trips; returns the seconds they took.
fn ping(c: Connection<u64>, go: Event, n: u64) -> f64 {
    go.wait();
    let t = Instant::now();
    for i in 0..n {
        c.send(&i).expect("send");
        assert_eq!(c.recv().expect("recv"), i);
    }
    t.elapsed().as_secs_f64()
}

/// mproc: every pair runs `n` round trips at once; seconds per round trip over all pairs.
pub fn mproc_oversub(n: u64, r: usize) -> Vec<f64> {
    let once = |n: u64| {
        let go = ok("Event", Event::new());
        let mut echoes = Vec::new();
        let mut pingers = Vec::new();
        for _ in 0..pairs() {
            let (a, b) = ok("pipe", mproc::pipe::<u64>());
            let mut e = get_context(StartMethod::Fork).process(echo_all, (b,));
            ok("start", e.start());
            let mut p = get_context(StartMethod::Fork).process(ping, (a, go.clone(), n));
            ok("start", p.start());
            echoes.push(e);
            pingers.push(p);
        }
        go.set();
        let slowest = pingers
            .into_iter()
            .map(|p| ok("ping", p.result()))
            .fold(0.0, f64::max);
        for mut e in echoes {
            ok("join", e.join());
        }
        slowest / (n * pairs() as u64) as f64
    };
    reps(r, || once(n / 10 + 1), || once(n))
}

/// raw: the same with blocking `UnixStream`s between forked processes; the pingers wait
/// for one byte on a shared "go" socket each, and report their seconds as f64 bits.
pub fn raw_oversub(n: u64, r: usize) -> Vec<f64> {
    let once = |n: u64| {
        let mut pids = Vec::new();
        let mut gos = Vec::new();
        let mut reports = Vec::new();
        for _ in 0..pairs() {
            let (mut a, mut b) = UnixStream::pair().expect("socketpair");
            let (go_ours, mut go_theirs) = UnixStream::pair().expect("socketpair");
            pids.push(fork_with(|| {
                close_in_child(&a);
                close_in_child(&go_ours);
                let mut buf = [0u8; 8];
                while b.read_exact(&mut buf).is_ok() {
                    if b.write_all(&buf).is_err() {
                        break;
                    }
                }
            }));
            drop(b);
            pids.push(fork_with(|| {
                close_in_child(&go_ours);
                let mut byte = [0u8; 1];
                go_theirs.read_exact(&mut byte).expect("go");
                let t = Instant::now();
                let mut buf = [0u8; 8];
                for i in 0..n {
                    a.write_all(&i.to_le_bytes()).expect("write");
                    a.read_exact(&mut buf).expect("read");
                }
                let secs = t.elapsed().as_secs_f64();
                go_theirs
                    .write_all(&secs.to_bits().to_le_bytes())
                    .expect("report");
            }));
            drop(a);
            drop(go_theirs);
            gos.push(go_ours.try_clone().expect("dup"));
            reports.push(go_ours);
        }
        for g in &mut gos {
            g.write_all(&[1]).expect("go");
        }
        let mut slowest = 0.0f64;
        for mut rep in reports {
            let mut bits = [0u8; 8];
            rep.read_exact(&mut bits).expect("report");
            slowest = slowest.max(f64::from_bits(u64::from_le_bytes(bits)));
        }
        for pid in pids {
            reap(pid);
        }
        slowest / (n * pairs() as u64) as f64
    };
    reps(r, || once(n / 10 + 1), || once(n))
}
