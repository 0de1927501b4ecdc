//! Who am I, and is that process still alive: the identity an owner-checked lock stores.
//!
//! [`current`] is on the fast path of every queue operation, so the pid is cached; a
//! `pthread_atfork` child handler clears the cache, because a forked child is a new process
//! with the same memory. (mproc's own `fork` goes through libc's `fork`, which runs the
//! handlers; a raw `clone` would not.)
//!
//! [`is_alive`] is the slow-path probe a waiter runs when a lock has been held for a long
//! time: `kill(pid, 0)` says whether the pid exists, and `/proc/<pid>/stat` says whether it
//! is only a zombie (killed, not yet reaped by its parent), which holds nothing any more.
//! Pids are recycled, so a probe can mistake a new process for a dead owner's ghost; Linux
//! hands out pids in increasing order before wrapping, which makes that rare, not impossible.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rustix::io::Errno;
use rustix::process::Pid;

/// The cached pid of this process; `NOT_CACHED` after a fork, until the next call.
static PID: AtomicU32 = AtomicU32::new(NOT_CACHED);
const NOT_CACHED: u32 = 0;
static ATFORK: Once = Once::new();
/// Set if the fork handler could not be registered: then the pid is never cached.
static UNCACHEABLE: AtomicBool = AtomicBool::new(false);

extern "C" fn forget_pid_in_child() {
    // Async-signal-safe: one atomic store.
    PID.store(NOT_CACHED, Ordering::Relaxed);
}

/// This process's id (never 0).
#[inline]
pub(crate) fn current() -> u32 {
    match PID.load(Ordering::Relaxed) {
        NOT_CACHED => current_slow(),
        pid => pid,
    }
}

#[cold]
fn current_slow() -> u32 {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic, which is
        // async-signal-safe and so may run in the child of a multithreaded fork.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_pid_in_child)) };
        // Failure is ENOMEM only; without the handler a forked child would keep its
        // parent's pid, so fall back to asking every time.
        if rc != 0 {
            UNCACHEABLE.store(true, Ordering::Relaxed);
        }
    });
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    if !UNCACHEABLE.load(Ordering::Relaxed) {
        PID.store(pid, Ordering::Relaxed);
    }
    pid
}

/// Whether process `pid` still exists and is not a zombie. Unknown answers (a permission
/// error, an unreadable `/proc`) count as alive: the caller then keeps waiting rather than
/// steal a lock from a live holder.
pub(crate) fn is_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    match rustix::process::test_kill_process(p) {
        Err(Errno::SRCH) => return false,
        Ok(()) | Err(_) => {}
    }
    match std::fs::read(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name, which is in parentheses
        // and may itself contain ") ".
        Ok(stat) => match stat.iter().rposition(|&b| b == b')') {
            Some(i) => !matches!(stat.get(i + 2), Some(b'Z' | b'X')),
            None => true,
        },
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_is_alive_and_cached() {
        assert_eq!(current(), std::process::id());
        assert_eq!(current(), std::process::id());
        assert!(is_alive(current()));
    }

    #[test]
    fn a_reaped_child_is_dead_and_a_zombie_too() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not yet reaped: a zombie once it exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_alive(pid) {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }
}
