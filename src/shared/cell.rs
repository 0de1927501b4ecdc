//! Typed access to `Pod` data in a shared region: volatile copies for the racy `Raw*`
//! types, and the lock-holding guards that lend `&T`/`&mut T` for `Value`/`Array`.
//!
//! **Protocol.** A `RawValue`/`RawArray` never creates a reference into the region: every
//! read and write is a volatile copy of one element, because another process may write the
//! same bytes at any moment. A `Value`/`Array` lends references only through a guard that
//! holds its lock, and every access to its data (in every process) goes through that lock;
//! so while the guard lives nobody else reads or writes those bytes.

#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use super::pod::Pod;
use super::region::Region;
use crate::sync::LockGuard;

/// A checked pointer to `count` elements of `T` at byte `offset` of `region`.
///
/// Panics if they do not fit or are misaligned: offsets come from each type's fixed
/// layout and lengths are checked on arrival, so a failure is a bug in mproc.
pub(crate) fn elements<T: Pod>(region: &Region, offset: usize, count: usize) -> NonNull<T> {
    let bytes = count
        .checked_mul(size_of::<T>())
        .and_then(|b| b.checked_add(offset));
    assert!(
        bytes.is_some_and(|end| end <= region.len()) && offset % align_of::<T>() == 0,
        "shared data out of its region"
    );
    // In bounds (checked above), so derived from the mapping's non-null start.
    NonNull::new(region.as_ptr().wrapping_add(offset).cast::<T>())
        .expect("a mapping never contains the null address")
}

/// Whether a region of `len` bytes holds `count` elements of `T` from `offset`.
pub(crate) fn fits<T>(len: usize, offset: usize, count: usize) -> bool {
    count
        .checked_mul(size_of::<T>())
        .and_then(|b| b.checked_add(offset))
        .is_some_and(|end| end <= len)
}

/// Copies element `i` out (volatile: the bytes may be changing under us).
pub(crate) fn read<T: Pod>(region: &Region, offset: usize, count: usize, i: usize) -> T {
    assert!(i < count);
    let p = elements::<T>(region, offset, count);
    let e = p.as_ptr().wrapping_add(i);
    // SAFETY: `i < count`, so the element is inside the checked range; it is aligned and
    // holds a valid `T` (zero-filled or written as a `T`; torn mixes are valid by `Pod`).
    unsafe { e.read_volatile() }
}

/// Copies `v` into element `i` (volatile).
pub(crate) fn write<T: Pod>(region: &Region, offset: usize, count: usize, i: usize, v: T) {
    assert!(i < count);
    let p = elements::<T>(region, offset, count);
    let e = p.as_ptr().wrapping_add(i);
    // SAFETY: in bounds and aligned as in `read`; no reference to these bytes exists.
    unsafe { e.write_volatile(v) }
}

/// Copies bytes out of the region (volatile, a byte at a time where unaligned, a word at a
/// time otherwise).
pub(crate) fn read_bytes(region: &Region, offset: usize, out: &mut [u8]) {
    let base = elements::<u8>(region, offset, out.len()).as_ptr();
    let mut i = 0;
    while i < out.len() {
        // `offset + i < offset + out.len() <= region.len()`, checked above.
        let p = base.wrapping_add(i);
        if p as usize % 8 == 0 && out.len() - i >= 8 {
            #[allow(clippy::cast_ptr_alignment)] // alignment checked just above
            let w8 = p.cast::<u64>();
            // SAFETY: 8 bytes in bounds, 8-aligned.
            let w = unsafe { w8.read_volatile() };
            out[i..i + 8].copy_from_slice(&w.to_ne_bytes());
            i += 8;
        } else {
            // SAFETY: one byte in bounds.
            out[i] = unsafe { p.read_volatile() };
            i += 1;
        }
    }
}

/// Copies bytes into the region (volatile, as `read_bytes`).
pub(crate) fn write_bytes(region: &Region, offset: usize, data: &[u8]) {
    let base = elements::<u8>(region, offset, data.len()).as_ptr();
    let mut i = 0;
    while i < data.len() {
        // In bounds, as in `read_bytes`.
        let p = base.wrapping_add(i);
        if p as usize % 8 == 0 && data.len() - i >= 8 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&data[i..i + 8]);
            #[allow(clippy::cast_ptr_alignment)] // alignment checked just above
            let w8 = p.cast::<u64>();
            // SAFETY: 8 bytes in bounds, 8-aligned.
            unsafe { w8.write_volatile(u64::from_ne_bytes(w)) };
            i += 8;
        } else {
            // SAFETY: one byte in bounds.
            unsafe { p.write_volatile(data[i]) };
            i += 1;
        }
    }
}

/// Exclusive access to a `Value`'s data while its lock is held.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    guard: LockGuard<'a>,
    ptr: NonNull<T>,
    _data: PhantomData<&'a mut T>,
}

impl<'a, T: Pod> ValueGuard<'a, T> {
    /// `ptr` must be the data of the value whose lock `guard` holds.
    pub(crate) fn new(guard: LockGuard<'a>, ptr: NonNull<T>) -> Self {
        ValueGuard {
            guard,
            ptr,
            _data: PhantomData,
        }
    }

    /// True if the previous holder of the lock died holding it: the value may be half
    /// updated.
    pub fn owner_died(&self) -> bool {
        self.guard.owner_died()
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held, so by the module protocol nothing else touches these
        // bytes; the pointer is checked, aligned, valid, and its region outlives 'a.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Exclusive access to an `Array`'s elements while its lock is held.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Pod> {
    guard: LockGuard<'a>,
    ptr: NonNull<T>,
    len: usize,
    _data: PhantomData<&'a mut [T]>,
}

impl<'a, T: Pod> ArrayGuard<'a, T> {
    /// `ptr`/`len` must be the elements of the array whose lock `guard` holds.
    pub(crate) fn new(guard: LockGuard<'a>, ptr: NonNull<T>, len: usize) -> Self {
        ArrayGuard {
            guard,
            ptr,
            len,
            _data: PhantomData,
        }
    }

    /// True if the previous holder of the lock died holding it.
    pub fn owner_died(&self) -> bool {
        self.guard.owner_died()
    }
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: as for `ValueGuard`: lock held, `len` elements checked and valid.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
