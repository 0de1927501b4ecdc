//! Linking lock words into the calling thread's kernel robust list.
//!
//! **Layout.** A robust lock occupies a [`BLOCK`]-byte block of shared memory: the futex word
//! at [`LOCK_WORD`] (40), and a list entry 24 and 32 bytes after it — `prev` at 64, `next`
//! at 72 — the distances glibc keeps in a 64-bit `pthread_mutex_t` (`__lock` at 0,
//! `__list.__prev`/`__next` at 24/32). The list links `next` fields; a `prev` sits 8 bytes
//! before each `next`, and the head's `futex_offset` is -32. Starting the word at 40 rather
//! than 0 puts the entry on the next cache line: the owner writes its entry on every acquire
//! and release, and waiters spinning on the word would otherwise pull that line away from
//! it in the middle of its critical section. So the kernel finds our word from our entry, and glibc's own
//! enqueue/dequeue of robust pthread mutexes, which write the `prev`/`next` of their
//! neighbours, write ours at the right places. glibc also keeps a `prev` word just before
//! the head (`robust_prev`), which our enqueue writes when the list is empty.
//!
//! **Protocol.** Only the owning thread links or unlinks an entry, and only while it holds
//! (or is taking, or is giving up) the lock: an entry's pointers are meaningful only in the
//! owner's address space and are overwritten by the next owner. Around each transition the
//! entry is published in `list_op_pending`, so a death between the word's CAS and the list
//! update is still seen by the kernel, as glibc does.
//!
//! **Lifetime.** The list must never point at unmapped memory: glibc and the kernel would
//! write or read it. A guard borrows its handle, so the mapping outlives every normal
//! release; a guard leaked with `mem::forget` is covered by [`SyncRegion`], which keeps the
//! mapping alive when its last handle drops while a thread of this process still owns it.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering, compiler_fence};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::shared::region::Region;
use crate::sys::robust as sys;

/// Bytes reserved for one robust lock (word, entry, and room for an RLock's count): two
/// cache lines.
pub(crate) const BLOCK: usize = 128;
/// Where the lock word sits in its block.
pub(crate) const LOCK_WORD: usize = 40;
/// Where the entry's `next` field lies, from the word.
const ENTRY_OFFSET: usize = 32;
/// The `futex_offset` a head must carry for our layout: word = entry - 32.
const FUTEX_OFFSET: isize = -(ENTRY_OFFSET as isize);
/// The futex word's TID bits (`FUTEX_TID_MASK`); the kernel compares them at thread death.
pub(crate) const TID_MASK: u32 = 0x3fff_ffff;

/// The calling thread, as the lock protocol names it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Me {
    /// The kernel thread id: unique system-wide among live threads.
    pub(crate) tid: u32,
    /// The robust-list head's address, or 0 when this thread's deaths go unreported.
    head: usize,
}

impl Me {
    /// A model thread (`shim::model`): its id, and no kernel robust list.
    #[cfg(test)]
    pub(crate) fn model(tid: u32) -> Me {
        Me { tid, head: 0 }
    }
}

thread_local! {
    /// (fork generation, tid, head): valid while the generation matches the process's.
    static ME: Cell<Option<(u32, u32, usize)>> = const { Cell::new(None) };
}

/// The calling thread's identity and list head (cached per thread, refreshed after fork).
#[inline]
pub(crate) fn me() -> Me {
    let generation = sys::fork_generation();
    match ME.get() {
        Some((g, tid, head)) if g == generation => Me { tid, head },
        _ => init_me(),
    }
}

#[cold]
fn init_me() -> Me {
    sys::watch_forks();
    let generation = sys::fork_generation();
    let tid = sys::gettid();
    let head = match sys::get_robust_list() {
        Ok(p) if !p.is_null() => {
            // SAFETY: a registered head is three words, the middle one `futex_offset`;
            // this thread's head lives as long as the thread.
            let off = unsafe { word_at(p as usize + 8) }.load(Ordering::Relaxed) as isize;
            if off == FUTEX_OFFSET { p as usize } else { 0 }
        }
        Ok(_) => register_own_head(),
        Err(_) => 0,
    };
    ME.set(Some((generation, tid, head)));
    Me { tid, head }
}

/// For a libc that registers no head of its own (musl until its first robust mutex): a
/// leaked four-word block, `prev` before the three-word head, as glibc lays it out.
fn register_own_head() -> usize {
    let block: &'static mut [AtomicUsize; 4] = Box::leak(Box::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]));
    let head = &block[1] as *const AtomicUsize as usize;
    block[0].store(head, Ordering::Relaxed);
    block[1].store(head, Ordering::Relaxed);
    block[2].store(FUTEX_OFFSET as usize, Ordering::Relaxed);
    // SAFETY: the block is leaked, so the head stays valid for the thread's whole life,
    // and it is a well-formed empty circular list.
    match unsafe { sys::set_robust_list(head as *mut u8) } {
        Ok(()) => head,
        Err(_) => 0,
    }
}

/// The word at `addr` as an atomic.
///
/// # Safety
/// `addr` must be an 8-aligned address of memory that stays mapped for `'a`, accessed by
/// everyone only as whole words.
#[inline]
unsafe fn word_at<'a>(addr: usize) -> &'a AtomicUsize {
    // SAFETY: the caller guarantees alignment and lifetime.
    unsafe { AtomicUsize::from_ptr(addr as *mut usize) }
}

/// The entry address of the lock whose word is `word`.
#[inline]
fn entry_of(word: &AtomicU32) -> usize {
    word as *const AtomicU32 as usize + ENTRY_OFFSET
}

/// Announces that `word`'s lock is about to be taken or released by this thread.
#[inline]
pub(crate) fn set_pending(me: Me, word: &AtomicU32) {
    if me.head != 0 {
        // SAFETY: `head + 16` is the head's `list_op_pending`, valid for the thread's life.
        unsafe { word_at(me.head + 16) }.store(entry_of(word), Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
    }
}

/// Ends the announcement made by [`set_pending`].
#[inline]
pub(crate) fn clear_pending(me: Me) {
    if me.head != 0 {
        compiler_fence(Ordering::SeqCst);
        // SAFETY: as in `set_pending`.
        unsafe { word_at(me.head + 16) }.store(0, Ordering::Relaxed);
    }
}

/// Links the lock at `word` (just taken by this thread) at the front of its list.
///
/// The caller must own the lock, and the 40 bytes after `word` (its entry) must be reserved
/// for it and stay mapped until [`unlink`] (see the module docs on lifetime).
#[inline]
pub(crate) fn link(me: Me, word: &AtomicU32) {
    if me.head == 0 {
        return;
    }
    let entry = entry_of(word);
    // The head and the neighbour entries are this thread's list, mapped by the lifetime
    // rule in the module docs; `entry` is in the lock's block, which the caller keeps
    // mapped; each is an aligned word written only by this thread.
    // SAFETY: the head's `list` word, valid for the thread's life.
    let list = unsafe { word_at(me.head) };
    let first = list.load(Ordering::Relaxed);
    // SAFETY: `first` is the head or a linked entry; its `prev` is the word before it.
    unsafe { word_at((first & !1) - 8) }.store(entry, Ordering::Relaxed);
    // SAFETY: our entry's `next`.
    unsafe { word_at(entry) }.store(first, Ordering::Relaxed);
    // SAFETY: our entry's `prev`.
    unsafe { word_at(entry - 8) }.store(me.head, Ordering::Relaxed);
    // The kernel must never see the head point at an entry whose own pointers are unset.
    compiler_fence(Ordering::SeqCst);
    list.store(entry, Ordering::Relaxed);
}

/// Unlinks the lock at `word` (about to be released by this thread) from its list.
#[inline]
pub(crate) fn unlink(me: Me, word: &AtomicU32) {
    if me.head == 0 {
        return;
    }
    let entry = entry_of(word);
    // As in `link`: our entry and its neighbours are linked words of this thread's list.
    // SAFETY: our entry's `next`, in the lock's mapped block.
    let next = unsafe { word_at(entry) }.load(Ordering::Relaxed);
    // SAFETY: our entry's `prev`.
    let prev = unsafe { word_at(entry - 8) }.load(Ordering::Relaxed);
    // SAFETY: the next entry's (or the head's) `prev`.
    unsafe { word_at((next & !1) - 8) }.store(prev, Ordering::Relaxed);
    // SAFETY: the previous entry's (or the head's) `next`.
    unsafe { word_at(prev & !1) }.store(next, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
}

/// A region holding synchronization words; if it holds a robust lock (at [`LOCK_WORD`]), its
/// mapping is kept (leaked) rather than unmapped while a thread of this process owns it.
pub(crate) struct SyncRegion {
    region: ManuallyDrop<Region>,
    robust: bool,
}

impl SyncRegion {
    /// Wraps `region`; `robust` says a robust lock word starts it.
    pub(crate) fn new(region: Region, robust: bool) -> Self {
        SyncRegion {
            region: ManuallyDrop::new(region),
            robust,
        }
    }
}

impl Deref for SyncRegion {
    type Target = Region;
    #[inline]
    fn deref(&self) -> &Region {
        &self.region
    }
}

impl Drop for SyncRegion {
    fn drop(&mut self) {
        if self.robust {
            let tid = self.region.atomic_u32(LOCK_WORD).load(Ordering::Relaxed) & TID_MASK;
            if tid != 0 && crate::sys::pid::is_own_thread(tid) {
                // A guard was leaked: its entry is still in that thread's list, so the
                // memory must stay mapped for as long as the process lives.
                return;
            }
        }
        // SAFETY: dropped exactly once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.region) };
    }
}

impl fmt::Debug for SyncRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncRegion")
            .field("region", &*self.region)
            .field("robust", &self.robust)
            .finish()
    }
}

impl Serialize for SyncRegion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&*self.region, self.robust).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SyncRegion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (region, robust) = <(Region, bool)>::deserialize(d)?;
        if robust && region.len() < BLOCK {
            return Err(serde::de::Error::custom("lock region too small"));
        }
        Ok(SyncRegion::new(region, robust))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::raw::mutex;
    use std::sync::Arc;

    #[repr(C, align(64))]
    struct Block([AtomicU32; 16]);

    struct PthreadMutex(std::cell::UnsafeCell<libc::pthread_mutex_t>);
    // SAFETY: a pthread mutex is made to be shared between threads.
    unsafe impl Sync for PthreadMutex {}
    // SAFETY: as above.
    unsafe impl Send for PthreadMutex {}

    fn robust_pthread_mutex() -> Arc<PthreadMutex> {
        let m = Arc::new(PthreadMutex(std::cell::UnsafeCell::new(
            libc::PTHREAD_MUTEX_INITIALIZER,
        )));
        // SAFETY: zeroed attr is initialized by pthread_mutexattr_init before use.
        let mut attr: libc::pthread_mutexattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: `attr` is a valid attribute object.
        unsafe { libc::pthread_mutexattr_init(&mut attr) };
        // SAFETY: as above.
        unsafe { libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST) };
        // SAFETY: the mutex is not in use yet.
        unsafe { libc::pthread_mutex_init(m.0.get(), &attr) };
        m
    }

    fn plock(m: &PthreadMutex) -> i32 {
        // SAFETY: an initialized mutex.
        unsafe { libc::pthread_mutex_lock(m.0.get()) }
    }

    fn punlock(m: &PthreadMutex) {
        // SAFETY: held by this thread.
        unsafe { libc::pthread_mutex_unlock(m.0.get()) };
    }

    /// glibc's robust mutexes and ours share one list: enqueues and dequeues interleave in
    /// every order, and a death still marks both kinds.
    #[test]
    fn coexists_with_glibc_robust_mutexes() {
        let ours = Arc::new(Block(std::array::from_fn(|_| AtomicU32::new(0))));
        let theirs = robust_pthread_mutex();
        let (o, t) = (ours.clone(), theirs.clone());
        std::thread::spawn(move || {
            let m = me();
            for _ in 0..3 {
                assert_eq!(plock(&t), 0);
                mutex::lock(&o.0[0], m, None);
                punlock(&t); // glibc unlinks its entry from between ours and the head
                assert_eq!(plock(&t), 0);
                mutex::unlock(&o.0[0], m); // we unlink ours from behind glibc's
                punlock(&t);
            }
            mutex::lock(&o.0[0], m, None);
            assert_eq!(plock(&t), 0);
            // Die holding both.
        })
        .join()
        .unwrap();
        assert_eq!(plock(&theirs), libc::EOWNERDEAD);
        let m = me();
        assert_eq!(mutex::lock(&ours.0[0], m, None), Some(true));
        mutex::unlock(&ours.0[0], m);
        // SAFETY: held after EOWNERDEAD; mark consistent before unlocking.
        unsafe { libc::pthread_mutex_consistent(theirs.0.get()) };
        punlock(&theirs);
    }
}
