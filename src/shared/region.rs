//! A shared region: one `memfd` object, mapped read-write in every process that holds it.
//!
//! The region is the only owner of the raw mapping. Everything built on it (locks, values,
//! queue rings) reaches the bytes through [`Region::atomic_u32`] and friends, or through raw
//! pointers under its own protocol; never through `&T`/`&mut T` to bytes another process
//! may be writing. The mapping is unmapped, and the memfd closed, when the last handle in
//! this process drops; the kernel frees the memory when the last process lets go.
//!
//! **Hostile sizes.** Touching a mapping past its object's end is `SIGBUS`, so a region
//! received from another process is mapped only if its memfd is sealed against shrinking
//! (every region made by [`Region::new`] is): a peer cannot then cut it under us. Named
//! segments cannot be sealed and go through [`Region::map`] unchecked (see
//! `shared/segment.rs`).

#![allow(unsafe_code)]

use std::fmt;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::HandleFd;
use crate::error::{Error, Result};
use crate::sys::mman;

/// A shared memory region backed by a memfd. Share it within a process with `Arc<Region>`;
/// send it to another process inside any message or process argument.
pub(crate) struct Region {
    fd: HandleFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, valid for the life of `Region` in whichever
// thread holds it; all access goes through atomics or raw pointers under a protocol that
// already tolerates concurrent access from other processes, so other threads are no worse.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` hands out only atomics and raw pointers.
unsafe impl Sync for Region {}

impl Region {
    /// A new zero-filled region of at least `len` bytes (rounded up to whole pages).
    pub(crate) fn new(name: &str, len: usize) -> Result<Self> {
        let page = mman::page_size();
        let len = len.max(1).div_ceil(page) * page;
        let fd = mman::memfd_create(name, len)?;
        let ptr = mman::map_shared(fd.as_fd(), len)?;
        Ok(Region {
            fd: HandleFd::new(fd),
            ptr,
            len,
        })
    }

    /// Maps a region received from another process: refused unless its size is sealed.
    fn from_fd(fd: HandleFd, len: usize) -> Result<Self> {
        // Seals first, size second: once sealed the size can no longer change.
        if !mman::is_size_sealed(fd.as_fd())? {
            return Err(Error::Codec(
                "shared region's memfd is not sealed against shrinking".into(),
            ));
        }
        Region::map_unchecked(fd, len)
    }

    /// Maps `len` bytes of an existing object (a named segment), as a region. The object's
    /// size is not sealed: whoever can shrink it can make this process `SIGBUS`.
    pub(crate) fn map(fd: HandleFd, len: usize) -> Result<Self> {
        Region::map_unchecked(fd, len)
    }

    /// Deserializes a named segment's region, which carries no seals (see [`Region::map`]).
    pub(crate) fn deserialize_unsealed<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<std::sync::Arc<Region>, D::Error> {
        let w = Wire::<HandleFd>::deserialize(d)?;
        let len = usize::try_from(w.len).map_err(serde::de::Error::custom)?;
        Region::map(w.fd, len)
            .map(std::sync::Arc::new)
            .map_err(serde::de::Error::custom)
    }

    fn map_unchecked(fd: HandleFd, len: usize) -> Result<Self> {
        let actual = mman::fd_size(fd.as_fd())?;
        if actual < len || len == 0 {
            return Err(Error::Codec(format!(
                "shared region is {actual} bytes, message says {len}"
            )));
        }
        let ptr = mman::map_shared(fd.as_fd(), len)?;
        Ok(Region { fd, ptr, len })
    }

    /// Whether both map the same memory object, possibly at different addresses (two
    /// copies of one handle received by the same process).
    pub(crate) fn same_object(&self, other: &Region) -> bool {
        self.ptr == other.ptr
            || matches!(
                (
                    crate::sys::shm::object_id(self.fd.as_fd()),
                    crate::sys::shm::object_id(other.fd.as_fd())
                ),
                (Ok(a), Ok(b)) if a == b
            )
    }

    /// A second handle on the same memory (its own mapping of the same memfd), e.g. to pass
    /// to a child among its start arguments while this one stays here.
    pub(crate) fn duplicate(&self) -> Result<Region> {
        Region::map_unchecked(self.fd.try_clone()?, self.len)
    }

    /// The mapped length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The start of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The 32-bit atomic word at byte `offset`.
    ///
    /// Panics if `offset` is misaligned or out of bounds: offsets are fixed by each
    /// structure's layout, so a bad one is a bug in mproc.
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset % 4 == 0 && offset + 4 <= self.len,
            "bad u32 offset {offset}"
        );
        // SAFETY: `offset + 4 <= len` (checked), so the address stays inside the mapping.
        let ptr = unsafe { self.ptr.as_ptr().add(offset) };
        // SAFETY:
        // * the address is inside the mapping, which lives as long as `&self`;
        // * it is 4-aligned (the mapping is page-aligned, and the offset is checked);
        // * every process touches these bytes only atomically, so an `&AtomicU32` is sound.
        unsafe { AtomicU32::from_ptr(ptr.cast()) }
    }

    /// The 64-bit atomic word at byte `offset`.
    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset % 8 == 0 && offset + 8 <= self.len,
            "bad u64 offset {offset}"
        );
        // SAFETY: `offset + 8 <= len` (checked), so the address stays inside the mapping.
        let ptr = unsafe { self.ptr.as_ptr().add(offset) };
        // SAFETY: as for `atomic_u32`, with 8-byte alignment checked.
        unsafe { AtomicU64::from_ptr(ptr.cast()) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly this region's live mapping, and no borrow of it
        // can outlive `&self`.
        unsafe { mman::unmap(self.ptr, self.len) };
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("fd", &self.fd)
            .field("len", &self.len)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire<F> {
    fd: F,
    len: u64,
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        Wire {
            fd: &self.fd,
            len: self.len as u64,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = Wire::<HandleFd>::deserialize(d)?;
        let len = usize::try_from(w.len).map_err(serde::de::Error::custom)?;
        Region::from_fd(w.fd, len).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn atomics_are_shared_between_mappings() {
        let r = Region::new("test", 100).unwrap();
        assert_eq!(r.len(), mman::page_size());
        r.atomic_u32(8).store(42, Ordering::SeqCst);
        // A second mapping of the same memfd sees the same word.
        let fd = r.fd.try_clone().unwrap();
        let r2 = Region::from_fd(fd, r.len()).unwrap();
        assert_eq!(r2.atomic_u32(8).load(Ordering::SeqCst), 42);
    }

    #[test]
    fn a_received_region_cannot_be_shrunk_under_its_users() {
        let r = Region::new("test", 100).unwrap();
        let fd = r.fd.try_clone().unwrap();
        // What a hostile peer would do after handing the region over.
        let err = mman::truncate(fd.as_fd(), 0).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        let r2 = Region::from_fd(fd, r.len()).unwrap();
        r2.atomic_u32(8).store(7, Ordering::SeqCst);
        assert_eq!(r.atomic_u32(8).load(Ordering::SeqCst), 7);
    }

    #[test]
    fn an_unsealed_memfd_is_refused() {
        let fd = HandleFd::new(mman::unsealed_memfd(4096));
        let err = Region::from_fd(fd, 4096).unwrap_err();
        assert!(
            matches!(&err, Error::Codec(m) if m.contains("not sealed")),
            "{err:?}"
        );
    }
}
