//! This process's name: "MainProcess" at the top, the name its parent gave it below.
//!
//! **Protocol.** `start` writes it once, when the process becomes a child (before its
//! target runs; in a forked child, before anything else runs). Anyone reads it:
//! `current_process`, the names of children (`Process-1:2`), and logging, which tags each
//! record with it. It sits below both `start` and `log` so that neither reaches into the
//! other for it, and so that logging never takes `start`'s state lock.
//!
//! **Fork.** A child made by `fork` inherits this lock in whatever state the parent's
//! threads left it, so `start/fork.rs` holds it across the fork (as it holds its own
//! state): the child then owns it and writes its name through that guard.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Empty means "MainProcess" (a `String` cannot be built in a `static`'s initializer).
static NAME: Mutex<String> = Mutex::new(String::new());

/// Holds the name, to write it (or to keep it consistent across a fork).
pub(crate) fn hold() -> MutexGuard<'static, String> {
    NAME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's name.
pub(crate) fn get() -> String {
    let name = hold();
    if name.is_empty() {
        "MainProcess".to_string()
    } else {
        name.clone()
    }
}
