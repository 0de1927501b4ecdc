//! Which start method a process uses, and which executable `Spawn` and `ForkServer` run.
//!
//! Two process-wide settings, each written by the user (`set_start_method`,
//! `set_executable`) and read by `start` whenever a child is made. A child's method is
//! also written once by `start`, from its bootstrap, before the child's target runs (so
//! nothing in the child reads it earlier).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a child process is started (Python's `'fork'`, `'spawn'`, `'forkserver'`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum StartMethod {
    /// `fork()` the current process: fastest; the child starts with a copy of the parent's
    /// memory, and inherits every descriptor as `fork()` gives them (mproc closes only its
    /// own handles the child was not given). Unsafe to use from a multithreaded parent in
    /// general (a lock held by another thread stays held forever in the child); mproc warns
    /// once when that happens.
    Fork,
    /// Re-execute the current executable and run the target in the fresh process. The
    /// child holds only stdio and the descriptors mproc passes on purpose.
    Spawn,
    /// Fork each child from a single-threaded server process started on first use:
    /// clean state at fork speed. The server and its children hold only stdio and the
    /// descriptors mproc passes on purpose. The default.
    #[default]
    ForkServer,
}

impl StartMethod {
    /// Python's name for the method: `"fork"`, `"spawn"` or `"forkserver"`.
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }
}

/// The chosen method: 0 while none is, else [`encode`]'s code. Written once by the user
/// (`set_start_method`, a compare-and-swap from 0), or by `start` when this process becomes
/// a child (`inherit`, which overwrites: a forked child holds its parent's copy, and a
/// context's child must take the context's method instead).
static METHOD: AtomicU8 = AtomicU8::new(0);

fn encode(m: StartMethod) -> u8 {
    match m {
        StartMethod::Fork => 1,
        StartMethod::Spawn => 2,
        StartMethod::ForkServer => 3,
    }
}

fn decode(code: u8) -> Option<StartMethod> {
    match code {
        1 => Some(StartMethod::Fork),
        2 => Some(StartMethod::Spawn),
        3 => Some(StartMethod::ForkServer),
        _ => None,
    }
}

/// Sets the start method used by [`Process::new`](crate::Process::new), [`crate::spawn`] and
/// pools. It can be set once: a second call is `Error::ContextAlreadySet` (Python's
/// `RuntimeError`), as in Python. Use [`get_context`](crate::get_context) to use several
/// methods in one program.
pub fn set_start_method(m: StartMethod) -> Result<()> {
    METHOD
        .compare_exchange(0, encode(m), Ordering::AcqRel, Ordering::Acquire)
        .map(|_| ())
        .map_err(|_| Error::ContextAlreadySet)
}

/// The start method in use: the one set with [`set_start_method`], else `ForkServer`. In a
/// child it is the method its parent started it with, when the parent chose one (with
/// [`set_start_method`], or a [`Context`](crate::Context)): a child, a grandchild and a pool
/// worker of a program that chose `Spawn` report `Spawn`, and start their own children
/// that way; so does every process below `get_context(Spawn).process(..)`.
pub fn get_start_method() -> StartMethod {
    chosen().unwrap_or_default()
}

/// The method set with [`set_start_method`] (or inherited), if any: what a child inherits.
pub(crate) fn chosen() -> Option<StartMethod> {
    decode(METHOD.load(Ordering::Acquire))
}

/// In a new child: takes on the method its parent started it with, replacing what a forked
/// child copied from its parent.
pub(crate) fn inherit(m: StartMethod) {
    METHOD.store(encode(m), Ordering::Release);
}

/// Every start method available on this platform, the default first.
pub fn get_all_start_methods() -> Vec<StartMethod> {
    vec![
        StartMethod::ForkServer,
        StartMethod::Fork,
        StartMethod::Spawn,
    ]
}

static EXECUTABLE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Sets the executable that `Spawn` and `ForkServer` start (Python's `set_executable`).
/// It must be a build of the same program: a child whose executable differs from its
/// parent's is refused with `Error::BinaryMismatch`. The default is the running executable.
pub fn set_executable(path: impl Into<PathBuf>) {
    *EXECUTABLE.lock().unwrap_or_else(PoisonError::into_inner) = Some(path.into());
}

/// The executable `Spawn` and `ForkServer` start.
pub(crate) fn executable() -> PathBuf {
    EXECUTABLE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_else(crate::sys::pid::self_exe)
}
