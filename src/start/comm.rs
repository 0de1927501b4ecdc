//! What a process started by mproc shows in `ps`/`top` (the kernel's 15-byte `comm`).
//!
//! Without this a spawned child and the fork server show `exe` (they are executed through
//! `/proc/self/exe`), and a forked child shows the name of whichever thread forked it.
//!
//! **Protocol.** The parent decides, in the bootstrap, what its child shows: the name the
//! user gave it (`Process::set_name`, which is how pool workers become `ForkPoolWorker-N`
//! and manager servers `SyncManager-N`), or else the *program's* name. The program's name
//! is read once, from the main thread of the process at the top of the tree (what the
//! kernel gave it at exec), and handed down in every bootstrap, so a child of a named
//! child shows the program again, not its parent's name. The child sets its `comm` first
//! thing in `child::run`, on its only thread, before its target runs. The fork server names
//! itself `mproc-forkserver` when it starts.

use std::sync::OnceLock;

/// The fork server's name.
pub(crate) const FORKSERVER: &str = "mproc-forkserver";

static PROGRAM: OnceLock<String> = OnceLock::new();

/// The program's name: this process's own `comm` at the top of the tree, the inherited one
/// in a child (empty if it could not be read).
pub(crate) fn program() -> String {
    PROGRAM
        .get_or_init(|| crate::sys::prctl::process_comm().unwrap_or_default())
        .clone()
}

/// In a new child: the program's name, as its parent knew it. (A forked child already has
/// it: the parent read it to build the bootstrap.)
pub(crate) fn inherit(program: &str) {
    let _ = PROGRAM.set(program.to_string());
}

/// Shows `name` in `ps`/`top` for this (single-threaded) process. Best effort: a name that
/// cannot be set leaves the old one, which is cosmetic.
pub(crate) fn show(name: &str) {
    if !name.is_empty() {
        let _ = crate::sys::prctl::set_comm(name);
    }
}
