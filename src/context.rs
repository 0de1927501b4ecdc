//! Start methods and contexts: how new processes come to life.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::process::Process;
use crate::target::Target;

/// How a child process is started (Python's `'fork'`, `'spawn'`, `'forkserver'`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum StartMethod {
    /// `fork()` the current process: fastest; the child starts with a copy of the parent's
    /// memory. Unsafe to use from a multithreaded parent in general (a lock held by another
    /// thread stays held forever in the child); mproc warns once when that happens.
    Fork,
    /// Re-execute the current executable and run the target in the fresh process.
    Spawn,
    /// Fork each child from a single-threaded server process started on first use:
    /// clean state at fork speed. The default.
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

static METHOD: OnceLock<StartMethod> = OnceLock::new();

/// Sets the start method used by [`Process::new`], [`crate::spawn`] and pools. It can be set
/// once: a second call is `Error::ContextAlreadySet` (Python's `RuntimeError`), as in
/// Python. Use [`get_context`] to use several methods in one program.
pub fn set_start_method(m: StartMethod) -> Result<()> {
    METHOD.set(m).map_err(|_| Error::ContextAlreadySet)
}

/// The start method in use: the one set with [`set_start_method`], else `ForkServer`.
pub fn get_start_method() -> StartMethod {
    METHOD.get().copied().unwrap_or_default()
}

/// Every start method available on this platform, the default first.
pub fn get_all_start_methods() -> Vec<StartMethod> {
    vec![
        StartMethod::ForkServer,
        StartMethod::Fork,
        StartMethod::Spawn,
    ]
}

/// A start method bound to an object that makes processes (and pools) with it.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn square(x: u64) -> u64 { x * x }
/// let ctx = mproc::get_context(mproc::StartMethod::Spawn);
/// let mut p = ctx.process(square, (7,));
/// p.start()?;
/// assert_eq!(p.result()?, 49);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

/// A context for start method `m`.
pub fn get_context(m: StartMethod) -> Context {
    Context { method: m }
}

impl Context {
    /// This context's start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A new (not yet started) process that will use this context's start method.
    pub fn process<F, Args, R>(&self, target: F, args: Args) -> Process<R>
    where
        F: Target<Args, R>,
        Args: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let mut p = Process::new(target, args);
        p.set_start_method(self.method);
        p
    }

    /// A pool of `processes` workers (0: [`cpu_count`]) started with this context's method.
    pub fn pool(&self, processes: usize) -> Result<crate::Pool> {
        crate::Pool::builder()
            .processes(processes)
            .start_method(self.method)
            .build()
    }
}

/// The number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
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
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// Routes this process if it was started by mproc as a child or fork server.
///
/// You do not need to call this: mproc does it in a constructor that runs before `main`.
/// Call it first thing in `main` if your platform or linker setup drops constructors; it is
/// idempotent and returns at once in an ordinary process.
pub fn init() {
    crate::start::route();
}
