//! Isolation: [`Limits`] and a [`Sandbox`] for a pool's workers or one [`Process`](crate::Process).
//!
//! **Who does what.** The parent checks a request once, at `PoolBuilder::build` or
//! `Process::start` ([`Isolation::checked`]): bad values are `ValueError`, what this kernel
//! cannot enforce is `Unsupported`, so nothing is silently left out. The request travels to
//! the child with its other start-up data, and the child applies it ([`child::enter`])
//! after mproc's own set-up (its socket, its gate, its log link are open) and before any
//! task or initializer runs. Applied restrictions are never lifted: a restricted worker
//! serves until it exits, and its replacement applies them afresh.
//!
//! **How a death is attributed** ([`Isolation::blame`]). A limit that stops a process shows
//! in how it died: SIGXCPU is the CPU timer's signal (see `sys/limits.rs`), SIGXFSZ the
//! kernel's for a write past RLIMIT_FSIZE, and a memory-limit death is reported by the
//! dying process itself (a frame written from its SIGABRT handler when the abort follows a
//! failed allocation). Each is attributed only when that limit is set; any other death
//! stays `WorkerDied`/`ChildFailed`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sys;

pub(crate) mod child;

/// Resource limits for a pool's workers ([`PoolBuilder::limits`](crate::PoolBuilder::limits))
/// or a process ([`Process::set_limits`](crate::Process::set_limits)). All optional.
///
/// A limit that stops the worker (memory, CPU time, file size) fails the task it was
/// running with [`Error::LimitExceeded`]; the pool replaces the worker and goes on. The
/// others (open files, processes) are errors the task sees from the call that hit them.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// use std::time::Duration;
/// let pool = mproc::Pool::builder()
///     .processes(1)
///     .limits(mproc::Limits::new().memory(256 << 20).cpu_time(Duration::from_secs(10)))
///     .build()?;
/// # drop(pool);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    memory: Option<u64>,
    cpu_time: Option<Duration>,
    open_files: Option<u64>,
    processes: Option<u64>,
    file_size: Option<u64>,
}

impl Limits {
    /// No limits.
    pub fn new() -> Limits {
        Limits::default()
    }

    /// Memory the worker may allocate beyond what it holds when it starts (RLIMIT_DATA:
    /// heap, anonymous mappings; not code, not the shared memory of mproc's channels). An
    /// allocation past it kills the worker and fails its task with
    /// `LimitExceeded { limit: Limit::Memory(bytes) }`. 0 is refused at `build()`.
    pub fn memory(mut self, bytes: u64) -> Limits {
        self.memory = Some(bytes);
        self
    }

    /// CPU time one task may use (user and system, all its threads), counted afresh for
    /// each task: past it the worker is killed (SIGXCPU) and the task fails with
    /// `LimitExceeded { limit: Limit::CpuTime(d) }`. For a `Process`, its whole run.
    pub fn cpu_time(mut self, d: Duration) -> Limits {
        self.cpu_time = Some(d);
        self
    }

    /// Descriptors the worker may have open (RLIMIT_NOFILE: no descriptor numbered `n` or
    /// above can be opened, mproc's own included). Past it, `open` fails with `EMFILE`.
    pub fn open_files(mut self, n: u64) -> Limits {
        self.open_files = Some(n);
        self
    }

    /// Children the task may start. Only 0 is enforced (none: `fork`, `vfork` and a
    /// `clone` that is not a thread fail with `EACCES`; threads still work). Linux counts
    /// processes per user, not per task (and not at all for root), so any other value is
    /// `Err(Unsupported)` at `build()`.
    pub fn processes(mut self, n: u64) -> Limits {
        self.processes = Some(n);
        self
    }

    /// The largest file the task may write (RLIMIT_FSIZE): a write past it kills the
    /// worker (SIGXFSZ) and fails the task with `LimitExceeded { limit: Limit::FileSize(bytes) }`.
    pub fn file_size(mut self, bytes: u64) -> Limits {
        self.file_size = Some(bytes);
        self
    }

    fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// A sandbox for a pool's workers ([`PoolBuilder::sandbox`](crate::PoolBuilder::sandbox))
/// or a process ([`Process::set_sandbox`](crate::Process::set_sandbox)). All optional.
/// A refused call fails with `EACCES` (`PermissionDenied`) inside the task; mproc's own
/// channels (opened before the sandbox) keep working.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    no_network: bool,
    read_only: bool,
    writable: Vec<PathBuf>,
    no_exec: bool,
}

impl Sandbox {
    /// No restrictions.
    pub fn new() -> Sandbox {
        Sandbox::default()
    }

    /// No socket may reach any address: creating a socket other than a Unix one is refused
    /// (a seccomp filter), so neither the internet nor a local TCP/UDP port is reachable.
    pub fn no_network(mut self) -> Sandbox {
        self.no_network = true;
        self
    }

    /// No file may be created, written, truncated, renamed or removed (Landlock), except
    /// under the [`writable`](Sandbox::writable) paths. Reading is untouched.
    pub fn read_only(mut self) -> Sandbox {
        self.read_only = true;
        self
    }

    /// Files under `path` stay writable; implies [`read_only`](Sandbox::read_only) for
    /// everything else. A path that does not exist is an error at `build()`.
    pub fn writable(mut self, path: impl Into<PathBuf>) -> Sandbox {
        self.read_only = true;
        self.writable.push(path.into());
        self
    }

    /// `execve` is refused (a seccomp filter): the task cannot run another program.
    pub fn no_exec(mut self) -> Sandbox {
        self.no_exec = true;
        self
    }

    fn is_empty(&self) -> bool {
        *self == Sandbox::default()
    }
}

/// The limit that stopped a task's worker ([`Error::LimitExceeded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// [`Limits::memory`], in bytes.
    Memory(u64),
    /// [`Limits::cpu_time`].
    CpuTime(Duration),
    /// [`Limits::file_size`], in bytes.
    FileSize(u64),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Memory(b) => write!(f, "memory limit of {b} bytes"),
            Limit::CpuTime(d) => write!(f, "cpu time limit of {d:?}"),
            Limit::FileSize(b) => write!(f, "file size limit of {b} bytes"),
        }
    }
}

/// A checked request, as the child receives it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Isolation {
    pub(crate) limits: Limits,
    pub(crate) sandbox: Sandbox,
}

fn unsupported(feature: &str, e: std::io::Error) -> Error {
    Error::Unsupported(format!("{feature}: {e}"))
}

impl Isolation {
    /// Checks a request in the parent: `None` if it asks for nothing.
    pub(crate) fn checked(limits: &Limits, sandbox: &Sandbox) -> Result<Option<Isolation>> {
        if limits.is_empty() && sandbox.is_empty() {
            return Ok(None);
        }
        if limits.memory == Some(0) {
            return Err(Error::ValueError("memory limit must be positive".into()));
        }
        if limits.cpu_time == Some(Duration::ZERO) {
            return Err(Error::ValueError("cpu time limit must be positive".into()));
        }
        if let Some(n) = limits.processes.filter(|&n| n > 0) {
            return Err(Error::Unsupported(format!(
                "processes({n}): Linux counts processes per user (RLIMIT_NPROC), not per \
                 task, and not at all for root; only processes(0) is enforced"
            )));
        }
        for p in &sandbox.writable {
            if !p.exists() {
                return Err(Error::ValueError(format!(
                    "writable path {} does not exist",
                    p.display()
                )));
            }
        }
        let iso = Isolation {
            limits: limits.clone(),
            sandbox: sandbox.clone(),
        };
        if iso.refusals().network || iso.refusals().exec || iso.refusals().processes {
            sys::sandbox::probe_seccomp().map_err(|e| unsupported("seccomp", e))?;
        } else if iso.refusals().rlimits {
            sys::sandbox::probe_seccomp()
                .map_err(|e| unsupported("seccomp (to lock the limits)", e))?;
        }
        if sandbox.read_only {
            sys::sandbox::probe_landlock()
                .map_err(|e| unsupported("read_only (Landlock ABI 3, Linux 6.2)", e))?;
        }
        Ok(Some(iso))
    }

    /// What the child's seccomp filter refuses.
    pub(crate) fn refusals(&self) -> sys::sandbox::Refusals {
        let l = &self.limits;
        sys::sandbox::Refusals {
            network: self.sandbox.no_network,
            exec: self.sandbox.no_exec,
            processes: l.processes == Some(0),
            rlimits: l.memory.is_some() || l.open_files.is_some() || l.file_size.is_some(),
        }
    }

    /// Whether memory is limited (so a memory-limit death is reported).
    pub(crate) fn limits_memory(&self) -> bool {
        self.limits.memory.is_some()
    }

    /// Which limit, if any, a death with `exitcode` (or a memory report) shows.
    pub(crate) fn blame(&self, exitcode: i32, memory_reported: bool) -> Option<Limit> {
        let l = &self.limits;
        if memory_reported {
            return l.memory.map(Limit::Memory);
        }
        if exitcode == -sys::limits::CPU_SIGNAL {
            return l.cpu_time.map(Limit::CpuTime);
        }
        if exitcode == -sys::limits::FILE_SIZE_SIGNAL {
            return l.file_size.map(Limit::FileSize);
        }
        None
    }
}

/// [`Isolation::blame`] for an optional request.
pub(crate) fn blame(
    iso: Option<&Isolation>,
    exitcode: i32,
    memory_reported: bool,
) -> Option<Limit> {
    iso.and_then(|i| i.blame(exitcode, memory_reported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_death_is_blamed_on_a_limit_only_when_that_limit_is_set() {
        let d = Duration::from_millis(300);
        let iso = Isolation {
            limits: Limits::new().cpu_time(d).file_size(10),
            sandbox: Sandbox::new(),
        };
        let cpu = -sys::limits::CPU_SIGNAL;
        let fsize = -sys::limits::FILE_SIZE_SIGNAL;
        assert_eq!(iso.blame(cpu, false), Some(Limit::CpuTime(d)));
        assert_eq!(iso.blame(fsize, false), Some(Limit::FileSize(10)));
        assert_eq!(iso.blame(-6, false), None);
        assert_eq!(iso.blame(-9, false), None);
        // No memory limit: a report (which cannot come) blames nothing.
        assert_eq!(iso.blame(-6, true), None);
        let mem = Isolation {
            limits: Limits::new().memory(1 << 20),
            sandbox: Sandbox::new(),
        };
        assert_eq!(mem.blame(-6, true), Some(Limit::Memory(1 << 20)));
        assert_eq!(mem.blame(cpu, false), None);
        assert_eq!(blame(None, cpu, true), None);
    }

    #[test]
    fn requests_are_checked() {
        let none = Isolation::checked(&Limits::new(), &Sandbox::new()).unwrap();
        assert!(none.is_none());
        let bad = Isolation::checked(&Limits::new().memory(0), &Sandbox::new());
        assert!(matches!(bad, Err(Error::ValueError(_))));
        let bad = Isolation::checked(&Limits::new().processes(3), &Sandbox::new());
        assert!(matches!(bad, Err(Error::Unsupported(m)) if m.contains("processes(3)")));
        let missing = Sandbox::new().writable("/no/such/mproc/dir");
        let bad = Isolation::checked(&Limits::new(), &missing);
        assert!(matches!(bad, Err(Error::ValueError(m)) if m.contains("/no/such/mproc/dir")));
        // `writable` implies `read_only`.
        let iso = Isolation::checked(&Limits::new(), &Sandbox::new().writable("/tmp"))
            .unwrap()
            .unwrap();
        assert!(iso.sandbox.read_only);
        let iso = Isolation::checked(&Limits::new().open_files(64), &Sandbox::new())
            .unwrap()
            .unwrap();
        assert!(iso.refusals().rlimits && !iso.refusals().network);
    }
}
