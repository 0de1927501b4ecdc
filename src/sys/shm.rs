//! Named POSIX shared-memory objects (`shm_open`), the backing of `SharedMemory`.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::Mode;
use rustix::shm::OFlags;

/// Creates the object `name` (which starts with `/`) of `len` bytes; fails with
/// `AlreadyExists` if it exists.
pub(crate) fn create(name: &str, len: usize) -> io::Result<OwnedFd> {
    let fd = rustix::shm::open(
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
        Mode::from_raw_mode(0o600),
    )?;
    if let Err(e) = rustix::fs::ftruncate(&fd, len as u64) {
        let _ = rustix::shm::unlink(name);
        return Err(e.into());
    }
    Ok(fd)
}

/// Opens the existing object `name` read-write.
pub(crate) fn open(name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::shm::open(name, OFlags::RDWR, Mode::empty())?)
}

/// Removes the name `name`; the memory lives on while anything maps it.
pub(crate) fn unlink(name: &str) -> io::Result<()> {
    Ok(rustix::shm::unlink(name)?)
}

/// A random 64-bit number for unique names.
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_err() {
        // Uniqueness, not secrecy: the clock and pid are enough if getrandom is unavailable.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ (u64::from(super::pid::current()) << 40);
    }
    u64::from_ne_bytes(b)
}

/// The (device, inode) pair that identifies the object behind `fd`.
pub(crate) fn object_id(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev as u64, st.st_ino as u64))
}
