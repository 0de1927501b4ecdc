//! How a child comes to life, under each start method.
//!
//! The parent prepares a [`Bootstrap`] (which entry to run, the encoded arguments, the
//! child's name and identity) and the descriptors the arguments carry. Then:
//! - `Fork` (`fork.rs`): fork; the child closes the mproc handles it inherited but was not
//!   given, and runs the entry on its copy of the bootstrap.
//! - `Spawn` (`spawn.rs`): re-exec the executable with one inherited socket; the child is
//!   routed before `main` (`child.rs`), checks the fingerprint, acknowledges, reads the
//!   bootstrap and its descriptors from the socket, and runs the entry.
//! - `ForkServer` (`forkserver.rs`): a server spawned once (as above) forks each child with
//!   `CLONE_PARENT`, so the child is a real child of the requesting process.
//!
//! In every case the child writes one outcome frame on its result socket and exits; the
//! parent holds the other end and a pidfd.
//!
//! **Process-wide state** (who this process is, its live children, its fork-server client)
//! lives in one mutex, [`state`]. `fork` holds it, and the descriptor registry, across the
//! call, so the child finds both consistent and owned by its only thread.

// The routing step edits the environment before `main`: the one `unsafe` here.
#![allow(unsafe_code)]

use std::os::fd::{OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::codec::HandleFd;
use crate::error::Result;

pub(crate) mod child;
pub(crate) mod children;
pub(crate) mod comm;
mod fork;
pub(crate) mod forkserver;
pub(crate) mod method;
mod spawn;

use children::ChildHandle;
use method::StartMethod;

/// How long a new child or fork server may take to answer its first message before it is
/// given up (killed and reaped) and `start` fails with `Error::Timeout`. Generous: an exec
/// of a large binary on a loaded machine can take seconds.
pub(crate) const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads one frame of a handshake, giving up after [`HANDSHAKE_TIMEOUT`].
fn read_handshake(sock: std::os::fd::BorrowedFd<'_>, buf: &mut Vec<u8>) -> Result<()> {
    if !crate::sys::fd::poll_readable(sock, Some(HANDSHAKE_TIMEOUT))? {
        return Err(crate::error::Error::Timeout);
    }
    crate::connection::framing::read_frame(sock, buf, &mut Vec::new())
}

/// Environment variable that marks a spawned child: `<fd>:<parent pid>`.
pub(crate) const ENV_CHILD: &str = "MPROC_CHILD_BOOTSTRAP";
/// Environment variable that marks a fork server: `<fd>:<parent pid>`.
pub(crate) const ENV_FORKSERVER: &str = "MPROC_FORKSERVER";

/// Everything a child needs to know, sent by the parent.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct Bootstrap {
    /// The executable fingerprint of the parent.
    pub(crate) fingerprint: u64,
    /// Offset of the entry function from the anchor.
    pub(crate) entry: i64,
    /// The child's name ("Process-1:2").
    pub(crate) name: String,
    /// The child's identity (the numbers in its name).
    pub(crate) identity: Vec<u32>,
    /// Whether the child is a daemon.
    pub(crate) daemon: bool,
    /// The logical parent: its name and pid.
    pub(crate) parent_name: String,
    /// The logical parent's pid.
    pub(crate) parent_pid: u32,
    /// The encoded arguments; the descriptors they refer to travel beside the frame.
    pub(crate) args: Vec<u8>,
    /// The parent's log level, if the child forwards its `log` records; then the last
    /// descriptor is the socket to send them to (`crate::log`).
    pub(crate) log: Option<u8>,
    /// The method the parent started the child with, if the parent chose one (its
    /// `Process`'s, from a context, or the parent's own `set_start_method` choice): the
    /// child's `get_start_method` returns it, and its own children and pools use it.
    pub(crate) start_method: Option<StartMethod>,
    /// The program tree the child belongs to (its shared-memory tracker's).
    pub(crate) tree: crate::shared::tracker::Tree,
    /// Limits and sandbox the child applies before its target runs.
    pub(crate) isolation: Option<crate::isolation::Isolation>,
    /// What the child shows in `ps`/`top` (`comm.rs`): its name if the user set one, else
    /// the program's name.
    pub(crate) comm: String,
    /// The program's name (`comm::program`), which the child hands down in turn.
    pub(crate) program: String,
}

/// A started child, as the parent sees it.
#[derive(Debug)]
pub(crate) struct Launched {
    pub(crate) pid: u32,
    pub(crate) pidfd: HandleFd,
    pub(crate) result: HandleFd,
}

/// Starts a child under `method`. `fds` are the descriptors the encoded arguments refer to.
pub(crate) fn launch(
    method: StartMethod,
    boot: &Bootstrap,
    fds: Vec<HandleFd>,
) -> Result<Launched> {
    match method {
        StartMethod::Fork => fork::launch(boot, fds),
        StartMethod::Spawn => spawn::launch(boot, fds),
        StartMethod::ForkServer => forkserver::launch(boot, fds),
    }
}

/// Who this process is, and what it owns.
#[derive(Debug)]
pub(crate) struct State {
    /// This process's identity: empty at the top, parent's identity + counter below.
    pub(crate) identity: Vec<u32>,
    /// Whether this process is a daemon.
    pub(crate) daemon: bool,
    /// The logical parent, if this process was started by mproc.
    pub(crate) parent: Option<(String, u32)>,
    /// How many `Process` objects this process has created (names their children).
    pub(crate) counter: u32,
    /// Children started and not yet known to be reaped.
    pub(crate) children: Vec<Arc<ChildHandle>>,
    /// The connection to this process's fork server, once started.
    pub(crate) forkserver: Option<forkserver::Client>,
}

static STATE: Mutex<State> = Mutex::new(State {
    identity: Vec::new(),
    daemon: false,
    parent: None,
    counter: 0,
    children: Vec::new(),
    forkserver: None,
});

/// Locks the process-wide state.
pub(crate) fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    /// This process's name (kept in `name.rs`, below logging).
    pub(crate) fn name(&self) -> String {
        crate::name::get()
    }

    /// Becomes the child described by `boot`, forgetting the parent's children and fork
    /// server (whose descriptors the caller has closed). `name` is the held name
    /// (`name::hold()`; `fork.rs` holds it across the fork).
    pub(crate) fn become_child(&mut self, boot: &Bootstrap, name: &mut String) {
        name.clone_from(&boot.name);
        self.identity = boot.identity.clone();
        self.daemon = boot.daemon;
        self.parent = Some((boot.parent_name.clone(), boot.parent_pid));
        if let Some(m) = boot.start_method {
            method::inherit(m);
        }
        crate::shared::tracker::join(boot.tree);
        comm::inherit(&boot.program);
        self.counter = 0;
        // The handles are the parent's: forget them without running their destructors
        // (their descriptors were closed with the registry, or never existed here).
        std::mem::forget(std::mem::take(&mut self.children));
        std::mem::forget(self.forkserver.take());
    }
}

/// Routes this process if it was started as an mproc child or fork server: called from the
/// constructor before `main`, and by [`crate::init`]. Returns only in an ordinary process.
///
/// The environment is hostile input here (issue 12): both variables are removed as soon as
/// they are read, whichever is used; a process in secure-execution mode (setuid, setgid,
/// file capabilities: `AT_SECURE`) is never routed, since its environment belongs to a
/// less privileged caller; and [`enter_routed`] accepts the named descriptor only if it is
/// a socket made by the named parent, running as our user.
pub(crate) fn route() {
    let child = std::env::var(ENV_CHILD).ok();
    let server = std::env::var(ENV_FORKSERVER).ok();
    let tracker = std::env::var(crate::shared::tracker::ENV_TRACKER).ok();
    if child.is_none() && server.is_none() && tracker.is_none() {
        return;
    }
    // SAFETY: this runs before `main`, in the constructor, while single-threaded (or from
    // `init`, documented to be called first thing in `main`).
    unsafe { crate::sys::process::remove_env(ENV_CHILD) };
    // SAFETY: as above.
    unsafe { crate::sys::process::remove_env(ENV_FORKSERVER) };
    // SAFETY: as above.
    unsafe { crate::sys::process::remove_env(crate::shared::tracker::ENV_TRACKER) };
    if crate::sys::process::secure_exec() {
        return;
    }
    if let Some(v) = child {
        child::run_spawned(&v);
    }
    if let Some(v) = server {
        forkserver::serve(&v);
    }
    if let Some(v) = tracker {
        crate::shared::tracker::serve(&v);
    }
}

/// Exit codes of a process whose route is refused: it was not started by mproc.
mod refused {
    /// The variable is not `<fd>:<pid>`.
    pub(super) const MALFORMED: i32 = 70;
    /// The descriptor is not open (or is stdio).
    pub(super) const NO_DESCRIPTOR: i32 = 71;
    /// The descriptor is not a socket made by the named parent as our user.
    pub(super) const NOT_FROM_PARENT: i32 = 76;
}

/// The common start of a process routed before `main`: what Rust's runtime would have set
/// up, the inherited socket named by `route`, and the parent-death watch. Exits with a
/// distinct code if the route is unusable (the process was not started by mproc).
fn enter_routed(route: &str) -> (OwnedFd, u32) {
    crate::sys::process::ignore_sigpipe();
    crate::sys::signal::report_stack_overflow();
    let Some((fd, parent)) = parse_route(route) else {
        crate::sys::process::exit_now(refused::MALFORMED)
    };
    let Ok(sock) = crate::sys::fd::take_inherited(fd) else {
        crate::sys::process::exit_now(refused::NO_DESCRIPTOR)
    };
    // The parent made the socketpair: its pid and user are the peer's credentials.
    match crate::sys::fd::peer_credentials(std::os::fd::AsFd::as_fd(&sock)) {
        Ok((pid, uid)) if pid == parent && uid == crate::sys::process::uid() => {}
        _ => crate::sys::process::exit_now(refused::NOT_FROM_PARENT),
    }
    let _ = crate::sys::process::watch_parent(parent);
    (sock, parent)
}

/// Parses `<fd>:<pid>` from a routing variable.
fn parse_route(v: &str) -> Option<(RawFd, u32)> {
    let (fd, pid) = v.split_once(':')?;
    Some((fd.parse().ok()?, pid.parse().ok()?))
}

/// Wraps the parent's end of a result socket and the child's pidfd.
fn launched(pid: u32, result: OwnedFd) -> Result<Launched> {
    let pidfd = match crate::sys::process::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            // Without a pidfd nobody would ever reap it: end it now (out of descriptors,
            // most likely).
            crate::sys::process::kill_and_reap(pid);
            return Err(e.into());
        }
    };
    Ok(Launched {
        pid,
        pidfd: HandleFd::new(pidfd),
        result: HandleFd::new(result),
    })
}
