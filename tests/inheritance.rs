//! What a child inherits (crate docs, "What a child inherits"): the environment and working
//! directory at `start` under every start method, the start method, threads cut
//! off when the target returns, and a daemon flag fixed at `start`.
//!
//! This binary sets the start method to `Spawn` once, in `start_method_is_passed_down`;
//! every other test names its method explicitly. Tests that change the working directory
//! or the environment hold `exclusive()`.

// Tests change the environment, which edition 2024 calls unsafe.
#![allow(unsafe_code)]

mod util;

use std::time::{Duration, Instant};

use mproc::{Pool, Process, StartMethod, Value, get_start_method};
use util::{METHODS, Spawn, exclusive, shared, watchdog};

const SET: &str = "MPROC_TEST_INHERIT_SET";
const REMOVED: &str = "MPROC_TEST_INHERIT_REMOVED";

fn what_i_see() -> (Option<String>, Option<String>, String) {
    (
        std::env::var(SET).ok(),
        std::env::var(REMOVED).ok(),
        std::env::current_dir().unwrap().display().to_string(),
    )
}

fn run<R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
    mut p: Process<R>,
    method: StartMethod,
) -> R {
    p.set_start_method(method);
    p.start().unwrap();
    p.result().unwrap()
}

// Python's forkserver children chdir to the parent's cwd; mproc's children see the
// requester's cwd *and* environment at `start`, under every method, even when the fork
// server started before the change.
#[test]
fn children_see_the_environment_and_cwd_at_start() {
    let _x = exclusive();
    let _w = watchdog("inherit env", 60);
    let home = std::env::current_dir().unwrap();
    // SAFETY: exclusive(): no other test of this binary runs meanwhile.
    unsafe { std::env::set_var(REMOVED, "present at server start") };
    // The fork server (and its environment) is made now, before the changes.
    for m in METHODS {
        let (_, removed, _) = run(Process::new(what_i_see, ()), m);
        assert_eq!(removed.as_deref(), Some("present at server start"), "{m:?}");
    }
    let dir = std::env::temp_dir().join(format!("mproc-inherit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    std::env::set_current_dir(&dir).unwrap();
    for m in METHODS {
        let value = format!("set after the server started, {m:?}");
        // SAFETY: as above.
        unsafe { std::env::set_var(SET, &value) };
        // SAFETY: as above.
        unsafe { std::env::remove_var(REMOVED) };
        let (set, removed, cwd) = run(Process::new(what_i_see, ()), m);
        assert_eq!(
            set.as_deref(),
            Some(value.as_str()),
            "{m:?}: set_var is seen"
        );
        assert_eq!(removed, None, "{m:?}: remove_var is seen");
        assert_eq!(
            cwd,
            dir.display().to_string(),
            "{m:?}: set_current_dir is seen"
        );
    }
    std::env::set_current_dir(&home).unwrap();
    // SAFETY: as above.
    unsafe { std::env::remove_var(SET) };
    let (set, _, cwd) = run(Process::new(what_i_see, ()), StartMethod::ForkServer);
    assert_eq!(set, None, "and back again");
    assert_eq!(cwd, home.display().to_string());
    let _ = std::fs::remove_dir(&dir);
}

/// This process's children (zombies included), from /proc.
fn my_children() -> usize {
    let me = std::process::id();
    std::fs::read_dir(format!("/proc/{me}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .map(|s| s.split_whitespace().count())
        .sum()
}

fn report() -> StartMethod {
    get_start_method()
}

/// In a child: its start method, its grandchild's, and how many processes it had to
/// make for the grandchild (1 under `Fork` and `Spawn`; 2 under `ForkServer`: the server
/// too).
fn child_reports() -> (StartMethod, StartMethod, usize) {
    let mut p = Process::new(report, ());
    p.start().unwrap();
    let made = my_children();
    (get_start_method(), p.result().unwrap(), made)
}

fn worker_reports(_: u32) -> StartMethod {
    get_start_method()
}

// Ports test_set_get (test 4, the part a child sees): set_start_method is passed down to a
// child, a grandchild and a pool worker, and nested processes use it. A process started
// with a method of its own (`Process::set_start_method`, as a context's are) runs, and
// starts its children, under that one instead (DESIGN part 3; `tests/context.rs`).
#[test]
fn start_method_is_passed_down() {
    let _s = shared();
    let _w = watchdog("inherit start method", 60);
    mproc::set_start_method(Spawn).unwrap();
    let mut p = Process::new(child_reports, ());
    p.start().unwrap();
    let (child, grandchild, made) = p.result().unwrap();
    assert_eq!((child, grandchild), (Spawn, Spawn), "the program's choice");
    assert_eq!(
        made, 1,
        "the child started its grandchild by Spawn: no fork server"
    );
    for m in METHODS {
        let (child, grandchild, made) = run(Process::new(child_reports, ()), m);
        assert_eq!(child, m, "a child started by {m:?}");
        assert_eq!(
            grandchild, m,
            "the grandchild, under a child started by {m:?}"
        );
        let expected = if m == StartMethod::ForkServer { 2 } else { 1 };
        assert_eq!(
            made, expected,
            "processes made for the grandchild under {m:?}"
        );
    }
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.apply(worker_reports, (0,)).unwrap(), Spawn);
}

fn outlived_by_a_thread(flag: Value<u32>) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        flag.set(1);
    });
}

// The child exits when its target returns: its other threads are cut off (documented; a
// Rust program does the same when `main` returns).
#[test]
fn threads_are_cut_off_when_the_target_returns() {
    let _s = shared();
    let _w = watchdog("inherit threads", 60);
    for m in METHODS {
        let flag = Value::new(0u32).unwrap();
        let t = Instant::now();
        run(Process::new(outlived_by_a_thread, (flag.clone(),)), m);
        assert!(
            t.elapsed() < Duration::from_millis(1200),
            "{m:?}: the child waited for its thread ({:?})",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(1700));
        assert_eq!(
            flag.get(),
            0,
            "{m:?}: the thread ran on after the child exited"
        );
    }
}

fn nap() {
    std::thread::sleep(Duration::from_millis(50));
}

// Python asserts that a started process's daemon flag does not change; so does mproc, and
// `daemon()` tells the truth.
#[test]
fn set_daemon_after_start_panics_and_daemon_stays_true() {
    let _s = shared();
    let _w = watchdog("inherit daemon", 60);
    let mut p = Process::new(nap, ());
    p.set_daemon(false);
    p.start().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.set_daemon(true)));
    let message = r.expect_err("set_daemon after start must panic");
    let message = message
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| message.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(message.contains("already started"), "{message}");
    assert!(
        !p.daemon(),
        "daemon() reports the flag the child was started with"
    );
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}
