//! Who am I, and is that process still alive: the identity an owner-checked lock stores.
//!
//! [`current`] is on the fast path of every queue operation, so the pid is cached, tagged
//! with [`robust::fork_generation`](super::robust::fork_generation), which changes in the
//! child of every fork (libc's, through `pthread_atfork`, and the fork server's raw
//! `clone`): a child then asks the kernel again.
//!
//! [`is_alive`] is the slow-path probe a waiter runs when a lock has been held for a long
//! time: `kill(pid, 0)` says whether the pid exists, and `/proc/<pid>/stat` says whether it
//! is only a zombie (killed, not yet reaped by its parent), which holds nothing any more.
//! Pids are recycled, so a probe can mistake a new process for a dead owner's ghost; Linux
//! hands out pids in increasing order before wrapping, which makes that rare, not impossible.

use std::sync::atomic::{AtomicU64, Ordering};

use rustix::io::Errno;
use rustix::process::Pid;

use super::robust;

/// `(fork generation << 32) | pid`, or `NOT_CACHED`.
static PID: AtomicU64 = AtomicU64::new(NOT_CACHED);
const NOT_CACHED: u64 = 0;

/// This process's id (never 0).
#[inline]
pub(crate) fn current() -> u32 {
    let cached = PID.load(Ordering::Relaxed);
    if cached != NOT_CACHED && (cached >> 32) as u32 == robust::fork_generation() {
        return cached as u32;
    }
    current_slow()
}

#[cold]
fn current_slow() -> u32 {
    // Installed before the first read of the generation, so no fork goes unnoticed after.
    robust::watch_forks();
    let generation = robust::fork_generation();
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    PID.store(
        (u64::from(generation) << 32) | u64::from(pid),
        Ordering::Relaxed,
    );
    pid
}

/// Whether process `pid` still exists and is not a zombie. Unknown answers (a permission
/// error, an unreadable `/proc`) count as alive: the caller then keeps waiting rather than
/// steal a lock from a live holder.
pub(crate) fn is_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    // Any other error (EPERM: another user's process) means it exists.
    if let Err(Errno::SRCH) = rustix::process::test_kill_process(p) {
        return false;
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
    use std::time::{Duration, Instant};

    #[test]
    fn self_is_alive_and_cached() {
        assert_eq!(current(), std::process::id());
        assert_eq!(current(), std::process::id());
        assert!(is_alive(current()));
    }

    #[test]
    fn a_zombie_is_dead_and_a_reaped_child_too() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: once it exits it is a zombie, which counts as dead.
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_alive(pid) {
            assert!(Instant::now() < deadline, "child never exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }
}
