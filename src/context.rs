//! Contexts: a start method bound to an object that makes processes and pools.
//!
//! The settings themselves (the global start method, the executable) live in
//! `start::method`, below the processes that read them.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::process::Process;
use crate::target::Target;

pub use crate::start::method::{
    StartMethod, get_all_start_methods, get_start_method, set_executable, set_start_method,
};

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

/// Routes this process if it was started by mproc as a child or fork server.
///
/// You do not need to call this: mproc does it in a constructor that runs before `main`.
/// Call it first thing in `main` if your platform or linker setup drops constructors; it is
/// idempotent and returns at once in an ordinary process.
pub fn init() {
    crate::start::route();
}
