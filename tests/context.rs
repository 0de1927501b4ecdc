//! Contexts (DESIGN part 3): a process started from `get_context(m).process(..)` runs, and
//! starts its own children, under `m`, whatever the program chose. This binary never calls
//! `set_start_method`, so every context below must override the default (`ForkServer`) in
//! the child, the grandchild and a pool worker; `tests/inheritance.rs` covers a program
//! that did choose one.

mod util;

use std::sync::atomic::{AtomicU32, Ordering};

use mproc::{Process, StartMethod, get_context, get_start_method};
use util::*;

/// Set by a child just before it starts its own: a grandchild made by `fork` sees the
/// child's pid here, one made by `Spawn` or a fork server (fresh executables) sees 0.
static MARK: AtomicU32 = AtomicU32::new(0);

/// The comm of each child of this process (every thread's children).
fn children_comms() -> Vec<String> {
    child_pids()
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim_end().to_string())
        .collect()
}

fn grandchild_sees() -> (StartMethod, u32) {
    (get_start_method(), MARK.load(Ordering::Relaxed))
}

/// In a context's child: its start method; its grandchild's (started with the default
/// `Process::new`); whether the grandchild is a fork of it (it sees the child's mark); and
/// whether the child runs a fork server (started for the grandchild).
fn child_sees() -> (StartMethod, StartMethod, bool, bool) {
    let me = std::process::id();
    MARK.store(me, Ordering::Relaxed);
    let mut p = Process::new(grandchild_sees, ());
    p.start().expect("grandchild starts");
    let (method, mark) = p.result().expect("grandchild result");
    // A fork server lives as long as the process that started it. (Its name, cut to the
    // kernel's 15 bytes; looked for once the grandchild, briefly of that name too between
    // the server's fork and its own naming, is gone.)
    let forkserver = children_comms().iter().any(|c| c == "mproc-forkserve");
    (get_start_method(), method, mark == me, forkserver)
}

fn worker_sees(_: u32) -> StartMethod {
    get_start_method()
}

#[test]
fn a_contexts_child_and_grandchild_run_under_its_method() {
    let _s = shared();
    let _w = watchdog("context method passed down", 120);
    assert_eq!(get_start_method(), ForkServer, "this binary chooses none");
    for m in METHODS {
        let mut p = get_context(m).process(child_sees, ());
        p.start().unwrap();
        let (child, grandchild, forked, forkserver) = p.result().unwrap();
        assert_eq!(child, m, "the child of get_context({m:?})");
        assert_eq!(grandchild, m, "the grandchild under get_context({m:?})");
        assert_eq!(
            forked,
            m == Fork,
            "under get_context({m:?}) the grandchild was {}made by fork",
            if forked { "" } else { "not " }
        );
        assert_eq!(
            forkserver,
            m == ForkServer,
            "under get_context({m:?}) the child {} a fork server",
            if forkserver {
                "started"
            } else {
                "did not start"
            }
        );
    }
}

#[test]
fn a_contexts_pool_workers_run_under_its_method() {
    let _s = shared();
    let _w = watchdog("context pool method", 120);
    for m in METHODS {
        let pool = get_context(m).pool(1).unwrap();
        assert_eq!(pool.apply(worker_sees, (0,)).unwrap(), m, "{m:?}");
    }
}
