//! What Rust's runtime sets up before `main` that a process routed earlier (a spawned
//! child, the fork server and its children) must set up itself.
//!
//! * SIGPIPE ignored: see `process::ignore_sigpipe`.
//! * The stack-overflow report: Rust's runtime catches a fault in the main thread's guard
//!   region on an alternate signal stack, prints "thread 'main' has overflowed its stack"
//!   and aborts (exit by SIGABRT) instead of dying of a bare SIGSEGV. [`report_stack_overflow`]
//!   installs the same for the calling (main) thread; the fork server's children inherit it.
//!   Any other fault restores the default action and returns, so the faulting instruction
//!   runs again and the process dies of the signal as it would have.

use std::ffi::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The lowest and highest addresses counted as the main thread's guard region.
static GUARD_LOW: AtomicUsize = AtomicUsize::new(0);
static GUARD_HIGH: AtomicUsize = AtomicUsize::new(0);

/// Room below the lowest stack address that a fault may hit: the kernel keeps a gap of
/// 256 pages under a growing stack.
const GUARD_GAP: usize = 256 * 4096;
const ALT_STACK: usize = 64 * 1024;

extern "C" fn on_fault(sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler of a fault.
    let info = unsafe { &*info };
    // SAFETY: for SIGSEGV and SIGBUS the kernel fills in `si_addr`.
    let addr = unsafe { info.si_addr() } as usize;
    let (low, high) = (
        GUARD_LOW.load(Ordering::Relaxed),
        GUARD_HIGH.load(Ordering::Relaxed),
    );
    if low <= addr && addr < high {
        let msg = b"\nthread 'main' has overflowed its stack\nfatal runtime error: stack overflow, aborting\n";
        // SAFETY: write(2) on stderr is async-signal-safe; the buffer is a static.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        // SAFETY: abort is async-signal-safe and does not return.
        unsafe { libc::abort() };
    }
    // Not ours: restore the default action and let the fault happen again.
    // SAFETY: resetting a standard signal to SIG_DFL.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

/// Installs the stack-overflow report for the calling thread (the main thread of a process
/// routed before `main`). Best effort: a failure leaves the plain SIGSEGV behaviour.
pub(crate) fn report_stack_overflow() {
    let page = crate::sys::mman::page_size();
    // SAFETY: an anonymous private mapping at a kernel-chosen address aliases nothing.
    let alt = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if alt == libc::MAP_FAILED {
        return;
    }
    let stack = libc::stack_t {
        ss_sp: alt,
        ss_flags: 0,
        ss_size: ALT_STACK,
    };
    // SAFETY: `stack` describes a live mapping of ALT_STACK bytes that is never unmapped.
    if unsafe { libc::sigaltstack(&stack, std::ptr::null_mut()) } != 0 {
        return;
    }
    let Some(low) = main_stack_low() else { return };
    GUARD_LOW.store(low.saturating_sub(GUARD_GAP), Ordering::Relaxed);
    GUARD_HIGH.store(low + page, Ordering::Relaxed);
    // SAFETY: an all-zero sigaction is a valid starting value; fields are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_fault as extern "C" fn(c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: `action` is fully initialised; its handler is async-signal-safe.
        unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) };
    }
}

/// The lowest address of the calling thread's stack.
fn main_stack_low() -> Option<usize> {
    // SAFETY: an all-zero pthread_attr_t is filled in by pthread_getattr_np below.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: `me` is the calling thread; `attr` is a valid out-pointer.
    if unsafe { libc::pthread_getattr_np(me, &mut attr) } != 0 {
        return None;
    }
    let mut addr: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was initialised by pthread_getattr_np; the out-pointers are valid.
    let rc = unsafe { libc::pthread_attr_getstack(&attr, &mut addr, &mut size) };
    // SAFETY: `attr` was initialised by pthread_getattr_np and is destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    (rc == 0).then_some(addr as usize)
}

/// Ignores SIGINT (Ctrl-C): pool workers, the fork server and manager servers, whose fate
/// is their parent's to decide (they die with it through the parent-death watch). A Ctrl-C
/// at the terminal reaches the whole foreground process group.
pub(crate) fn ignore_interrupts() {
    // SAFETY: setting a standard disposition for SIGINT has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
}

/// Restores SIGINT's default action (terminate): a child forked by the fork server must
/// not keep the server's "ignore".
pub(crate) fn default_interrupts() {
    // SAFETY: setting a standard disposition for SIGINT has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
}
