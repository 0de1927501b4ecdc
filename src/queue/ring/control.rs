//! The control page: every shared word of a ring, typed, each group on its own 128 bytes.
//!
//! Words written by different sides sit 128 bytes apart (two cache lines: the adjacent-line
//! prefetcher pairs them), so a consumer polling `tail` never steals the line on which the
//! producer keeps its private words, and so on. All fields are atomics and all-zero is a
//! valid state, which is what a fresh memfd holds. Who writes what:
//!
//! | field | written by |
//! |---|---|
//! | `header` | the creator, once, before the ring is shared |
//! | `plock`, `clock` | robust mutexes (`sync::raw::mutex`): takers, and the kernel when an owner dies |
//! | `producer`, `tail` | the producer-lock holder |
//! | `consumer`, `head` | the consumer-lock holder |
//! | `data` | producers bump `seq`; the consumer-lock holder counts itself in `waiters` |
//! | `room` | consumers bump `seq`; the producer-lock holder counts itself in `waiters`, sets `need` |
//! | `join` | `task_done` bumps `done`; joiners count themselves in `waiters` |
//! | `pipe` | a pipe's receivers count themselves in `sleepers` before they sleep in `poll` |
//!
//! The locks are the crate's robust mutex, whose word holds the owner's thread id and sits
//! in a block that also holds the kernel robust-list entry: when an owner dies (SIGKILL, or
//! a thread that exits holding it), the kernel marks the word `OWNER_DIED` and wakes a
//! waiter, which takes the lock and repairs the side (see `produce.rs`, `consume.rs`).
//! No pid is stored, so a recycled pid cannot pass for a live owner.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Instant;

use crate::sync::raw::mutex;
use crate::sync::raw::robust::{self, BLOCK, LOCK_WORD, Me};

/// The control page's size; the data area starts right after, page-aligned.
pub(crate) const CONTROL_LEN: usize = 4096;
/// The first word of every ring ("mpQ2": the layout with robust locks).
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"mpQ2");
/// `maxsize` for an unbounded ring.
pub(crate) const UNBOUNDED: u32 = 0;

/// Written once by the creator; checked by [`Ring::attach`](super::Ring::attach).
#[repr(C, align(128))]
pub(crate) struct Header {
    pub(crate) magic: AtomicU32,
    /// The item limit (Python's `maxsize`); `UNBOUNDED` for none.
    pub(crate) maxsize: AtomicU32,
    /// The size of the data area in bytes, a power of two.
    pub(crate) capacity: AtomicU64,
}

/// One robust lock's block, laid out as `sync::raw::robust` requires (the word at
/// `LOCK_WORD`, the list entry after it).
#[repr(C, align(128))]
pub(crate) struct LockBlock([AtomicU32; BLOCK / 4]);

/// The producer side's private words.
#[repr(C, align(128))]
pub(crate) struct ProducerWords {
    /// `IN_ITEM` while a streamed item is unfinished, `NO_ITEM` otherwise.
    pub(crate) stream: AtomicU32,
    /// The producer side's last view of `head`'s position: a lower bound.
    pub(crate) head_seen: AtomicU32,
    /// A pipe's descriptor-record sequence: bumped by the holder for each item whose
    /// descriptors travel beside it over the socket (`connection/shm.rs`).
    pub(crate) fd_seq: AtomicU32,
}

/// The consumer side's private words.
#[repr(C, align(128))]
pub(crate) struct ConsumerWords {
    /// The consumer side's last view of `tail`'s position: a lower bound.
    pub(crate) tail_seen: AtomicU32,
}

/// `(items << 32) | position in units`: `tail` counts items published, `head` consumed.
#[repr(C, align(128))]
pub(crate) struct Position(pub(crate) AtomicU64);

/// An eventcount: a futex sequence word, and how many are (about to be) asleep on it.
#[repr(C, align(128))]
pub(crate) struct EventCount {
    pub(crate) seq: AtomicU32,
    pub(crate) waiters: AtomicU32,
    /// How many free units the sleeper waits for (`room` only; 0: any change).
    pub(crate) need: AtomicU32,
}

/// JoinableQueue's words.
#[repr(C, align(128))]
pub(crate) struct JoinWords {
    /// How many items `task_done` has acknowledged; joiners sleep on it.
    pub(crate) done: AtomicU32,
    pub(crate) waiters: AtomicU32,
}

/// A pipe's words (`connection/shm.rs`): receivers that sleep in `poll` on the pipe's socket
/// rather than on a futex count themselves here, so a producer knows to ring the doorbell.
#[repr(C, align(128))]
pub(crate) struct PipeWords {
    pub(crate) sleepers: AtomicU32,
}

/// The control page.
#[repr(C)]
pub(crate) struct Control {
    pub(crate) header: Header,
    pub(crate) plock: LockBlock,
    pub(crate) producer: ProducerWords,
    pub(crate) tail: Position,
    pub(crate) clock: LockBlock,
    pub(crate) consumer: ConsumerWords,
    pub(crate) head: Position,
    pub(crate) data: EventCount,
    pub(crate) room: EventCount,
    pub(crate) join: JoinWords,
    pub(crate) pipe: PipeWords,
}

const _: () = assert!(size_of::<Control>() <= CONTROL_LEN);
const _: () = assert!(size_of::<LockBlock>() == BLOCK && LOCK_WORD % 4 == 0);

/// `stream` values.
pub(crate) const NO_ITEM: u32 = 0;
pub(crate) const IN_ITEM: u32 = 1;

/// The producer side, as a lock guard's type parameter.
#[derive(Debug)]
pub(crate) enum Producing {}
/// The consumer side.
#[derive(Debug)]
pub(crate) enum Consuming {}

/// How a side's lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The previous holder released it.
    Clean,
    /// The previous holder died holding it: its half-done work must be repaired.
    OwnerDied,
}

/// A held side lock; releases it on drop, so an early return or a panic in a decoder
/// cannot leave it held. The side in its type is what the data-area accessors ask for.
#[derive(Debug)]
pub(crate) struct Guard<'a, S> {
    word: &'a AtomicU32,
    me: Me,
    /// The side; and `!Send`: only the thread whose id is in the word may release it.
    side: PhantomData<(S, *const ())>,
}

impl<S> Drop for Guard<'_, S> {
    fn drop(&mut self) {
        mutex::unlock(self.word, self.me);
    }
}

impl LockBlock {
    fn word(&self) -> &AtomicU32 {
        &self.0[LOCK_WORD / 4]
    }

    fn guard<S>(&self, me: Me, died: bool) -> (Guard<'_, S>, Acquired) {
        let acquired = if died {
            Acquired::OwnerDied
        } else {
            Acquired::Clean
        };
        let g = Guard {
            word: self.word(),
            me,
            side: PhantomData,
        };
        (g, acquired)
    }

    fn lock<S>(&self, deadline: Option<Instant>) -> Option<(Guard<'_, S>, Acquired)> {
        let me = robust::me();
        let died = mutex::lock(self.word(), me, deadline)?;
        Some(self.guard(me, died))
    }

    fn try_lock<S>(&self) -> Option<(Guard<'_, S>, Acquired)> {
        let me = robust::me();
        let died = mutex::try_lock(self.word(), me)?;
        Some(self.guard(me, died))
    }

    /// The raw word, for tests that look at or forge the lock state.
    #[cfg(test)]
    pub(crate) fn raw_word(&self) -> &AtomicU32 {
        self.word()
    }
}

impl Control {
    /// Takes the producer lock, waiting until `deadline` at most.
    #[inline]
    pub(crate) fn lock_producer(
        &self,
        deadline: Option<Instant>,
    ) -> Option<(Guard<'_, Producing>, Acquired)> {
        self.plock.lock(deadline)
    }

    /// Takes the producer lock if it is free (or its owner died); never waits.
    pub(crate) fn try_lock_producer(&self) -> Option<(Guard<'_, Producing>, Acquired)> {
        self.plock.try_lock()
    }

    /// Takes the consumer lock, waiting until `deadline` at most.
    #[inline]
    pub(crate) fn lock_consumer(
        &self,
        deadline: Option<Instant>,
    ) -> Option<(Guard<'_, Consuming>, Acquired)> {
        self.clock.lock(deadline)
    }
}
