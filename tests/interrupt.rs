//! Ctrl-C: SIGINT goes to the whole process group. Pool workers, the fork server and
//! manager servers ignore it, so the parent's own handling decides: by default the parent dies and every child
//! follows at once; a parent that handles SIGINT keeps its pool.
//!
//! Each case runs this binary again as a program of its own, in a new process group, and
//! sends SIGINT to that group, as a terminal does on Ctrl-C.

// The handled case installs a SIGINT handler, the test signals a process group: libc.
#![allow(unsafe_code)]

mod util;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mproc::{Pool, StartMethod};
use util::{METHODS, shared, watchdog};

const PROGRAM: &str = "MPROC_TEST_INTERRUPT_PROGRAM";

fn my_pid(_: u32) -> u32 {
    std::process::id()
}

/// The pool's worker pids: both workers, once both have run a task (a worker still
/// starting up, before it ignores SIGINT, may die of a Ctrl-C; the pool then replaces it).
fn worker_pids(pool: &Pool) -> Vec<u32> {
    let mut pids = Vec::new();
    for _ in 0..200 {
        pids.extend(pool.map(my_pid, 0..16).unwrap());
        pids.sort_unstable();
        pids.dedup();
        if pids.len() >= 2 {
            break;
        }
    }
    pids
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The program: a pool of 2 and a manager; prints `ready`; then either dies of Ctrl-C (the default), or,
/// with a handler, waits for it, uses the same pool again, prints `survived <pids>`, and
/// exits when its stdin closes.
#[test]
#[ignore = "run by the tests below as a program of its own"]
fn interrupt_program() {
    let Ok(spec) = std::env::var(PROGRAM) else {
        return;
    };
    let (method, handled) = spec.split_once(',').unwrap();
    let method = match method {
        "Fork" => StartMethod::Fork,
        "Spawn" => StartMethod::Spawn,
        _ => StartMethod::ForkServer,
    };
    if handled == "handled" {
        // SAFETY: installing a handler that only stores to an atomic.
        unsafe {
            libc::signal(
                libc::SIGINT,
                on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    let pool = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .unwrap();
    let manager = mproc::Manager::start().unwrap();
    let before = worker_pids(&pool);
    println!("ready {before:?}");
    std::io::stdout().flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !INTERRUPTED.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(INTERRUPTED.load(Ordering::SeqCst), "no SIGINT came");
    let after = worker_pids(&pool);
    let list = manager.list::<u32>().unwrap();
    list.append(&7).unwrap();
    let survived = before.iter().all(|p| after.contains(p)) && list.to_vec().unwrap() == [7];
    println!("survived {survived} {after:?}");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_line(&mut String::new());
}

/// The live (not zombie) processes of process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state, ppid, pgrp
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

fn start_program(
    method: StartMethod,
    handled: bool,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "interrupt_program",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            PROGRAM,
            format!("{method:?},{}", if handled { "handled" } else { "default" }),
        )
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// Reads lines until one holds `prefix` (libtest may print its own text before it on the
/// same line); returns the line from there.
fn line_starting(out: &mut BufReader<std::process::ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the program ended before '{prefix}'"
        );
        if let Some(i) = line.find(prefix) {
            return line[i..].to_string();
        }
    }
}

fn sigint_group(pgid: u32) {
    // SAFETY: kill with a negative pid signals that process group; no memory is involved.
    assert_eq!(unsafe { libc::kill(-(pgid as i32), libc::SIGINT) }, 0);
}

// The default: Ctrl-C kills the parent, and every child (the workers and the fork server,
// which ignore SIGINT themselves) follows at once.
#[test]
fn ctrl_c_kills_the_parent_and_every_child_follows() {
    let _s = shared();
    let _w = watchdog("interrupt default", 90);
    for m in METHODS {
        let (mut child, mut out) = start_program(m, false);
        let pgid = child.id();
        line_starting(&mut out, "ready");
        let members = group_members(pgid);
        assert!(
            members.len() >= 4,
            "{m:?}: the program, its 2 workers and its manager: {members:?}"
        );
        sigint_group(pgid);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGINT), "{m:?}: {status:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !group_members(pgid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            group_members(pgid),
            Vec::<u32>::new(),
            "{m:?}: children outlived it"
        );
    }
}

// A parent that handles SIGINT keeps its pool: the same workers (and fork server) go on.
#[test]
fn a_parent_that_handles_ctrl_c_keeps_its_pool() {
    let _s = shared();
    let _w = watchdog("interrupt handled", 90);
    for m in METHODS {
        let (mut child, mut out) = start_program(m, true);
        let pgid = child.id();
        line_starting(&mut out, "ready");
        let members = group_members(pgid);
        let described: Vec<String> = members
            .iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
            .collect();
        sigint_group(pgid);
        let line = line_starting(&mut out, "survived");
        assert!(
            line.starts_with("survived true"),
            "{m:?}: workers were replaced: {line}"
        );
        let gone: Vec<u32> = members
            .iter()
            .copied()
            .filter(|p| !group_members(pgid).contains(p))
            .collect();
        assert!(
            gone.is_empty(),
            "{m:?}: processes died of Ctrl-C: {gone:?} among {described:#?}"
        );
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        assert!(status.success(), "{m:?}: {status:?}");
    }
}
