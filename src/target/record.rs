//! Entry records: the only addresses a process accepts from outside and calls.
//!
//! A parent names the function a child must run by an offset. The offset does not point
//! at the function: it points at an [`Record`], a constant the compiler emits once per
//! `(F, Args, R)` beside the entry it names, holding a 16-byte tag and the entry's
//! address. The receiver turns the offset back into an address and accepts it only if
//! 1. it is aligned for a record and the whole record lies in a read-only mapping of this
//!    executable's own file that holds no code (records are constants: `.rodata`, or
//!    `.data.rel.ro`, which the loader makes read-only after relocating it), so nothing
//!    written at run time (heap, stack, a `static` with interior mutability in `.data`)
//!    can pass for one;
//! 2. the tag is the one for this kind of entry (child entry or pool entry);
//! 3. the function address in it lies in a code mapping of this executable (read-only and
//!    executable).
//!
//! Anything else (an offset from a forged start-up message, a corrupt one, a different
//! build) is refused without a jump. Offsets are measured from [`anchor`], so they hold
//! across ASLR: the records and the anchor move together with the executable.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::server::ServerEntry;
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
pub(crate) const fn server_record(entry: ServerEntry) -> Record<ServerEntry> {
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
pub(crate) fn warm() -> crate::Result<()> {
    match crate::sys::pid::try_image_mappings() {
        Ok(_) => Ok(()),
        Err(e) => Err(crate::Error::from(std::io::Error::new(
            e.kind(),
            format!("cannot read this executable's mappings (/proc/self/maps): {e}"),
        ))),
    }
}

/// What a mapping must be for something of this kind to lie in it.
#[derive(Clone, Copy)]
enum Region {
    /// Constant data: readable only (a record).
    Constant,
    /// Code: readable and executable, never writable (an entry function).
    Code,
}

/// Whether `[start, start + len)` lies whole in one mapping of kind `region`. Writable
/// mappings never qualify: what a process can write, a forged message could have planted.
fn within(maps: &[ImageMapping], start: usize, len: usize, region: Region) -> bool {
    let Some(end) = start.checked_add(len) else {
        return false;
    };
    let code = matches!(region, Region::Code);
    maps.iter()
        .any(|m| !m.writable && m.executable == code && m.start <= start && end <= m.end)
}

/// The record at `offset` from [`anchor`], if it is a real one with tag `tag`; its entry
/// as an address in this executable's code.
fn resolve(offset: i64, tag: [u64; 2]) -> Option<usize> {
    let addr = (anchor_addr() as i64).wrapping_add(offset) as usize;
    if addr % std::mem::align_of::<RawRecord>() != 0 {
        return None;
    }
    let maps = image_mappings();
    if !within(
        maps,
        addr,
        std::mem::size_of::<RawRecord>(),
        Region::Constant,
    ) {
        return None;
    }
    // SAFETY: `addr` is aligned for `RawRecord` and the whole record lies inside a read-only
    // mapping of the executable's file that stays mapped for the life of the process (checked just
    // above against /proc/self/maps); every bit pattern is a valid `RawRecord`.
    let raw = unsafe { (addr as *const RawRecord).read() };
    // Compared through a run-time step (see the tags' docs).
    let key = std::hint::black_box(0x5851_f42d_4c95_7f2d_u64);
    let matches = raw.tag[0] ^ key == tag[0] ^ key && raw.tag[1] ^ key == tag[1] ^ key;
    (matches && within(maps, raw.entry, 1, Region::Code)).then_some(raw.entry)
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
pub(crate) fn server_entry_at(offset: i64) -> Option<ServerEntry> {
    let addr = resolve(offset, SERVER_TAG)?;
    // SAFETY: as in `entry_at`, for a record with the server-entry tag, emitted only by
    // `server_record`, whose `entry` field is a `ServerEntry`.
    Some(unsafe { std::mem::transmute::<usize, ServerEntry>(addr) })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use proptest::prelude::*;

    use super::*;

    /// Slots for forged records in this executable's own *writable* data (`.data`: the
    /// initial values are not zero, so the array is part of the file's image, not `.bss`).
    static FORGED: [AtomicU64; 3 * 16] = [const { AtomicU64::new(0x0101_0101) }; 48];
    /// Serializes the tests that write into `FORGED`.
    static FORGING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Writes a record with `tag` and `entry` into slot `slot` of `FORGED`; its offset.
    fn forge(slot: usize, tag: [u64; 2], entry: usize) -> i64 {
        let words = &FORGED[slot * 3..slot * 3 + 3];
        words[0].store(tag[0], Ordering::SeqCst);
        words[1].store(tag[1], Ordering::SeqCst);
        words[2].store(entry as u64, Ordering::SeqCst);
        (words.as_ptr() as i64).wrapping_sub(anchor_addr() as i64)
    }

    fn forged_lies_in_a_writable_image_mapping() -> bool {
        let at = FORGED.as_ptr() as usize;
        image_mappings()
            .iter()
            .any(|m| m.writable && m.start <= at && at + std::mem::size_of_val(&FORGED) <= m.end)
    }

    fn square_entries() -> (usize, usize) {
        fn of<F: Target<(u64,), u64>>(_: F) -> (usize, usize) {
            (
                Records::<F, (u64,), u64>::ENTRY.entry as usize,
                Records::<F, (u64,), u64>::POOL.entry as usize,
            )
        }
        of(square)
    }

    /// A record with the right tag and a real entry, but in a writable mapping of our own
    /// executable (where a peer's bytes could have been copied), is refused.
    #[test]
    fn a_record_in_writable_data_is_refused() {
        let _g = FORGING.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            forged_lies_in_a_writable_image_mapping(),
            "the test's forged records are not in the executable's writable data: {:?}",
            image_mappings()
        );
        let (entry, pool) = square_entries();
        let e = forge(0, ENTRY_TAG, entry);
        let p = forge(1, POOL_TAG, pool);
        assert!(entry_at(e).is_none(), "a record in .data was accepted");
        assert!(
            pool_entry_at(p).is_none(),
            "a pool record in .data was accepted"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

        /// Records forged in writable data (any slot, any tag, real or bogus entries) and
        /// offsets anywhere in any writable mapping of the executable never resolve.
        #[test]
        fn nothing_in_writable_memory_resolves(
            slot in 0usize..16,
            kind in 0usize..3,
            real_entry in any::<bool>(),
            bogus in any::<usize>(),
            pick in any::<(usize, usize)>(),
        ) {
            let _g = FORGING.lock().unwrap_or_else(|e| e.into_inner());
            let (entry, pool) = square_entries();
            let (tag, target) = [(ENTRY_TAG, entry), (POOL_TAG, pool), (SERVER_TAG, entry)][kind];
            let off = forge(slot, tag, if real_entry { target } else { bogus });
            prop_assert!(entry_at(off).is_none());
            prop_assert!(pool_entry_at(off).is_none());
            prop_assert!(server_entry_at(off).is_none());
            let writable: Vec<_> = image_mappings().iter().filter(|m| m.writable).collect();
            if !writable.is_empty() {
                let m = writable[pick.0 % writable.len()];
                let at = (m.start + pick.1 % (m.end - m.start)) & !7;
                let off = (at as i64).wrapping_sub(anchor_addr() as i64);
                prop_assert!(entry_at(off).is_none(), "{at:#x} in {m:?}");
                prop_assert!(pool_entry_at(off).is_none(), "{at:#x} in {m:?}");
            }
        }
    }

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
