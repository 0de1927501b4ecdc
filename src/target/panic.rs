//! Catching a target's panic with its message and where it happened.
//!
//! The location ("src/main.rs:12:5") is known only to the panic hook, not to
//! `catch_unwind`, so mproc chains a hook of its own in front of whatever hook is installed
//! (once per process: on the first catch, or in a parent about to fork). The hook runs on
//! the panicking thread; it writes the location into that thread's slot, and [`catch`] on
//! the same thread takes it after the unwind. Nothing crosses threads, so a thread-local
//! needs no ordering.
//!
//! **Fork.** Installing takes the hook's lock for writing, and a panicking thread holds it
//! for reading while it prints. A child forked while another thread of its parent panicked
//! would wait for that reader for ever (the hang this rule fixed: a test's deliberate panic
//! beside a `Fork` start). So a parent installs the hook before it forks (`target::warm`),
//! and the forked child finds it installed; a panic in the child only reads the lock, which
//! a reader in the parent does not block.
//!
//! **Printing.** A [`catch`] says whether the panic is reported as usual: a `Process`'s
//! panic is (Python's `Process._bootstrap` prints a child's traceback), a pool task's is not
//! (Python's `Pool` only hands the exception back). The hook skips the previous hook on a
//! quiet thread. A user's own `set_hook` in the child replaces this one: panics then print
//! as that hook decides and come back without a location.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A caught panic, as it travels back to the caller.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Panic {
    /// The panic's payload, as text.
    pub(crate) message: String,
    /// Where it happened: `file:line:column`.
    pub(crate) location: Option<String>,
}

impl From<Panic> for Error {
    fn from(p: Panic) -> Error {
        Error::TaskPanicked {
            message: p.message,
            location: p.location,
        }
    }
}

thread_local! {
    /// Whether a panic on this thread now is caught quietly.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// The location of this thread's latest panic, until a `catch` takes it.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`, catching a panic. `quiet`: the panic is not printed (the hook that would print
/// it is skipped).
pub(crate) fn catch<R>(quiet: bool, f: impl FnOnce() -> R) -> Result<R, Panic> {
    install_hook();
    // Nested catches (a pool worker is a Process target) each restore the outer setting.
    let outer = QUIET.with(|q| q.replace(quiet));
    LOCATION.with(|l| l.borrow_mut().take());
    let ran = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(outer));
    ran.map_err(|payload| Panic {
        message: super::panic_message(payload.as_ref()),
        location: LOCATION.with(|l| l.borrow_mut().take()),
    })
}

/// Installs the hook, once per process (and never from a panicking thread, where
/// `set_hook` itself would panic: a later call installs it).
pub(crate) fn install_hook() {
    static ONCE: Once = Once::new();
    if ONCE.is_completed() || std::thread::panicking() {
        return;
    }
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(ToString::to_string);
            // `try_with`: a panic in a thread-local's destructor finds its slots gone.
            let _ = LOCATION.try_with(|l| {
                if let Ok(mut l) = l.try_borrow_mut() {
                    *l = location;
                }
            });
            if !QUIET.try_with(Cell::get).unwrap_or(false) {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::catch;

    #[test]
    fn a_caught_panic_has_its_message_and_location() {
        let line = line!() + 1;
        let p = catch(true, || -> u32 { panic!("boom {}", 7) }).unwrap_err();
        assert_eq!(p.message, "boom 7");
        let loc = p.location.expect("the hook saw the location");
        assert!(
            loc.starts_with(&format!("src/target/panic.rs:{line}:")),
            "{loc}"
        );
        assert_eq!(catch(true, || 5).unwrap(), 5);
    }

    #[test]
    fn a_nested_catch_restores_the_outer_setting_and_keeps_its_own_location() {
        let outer = catch(true, || {
            let inner = catch(false, || -> () { panic!("inner") }).unwrap_err();
            assert!(
                super::QUIET.with(std::cell::Cell::get),
                "outer quiet restored"
            );
            inner
        })
        .unwrap();
        assert_eq!(outer.message, "inner");
        assert!(outer.location.is_some());
    }
}
