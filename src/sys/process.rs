//! Process creation, waiting and signalling; the parent-death watch.
//!
//! **Parent death.** Every child arms `PR_SET_PDEATHSIG`. The kernel sends that signal when
//! the *thread* that created the child exits, not the process, so a plain SIGKILL would kill
//! children whenever the thread that started them ends. Instead the signal is
//! [`PARENT_DEATH_SIGNAL`], whose handler compares `getppid()` with the pid of the logical
//! parent recorded at start: a thread exit leaves the child adopted by another thread of the
//! same process (same pid) and the handler returns; a process exit reparents the child
//! elsewhere and the handler SIGKILLs it. The check after arming closes the race with a parent
//! that died before the `prctl`.

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::process::PidfdFlags;

/// The signal armed with `PR_SET_PDEATHSIG` (a real-time signal nobody else uses by
/// default; glibc reserves the first two).
fn parent_death_signal() -> c_int {
    libc::SIGRTMAX() - 2
}

/// The logical parent's pid, for the parent-death handler (0: none armed).
static EXPECTED_PARENT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_parent_death(_sig: c_int) {
    // Async-signal-safe: getppid, getpid and kill only.
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    if ppid != EXPECTED_PARENT.load(Ordering::Relaxed) {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        // SAFETY: signalling ourselves; SIGKILL cannot be caught, so this does not return.
        unsafe { libc::kill(me, libc::SIGKILL) };
    }
}

/// Arms the parent-death watch for logical parent `parent` (the current process's parent
/// pid as the caller expects it). Dies at once if that parent is already gone.
pub(crate) fn watch_parent(parent: u32) -> io::Result<()> {
    let parent = i32::try_from(parent).map_err(|_| io::Error::other("invalid parent pid"))?;
    EXPECTED_PARENT.store(parent, Ordering::Relaxed);
    // SAFETY: an all-zero sigaction is a valid starting value; fields are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_parent_death as extern "C" fn(c_int) as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action` is fully initialised and its handler is async-signal-safe.
    let rc = unsafe { libc::sigaction(parent_death_signal(), &action, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    set_pdeathsig(parent_death_signal())?;
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        hard_exit_killed();
    }
    Ok(())
}

fn set_pdeathsig(sig: c_int) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Kills the calling process with SIGKILL.
pub(crate) fn hard_exit_killed() -> ! {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // SAFETY: signalling ourselves with SIGKILL.
    unsafe { libc::kill(me, libc::SIGKILL) };
    exit_now(137)
}

/// Ignores SIGPIPE, as Rust's runtime does before `main` (children routed before `main`
/// must get the same, or a write to a closed socket kills them).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a standard disposition for SIGPIPE has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Ends the process at once: no atexit handlers, no unwinding, no destructors.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// Registers `f` to run at normal process exit (`exit`, or returning from `main`).
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function with static lifetime.
    unsafe { libc::atexit(f) };
}

/// What `fork` returned in this process.
#[derive(Debug)]
pub(crate) enum Forked {
    /// In the parent: the child's pid.
    Parent(u32),
    /// In the child.
    Child,
}

/// `fork()`.
///
/// # Safety
/// If other threads exist, the child may run only async-signal-safe code until it execs or
/// exits: locks held by other threads at the fork stay held forever in the child. mproc's
/// own locks are taken across the call by the caller for exactly this reason.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller upholds the post-fork restrictions.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as u32)),
    }
}

/// `clone(CLONE_PARENT | SIGCHLD)`: like `fork`, but the new process is a child of the
/// caller's parent. The fork server uses it so that every child it makes is a real child of
/// the process that asked for it: waitable, pidfd-able, signalled on exit.
///
/// # Safety
/// As for [`fork`]; the caller must be single-threaded (the fork server is). glibc's fork
/// bookkeeping is skipped, so the child re-registers its robust-futex list itself (done
/// here) and must not rely on glibc's cached thread id.
pub(crate) unsafe fn clone_parent() -> io::Result<Forked> {
    let mut head: *mut libc::c_void = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: get_robust_list(0, ..) writes the calling thread's list head and its size to
    // the two out-pointers, which are valid locals.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0 as libc::c_long,
            &mut head as *mut *mut libc::c_void,
            &mut len as *mut libc::size_t,
        )
    };
    let robust = if rc == 0 { Some((head, len)) } else { None };
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: without CLONE_VM the child gets a copy-on-write copy of the address space
    // and continues on its own copy of this stack, exactly as with fork(2).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            if let Some((head, len)) = robust {
                // SAFETY: the head is this thread's glibc robust-list head, which the child
                // inherited at the same address; the kernel cleared the registration.
                unsafe { libc::syscall(libc::SYS_set_robust_list, head, len) };
            }
            // glibc's atfork child handlers did not run: refresh what they would have.
            crate::sys::robust::after_raw_fork_in_child();
            Ok(Forked::Child)
        }
        pid => Ok(Forked::Parent(pid as u32)),
    }
}

/// Starts `exe` with stdio and `fd` inherited (CLOEXEC cleared in the child only) and no
/// other descriptor, `env` added, and the parent-death signal armed before exec. Returns
/// the pid.
pub(crate) fn spawn_exe(
    exe: &Path,
    argv0: &str,
    env: &[(&str, String)],
    fd: BorrowedFd<'_>,
) -> io::Result<u32> {
    let raw: RawFd = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut cmd = Command::new(exe);
    cmd.arg0(argv0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let sig = parent_death_signal();
    let before_exec = move || {
        // The child gets stdio and `fd`, nothing else: every other descriptor of the
        // parent (a user's file opened without CLOEXEC, say) closes at exec.
        mark_all_cloexec_from(3);
        // SAFETY: F_SETFD on an integer descriptor; async-signal-safe.
        if unsafe { libc::fcntl(raw, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // Until the child's constructor installs the handler, the default action of this
        // real-time signal (terminate) applies, which is what parent death wants.
        // SAFETY: PR_SET_PDEATHSIG takes a signal number; async-signal-safe.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec and calls only close_range (or
    // getrlimit and fcntl), fcntl and prctl, which are async-signal-safe; it touches no
    // memory but its captured integers and locals.
    unsafe { cmd.pre_exec(before_exec) };
    let child = cmd.spawn()?;
    // Dropping `std::process::Child` neither waits nor kills: mproc waits through a pidfd.
    Ok(child.id())
}

/// Sets CLOEXEC on every descriptor from `first` up. Async-signal-safe: runs between fork
/// and exec. One `close_range` call on Linux 5.11+; on older kernels a loop of `fcntl`
/// over the descriptor table's size.
fn mark_all_cloexec_from(first: c_int) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let rc = unsafe {
        libc::close_range(
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as c_int,
        )
    };
    if rc == 0 {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct into a valid local.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 16) as c_int
    } else {
        1024
    };
    for fd in first..max {
        // SAFETY: F_SETFD on an integer descriptor; EBADF for a closed one is harmless.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Starts `exe` as a process of its own: a new session (so a signal to this program's
/// process group or terminal does not reach it), no parent-death signal, stdio on
/// `/dev/null` (a pipe it kept open would hold up whoever reads the starter's output), `fds`
/// inherited and nothing else, `env` added. It is not waited for: it outlives its starter
/// by design (the shared-memory tracker), and is reaped by whoever inherits it.
pub(crate) fn spawn_detached(
    exe: &Path,
    argv0: &str,
    env: &[(&str, String)],
    fds: &[BorrowedFd<'_>],
) -> io::Result<u32> {
    let raw: Vec<RawFd> = fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    let mut cmd = Command::new(exe);
    cmd.arg0(argv0);
    cmd.stdin(std::process::Stdio::null());
    cmd.stdout(std::process::Stdio::null());
    cmd.stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let before_exec = move || {
        mark_all_cloexec_from(3);
        for &fd in &raw {
            // SAFETY: F_SETFD on an integer descriptor; async-signal-safe.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: setsid takes no arguments; async-signal-safe.
        if unsafe { libc::setsid() } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec and calls only close_range (or
    // getrlimit and fcntl), fcntl and setsid, which are async-signal-safe; it reads only its
    // captured vector, allocated before the fork.
    unsafe { cmd.pre_exec(before_exec) };
    let child = cmd.spawn()?;
    Ok(child.id())
}

/// A pidfd for `pid` (which must be our child, not yet reaped).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = super::pid::to_kernel(pid).ok_or_else(|| io::Error::other("invalid pid"))?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// Reaps the process behind `pidfd` if it has exited. Returns its exit code in Python's
/// convention (`N` for exit(N), `-N` for signal N), or `None` if it still runs.
pub(crate) fn try_reap(pidfd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    Ok(try_reap_with_usage(pidfd)?.map(|(code, _)| code))
}

/// [`try_reap`], and the child's peak resident memory in bytes (the kernel's `ru_maxrss`
/// from the same `waitid`, so it costs nothing more; 0 if it was reaped by someone else).
pub(crate) fn try_reap_with_usage(pidfd: BorrowedFd<'_>) -> io::Result<Option<(i32, u64)>> {
    loop {
        // SAFETY: all-zero siginfo and rusage are valid values for the kernel to fill in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(P_PIDFD, fd, &info, flags, &usage): Linux's five-argument form,
        // both pointers to live locals the kernel writes.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_waitid,
                libc::P_PIDFD,
                pidfd.as_raw_fd(),
                &mut info as *mut libc::siginfo_t,
                libc::WEXITED | libc::WNOHANG,
                &mut usage as *mut libc::rusage,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Reaped behind our back (SIGCHLD ignored, or someone's `wait(-1)`): it
                // has exited, with a status nobody can know any more.
                Some(libc::ECHILD) => return Ok(Some((UNKNOWN_EXIT, 0))),
                _ => return Err(e),
            }
        }
        // SAFETY: waitid filled `info` for a child (or left si_pid 0 under WNOHANG).
        if unsafe { info.si_pid() } == 0 {
            return Ok(None);
        }
        // SAFETY: as above, si_status is set for a CLD_* code.
        let status = unsafe { info.si_status() };
        let code = match info.si_code {
            libc::CLD_EXITED => status,
            libc::CLD_KILLED | libc::CLD_DUMPED => -status,
            // Not an exit (no WSTOPPED/WCONTINUED asked): treat as still running.
            _ => return Ok(None),
        };
        let peak = u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024;
        return Ok(Some((code, peak)));
    }
}

/// The exit code reported for a child whose status was collected by someone else.
pub(crate) const UNKNOWN_EXIT: i32 = 255;

/// SIGKILLs our child `pid` and reaps it (for a child we could not get a pidfd for).
pub(crate) fn kill_and_reap(pid: u32) {
    if let Some(p) = super::pid::to_kernel(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
    }
}

/// Sends `sig` to the process behind `pidfd` (race-free against pid reuse).
pub(crate) fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a valid fd, a signal number, a null siginfo and no
    // flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if rc == -1 {
        let e = io::Error::last_os_error();
        // The process already exited (zombie or reaped): nothing to signal.
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// SIGTERM.
pub(crate) const SIGTERM: c_int = libc::SIGTERM;
/// SIGKILL.
pub(crate) const SIGKILL: c_int = libc::SIGKILL;

/// Whether this process was started in secure-execution mode (`AT_SECURE`: setuid,
/// setgid, or file capabilities), where the environment belongs to a less privileged
/// caller and must not steer the program.
pub(crate) fn secure_exec() -> bool {
    // SAFETY: getauxval reads the auxiliary vector; it has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// This process's real user id.
pub(crate) fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Removes `key` from this process's environment.
///
/// # Safety
/// No other thread may read or write the environment concurrently: call it only while the
/// process is single-threaded (in the start-up constructor).
pub(crate) unsafe fn remove_env(key: &str) {
    // SAFETY: the caller guarantees no concurrent environment access.
    unsafe { std::env::remove_var(key) };
}

/// Replaces this process's whole environment with `vars` (entries the platform cannot hold,
/// an empty name or one with `=` or NUL, are skipped).
///
/// # Safety
/// No other thread may read or write the environment concurrently: call it only while the
/// process is single-threaded (a child just forked by the fork server).
pub(crate) unsafe fn replace_env(vars: &[(std::ffi::OsString, std::ffi::OsString)]) {
    use std::os::unix::ffi::OsStrExt;
    let old: Vec<std::ffi::OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in old {
        // SAFETY: the caller guarantees no concurrent environment access.
        unsafe { std::env::remove_var(k) };
    }
    for (k, v) in vars {
        let (kb, vb) = (k.as_bytes(), v.as_bytes());
        if kb.is_empty() || kb.contains(&b'=') || kb.contains(&0) || vb.contains(&0) {
            continue;
        }
        // SAFETY: as above; the name and value were checked to be valid.
        unsafe { std::env::set_var(k, v) };
    }
}

/// Changes the working directory.
pub(crate) fn chdir(dir: &Path) -> io::Result<()> {
    Ok(rustix::process::chdir(dir)?)
}

/// The OS error code of `e`; EIO for an error that carries none.
pub(crate) fn os_code(e: &io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or(rustix::io::Errno::IO.raw_os_error())
}
