//! Thread identity and the kernel's robust-futex list: what lets a lock outlive its holder.
//!
//! At thread exit (and exec) the kernel walks the list registered with `set_robust_list`;
//! for every entry whose futex word holds the dying thread's TID it sets
//! `FUTEX_OWNER_DIED` and wakes one waiter. glibc registers a list head for every thread
//! it starts; `sync::raw::robust` links mproc's locks into that same list.

use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

/// The calling thread's kernel thread id.
pub(crate) fn gettid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// The address of the robust-list head registered for the calling thread, or null.
pub(crate) fn get_robust_list() -> io::Result<*mut u8> {
    let mut head: *mut libc::c_void = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: pid 0 means the calling thread; the kernel writes one pointer and one length
    // into the two locals we pass, which outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0 as libc::c_long,
            &mut head as *mut *mut libc::c_void,
            &mut len as *mut libc::size_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(head.cast())
}

/// Registers `head` (a `struct robust_list_head`, three words) as the calling thread's list.
///
/// # Safety
/// `head` must point to a valid, circular robust-list head that stays valid (never freed)
/// for the life of the thread: the kernel reads it when the thread exits.
pub(crate) unsafe fn set_robust_list(head: *mut u8) -> io::Result<()> {
    let len = 3 * std::mem::size_of::<usize>();
    // SAFETY: the caller guarantees `head` is a valid head for the thread's whole life.
    let r = unsafe { libc::syscall(libc::SYS_set_robust_list, head, len as libc::size_t) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

extern "C" fn bump_generation() {
    // Async-signal-safe: one atomic add, in the only thread of the new child.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// A number that changes in the child of every `fork`: per-thread caches of the TID and
/// the list head compare it to know they were copied from the parent.
#[inline]
pub(crate) fn fork_generation() -> u32 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Installs the `pthread_atfork` hook behind [`fork_generation`] (once per process).
pub(crate) fn watch_forks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handler is a plain `extern "C" fn` that only touches an atomic, which
        // is async-signal-safe, as a child handler of a multithreaded parent must be.
        let _ = unsafe { libc::pthread_atfork(None, None, Some(bump_generation)) };
    });
}

/// Called by code that creates a child without libc's `fork` (a raw `clone`): the child's
/// thread caches must be refreshed as `pthread_atfork` would have made them.
pub(crate) fn after_raw_fork_in_child() {
    bump_generation();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_registers_a_head_and_tids_differ_per_thread() {
        assert!(!get_robust_list().unwrap().is_null());
        let me = gettid();
        let other = std::thread::spawn(gettid).join().unwrap();
        assert_ne!(me, other);
    }
}
