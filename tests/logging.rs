//! `log` records from children reach the parent's logger (DESIGN part 2, logging), and
//! `log_to_stderr` prints Python's `[LEVEL/ProcessName] message`.
//!
//! This binary installs a capturing logger at `Debug`. Under `Fork` a child keeps a copy of
//! its parent's logger (the `log` crate sets one per process), so the `Fork` case runs this
//! binary again as a small program that uses `log_to_stderr`, and reads its stderr.

mod util;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use mproc::{Pool, Process, StartMethod};
use util::{ForkServer, Spawn, shared, watchdog};

#[derive(Clone, Debug)]
struct Captured {
    level: Level,
    target: String,
    message: String,
    process_name: Option<String>,
    pid: Option<u64>,
    job: Option<String>,
}

struct Capture(Mutex<Vec<Captured>>);

impl Log for Capture {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &Record<'_>) {
        let kv = |k: &str| r.key_values().get(log::kv::Key::from_str(k));
        self.0.lock().unwrap().push(Captured {
            level: r.level(),
            target: r.target().to_string(),
            message: r.args().to_string(),
            process_name: kv("process_name").map(|v| v.to_string()),
            pid: kv("pid").and_then(|v| v.to_u64()),
            job: kv("job").map(|v| v.to_string()),
        });
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os(PROGRAM).is_none() {
            log::set_logger(&CAPTURE).unwrap();
            log::set_max_level(LevelFilter::Debug);
        }
    });
}

/// The captured records whose message starts with `tag`.
fn records(tag: &str) -> Vec<Captured> {
    CAPTURE
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.message.starts_with(tag))
        .cloned()
        .collect()
}

/// Waits up to 20 s for `n` records tagged `tag`.
fn wait_for(tag: &str, n: usize) -> Vec<Captured> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = records(tag);
        if r.len() >= n || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Logs `n` numbered records at info, one at debug, one at trace; then, if `exit`, exits
/// the process at once.
fn chatty(tag: String, n: u32, exit: bool) {
    for i in 0..n {
        log::info!(job = i; "{tag} {i}");
    }
    log::debug!("{tag} debug");
    log::trace!("{tag} trace");
    if exit {
        std::process::exit(0);
    }
}

fn check_child(method: StartMethod, exit: bool) {
    install();
    let tag = format!("child-{method:?}-{exit}");
    let mut p = Process::new(chatty, (tag.clone(), 200, exit));
    p.set_start_method(method);
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    // Delivered by the time join returns: no waiting here.
    let got = records(&tag);
    assert_eq!(
        got.len(),
        201,
        "{method:?}: 200 infos and a debug, no trace: {got:?}"
    );
    for (i, r) in got.iter().take(200).enumerate() {
        assert_eq!(r.message, format!("{tag} {i}"), "in order");
        assert_eq!(r.level, Level::Info);
        assert_eq!(
            r.target, "logging",
            "the child's own target (this test crate)"
        );
        assert_eq!(r.process_name.as_deref(), Some(p.name()));
        assert_eq!(r.pid, p.pid().map(u64::from));
        assert_eq!(
            r.job,
            Some(i.to_string()),
            "the child's key-values travel too"
        );
    }
    assert_eq!(got[200].level, Level::Debug);
}

#[test]
fn spawn_children_forward_records_in_order_tagged() {
    let _s = shared();
    let _w = watchdog("log spawn", 60);
    check_child(Spawn, false);
}

#[test]
fn forkserver_children_forward_records_in_order_tagged() {
    let _s = shared();
    let _w = watchdog("log forkserver", 60);
    check_child(ForkServer, false);
}

// A child that logs and exits at once (no clean-up of its own) loses nothing.
#[test]
fn nothing_is_lost_when_a_child_exits_right_after_logging() {
    let _s = shared();
    let _w = watchdog("log exit", 60);
    check_child(Spawn, true);
    check_child(ForkServer, true);
}

/// Starts a grandchild that logs (by `Fork` if `fork`, else `Spawn`); its name and pid.
fn grandparent(tag: String, fork: bool) -> (String, u32) {
    let mut p = Process::new(chatty, (tag, 3, false));
    p.set_start_method(if fork { StartMethod::Fork } else { Spawn });
    p.start().unwrap();
    p.join().unwrap();
    (p.name().to_string(), p.pid().unwrap())
}

// A grandchild's records go straight to the top, under the grandchild's name and pid,
// whether its parent (a forwarding child) spawned or forked it.
#[test]
fn grandchildren_forward_to_the_top() {
    let _s = shared();
    let _w = watchdog("log grandchild", 60);
    install();
    for fork in [false, true] {
        let tag = format!("grandchild-fork-{fork}");
        let mut p = Process::new(grandparent, (tag.clone(), fork));
        p.set_start_method(ForkServer);
        p.start().unwrap();
        let (name, pid) = p.result().unwrap();
        let got = wait_for(&tag, 4);
        assert_eq!(got.len(), 4, "fork {fork}: {got:?}");
        assert!(name.contains(':'), "{name}");
        for r in &got {
            assert_eq!(
                r.process_name.as_deref(),
                Some(&*name),
                "fork {fork}: {r:?}"
            );
            assert_eq!(r.pid, Some(u64::from(pid)), "fork {fork}: {r:?}");
        }
    }
}

fn pool_task(x: u32) -> u32 {
    log::info!("pooled {x}");
    x * 2
}

#[test]
fn pool_workers_forward_records() {
    let _s = shared();
    let _w = watchdog("log pool", 90);
    install();
    for method in [Spawn, ForkServer] {
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .build()
            .unwrap();
        let before = records("pooled").len();
        assert_eq!(
            pool.map(pool_task, 0..20u32).unwrap(),
            (0..20).map(|x| x * 2).collect::<Vec<_>>()
        );
        let got = wait_for("pooled", before + 20);
        assert_eq!(got.len(), before + 20, "{method:?}");
        for r in &got[before..] {
            let name = r.process_name.as_deref().unwrap_or("");
            assert!(name.contains("PoolWorker"), "{name}");
            assert!(r.pid.is_some());
        }
        drop(pool);
    }
}

// ---------------------------------------------------------------------------------------
// log_to_stderr, under every start method, in a program of its own.

const PROGRAM: &str = "MPROC_TEST_LOG_PROGRAM";

fn stderr_child(n: u32) {
    for i in 0..n {
        log::info!("line {i}");
    }
    log::debug!("hidden");
}

/// The program: `log_to_stderr(Info)`, a warning, and a child (of the method named in
/// the environment) that logs 50 lines and a debug line, then a second call that changes
/// the level.
#[test]
#[ignore = "run by log_to_stderr_prints_python_format as a program of its own"]
fn log_to_stderr_program() {
    let Ok(method) = std::env::var(PROGRAM) else {
        return;
    };
    let method = match method.as_str() {
        "fork" => StartMethod::Fork,
        "spawn" => StartMethod::Spawn,
        _ => StartMethod::ForkServer,
    };
    mproc::log_to_stderr(LevelFilter::Info).unwrap();
    mproc::log_to_stderr(LevelFilter::Info).unwrap();
    log::warn!("doomed");
    let mut p = Process::new(stderr_child, (50,));
    p.set_start_method(method);
    p.start().unwrap();
    p.join().unwrap();
    log::debug!("hidden too");
}

#[test]
fn log_to_stderr_prints_python_format() {
    let _s = shared();
    let _w = watchdog("log_to_stderr", 120);
    install();
    assert!(
        matches!(
            mproc::log_to_stderr(LevelFilter::Info),
            Err(mproc::Error::LoggerAlreadySet)
        ),
        "another logger is installed in this binary"
    );
    for method in ["fork", "spawn", "forkserver"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "log_to_stderr_program",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PROGRAM, method)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{method}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(
            lines.first(),
            Some(&"[WARNING/MainProcess] doomed"),
            "{method}: {err}"
        );
        let child: Vec<String> = (0..50)
            .map(|i| format!("[INFO/Process-1] line {i}"))
            .collect();
        assert_eq!(
            lines[1..],
            child[..],
            "{method}: in order, none lost: {err}"
        );
        assert!(!err.contains("hidden"), "{method}: the level holds: {err}");
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Echo;

impl mproc::Managed for Echo {
    type Request = u32;
    type Response = u32;
    fn handle(&mut self, x: u32) -> u32 {
        log::info!("managed {x}");
        x
    }
}

// A manager's server is a child like any other: what it logs reaches this logger.
#[test]
fn manager_servers_forward_records() {
    let _s = shared();
    let _w = watchdog("log manager", 60);
    install();
    let manager = mproc::Manager::start().unwrap();
    let echo = manager.create(Echo).unwrap();
    for x in 0..3 {
        assert_eq!(echo.call(x).unwrap(), x);
    }
    let got = wait_for("managed", 3);
    let messages: Vec<&str> = got.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(messages, ["managed 0", "managed 1", "managed 2"]);
    assert!(
        got.iter()
            .all(|r| r.pid.is_some() && r.process_name.is_some())
    );
    manager.shutdown().unwrap();
}
