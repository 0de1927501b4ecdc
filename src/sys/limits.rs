//! Resource limits inside a child: rlimits, the per-task CPU timer, the memory-limit
//! report, and what a process reads of its own memory.
//!
//! **The memory-limit report.** A worker under a memory limit (RLIMIT_DATA) that fails an
//! allocation dies by std's allocation-failure path: `malloc` returns null with errno
//! `ENOMEM`, `std::alloc::handle_alloc_error` runs std's hook, which prints "memory
//! allocation of N bytes failed" (and a backtrace if `RUST_BACKTRACE` is set), and calls
//! `abort()`, which raises SIGABRT on the same thread. The SIGABRT handler installed here
//! tells that abort from others by either of two signs: errno is still `ENOMEM` (nothing
//! between the failed call and the signal sets it, unless a backtrace is printed: the
//! debug files it looks for change it), or a return address into `handle_alloc_error`
//! lies on the task thread's stack above the handler (that frame is live until the
//! process dies). Then it writes a prebuilt frame (registered by the worker, or by a plain
//! child: its outcome) to a descriptor, and returns so that the default action kills the
//! process. The handler is the only writer of that frame; the parent reads it with the
//! process's other frames after the exit. An abort without either sign (a panic under
//! `panic = "abort"`, an explicit `abort()`, a C library's `assert`) writes nothing and
//! stays a plain SIGABRT. The report records the pid that registered it, so a process
//! forked from the worker (which inherits the handler but not the worker's socket) writes
//! nothing.
//!
//! **The CPU timer.** A POSIX timer on the process's CPU clock that raises SIGXCPU when it
//! expires. Arming it sets its remaining time afresh, so a worker arms it once before each
//! task (one `timer_settime`), and the CPU the worker spent before that does not count.

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::time::Duration;

use rustix::process::{Resource, Rlimit};

/// Which rlimit.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// Private writable memory: heap, anonymous mappings, data segments (RLIMIT_DATA).
    Data,
    /// Descriptor numbers (RLIMIT_NOFILE).
    OpenFiles,
    /// The largest file offset a write may reach (RLIMIT_FSIZE).
    FileSize,
}

/// Sets both the soft and the hard limit (the hard one is never raised: a request above it
/// is already enforced more strictly).
pub(crate) fn set(kind: Kind, value: u64) -> io::Result<()> {
    let resource = match kind {
        Kind::Data => Resource::Data,
        Kind::OpenFiles => Resource::Nofile,
        Kind::FileSize => Resource::Fsize,
    };
    let hard = rustix::process::getrlimit(resource).maximum;
    let value = hard.map_or(value, |h| value.min(h));
    rustix::process::setrlimit(
        resource,
        Rlimit {
            current: Some(value),
            maximum: Some(value),
        },
    )?;
    Ok(())
}

/// The private writable memory this process holds now (`VmData`, what RLIMIT_DATA counts).
pub(crate) fn data_in_use() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no VmData in /proc/self/status"))
}

/// Reads this process's resident memory with one `pread` (the file stays open, so it also
/// works inside a sandbox that can open nothing).
#[derive(Debug)]
pub(crate) struct Resident {
    statm: OwnedFd,
}

impl Resident {
    pub(crate) fn open() -> io::Result<Resident> {
        let statm = rustix::fs::open(
            "/proc/self/statm",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(Resident { statm })
    }

    /// Resident bytes now.
    pub(crate) fn bytes(&self) -> io::Result<u64> {
        let mut buf = [0u8; 128];
        let n = rustix::io::pread(&self.statm, &mut buf, 0)?;
        let text = std::str::from_utf8(&buf[..n]).map_err(io::Error::other)?;
        let pages: u64 = text
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc/self/statm"))?;
        Ok(pages * super::mman::page_size() as u64)
    }
}

/// Puts SIGXCPU and SIGXFSZ back to their default action (death), whatever the parent had:
/// a limit that stops the process must stop it.
pub(crate) fn default_limit_signals() {
    for sig in [libc::SIGXCPU, libc::SIGXFSZ] {
        // SAFETY: resetting a standard signal to SIG_DFL has no memory effects.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// A timer on the process's CPU clock that raises SIGXCPU when it runs out.
#[derive(Debug)]
pub(crate) struct CpuTimer {
    id: usize,
    limit: Duration,
}

impl CpuTimer {
    pub(crate) fn new(limit: Duration) -> io::Result<CpuTimer> {
        // SAFETY: an all-zero sigevent is a valid value to fill in.
        let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_SIGNAL;
        ev.sigev_signo = libc::SIGXCPU;
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: both pointers are to live locals; the kernel writes the id.
        let rc = unsafe { libc::timer_create(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ev, &mut id) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(CpuTimer {
            id: id as usize,
            limit,
        })
    }

    /// Gives the process `limit` more CPU time from now (one syscall).
    pub(crate) fn arm(&self) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: self.limit.as_secs() as libc::time_t,
                tv_nsec: self.limit.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `id` came from timer_create in this process; `spec` is a live local.
        let rc = unsafe {
            libc::timer_settime(self.id as libc::timer_t, 0, &spec, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Where the memory-limit report goes: a pid (only that process writes), a descriptor, and
/// the frame's bytes.
struct Report {
    pid: i32,
    fd: c_int,
    frame: Box<[u8]>,
}

static REPORT: AtomicPtr<Report> = AtomicPtr::new(std::ptr::null_mut());

/// Registers the frame the SIGABRT handler writes to `fd` on a memory-limit death. The
/// previous registration is leaked (a few bytes, once per registration): the handler may
/// be reading it.
pub(crate) fn report_memory_death_to(fd: BorrowedFd<'_>, frame: Vec<u8>) {
    let report = Box::new(Report {
        pid: rustix::process::getpid().as_raw_nonzero().get(),
        fd: fd.as_raw_fd(),
        frame: frame.into_boxed_slice(),
    });
    REPORT.store(Box::into_raw(report), Ordering::Release);
}

/// The stack of the thread that runs tasks (recorded at install): the only one the handler
/// scans.
static STACK_LOW: AtomicUsize = AtomicUsize::new(0);
static STACK_HIGH: AtomicUsize = AtomicUsize::new(0);

/// How far above the handler's frame a return address into `handle_alloc_error` may sit:
/// the signal frame, `abort`, and std's few frames between them.
const SCAN: usize = 64 * 1024;
/// How far into `handle_alloc_error` its call of the handler may be.
const OOM_FN_LEN: usize = 256;

/// Whether this abort comes out of `std::alloc::handle_alloc_error`: a return address into
/// it lies on the stack between here and the task's frames (its frame is live while std's
/// handler prints and aborts). Only on the recorded thread, within its stack.
fn from_alloc_failure() -> bool {
    let oom = std::alloc::handle_alloc_error as fn(std::alloc::Layout) -> ! as usize;
    let here = 0usize;
    let mut p = std::ptr::addr_of!(here) as usize & !(size_of::<usize>() - 1);
    let (low, high) = (
        STACK_LOW.load(Ordering::Relaxed),
        STACK_HIGH.load(Ordering::Relaxed),
    );
    if p < low || p >= high {
        return false;
    }
    let end = high.min(p + SCAN);
    while p + size_of::<usize>() <= end {
        // SAFETY: `p` is aligned and inside this thread's mapped stack, above our frame;
        // the words are read as plain integers (volatile: memory no Rust object here owns).
        let word = unsafe { std::ptr::read_volatile(p as *const usize) };
        if word > oom && word < oom + OOM_FN_LEN {
            return true;
        }
        p += size_of::<usize>();
    }
    false
}

extern "C" fn on_abort(_sig: c_int) {
    // SAFETY: no arguments; returns the calling thread's errno location.
    let errno_at = unsafe { libc::__errno_location() };
    // SAFETY: that location is valid for the calling thread's life.
    let errno = unsafe { *errno_at };
    let report = REPORT.load(Ordering::Acquire);
    // errno alone is not enough: with RUST_BACKTRACE set, std prints a backtrace before
    // aborting and the files it looks for change errno.
    if !report.is_null() && (errno == libc::ENOMEM || from_alloc_failure()) {
        // SAFETY: a registered report is leaked, never freed.
        let report = unsafe { &*report };
        // SAFETY: getpid is async-signal-safe and has no arguments.
        if unsafe { libc::getpid() } == report.pid {
            // SAFETY: send(2) is async-signal-safe; the buffer is the leaked frame. A full
            // socket loses the report (MSG_DONTWAIT): the death then stays a plain SIGABRT.
            unsafe {
                libc::send(
                    report.fd,
                    report.frame.as_ptr().cast(),
                    report.frame.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
        }
    }
    // SA_RESETHAND restored the default action: returning lets `abort()` raise again.
    // SAFETY: as above; errno is restored for the interrupted code.
    unsafe { *errno_at = errno };
}

/// Records the calling thread's stack bounds for [`from_alloc_failure`].
fn record_stack() -> io::Result<()> {
    // SAFETY: an all-zero attr is filled in by pthread_getattr_np.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: no arguments; the calling thread's id.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: `attr` is a live local; the thread is the caller.
    let rc = unsafe { libc::pthread_getattr_np(me, &mut attr) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let mut addr: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was initialised above; both out-pointers are live locals.
    let rc = unsafe { libc::pthread_attr_getstack(&attr, &mut addr, &mut size) };
    // SAFETY: `attr` was initialised by pthread_getattr_np and is destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    STACK_LOW.store(addr as usize, Ordering::Relaxed);
    STACK_HIGH.store(addr as usize + size, Ordering::Relaxed);
    Ok(())
}

/// Installs the memory-limit report's SIGABRT handler (see the module docs), for aborts on
/// the calling thread (the one that runs tasks).
pub(crate) fn install_memory_death_report() -> io::Result<()> {
    record_stack()?;
    // SAFETY: an all-zero sigaction is a valid value to fill in.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_abort as extern "C" fn(c_int) as usize;
    sa.sa_flags = libc::SA_RESETHAND;
    // SAFETY: `sa` is a live local; the handler only makes async-signal-safe calls.
    let rc = unsafe { libc::sigaction(libc::SIGABRT, &sa, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The signal the CPU timer raises (and the kernel's for RLIMIT_CPU).
pub(crate) const CPU_SIGNAL: i32 = libc::SIGXCPU;
/// The signal the kernel sends for a write past RLIMIT_FSIZE.
pub(crate) const FILE_SIZE_SIGNAL: i32 = libc::SIGXFSZ;
