//! mproc's side of every row. A row whose capability has not landed in mproc yet answers
//! `NotBuilt`, and the table says so instead of failing.

use mproc::{Connection, Event, Lock, Pool, Queue, StartMethod, Value, get_context};
use serde_bytes::ByteBuf;

use crate::measure::{per_op, reps, rounds};
use crate::raw::{calc_pi, pi_check};

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
        "pipe_idle_cpu" => crate::transport::mproc_idle_cpu(n, r),
        "pipe_oversub" => crate::transport::mproc_oversub(n, r),
        "lock_uncontended" => lock_uncontended(n, r),
        "value_incr" => value_incr(n, r),
        "event_wake" => event_wake(n, r),
        "queue_stream" => queue_stream(n, r),
        "queue_rtt" => queue_rtt(n, r),
        "queue_64mib" => queue_64mib(n, r),
        "queue_idle_cpu" => queue_idle_cpu(n, r),
        "pool_apply" => pool_apply(n, r),
        "pool_map" => pool_map(n, r, None),
        "pool_map_chunk1" => pool_map(n, r, Some(1)),
        "pool_hetero" => pool_hetero(n, r),
        "pool_idle_cpu" => pool_idle_cpu(n, r),
        "pi_pool" => pi_pool(n, r),
        "manager_list_append" => manager_ops(Op::ListAppend, n, r),
        "manager_dict_set" => manager_ops(Op::DictSet, n, r),
        "manager_dict_get" => manager_ops(Op::DictGet, n, r),
        "manager_create" => manager_create(n, r),
        "pool_start" | "pool_start_isolated" | "pool_apply_isolated" => {
            match crate::isolation::mproc(w, n, r) {
                Some(v) => v,
                None => return MprocCell::NotBuilt,
            }
        }
        w if w.starts_with("listener_") => match crate::net::mproc(w, n, r) {
            Some(v) => v,
            None => return MprocCell::NotBuilt,
        },
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

fn lock_uncontended(n: u64, r: usize) -> Vec<f64> {
    let lock = ok("Lock::new", Lock::new());
    rounds(r, 1000, n, |k| {
        for _ in 0..k {
            let g = lock.acquire();
            std::hint::black_box(&g);
        }
    })
}

fn incr_worker(v: Value<i64>, go: Event, n: u64) {
    go.wait();
    for _ in 0..n {
        *v.lock() += 1;
    }
}

/// 2 processes × n locked increments, timed from `go.set()` to both joins (as CPython's).
fn value_incr_once(n: u64) -> f64 {
    let v = ok("Value::new", Value::<i64>::new(0));
    let go = ok("Event::new", Event::new());
    let fork = get_context(StartMethod::Fork);
    let mut ps: Vec<_> = (0..2)
        .map(|_| fork.process(incr_worker, (v.clone(), go.clone(), n)))
        .collect();
    for p in &mut ps {
        ok("start", p.start());
    }
    let t = std::time::Instant::now();
    go.set();
    for p in &mut ps {
        ok("join", p.join());
        assert_eq!(p.exitcode(), Some(0), "an incrementing child failed");
    }
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(v.get(), 2 * n as i64);
    dt / (2 * n) as f64
}

fn value_incr(n: u64, r: usize) -> Vec<f64> {
    reps(r, || value_incr_once(n / 10 + 1), || value_incr_once(n))
}

fn event_echo(ping: Event, pong: Event, total: u64) {
    for _ in 0..total {
        ping.wait();
        ping.clear();
        pong.set();
    }
}

fn event_wake(n: u64, r: usize) -> Vec<f64> {
    let (ping, pong) = (
        ok("Event::new", Event::new()),
        ok("Event::new", Event::new()),
    );
    let total = 1000 + n * r as u64;
    let mut p =
        get_context(StartMethod::Fork).process(event_echo, (ping.clone(), pong.clone(), total));
    ok("start", p.start());
    let round = |k: u64| {
        for _ in 0..k {
            ping.set();
            pong.wait();
            pong.clear();
        }
    };
    round(1000);
    // Two wake-ups per round trip.
    let v = (0..r).map(|_| per_op(2 * n, || round(n))).collect();
    ok("join", p.join());
    v
}

fn producer(q: Queue<u64>, go: Event, n: u64) {
    go.wait();
    for i in 0..n {
        ok("put", q.put(i));
    }
}

fn queue_stream_once(n: u64) -> f64 {
    let q = ok("Queue::new", Queue::<u64>::new());
    let go = ok("Event::new", Event::new());
    let mut p = get_context(StartMethod::Fork).process(producer, (q.clone(), go.clone(), n));
    ok("start", p.start());
    let t = std::time::Instant::now();
    go.set();
    let mut s = 0u64;
    for _ in 0..n {
        s = s.wrapping_add(ok("get", q.get()));
    }
    let dt = t.elapsed().as_secs_f64();
    ok("join", p.join());
    assert_eq!(s, n * n.saturating_sub(1) / 2);
    dt / n as f64
}

fn queue_stream(n: u64, r: usize) -> Vec<f64> {
    reps(r, || queue_stream_once(1000), || queue_stream_once(n))
}

fn queue_echo(inq: Queue<u64>, outq: Queue<u64>) {
    while let Ok(x) = inq.get() {
        if x == u64::MAX || outq.put(x).is_err() {
            break;
        }
    }
}

fn queue_rtt(n: u64, r: usize) -> Vec<f64> {
    let (inq, outq) = (
        ok("Queue::new", Queue::<u64>::new()),
        ok("Queue::new", Queue::<u64>::new()),
    );
    let mut p = get_context(StartMethod::Fork).process(queue_echo, (inq.clone(), outq.clone()));
    ok("start", p.start());
    let v = rounds(r, 1000, n, |k| {
        for i in 0..k {
            ok("put", inq.put(i));
            assert_eq!(ok("get", outq.get()), i);
        }
    });
    ok("put", inq.put(u64::MAX));
    ok("join", p.join());
    v
}

fn idle_consumer(q: Queue<u64>, ready: Event) {
    ready.set();
    let _ = q.get();
}

/// A child says it is ready, then blocks in `get` on an empty queue; `ms` idle
/// milliseconds per repetition.
fn queue_idle_cpu(ms: u64, r: usize) -> Vec<f64> {
    let once = || {
        let q = ok("Queue::new", Queue::<u64>::new());
        let ready = ok("Event::new", Event::new());
        let mut p =
            get_context(StartMethod::Fork).process(idle_consumer, (q.clone(), ready.clone()));
        ok("start", p.start());
        ready.wait();
        let pid = p.pid().expect("started");
        let v = crate::transport::cpu_per_second(pid, std::time::Duration::from_millis(ms));
        ok("release", q.put(0));
        ok("join", p.join());
        v
    };
    reps(r, once, once)
}

/// A 64 MiB byte string, shared: as the floor and CPython send one payload again and
/// again, `put` (which takes its item by value) then neither makes nor frees 64 MiB per
/// item on the clock. Encoded and decoded as a `ByteBuf`.
#[derive(Clone)]
struct Payload(std::sync::Arc<ByteBuf>);

impl serde::Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ByteBuf::deserialize(d).map(|b| Payload(std::sync::Arc::new(b)))
    }
}

/// Receives into one buffer, reused for every item (`get_into`): as the floor's reader
/// reuses its 64 MiB buffer.
fn big_sink(q: Queue<Payload>, acks: Queue<u64>, rounds: u64, k: u64) {
    let mut buf = Vec::new();
    for _ in 0..rounds {
        let mut got = 0u64;
        for _ in 0..k {
            got += ok("get_into", q.get_into(&mut buf)) as u64;
        }
        ok("ack", acks.put(got));
    }
}

/// 64 MiB items, parent put → child get.
fn queue_64mib(n: u64, r: usize) -> Vec<f64> {
    const SIZE: usize = 64 << 20;
    let q = ok("Queue::new", Queue::<Payload>::new());
    let acks = ok("Queue::new", Queue::<u64>::new());
    let mut p = get_context(StartMethod::Fork)
        .process(big_sink, (q.clone(), acks.clone(), 1 + r as u64, n));
    ok("start", p.start());
    let payload = Payload(std::sync::Arc::new(ByteBuf::from(vec![7u8; SIZE])));
    let round = |k: u64| {
        let t = std::time::Instant::now();
        for _ in 0..k {
            ok("put", q.put(payload.clone()));
        }
        assert_eq!(ok("ack", acks.get()), k * SIZE as u64);
        t.elapsed().as_secs_f64() / k as f64
    };
    round(n);
    let v = (0..r).map(|_| round(n)).collect();
    ok("join", p.join());
    v
}

fn ident(x: u64) -> u64 {
    x
}

fn pool2() -> Pool {
    ok("Pool::new(2)", Pool::new(2))
}

fn pool_apply(n: u64, r: usize) -> Vec<f64> {
    let pool = pool2();
    rounds(r, 100, n, |k| {
        for i in 0..k {
            assert_eq!(ok("apply", pool.apply(ident, (i,))), i);
        }
    })
}

/// `map` (default chunking) or `map_chunked` over 0..k.
fn pool_map(n: u64, r: usize, chunksize: Option<usize>) -> Vec<f64> {
    let pool = pool2();
    rounds(r, 1000, n, |k| {
        let out = match chunksize {
            None => ok("map", pool.map(ident, 0..k)),
            Some(c) => ok("map_chunked", pool.map_chunked(ident, 0..k, c)),
        };
        assert_eq!(out.len() as u64, k);
        assert_eq!(out.last().copied(), k.checked_sub(1));
    })
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    ms
}

/// One long task then many short ones; one operation is the whole batch.
fn pool_hetero(n: u64, r: usize) -> Vec<f64> {
    let pool = pool2();
    let tasks = crate::raw::hetero_tasks(n);
    let once = |tasks: &[u64]| {
        let mut done = 0;
        for x in pool.imap_unordered(sleep_ms, tasks.to_vec()) {
            ok("imap_unordered", x);
            done += 1;
        }
        assert_eq!(done, tasks.len());
    };
    reps(r, || once(&[1, 1]), || per_op(1, || once(&tasks)))
}

/// CPU seconds the parent of an idle, warm pool uses per idle second.
fn pool_idle_cpu(n: u64, r: usize) -> Vec<f64> {
    let pool = pool2();
    assert_eq!(ok("apply", pool.apply(ident, (1,))), 1);
    reps(
        r,
        || (),
        || {
            crate::raw::cpu_per_idle_second(n, || {
                std::thread::sleep(std::time::Duration::from_secs(n))
            })
        },
    )
}

/// Pi over 2 strided ranks on a warm Pool(2), like CPython's `starmap`.
fn pi_pool(n: u64, r: usize) -> Vec<f64> {
    let pool = pool2();
    let once = |steps: u64| {
        let parts: Vec<f64> = ok(
            "starmap",
            pool.starmap(calc_pi, (0..2u64).map(|rank| (rank, 2u64, steps))),
        );
        pi_check(parts.iter().sum());
    };
    reps(r, || once(1000), || per_op(1, || once(n)))
}

/// Which proxy operation a manager row times.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Op {
    ListAppend,
    DictSet,
    DictGet,
}

/// The child of a manager row: times `r` rounds of `n` operations itself, after a warm-up
/// (which opens its connection to the server), and returns seconds per operation.
fn manager_child(
    op: Op,
    l: mproc::ListProxy<u64>,
    d: mproc::DictProxy<u64, u64>,
    n: u64,
    r: usize,
) -> Vec<f64> {
    rounds(r, 100.min(n), n, |k| match op {
        Op::ListAppend => (0..k).for_each(|i| ok("append", l.append(&i))),
        Op::DictSet => (0..k).for_each(|i| {
            ok("insert", d.insert(i, i));
        }),
        Op::DictGet => (0..k).for_each(|i| assert_eq!(ok("get", d.get(&i)), Some(i))),
    })
}

fn manager_ops(op: Op, n: u64, r: usize) -> Vec<f64> {
    let m = ok("Manager::start", mproc::Manager::start());
    let l = ok("list", m.list());
    let d = ok("dict", m.dict());
    if let Op::DictGet = op {
        for i in 0..n {
            ok("insert", d.insert(i, i));
        }
    }
    let mut p = get_context(StartMethod::Fork).process(manager_child, (op, l, d, n, r));
    ok("start", p.start());
    let v = ok("result", p.result());
    ok("shutdown", m.shutdown());
    v
}

fn manager_create(n: u64, r: usize) -> Vec<f64> {
    let m = ok("Manager::start", mproc::Manager::start());
    rounds(r, 10, n, |k| {
        for _ in 0..k {
            let _: mproc::ListProxy<u64> = ok("list", m.list());
        }
    })
}
