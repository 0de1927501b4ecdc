//! Entry records: the only addresses a process accepts from outside and calls.
//!
//! A parent names the function a child must run by an offset. The offset does not point
//! at the function: it points at an [`Record`], a constant the compiler emits once per
//! `(F, Args, R)` beside the entry it names, holding a 16-byte tag and the entry's
//! address. The receiver turns the offset back into an address and accepts it only if
//! 1. it is aligned for a record and the whole record lies in a mapping of this executable's
//!    own file that holds no code (records are constants: `.rodata`/`.data.rel.ro`), so
//!    nothing a peer wrote (heap, stack) can pass for one;
//! 2. the tag is the one for this kind of entry (child entry or pool entry);
//! 3. the function address in it lies in a code mapping of this executable.
//!
//! Anything else (an offset from a forged start-up message, a corrupt one, a different
//! build) is refused without a jump. Offsets are measured from [`anchor`], so they hold
//! across ASLR: the records and the anchor move together with the executable.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Entry, PoolEntry, Target, entry, pool_entry};
use crate::sys::pid::{ImageMapping, image_mappings};

/// A named entry of kind `E` (an `Entry` or a `PoolEntry`).
#[repr(C)]
pub(crate) struct Record<E> {
    tag: [u64; 2],
    entry: E,
}

/// A record's bytes before they are trusted: the same layout, the entry as a number.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawRecord {
    tag: [u64; 2],
    entry: usize,
}

const _: () = {
    assert!(std::mem::size_of::<Record<Entry>>() == std::mem::size_of::<RawRecord>());
    assert!(std::mem::align_of::<Record<Entry>>() == std::mem::align_of::<RawRecord>());
    assert!(std::mem::size_of::<Record<PoolEntry>>() == std::mem::size_of::<RawRecord>());
};

/// The tags ("mproc entry" / "mproc pool entry" in ASCII, then a random word). The check
/// compares against values derived from them at run time, so the tags themselves appear
/// in the executable only inside records.
const ENTRY_TAG: [u64; 2] = [0x7972_746e_6520_636f, 0x9e1d_4a53_c2b7_0f61];
const POOL_TAG: [u64; 2] = [0x6c6f_6f70_2063_6f72, 0x5b83_e6d0_17a9_c42e];
/// "mproc manager entry": a function a manager's server runs (`modify`, custom types).
const SERVER_TAG: [u64; 2] = [0x7265_6761_6e61_6d20, 0x3c71_d2a8_96e0_5bf4];

/// A record for a manager server's entry (built in `manager/managed.rs`'s constants).
pub(crate) const fn server_record(
    entry: crate::manager::ServerEntry,
) -> Record<crate::manager::ServerEntry> {
    Record {
        tag: SERVER_TAG,
        entry,
    }
}

/// Names the types of a target without owning values of them.
type Marker<F, Args, R> = PhantomData<fn() -> (F, Args, R)>;

/// The records of `(F, Args, R)`.
pub(crate) struct Records<F, Args, R>(Marker<F, Args, R>);

impl<F, Args, R> Records<F, Args, R>
where
    F: Target<Args, R>,
    Args: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// The child entry.
    pub(crate) const ENTRY: &'static Record<Entry> = &Record {
        tag: ENTRY_TAG,
        entry: entry::<F, Args, R>,
    };
    /// The pool entry.
    pub(crate) const POOL: &'static Record<PoolEntry> = &Record {
        tag: POOL_TAG,
        entry: pool_entry::<F, Args, R>,
    };
}

/// The fixed point every record address is measured from.
#[inline(never)]
fn anchor() -> i32 {
    std::hint::black_box(0x6d70)
}

fn anchor_addr() -> usize {
    anchor as fn() -> i32 as usize
}

/// `record` as an offset from [`anchor`].
pub(crate) fn offset_of<E>(record: &'static Record<E>) -> i64 {
    (record as *const Record<E> as usize as i64).wrapping_sub(anchor_addr() as i64)
}

/// Reads the mappings now, so a forked child finds them read (a fork server and a parent
/// about to fork call this: their children then resolve without touching `/proc`).
pub(crate) fn warm() {
    let _ = image_mappings();
}

fn within(maps: &[ImageMapping], start: usize, len: usize, code: bool) -> bool {
    let Some(end) = start.checked_add(len) else {
        return false;
    };
    maps.iter()
        .any(|m| m.executable == code && m.start <= start && end <= m.end)
}

/// The record at `offset` from [`anchor`], if it is a real one with tag `tag`; its entry
/// as an address in this executable's code.
fn resolve(offset: i64, tag: [u64; 2]) -> Option<usize> {
    let addr = (anchor_addr() as i64).wrapping_add(offset) as usize;
    if addr % std::mem::align_of::<RawRecord>() != 0 {
        return None;
    }
    let maps = image_mappings();
    if !within(maps, addr, std::mem::size_of::<RawRecord>(), false) {
        return None;
    }
    // SAFETY: `addr` is aligned for `RawRecord` and the whole record lies inside a mapping
    // of the executable's file that stays mapped for the life of the process (checked just
    // above against /proc/self/maps); every bit pattern is a valid `RawRecord`.
    let raw = unsafe { (addr as *const RawRecord).read() };
    // Compared through a run-time step (see the tags' docs).
    let key = std::hint::black_box(0x5851_f42d_4c95_7f2d_u64);
    let matches = raw.tag[0] ^ key == tag[0] ^ key && raw.tag[1] ^ key == tag[1] ^ key;
    (matches && within(maps, raw.entry, 1, true)).then_some(raw.entry)
}

/// The child entry at `offset`, if `offset` names one (see the module docs).
pub(crate) fn entry_at(offset: i64) -> Option<Entry> {
    let addr = resolve(offset, ENTRY_TAG)?;
    // SAFETY: `addr` was read from a record with the child-entry tag inside this
    // executable's constant data, and lies in its code; such records are only emitted by
    // `Records::ENTRY`, whose `entry` field is an `Entry`.
    Some(unsafe { std::mem::transmute::<usize, Entry>(addr) })
}

/// The pool entry at `offset`, if `offset` names one (see the module docs).
pub(crate) fn pool_entry_at(offset: i64) -> Option<PoolEntry> {
    let addr = resolve(offset, POOL_TAG)?;
    // SAFETY: as in `entry_at`, for a record with the pool-entry tag, emitted only by
    // `Records::POOL`, whose `entry` field is a `PoolEntry`.
    Some(unsafe { std::mem::transmute::<usize, PoolEntry>(addr) })
}

/// The manager server entry at `offset`, if `offset` names one (see the module docs).
pub(crate) fn server_entry_at(offset: i64) -> Option<crate::manager::ServerEntry> {
    let addr = resolve(offset, SERVER_TAG)?;
    // SAFETY: as in `entry_at`, for a record with the server-entry tag, emitted only by
    // `server_record`, whose `entry` field is a `ServerEntry`.
    Some(unsafe { std::mem::transmute::<usize, crate::manager::ServerEntry>(addr) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: u64) -> u64 {
        x * x
    }

    #[test]
    fn real_records_resolve_and_nothing_else_does() {
        fn offsets<F: Target<(u64,), u64>>(_: F) -> (i64, i64) {
            (
                offset_of(Records::<F, (u64,), u64>::ENTRY),
                offset_of(Records::<F, (u64,), u64>::POOL),
            )
        }
        let (e, p) = offsets(square);
        assert!(entry_at(e).is_some());
        assert!(pool_entry_at(p).is_some());
        // A record of the other kind is refused.
        assert!(entry_at(p).is_none());
        assert!(pool_entry_at(e).is_none());
        // The anchor itself, code near it, a forged constant, the heap, wild offsets.
        let heap = Box::new(RawRecord {
            tag: ENTRY_TAG,
            entry: anchor_addr(),
        });
        let heap_offset = (&*heap as *const RawRecord as i64).wrapping_sub(anchor_addr() as i64);
        for bad in [
            0,
            8,
            16,
            -16,
            e + 8,
            e - 16,
            0x4141_4141,
            -0x4141_4141,
            i64::MAX,
            i64::MIN,
            heap_offset,
        ] {
            assert!(entry_at(bad).is_none(), "offset {bad:#x} was accepted");
            assert!(pool_entry_at(bad).is_none(), "offset {bad:#x} was accepted");
        }
    }
}
