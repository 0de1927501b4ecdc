//! Processes: start one, wait for it, signal it, get its result.
//!
//! A `Process` prepares a child's bootstrap (entry, arguments, name) and hands it to
//! `start`, which launches the child and keeps its handle (`start::children`: reaping, the
//! exit hook); the `Process` shares that handle.
//!
//! The child's outcome (its return value, or its panic message) arrives on a private
//! socket. `join` reads it while waiting, so a child with a large result never blocks on a
//! parent that waits for it to exit.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, HandleFd};
use crate::connection::framing::{self, Arrival};
use crate::error::{Error, Result};
use crate::isolation::{self, Isolation, Limits, Sandbox};
use crate::start::children::{self, ChildHandle};
use crate::start::method::{StartMethod, get_start_method};
use crate::start::{self, Bootstrap, state};
use crate::sys;
use crate::target::{self, Outcome, Target};

mod info;
pub use info::{ProcessInfo, active_children, current_process, parent_process};

/// The arguments of a process not yet started, with their type erased.
trait Args: Send {
    fn encode(&self, buf: &mut Vec<u8>, fds: &mut Vec<HandleFd>) -> Result<()>;
}

impl<A: Serialize + Send> Args for A {
    fn encode(&self, buf: &mut Vec<u8>, fds: &mut Vec<HandleFd>) -> Result<()> {
        codec::encode_into(self, buf, fds)
    }
}

/// A child process running a Rust function (Python's `multiprocessing.Process`).
///
/// The target is a fn item or a closure that captures nothing, taking 0 to 8 serde
/// arguments and returning a serde value, which [`Process::result`] hands back.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn heavy_op(i: u32, n: usize) -> usize { (0..n).map(|k| k % (i as usize + 1)).sum() }
///
/// let mut p = mproc::Process::new(heavy_op, (1, 1_000));
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// assert_eq!(p.result()?, 500);
/// # Ok(()) }
/// ```
pub struct Process<R> {
    name: String,
    /// Whether the user set the name (then the child shows it in `ps`/`top`).
    named: bool,
    identity: Vec<u32>,
    daemon: bool,
    method: Option<StartMethod>,
    entry: i64,
    args: Option<Box<dyn Args>>,
    child: Option<Arc<ChildHandle>>,
    result: Option<HandleFd>,
    outcome: Option<Result<(Vec<u8>, Vec<OwnedFd>)>>,
    incoming: framing::Incoming,
    limits: Limits,
    sandbox: Sandbox,
    /// The isolation checked at start, to attribute its death.
    isolation: Option<Isolation>,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match &self.child {
            None => "initial".to_string(),
            Some(c) => match c.recorded_exitcode() {
                None => "started".to_string(),
                Some(code) => format!("stopped exitcode={code}"),
            },
        };
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("status", &status)
            .field("daemon", &self.daemon)
            .finish()
    }
}

/// Python's repr: `<Process name='Process-1' pid=123 parent=120 started daemon>`.
impl<R> fmt::Display for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Process name='{}'", self.name)?;
        match &self.child {
            None => f.write_str(" parent=")?,
            Some(c) => write!(f, " pid={} parent=", c.pid())?,
        }
        write!(f, "{}", sys::pid::current())?;
        match self.child.as_ref().map(|c| c.poll()) {
            None => f.write_str(" initial")?,
            Some(Ok(None)) | Some(Err(_)) => f.write_str(" started")?,
            Some(Ok(Some(code))) if code < 0 => {
                write!(f, " stopped exitcode=-{}", signal_name(-code))?
            }
            Some(Ok(Some(code))) => write!(f, " stopped exitcode={code}")?,
        }
        if self.daemon {
            f.write_str(" daemon")?;
        }
        f.write_str(">")
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        1 => "SIGHUP".into(),
        2 => "SIGINT".into(),
        6 => "SIGABRT".into(),
        9 => "SIGKILL".into(),
        11 => "SIGSEGV".into(),
        15 => "SIGTERM".into(),
        n => n.to_string(),
    }
}

impl<R> Process<R>
where
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// A new process that will run `target(args...)`; `args` is a tuple, `()` to
    /// `(A, B, C, D, E, F, G, H)`. Nothing runs until [`start`](Process::start).
    pub fn new<F, A>(_target: F, args: A) -> Process<R>
    where
        F: Target<A, R>,
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let (identity, daemon) = {
            let mut st = state();
            st.counter += 1;
            let mut id = st.identity.clone();
            id.push(st.counter);
            (id, st.daemon)
        };
        let name = format!(
            "Process-{}",
            identity
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(":")
        );
        Process {
            name,
            named: false,
            identity,
            daemon,
            method: None,
            entry: target::entry_offset::<F, A, R>(),
            args: Some(Box::new(args)),
            child: None,
            result: None,
            outcome: None,
            incoming: framing::Incoming::default(),
            limits: Limits::default(),
            sandbox: Sandbox::default(),
            isolation: None,
            _result: PhantomData,
        }
    }
}

impl<R> Process<R> {
    /// Sets the name (before or after start; the child sees the name it had at start).
    ///
    /// A name set before start is also what the child shows in `ps` and `top` (the
    /// kernel's `comm`, its first 15 bytes); a child left with its default name
    /// (`Process-N`) shows the program's name there.
    pub fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
        self.named = true;
    }

    /// The name: `"Process-N"` unless set.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes the process a daemon (or not). A daemon is terminated when its parent exits,
    /// instead of being waited for.
    ///
    /// # Panics
    /// If the process was started: the flag is fixed at `start` (the child and the exit hook
    /// act on it), so changing it later would make [`daemon`](Process::daemon) lie. Python
    /// asserts the same ("process has already started").
    pub fn set_daemon(&mut self, on: bool) {
        assert!(
            self.args.is_some() && self.child.is_none(),
            "set_daemon: process has already started"
        );
        self.daemon = on;
    }

    /// Whether the process is a daemon.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// Uses start method `m` for this process instead of the global one. The child runs
    /// under `m` too: its [`get_start_method`](crate::get_start_method) returns `m`, and its
    /// own children and pools start with `m` (as a [`Context`](crate::Context)'s do).
    pub fn set_start_method(&mut self, m: StartMethod) {
        self.method = Some(m);
    }

    /// Limits for the child, applied before its target runs (see [`Limits`]); its whole
    /// run counts as one task for [`Limits::cpu_time`]. Checked at [`start`](Process::start).
    pub fn set_limits(&mut self, l: Limits) {
        self.limits = l;
    }

    /// A sandbox for the child, applied before its target runs (see [`Sandbox`]). What this
    /// kernel cannot enforce makes [`start`](Process::start) fail with `Error::Unsupported`.
    pub fn set_sandbox(&mut self, s: Sandbox) {
        self.sandbox = s;
    }

    /// Starts the child. `Err(Error::AlreadyStarted)` the second time; for its limits and
    /// sandbox, `Err(ValueError)` (a zero memory or CPU-time limit, a missing `writable`
    /// path) or `Err(Unsupported)`.
    ///
    /// The arguments are sent to the child and dropped here: handles among them (a
    /// `Connection`, say) are closed in the parent, so their peers see EOF when the child
    /// is done with them.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() || self.args.is_none() {
            return Err(Error::AlreadyStarted);
        }
        let isolation = Isolation::checked(&self.limits, &self.sandbox)?;
        children::reap_finished();
        start::child::keep_route_linked();
        let mut args = Vec::new();
        let mut fds = Vec::new();
        self.args
            .as_ref()
            .expect("checked above")
            .encode(&mut args, &mut fds)?;
        let (parent_name, parent_pid) = (state().name(), sys::pid::current());
        let method = self.method.unwrap_or_else(get_start_method);
        let log = crate::log::for_child(method == StartMethod::Fork)?.map(|(level, sock)| {
            fds.push(sock);
            level
        });
        let boot = Bootstrap {
            fingerprint: target::fingerprint(),
            entry: self.entry,
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            parent_name,
            parent_pid,
            args,
            log,
            // The method this child is started with, if one was chosen (here or by the
            // process), so it runs, and starts its own children, under that method.
            start_method: self.method.or_else(start::method::chosen),
            tree: crate::shared::tracker::tree(),
            isolation: isolation.clone(),
            comm: if self.named {
                self.name.clone()
            } else {
                start::comm::program()
            },
            program: start::comm::program(),
        };
        let launched = start::launch(method, &boot, fds)?;
        self.args = None;
        self.isolation = isolation;
        let (child, result) = children::adopt(launched, &self.name, self.daemon);
        self.child = Some(child);
        self.result = Some(result);
        Ok(())
    }

    /// Waits until the child exits. Idempotent; `Ok` however the child ended (check
    /// [`exitcode`](Process::exitcode)). `Err(Error::NotStarted)` before `start`.
    pub fn join(&mut self) -> Result<()> {
        self.wait_until(None).map(|_| ())
    }

    /// Waits up to `d` for the child to exit; `Ok(true)` if it has.
    pub fn join_timeout(&mut self, d: Duration) -> Result<bool> {
        self.wait_until(Instant::now().checked_add(d))
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let child = Arc::clone(self.child.as_ref().ok_or(Error::NotStarted)?);
        loop {
            if child.poll()?.is_some() {
                // Everything it logged is queued: deliver it before saying it has exited.
                crate::log::flush();
                self.drain_outcome();
                children::forget(&child);
                return Ok(true);
            }
            let remaining = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    Some(d - now)
                }
            };
            let reading = self.outcome.is_none() && self.result.is_some();
            let ready = match (&self.result, reading) {
                (Some(sock), true) => {
                    sys::fd::poll_many(&[child.pidfd(), sock.as_fd()], remaining)?
                }
                _ => sys::fd::poll_many(&[child.pidfd()], remaining)?,
            };
            if reading && ready[1] {
                self.read_outcome();
            }
        }
    }

    /// Reads what has arrived of the outcome frame, without blocking: a child that stops
    /// half-way through a large result cannot hold a timed join past its deadline.
    fn read_outcome(&mut self) {
        let Some(sock) = &self.result else { return };
        let outcome = match self.incoming.poll_frame(sock.as_fd()) {
            Ok(Arrival::Pending) => return,
            Ok(Arrival::Frame(buf, fds)) => Ok((buf, fds)),
            Ok(Arrival::Closed) => Err(Error::Closed),
            Err(e) => Err(e),
        };
        self.outcome = Some(outcome);
        self.result = None;
    }

    /// After exit: takes an outcome that is waiting, without blocking.
    fn drain_outcome(&mut self) {
        if self.outcome.is_some() {
            return;
        }
        let ready = match &self.result {
            Some(sock) => {
                sys::fd::poll_readable(sock.as_fd(), Some(Duration::ZERO)).unwrap_or(false)
            }
            None => false,
        };
        if ready {
            self.read_outcome();
        }
        // The child is gone: whatever it wrote has arrived; a frame still incomplete never
        // will be.
        self.result = None;
    }

    /// Whether the child is running (false before `start` and after exit).
    pub fn is_alive(&mut self) -> bool {
        match &self.child {
            Some(c) => matches!(c.poll(), Ok(None)),
            None => false,
        }
    }

    /// The shared handle of the started child.
    pub(crate) fn child_handle(&self) -> Option<Arc<ChildHandle>> {
        self.child.clone()
    }

    /// A descriptor that becomes readable when the child has exited (Python's `sentinel`):
    /// its pidfd, for [`wait`](crate::wait) or your own `poll`. `Err(NotStarted)` before
    /// `start`. It stays valid, and readable, after the child has been joined.
    pub fn sentinel(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        self.child
            .as_ref()
            .map(|c| c.pidfd())
            .ok_or(Error::NotStarted)
    }

    /// The child's pid, once started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid())
    }

    /// `None` while running (or before start); then 0 for a normal return, 1 if the target
    /// panicked, `N` if it called `exit(N)`, `-N` if signal `N` killed it.
    pub fn exitcode(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| c.poll().ok().flatten())
    }

    /// Sends SIGTERM. Python's `terminate()`: the child's children are not signalled (they
    /// end by their own parent-death watch), and no clean-up runs in it.
    pub fn terminate(&self) -> Result<()> {
        self.child
            .as_ref()
            .ok_or(Error::NotStarted)?
            .signal(sys::process::SIGTERM)
    }

    /// Sends SIGKILL.
    pub fn kill(&self) -> Result<()> {
        self.child
            .as_ref()
            .ok_or(Error::NotStarted)?
            .signal(sys::process::SIGKILL)
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// Joins the child and returns what the target returned; `Err(Error::TaskPanicked)`
    /// with the panic message and location if it panicked (the child also prints the
    /// panic on its stderr, as Python prints a child's traceback), `Err(Error::ChildFailed)`
    /// with the exit code if it exited or was killed without returning,
    /// `Err(Error::LimitExceeded)` if one of its [`Limits`] stopped it.
    pub fn result(mut self) -> Result<R> {
        self.join()?;
        let exitcode = self.exitcode().unwrap_or(-1);
        let limit = |memory| isolation::blame(self.isolation.as_ref(), exitcode, memory);
        match self.outcome.take() {
            Some(Ok((bytes, fds))) => match codec::decode::<Outcome<R>>(&bytes, fds)? {
                Outcome::Returned(v) => Ok(v),
                Outcome::Panicked(p) => Err(p.into()),
                Outcome::Failed(message) if message == isolation::child::MEMORY_DEATH => {
                    match limit(true) {
                        Some(limit) => Err(Error::LimitExceeded { limit }),
                        None => Err(Error::ChildFailed { exitcode }),
                    }
                }
                Outcome::Failed(message) => Err(Error::Codec(message)),
            },
            Some(Err(Error::Codec(m))) => Err(Error::Codec(m)),
            Some(Err(_)) | None => match limit(false) {
                Some(limit) => Err(Error::LimitExceeded { limit }),
                None => Err(Error::ChildFailed { exitcode }),
            },
        }
    }
}

/// Creates and starts a process in one call (`Process::new` + `start`).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let p = mproc::spawn(|a: i32, b: i32| a + b, (2, 3))?;
/// assert_eq!(p.result()?, 5);
/// # Ok(()) }
/// ```
pub fn spawn<F, Args, R>(target: F, args: Args) -> Result<Process<R>>
where
    F: Target<Args, R>,
    Args: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    let mut p = Process::new(target, args);
    p.start()?;
    Ok(p)
}
