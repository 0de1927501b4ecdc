//! Shared mappings: anonymous `memfd` objects mapped `MAP_SHARED`.
//!
//! A memfd has no name in any filesystem, so nothing is left behind when the last process
//! holding it exits. Its fd travels to children like any other handle.
//!
//! **Seals.** A process that maps a shared object dies of `SIGBUS` when it touches a page
//! past the object's end, so an object whose size another process can cut is a way to kill
//! whoever maps it. Every memfd made here is sealed right after sizing: its size can never
//! change again (`F_SEAL_SHRINK | F_SEAL_GROW`), and no seal can be removed or added
//! (`F_SEAL_SEAL`). A receiver checks [`is_size_sealed`] before trusting an fd's size.
//! Named segments (`shm_open`) cannot be sealed; see `shared/segment.rs`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// Creates an anonymous shared-memory object of `len` bytes (zero-filled, CLOEXEC), its
/// size sealed (see the module notes).
pub(crate) fn memfd_create(name: &str, len: usize) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(fd)
}

/// Whether the object behind `fd` can never shrink (`F_SEAL_SHRINK`): only then may a
/// mapping of its current size be trusted not to `SIGBUS`. Checked before its size, so a
/// peer cannot shrink it between the two. An fd that cannot carry seals at all (not a
/// memfd or tmpfs file) is `false`.
pub(crate) fn is_size_sealed(fd: BorrowedFd<'_>) -> io::Result<bool> {
    match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) => Ok(seals.contains(SealFlags::SHRINK)),
        Err(rustix::io::Errno::INVAL) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The size in bytes of the object behind `fd`.
pub(crate) fn fd_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let st = rustix::fs::fstat(fd)?;
    usize::try_from(st.st_size).map_err(|_| io::Error::other("negative object size"))
}

/// Maps `len` bytes of `fd` read-write and shared. The mapping stays valid until
/// [`unmap`], independently of `fd`, which may be closed.
pub(crate) fn map_shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<NonNull<u8>> {
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot map zero bytes",
        ));
    }
    // SAFETY: a fresh mapping at an address the kernel picks (null hint) aliases no Rust
    // reference; callers reach it only through raw pointers and atomics.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd.as_fd(),
            0,
        )
    }?;
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Unmaps a mapping made by [`map_shared`].
///
/// # Safety
/// `ptr` and `len` must be exactly those of one live [`map_shared`] mapping, and no
/// reference into it may be used afterwards.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller passes a live mapping of exactly `len` bytes that nothing uses
    // any more. munmap can only fail for bad arguments, which the caller rules out.
    let _ = unsafe { rustix::mm::munmap(ptr.as_ptr().cast(), len) };
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    rustix::param::page_size()
}

/// Asks for transparent huge pages behind `buf`'s capacity, before it is first written: a
/// large receive buffer then faults in 2 MiB at a time instead of 4 KiB at a time (on a VM
/// each fault is a trap to the host, and 16 384 of them cost more than the copy). Best
/// effort: where THP is off this does nothing. The buffer's contents are unchanged.
pub(crate) fn advise_huge_pages(buf: &mut Vec<u8>) {
    let page = page_size();
    let start = buf.as_mut_ptr() as usize;
    let first = start.next_multiple_of(page);
    let end = (start + buf.capacity()) & !(page - 1);
    if end > first {
        // SAFETY: `[first, end)` lies inside `buf`'s own allocation, which this process owns
        // and which stays allocated across the call; MADV_HUGEPAGE only changes how its pages
        // are backed, never their contents, so no Rust reference is invalidated.
        let _ = unsafe {
            rustix::mm::madvise(
                first as *mut std::ffi::c_void,
                end - first,
                rustix::mm::Advice::LinuxHugepage,
            )
        };
    }
}

/// A memfd of `len` bytes without seals: what a careless or hostile peer could send.
#[cfg(test)]
pub(crate) fn unsealed_memfd(len: usize) -> OwnedFd {
    let fd = rustix::fs::memfd_create("unsealed", MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, len as u64).unwrap();
    fd
}

/// Cuts the object behind `fd` to `len` bytes, as a hostile peer would.
#[cfg(test)]
pub(crate) fn truncate(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    Ok(rustix::fs::ftruncate(fd, len as u64)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfds_cannot_be_resized() {
        let fd = memfd_create("test", 4096).unwrap();
        assert!(is_size_sealed(fd.as_fd()).unwrap());
        assert_eq!(
            rustix::fs::ftruncate(&fd, 0),
            Err(rustix::io::Errno::PERM),
            "a sealed memfd must refuse to shrink"
        );
        assert_eq!(
            rustix::fs::ftruncate(&fd, 8192),
            Err(rustix::io::Errno::PERM)
        );
        assert_eq!(fd_size(fd.as_fd()).unwrap(), 4096);
    }

    #[test]
    fn an_unsealed_memfd_is_reported_unsealed() {
        let fd = unsealed_memfd(4096);
        assert!(!is_size_sealed(fd.as_fd()).unwrap());
    }
}
