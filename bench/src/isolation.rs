//! The pool start and isolation rows: what building a pool costs, and what isolating its
//! workers (`PoolBuilder::limits`, `sandbox`) adds to its start and to a task's round trip.
//!
//! An `_isolated` row's mproc cell runs the pool with [`isolate`]'s limits and sandbox; its
//! "raw floor" cell runs the very same code without them ([`plain`]), in the same row of
//! the same run, so the row's "mproc ÷ floor" ratio is isolated ÷ plain. The limits are
//! generous (no task here comes near them): the cost measured is having them, not hitting
//! them.

use std::time::{Duration, Instant};

use mproc::{Limits, Pool, PoolBuilder, Sandbox, StartMethod};

use crate::measure::{reps, rounds};

fn ok<T>(what: &str, r: mproc::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("mproc: {what}: {e}"))
}

fn ident(x: u64) -> u64 {
    x
}

/// A memory limit and a CPU-time limit (one `timer_settime` per task), no network and a
/// read-only file system (a seccomp filter and a Landlock ruleset per worker start).
fn isolate(b: PoolBuilder) -> PoolBuilder {
    b.limits(
        Limits::new()
            .memory(256 << 20)
            .cpu_time(Duration::from_secs(60)),
    )
    .sandbox(Sandbox::new().no_network().read_only())
}

/// A Pool(2), isolated or not, with nothing else changed.
fn pool2(isolated: bool) -> PoolBuilder {
    let b = Pool::builder().processes(2);
    if isolated { isolate(b) } else { b }
}

/// Whether this process may not open a UDP socket: `no_network` in force.
fn network_refused() -> bool {
    std::net::UdpSocket::bind("127.0.0.1:0").is_err()
}

/// The cell checks what it measures: an isolated pool's workers really are sandboxed, and
/// a plain pool's are not.
fn check(pool: &Pool, isolated: bool) {
    assert_eq!(
        ok("apply", pool.apply(network_refused, ())),
        isolated,
        "a worker's network is {} by a pool {} isolation",
        if isolated { "allowed" } else { "refused" },
        if isolated { "with" } else { "without" },
    );
}

/// Build a Pool(2) (Fork, as CPython's side) and get its first `apply` back; one operation
/// is one pool. The teardown (terminate, reap) is outside the clock, and done before the
/// next start so that two pools never overlap.
fn start(n: u64, r: usize, isolated: bool) -> Vec<f64> {
    let build = || {
        ok(
            "build",
            pool2(isolated).start_method(StartMethod::Fork).build(),
        )
    };
    let once = |k: u64| {
        let mut busy = Duration::ZERO;
        for i in 0..k {
            let t = Instant::now();
            let pool = build();
            assert_eq!(ok("first apply", pool.apply(ident, (i,))), i);
            busy += t.elapsed();
            drop(pool);
        }
        busy.as_secs_f64() / k.max(1) as f64
    };
    let warm_up = || {
        check(&build(), isolated);
        once(2)
    };
    reps(r, warm_up, || once(n))
}

/// `pool_apply`'s workload (the default start method, an identity task's round trip) on a
/// pool built by [`pool2`].
fn apply(n: u64, r: usize, isolated: bool) -> Vec<f64> {
    let pool = ok("build", pool2(isolated).build());
    check(&pool, isolated);
    rounds(r, 100, n, |k| {
        for i in 0..k {
            assert_eq!(ok("apply", pool.apply(ident, (i,))), i);
        }
    })
}

/// mproc's cell of the rows of this module; `None` for any other row.
pub fn mproc(w: &str, n: u64, r: usize) -> Option<Vec<f64>> {
    Some(match w {
        "pool_start" => start(n, r, false),
        "pool_start_isolated" => start(n, r, true),
        "pool_apply_isolated" => apply(n, r, true),
        _ => return None,
    })
}

/// The "raw floor" cell of an `_isolated` row: the same pool without isolation.
pub fn plain(w: &str, n: u64, r: usize) -> Option<Vec<f64>> {
    Some(match w {
        "pool_start_isolated" => start(n, r, false),
        "pool_apply_isolated" => apply(n, r, false),
        _ => return None,
    })
}
