//! `Pod`: the types that may live in shared memory.

#![allow(unsafe_code)]

/// Plain old data: a type whose bytes may be copied to shared memory and read back, in
/// another process, as the same value.
///
/// Implemented for the integers, `f32`/`f64`, `bool`, and arrays of `Pod`. Own trait
/// rather than `bytemuck::Pod`, because Python's `Value('b')`/`c_bool` needs `bool`, which
/// bytemuck rightly refuses (not every byte is a valid `bool`), and because the requirement
/// here is weaker than "any bit pattern" (see below).
///
/// # Safety
/// Implement it only for a `#[repr(C)]` (or `#[repr(transparent)]`) type such that:
/// * all-zero bytes are a valid value (new shared memory is zero-filled);
/// * any byte-wise mix of valid values is valid: a `RawValue` read racing a write may see
///   some bytes of each. Integers, floats, `bool` (one byte cannot tear) and structs or
///   arrays of them qualify; `char`, enums, and references do not;
/// * it has no pointers, references, or resources: an address means nothing in another
///   process, and `Drop` never runs for shared copies.
///
/// ```
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Point { x: f64, y: f64 }
/// // SAFETY: two f64s: zero is valid, every mix of bytes is valid, no pointers.
/// unsafe impl mproc::Pod for Point {}
/// # fn main() -> mproc::Result<()> {
/// let p = mproc::Value::new(Point { x: 1.0, y: 2.0 })?;
/// p.lock().x += 1.0;
/// assert_eq!(p.get(), Point { x: 2.0, y: 2.0 });
/// # Ok(())
/// # }
/// ```
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

macro_rules! pod {
    ($($t:ty),*) => {
        // SAFETY: primitive numbers and bool: zero is valid, bytes of valid values mix
        // into valid values (bool is a single byte), no pointers.
        $(unsafe impl Pod for $t {})*
    };
}

pod!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, bool
);

// SAFETY: an array of `Pod` is `Pod` element by element, with no padding between elements.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}
