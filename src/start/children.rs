//! A process's children: their handles, reaping, and what happens to them at exit.
//!
//! A started child is a [`ChildHandle`] shared by its `Process` (or pool worker) and the
//! process-wide list in [`state`](super::state). Whoever sees it exit first (a `join`,
//! `active_children`, the next `start`) reaps it through its pidfd and records the exit
//! code for the others. The list is what the exit hook walks: at normal exit, daemon
//! children are terminated and the others joined, as in Python. Abnormal exit (SIGKILL)
//! is covered by the children's parent-death watch instead.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Launched, state};
use crate::codec::HandleFd;
use crate::error::Result;
use crate::sys;

/// A started child, shared by its `Process` and the list of children.
#[derive(Debug)]
pub(crate) struct ChildHandle {
    pid: u32,
    name: String,
    daemon: bool,
    pidfd: HandleFd,
    exitcode: Mutex<Option<i32>>,
    /// Its peak resident bytes, recorded when it is reaped.
    peak_rss: AtomicU64,
}

impl ChildHandle {
    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The exit code, reaping the child if it has exited.
    pub(crate) fn poll(&self) -> Result<Option<i32>> {
        let mut code = self.exitcode.lock().unwrap_or_else(PoisonError::into_inner);
        if code.is_none() {
            if let Some((c, peak)) = sys::process::try_reap_with_usage(self.pidfd.as_fd())? {
                self.peak_rss.store(peak, Ordering::Relaxed);
                *code = Some(c);
            }
        }
        Ok(*code)
    }

    /// Its peak resident memory in bytes (`ru_maxrss`), once reaped; 0 before.
    pub(crate) fn peak_rss(&self) -> u64 {
        // Written before the exit code under the same lock: whoever saw the code sees it.
        self.peak_rss.load(Ordering::Relaxed)
    }

    /// The exit code already recorded, without asking the kernel.
    pub(crate) fn recorded_exitcode(&self) -> Option<i32> {
        *self.exitcode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits up to `timeout` (forever if `None`) for the child to exit.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<Option<i32>> {
        if let Some(code) = self.poll()? {
            return Ok(Some(code));
        }
        sys::fd::poll_readable(self.pidfd.as_fd(), timeout)?;
        self.poll()
    }

    /// The pidfd (readable once the child has exited).
    pub(crate) fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The exit code if the child has exited (reaping it), without waiting.
    pub(crate) fn exitcode_now(&self) -> Option<i32> {
        self.poll().ok().flatten()
    }

    /// Sends `sig` unless the child has already exited.
    pub(crate) fn signal(&self, sig: i32) -> Result<()> {
        if self.poll()?.is_some() {
            return Ok(());
        }
        Ok(sys::process::pidfd_signal(self.pidfd.as_fd(), sig)?)
    }
}

/// Records a launched child in the list (so the exit hook waits for it) and returns its
/// handle; the result socket goes back to the caller.
pub(crate) fn adopt(launched: Launched, name: &str, daemon: bool) -> (Arc<ChildHandle>, HandleFd) {
    let child = Arc::new(ChildHandle {
        pid: launched.pid,
        name: name.to_string(),
        daemon,
        pidfd: launched.pidfd,
        exitcode: Mutex::new(None),
        peak_rss: AtomicU64::new(0),
    });
    state().children.push(Arc::clone(&child));
    install_exit_hook();
    (child, launched.result)
}

/// Drops `child` from the list (it has been reaped).
pub(crate) fn forget(child: &Arc<ChildHandle>) {
    state().children.retain(|c| !Arc::ptr_eq(c, child));
}

/// The children still listed, after reaping those that finished.
pub(crate) fn running() -> Vec<Arc<ChildHandle>> {
    reap_finished();
    state().children.clone()
}

/// Reaps every finished child of this process and drops it from the list.
pub(crate) fn reap_finished() {
    let children: Vec<Arc<ChildHandle>> = state().children.clone();
    let done: Vec<u32> = children
        .iter()
        .filter(|c| matches!(c.poll(), Ok(Some(_)) | Err(_)))
        .map(|c| c.pid)
        .collect();
    if !done.is_empty() {
        state().children.retain(|c| !done.contains(&c.pid));
    }
}

/// What a child does before it exits, and what the exit hook does in any process: terminate
/// daemon children, then join the rest.
pub(crate) fn finish_children() {
    let children: Vec<Arc<ChildHandle>> = state().children.clone();
    for c in children.iter().filter(|c| c.daemon) {
        let _ = c.signal(sys::process::SIGTERM);
    }
    for c in &children {
        if c.daemon {
            // A daemon that ignores SIGTERM gets SIGKILL after a grace period.
            if matches!(c.wait(Some(Duration::from_secs(1))), Ok(None)) {
                let _ = c.signal(sys::process::SIGKILL);
            }
        }
        let _ = c.wait(None);
    }
    state().children.clear();
    // Their records are all queued now: deliver them before this process exits.
    crate::log::flush();
}

extern "C" fn exit_hook() {
    finish_children();
}

/// Registers the exit hook once per process image (a forked child inherits the
/// registration, and the flag with it).
pub(crate) fn install_exit_hook() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if !INSTALLED.swap(true, Ordering::AcqRel) {
        sys::process::at_exit(exit_hook);
    }
}
