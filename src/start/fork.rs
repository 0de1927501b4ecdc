//! `Fork`: the child is a copy of the parent at the moment of `start`.
//!
//! The child inherits every descriptor. It closes those of mproc handles (the registry
//! lists them) — its copy of a pipe end the parent holds must not keep the peer from seeing
//! EOF — and leaves the user's other descriptors alone. The arguments' descriptors are the
//! duplicates the encoder made, which the child owns in its copy of memory.

// Forking is this file's purpose; the one `unsafe` call is the fork itself.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Bootstrap, Launched, child, launched, state};
use crate::codec::{self, HandleFd};
use crate::error::Result;
use crate::sys;
use crate::sys::process::Forked;

pub(super) fn launch(boot: &Bootstrap, fds: Vec<HandleFd>) -> Result<Launched> {
    let threaded = sys::pid::thread_count() > 1;
    if threaded {
        warn_once();
    }
    // Read before the fork, so the child resolves its entry without touching `/proc`; and
    // the panic hook installed, which the child must not do (`target/panic.rs`).
    crate::target::warm()?;
    let (parent_end, child_end) = sys::fd::socketpair()?;
    let parent_pid = sys::pid::current();
    let mut st = state();
    let mut registry = codec::registry();
    let mut name = crate::name::hold();
    // SAFETY: the three mproc locks are held across the call, so the child finds them
    // consistent and held by its own thread; what else a multithreaded parent's child may touch is the
    // documented hazard of `Fork` (warned about above).
    match unsafe { sys::process::fork() }? {
        Forked::Child => {
            let keep: Vec<std::os::fd::RawFd> = fds
                .iter()
                .map(|f| std::os::fd::AsRawFd::as_raw_fd(&f.as_fd()))
                .collect();
            registry.close_inherited_except(&keep);
            drop(registry);
            // The arguments' descriptors, now the child's own.
            let fds: Vec<OwnedFd> = fds
                .into_iter()
                .filter_map(|f| f.into_owned().ok())
                .collect();
            drop(parent_end);
            st.become_child(boot, &mut name);
            drop(name);
            drop(st);
            if threaded {
                // Another thread may have held stdout's lock at the fork: flushing it at
                // exit could hang the child. Lines are flushed as printed anyway.
                child::skip_flush_at_exit();
            }
            child::run(parent_pid, boot, fds, child_end)
        }
        Forked::Parent(pid) => {
            drop(name);
            drop(registry);
            drop(st);
            drop(child_end);
            drop(fds);
            launched(pid, parent_end)
        }
    }
}

/// Python 3.12+ warns when forking a multithreaded process; so do we, once.
fn warn_once() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "mproc: warning: this process is multithreaded; the Fork start method may \
             deadlock the child if another thread holds a lock (use ForkServer or Spawn)"
        );
    }
}
