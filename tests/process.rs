//! Process: start, join, exit codes, signals, names, results, grandchildren, leaks.
//! Ports CPython's `_TestProcess` and `_TestSubclassingProcess` behaviours
//! (`_test_multiprocessing.py`, cpython.md §4) where they apply, under every start method.

mod util;

use std::time::{Duration, Instant};

use mproc::{Error, Process, Sender, StartMethod, get_context, pipe_simplex};
use util::*;

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn square(x: u64) -> u64 {
    x * x
}

/// What a child sees of itself and its parent.
fn who_am_i() -> (String, u32, Option<(String, u32)>) {
    let me = mproc::current_process();
    let parent = mproc::parent_process().map(|p| (p.name().to_string(), p.pid()));
    (me.name().to_string(), me.pid(), parent)
}

// Ports _TestProcess.test_current: the main process is "MainProcess" with no parent.
#[test]
fn main_process_is_named_and_has_no_parent() {
    let me = mproc::current_process();
    assert_eq!(me.name(), "MainProcess");
    assert_eq!(me.pid(), std::process::id());
    assert!(mproc::parent_process().is_none());
}

// Ports _TestProcess.test_process and test_parent_process: pid, name, is_alive, exitcode,
// and the child's view of its name and parent.
#[test]
fn start_join_and_identity_under_every_method() {
    let _s = shared();
    let _w = watchdog("start_join_and_identity", 60);
    for m in METHODS {
        let mut p = get_context(m).process(who_am_i, ());
        assert!(p.name().starts_with("Process-"), "{}", p.name());
        p.set_name("worker");
        assert_eq!(p.pid(), None);
        assert_eq!(p.exitcode(), None);
        assert!(!p.is_alive());
        p.start().unwrap();
        let pid = p.pid().unwrap();
        p.join().unwrap();
        assert!(!p.is_alive());
        assert_eq!(p.exitcode(), Some(0), "{m:?}");
        p.join().unwrap(); // idempotent
        let (name, child_pid, parent) = p.result().unwrap();
        assert_eq!(name, "worker", "{m:?}");
        assert_eq!(child_pid, pid, "{m:?}");
        assert_eq!(
            parent,
            Some(("MainProcess".to_string(), std::process::id())),
            "{m:?}"
        );
    }
}

#[test]
fn default_names_count_up() {
    let a = Process::new(square, (1,));
    let b = Process::new(square, (1,));
    let na: u32 = a.name().strip_prefix("Process-").unwrap().parse().unwrap();
    let nb: u32 = b.name().strip_prefix("Process-").unwrap().parse().unwrap();
    assert!(nb > na);
}

// Ports _TestProcess: starting twice is an error; joining before start too.
#[test]
fn start_twice_and_join_before_start_are_errors() {
    let _s = shared();
    let _w = watchdog("start_twice", 30);
    let mut p = Process::new(square, (3,));
    assert!(matches!(p.join(), Err(Error::NotStarted)));
    assert!(matches!(p.terminate(), Err(Error::NotStarted)));
    p.start().unwrap();
    assert!(matches!(p.start(), Err(Error::AlreadyStarted)));
    assert_eq!(p.result().unwrap(), 9);
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn panics(msg: String) -> u32 {
    panic!("{msg}")
}
/// The line of `panics`'s panic.
const PANICS_LINE: u32 = line!() - 3;

fn aborts() {
    std::process::abort()
}

// Ports _TestProcess.test_exitcode-style checks (sys.exit(n) → n, an exception → 1).
#[test]
fn exit_codes_under_every_method() {
    let _s = shared();
    let _w = watchdog("exit_codes", 60);
    for m in METHODS {
        let ctx = get_context(m);
        let mut p = ctx.process(exit_with, (3,));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(3), "{m:?}");
        assert!(matches!(
            p.result(),
            Err(Error::ChildFailed { exitcode: 3 })
        ));

        let mut p = ctx.process(panics, ("it broke".to_string(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(1), "{m:?}");
        match p.result() {
            Err(Error::TaskPanicked { message, location }) => {
                assert_eq!(message, "it broke");
                let at = location.expect("a child's panic comes with its location");
                assert!(
                    at.starts_with(&format!("tests/process.rs:{PANICS_LINE}:")),
                    "{m:?}: {at}"
                );
            }
            other => panic!("{m:?}: {other:?}"),
        }

        let mut p = ctx.process(aborts, ());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-6), "{m:?}");
        let err = p.result().unwrap_err();
        assert!(matches!(err, Error::ChildFailed { exitcode: -6 }), "{err}");
        assert_eq!(err.to_string(), "child failed: it was killed by signal 6");
    }
}

// Ports _TestProcess.test_terminate / test_kill: join with a timeout returns while the
// child runs, terminate/kill end it with -SIGTERM / -SIGKILL.
#[test]
fn terminate_and_kill_under_every_method() {
    let _s = shared();
    let _w = watchdog("terminate_and_kill", 60);
    for m in METHODS {
        let ctx = get_context(m);
        let mut p = ctx.process(sleep_ms, (60_000,));
        p.start().unwrap();
        let t = Instant::now();
        assert!(!p.join_timeout(Duration::from_millis(100)).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(90));
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        p.terminate().unwrap();
        assert!(p.join_timeout(Duration::from_secs(10)).unwrap(), "{m:?}");
        assert_eq!(p.exitcode(), Some(-15), "{m:?}");

        let mut p = ctx.process(sleep_ms, (60_000,));
        p.start().unwrap();
        p.kill().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-9), "{m:?}");
        p.kill().unwrap(); // signalling an ended process is harmless
    }
}

// Ports _TestProcess.test_active_children.
#[test]
fn active_children_lists_running_children_and_reaps() {
    let _s = shared();
    let _w = watchdog("active_children", 30);
    let mut p = Process::new(sleep_ms, (60_000,));
    p.start().unwrap();
    let pid = p.pid().unwrap();
    assert!(mproc::active_children().iter().any(|c| c.pid() == pid));
    p.kill().unwrap();
    p.join().unwrap();
    assert!(!mproc::active_children().iter().any(|c| c.pid() == pid));
}

fn spawn_grandchild(m: StartMethod, x: u64) -> (String, u64) {
    let mut p = get_context(m).process(grandchild, (x,));
    p.start().expect("grandchild starts");
    p.result().expect("grandchild result")
}

fn grandchild(x: u64) -> (String, u64) {
    (mproc::current_process().name().to_string(), x * 10)
}

// Ports _TestProcess.test_recursion: children start children, named Process-N:M.
#[test]
fn grandchildren_under_every_method() {
    let _s = shared();
    let _w = watchdog("grandchildren", 60);
    for m in METHODS {
        let mut p = get_context(m).process(spawn_grandchild, (m, 4));
        p.start().unwrap();
        let parent_name = p.name().to_string();
        let (name, v) = p.result().unwrap();
        assert_eq!(v, 40, "{m:?}");
        assert_eq!(name, format!("{parent_name}:1"), "{m:?}");
    }
}

fn big_result(n: usize) -> Vec<u8> {
    vec![7u8; n]
}

// A result far larger than a socket buffer: `join` before `result` must not deadlock.
#[test]
fn large_result_does_not_deadlock_join() {
    let _s = shared();
    let _w = watchdog("large_result", 60);
    for m in METHODS {
        let mut p = get_context(m).process(big_result, (8 << 20,));
        p.start().unwrap();
        p.join().unwrap();
        let v = p.result().unwrap();
        assert_eq!(v.len(), 8 << 20);
        assert!(v.iter().all(|&b| b == 7));
    }
}

fn middle(m: StartMethod, report: Sender<u32>) {
    let mut g = get_context(m).process(sleep_ms, (60_000,));
    g.start().expect("grandchild starts");
    report.send(&g.pid().expect("started")).expect("report");
    sleep_ms(60_000);
}

// No orphans: SIGKILL of a parent takes its children with it, under every method.
#[test]
fn killing_a_parent_kills_its_children() {
    let _s = shared();
    let _w = watchdog("killing_a_parent", 60);
    for m in METHODS {
        let (rx, tx) = pipe_simplex::<u32>().unwrap();
        let mut p = get_context(m).process(middle, (m, tx));
        p.start().unwrap();
        let grandchild = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(!is_dead(grandchild));
        p.kill().unwrap();
        p.join().unwrap();
        assert!(
            wait_dead(grandchild, 10),
            "{m:?}: grandchild {grandchild} outlived its parent"
        );
    }
}

fn start_daemon_and_return(m: StartMethod, report: Sender<u32>) {
    let mut g = get_context(m).process(sleep_ms, (60_000,));
    g.set_daemon(true);
    g.start().expect("daemon starts");
    report.send(&g.pid().expect("started")).expect("report");
}

fn start_worker_and_return(m: StartMethod, report: Sender<u32>) {
    let mut g = get_context(m).process(sleep_ms, (300,));
    g.start().expect("worker starts");
    report.send(&g.pid().expect("started")).expect("report");
}

// Ports the daemon rules: a daemon child is terminated when its parent exits; a
// non-daemon child is waited for.
#[test]
fn daemon_children_end_with_their_parent_others_are_joined() {
    let _s = shared();
    let _w = watchdog("daemon_children", 60);
    for m in METHODS {
        let (rx, tx) = pipe_simplex::<u32>().unwrap();
        let mut p = get_context(m).process(start_daemon_and_return, (m, tx));
        p.start().unwrap();
        let daemon = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(
            wait_dead(daemon, 10),
            "{m:?}: daemon {daemon} outlived its parent"
        );

        let (rx, tx) = pipe_simplex::<u32>().unwrap();
        let mut p = get_context(m).process(start_worker_and_return, (m, tx));
        let t = Instant::now();
        p.start().unwrap();
        let worker = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        p.join().unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{m:?}: parent did not wait"
        );
        assert!(is_dead(worker));
    }
}

// PR_SET_PDEATHSIG fires when the *thread* that started a child exits; mproc's children
// must survive that and die only with the process.
#[test]
fn children_survive_the_exit_of_the_thread_that_started_them() {
    let _s = shared();
    let _w = watchdog("thread_exit", 60);
    for m in METHODS {
        let mut p = std::thread::spawn(move || {
            let mut p = get_context(m).process(sleep_ms, (500,));
            p.start().unwrap();
            p
        })
        .join()
        .unwrap();
        sleep_ms(100);
        assert!(
            p.is_alive(),
            "{m:?}: child died with the thread that started it"
        );
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0), "{m:?}");
    }
}

// The parent closes its copies of the handles it passed, so the peer sees EOF as soon
// as the child is done; under Fork, the child closes inherited handles it was not given.
fn hold_nothing_sleep() {
    sleep_ms(3_000);
}

#[test]
fn eof_is_not_held_up_by_children() {
    let _s = shared();
    let _w = watchdog("eof", 60);
    for m in METHODS {
        let (a, b) = mproc::pipe::<u8>().unwrap();
        let mut p = get_context(m).process(hold_nothing_sleep, ());
        p.start().unwrap();
        drop(b);
        let t = Instant::now();
        assert!(matches!(a.recv(), Err(Error::Closed)), "{m:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{m:?}: a child kept the pipe open"
        );
        p.kill().unwrap();
        p.join().unwrap();
    }
}

fn noop() {}

// No leaks: descriptors and zombies are back to where they were after 200 processes.
#[test]
fn no_fd_or_zombie_leak_after_many_processes() {
    let _x = exclusive();
    let _w = watchdog("leaks", 120);
    // Warm up: the fork server and lazily opened files exist before counting.
    for m in METHODS {
        get_context(m).process(noop, ()).start().unwrap();
    }
    let mut warm: Vec<_> = mproc::active_children();
    while !warm.is_empty() {
        sleep_ms(10);
        warm = mproc::active_children();
    }
    let before = fd_count();
    for i in 0..200 {
        let mut p = get_context(METHODS[i % 3]).process(noop, ());
        p.start().unwrap();
        if i % 2 == 0 {
            p.join().unwrap();
        } // the others are dropped unjoined: active_children must reap them
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mproc::active_children().is_empty() && Instant::now() < deadline {
        sleep_ms(10);
    }
    assert!(mproc::active_children().is_empty());
    assert_eq!(fd_count(), before, "descriptors leaked");
    assert!(
        zombie_children().is_empty(),
        "zombies: {:?}",
        zombie_children()
    );
}

fn sum_pair(a: u32, b: usize) -> usize {
    a as usize + b
}

// The contract's example shape: a two-argument fn item with integer literals.
#[test]
fn multi_argument_targets() {
    let _s = shared();
    let _w = watchdog("multi_argument", 30);
    let mut p = Process::new(sum_pair, (1, 10_000_000));
    p.start().unwrap();
    assert_eq!(p.result().unwrap(), 10_000_001);
    #[allow(clippy::too_many_arguments)] // eight is the most a target may take
    fn eight(a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: String) -> String {
        format!("{a}{b}{c}{d}{e}{f}{g}{h}")
    }
    let p = mproc::spawn(eight, (1, 2, 3, 4, 5, 6, 7, "x".to_string())).unwrap();
    assert_eq!(p.result().unwrap(), "1234567x");
}

#[allow(unconditional_recursion)]
fn overflow(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth; 64]);
    overflow(depth + 1) + pad[3]
}

// A child routed before `main` gets what Rust's runtime gives `main`: a stack overflow is
// reported and aborts (SIGABRT), as in the parent, under every start method.
#[test]
fn stack_overflow_aborts_like_in_main() {
    let _s = shared();
    let _w = watchdog("stack_overflow", 60);
    for m in METHODS {
        let mut p = get_context(m).process(overflow, (0,));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-6), "{m:?}");
    }
}

// At normal exit a program terminates its daemon children instead of waiting for them
// (Python's atexit rule): the example starts a daemon that would sleep 1000 s.
#[test]
fn program_exit_terminates_daemons() {
    let _s = shared();
    let _w = watchdog("program_exit", 60);
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("daemon_terminate");
    assert!(
        example.exists(),
        "{} is missing: run the whole `cargo test`",
        example.display()
    );
    let t = Instant::now();
    let out = std::process::Command::new(&example).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the program waited for its daemon"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stopped exitcode=-SIGTERM"), "{text}");
}

// ---- What `ps` and `top` show (the kernel's 15-byte comm; DESIGN part 3) ----

/// What `ps` shows for process `pid`.
fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|e| format!("<{pid} unreadable: {e}>"))
}

/// Says it runs (so its name is set), then waits for EOF.
fn ready_then_wait(ready: Sender<u8>, until: mproc::Receiver<u8>) {
    ready.send(&1).unwrap();
    let _ = until.recv();
}

#[test]
fn children_show_their_name_in_ps_under_every_method() {
    let _s = shared();
    let _w = watchdog("comm of children", 120);
    // A child left with its default name shows the program, as the kernel named it at exec
    // (not `exe`, nor the name of the thread that forked it).
    let program = comm_of(std::process::id());
    for m in METHODS {
        for (name, shown) in [
            (Some("reader-7"), "reader-7"),
            (Some("a-rather-long-process-name"), "a-rather-long-p"),
            (None, program.as_str()),
        ] {
            let (ready_rx, ready_tx) = pipe_simplex::<u8>().unwrap();
            let (until_rx, until_tx) = pipe_simplex::<u8>().unwrap();
            let mut p = get_context(m).process(ready_then_wait, (ready_tx, until_rx));
            if let Some(n) = name {
                p.set_name(n);
            }
            p.start().unwrap();
            ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
            assert_eq!(comm_of(p.pid().unwrap()), shown, "{m:?}, name {name:?}");
            drop(until_tx);
            p.join().unwrap();
        }
    }
}

fn my_pid() -> u32 {
    std::process::id()
}

#[test]
fn pool_workers_show_their_names_in_ps() {
    let _s = shared();
    let _w = watchdog("comm of pool workers", 120);
    // ForkPoolWorker-1, SpawnPoolWorker-1 and ForkServerPoolWorker-1, cut to 15 bytes.
    for (m, shown) in [
        (Fork, "ForkPoolWorker-"),
        (Spawn, "SpawnPoolWorker"),
        (ForkServer, "ForkServerPoolW"),
    ] {
        let pool = mproc::Pool::builder()
            .processes(1)
            .start_method(m)
            .build()
            .unwrap();
        let worker = pool.apply(my_pid, ()).unwrap();
        assert_eq!(comm_of(worker), shown, "{m:?}");
    }
}

#[test]
fn the_fork_server_and_manager_servers_show_their_names_in_ps() {
    let _s = shared();
    let _w = watchdog("comm of servers", 120);
    // This process's fork server exists once a ForkServer child was started.
    let mut p = get_context(ForkServer).process(noop, ());
    p.start().unwrap();
    p.join().unwrap();
    let manager = mproc::Manager::start().unwrap();
    let comms: Vec<String> = child_pids().into_iter().map(comm_of).collect();
    assert!(
        comms.iter().any(|c| c == "mproc-forkserve"), // mproc-forkserver, cut to 15 bytes
        "no child shows as the fork server: {comms:?}"
    );
    assert!(
        comms.iter().any(|c| c.starts_with("SyncManager-")),
        "no child shows as a manager server: {comms:?}"
    );
    manager.shutdown().unwrap();
}

/// Set in the copy of this binary that `panics_print_from_a_process_not_from_a_pool_task`
/// runs with its stderr piped.
const PANIC_OUTPUT_HELPER: &str = "MPROC_TEST_PANIC_OUTPUT";

// Python's Pool hands a task's exception back without printing it; Python's Process prints
// its target's traceback (`Process._bootstrap`). So do a pool task's and a Process's panics.
#[test]
fn panics_print_from_a_process_not_from_a_pool_task() {
    let _s = shared();
    let _w = watchdog("panic output", 120);
    if std::env::var_os(PANIC_OUTPUT_HELPER).is_some() {
        // The helper: stderr is the pipe the test below reads, and nothing captures it.
        for m in METHODS {
            let pool = mproc::Pool::builder()
                .processes(1)
                .start_method(m)
                .build()
                .unwrap();
            let err = pool.apply(panics, (format!("quiet pool panic {m:?}"),));
            assert!(matches!(err, Err(Error::TaskPanicked { .. })), "{err:?}");
            let mut p = get_context(m).process(panics, (format!("loud process panic {m:?}"),));
            p.start().unwrap();
            p.join().unwrap();
        }
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "panics_print_from_a_process_not_from_a_pool_task",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PANIC_OUTPUT_HELPER, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the helper failed: {stderr}");
    for m in METHODS {
        assert!(
            stderr.contains(&format!("loud process panic {m:?}")),
            "a Process's panic is printed ({m:?}): {stderr}"
        );
        assert!(
            !stderr.contains(&format!("quiet pool panic {m:?}")),
            "a pool task's panic is not printed ({m:?}): {stderr}"
        );
    }
}

fn returns_seven() -> u32 {
    7
}

// A forked child must not take the panic hook's lock for writing (installing mproc's hook):
// another thread of the parent may be panicking, holding it for reading, at the fork, and
// the child would wait for that reader for ever. The parent installs the hook before it
// forks. (This hung `tests/inheritance.rs` once, beside a test's deliberate panic.)
#[test]
fn fork_children_start_while_another_thread_panics() {
    let _s = shared();
    let _w = watchdog("fork beside a panic", 120);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let panicker = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 100_000 {
                let _ = std::panic::catch_unwind(|| panic!("deliberate"));
                n += 1;
            }
        })
    };
    let mut hung = Vec::new();
    for i in 0..40 {
        let mut p = get_context(Fork).process(returns_seven, ());
        p.start().unwrap();
        if !p.join_timeout(Duration::from_secs(10)).unwrap() {
            hung.push(i);
            let _ = p.kill();
            let _ = p.join();
            continue;
        }
        assert_eq!(p.result().unwrap(), 7);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    panicker.join().unwrap();
    assert!(hung.is_empty(), "forked children {hung:?} hung at start");
}
