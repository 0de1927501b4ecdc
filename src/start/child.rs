//! Life inside a child: run the entry, report, clean up, exit.
//!
//! Exit protocol (Python's): after the target returns, the child joins its non-daemon
//! children, terminates its daemon children, flushes stdout and stderr, and `_exit`s with 0,
//! or 1 if the target panicked. A target that calls `exit(N)` exits with N through the same
//! clean-up (an atexit hook).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Bootstrap, ENV_CHILD, state};
use crate::codec::{self, HandleFd};
use crate::connection::framing;
use crate::sys;

/// Runs `boot`'s entry in this (already set-up) child and exits.
pub(super) fn run(parent_pid: u32, boot: &Bootstrap, fds: Vec<OwnedFd>, result: OwnedFd) -> ! {
    super::comm::show(&boot.comm);
    let _ = sys::process::watch_parent(parent_pid);
    super::children::install_exit_hook();
    // Registered, so a grandchild made by `fork` closes its copy and the parent sees EOF.
    let result = HandleFd::new(result);
    let fds = crate::log::enter_child(boot.log, fds);
    // Isolation last, after mproc's own set-up, and before the target.
    if let Some(iso) = &boot.isolation {
        if let Err(m) = crate::isolation::child::enter_process(iso, result.as_fd()) {
            let message = format!("isolation failed: {m}");
            if let Ok(frame) = crate::isolation::child::failed_outcome(&message) {
                let _ = sys::fd::send_all(result.as_fd(), &frame);
            }
            drop(result);
            finish(1);
        }
    }
    let code = crate::target::run_entry(
        boot.entry,
        boot.fingerprint,
        &boot.args,
        fds,
        result.as_fd(),
    )
    .unwrap_or(1);
    drop(result);
    finish(code)
}

static FLUSH_AT_EXIT: AtomicBool = AtomicBool::new(true);

/// In a child forked from a multithreaded parent: do not touch stdout's lock at exit.
pub(super) fn skip_flush_at_exit() {
    FLUSH_AT_EXIT.store(false, Ordering::Relaxed);
}

/// Ends a child: its children first, then the process.
pub(crate) fn finish(code: i32) -> ! {
    super::children::finish_children();
    if FLUSH_AT_EXIT.load(Ordering::Relaxed) {
        let _ = std::io::stdout().flush();
    }
    sys::process::exit_now(code)
}

/// Entry of a spawned child, from the constructor; never returns.
pub(super) fn run_spawned(route: &str) -> ! {
    let (sock, parent) = super::enter_routed(route);
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    if framing::read_frame(sock.as_fd(), &mut buf, &mut fds).is_err() {
        sys::process::exit_now(72);
    }
    let Ok(boot) = codec::decode_plain::<Bootstrap>(&buf) else {
        sys::process::exit_now(73)
    };
    let same = boot.fingerprint == crate::target::fingerprint();
    if framing::write_frame(sock.as_fd(), &[u8::from(same)], &[]).is_err() || !same {
        sys::process::exit_now(1);
    }
    state().become_child(&boot, &mut crate::name::hold());
    run(parent, &boot, fds, sock)
}

/// Routes spawned children and fork servers before `main`, so users need no guard.
#[ctor::ctor(unsafe)]
fn route_before_main() {
    super::route();
}

/// Keeps the constructor's object linked in: the linker drops unreferenced archive
/// members, and with them the `.init_array` entry.
pub(crate) fn keep_route_linked() {
    std::hint::black_box(route_before_main as fn());
    std::hint::black_box(ENV_CHILD);
}
