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
//!
//! The words' types come from the ring's runtime (`runtime.rs`): `std`'s atomics in
//! production (the default type parameter, so `Control` is the page as mapped), loom's
//! under the model, where the page is built on the heap (`Control::model`).

use std::marker::PhantomData;
use std::time::Instant;

use super::runtime::{Os, Runtime};
use crate::shim::Word;
use crate::sync::raw::mutex;
use crate::sync::raw::robust::{BLOCK, LOCK_WORD, Me};

/// The control page's size; the data area starts right after, page-aligned.
pub(crate) const CONTROL_LEN: usize = 4096;
/// The first word of every ring ("mpQ2": the layout with robust locks).
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"mpQ2");
/// `maxsize` for an unbounded ring.
pub(crate) const UNBOUNDED: u32 = 0;

/// Written once by the creator; checked by [`Ring::attach`](super::Ring::attach).
#[repr(C, align(128))]
pub(crate) struct Header<R: Runtime = Os> {
    pub(crate) magic: R::W,
    /// The item limit (Python's `maxsize`); `UNBOUNDED` for none.
    pub(crate) maxsize: R::W,
    /// The size of the data area in bytes, a power of two.
    pub(crate) capacity: R::W64,
}

/// One robust lock's block, laid out as `sync::raw::robust` requires (the word at
/// `LOCK_WORD`, the list entry after it).
#[repr(C, align(128))]
pub(crate) struct LockBlock<R: Runtime = Os>([R::W; BLOCK / 4]);

/// The producer side's private words.
#[repr(C, align(128))]
pub(crate) struct ProducerWords<R: Runtime = Os> {
    /// `IN_ITEM` while a streamed item is unfinished, `NO_ITEM` otherwise.
    pub(crate) stream: R::W,
    /// The producer side's last view of `head`'s position: a lower bound.
    pub(crate) head_seen: R::W,
    /// A pipe's descriptor-record sequence: bumped by the holder for each item whose
    /// descriptors travel beside it over the socket (`connection/shm.rs`).
    pub(crate) fd_seq: R::W,
}

/// The consumer side's private words.
#[repr(C, align(128))]
pub(crate) struct ConsumerWords<R: Runtime = Os> {
    /// The consumer side's last view of `tail`'s position: a lower bound.
    pub(crate) tail_seen: R::W,
}

/// `(items << 32) | position in units`: `tail` counts items published, `head` consumed.
#[repr(C, align(128))]
pub(crate) struct Position<R: Runtime = Os>(pub(crate) R::W64);

/// An eventcount: a futex sequence word, and how many are (about to be) asleep on it.
#[repr(C, align(128))]
pub(crate) struct EventCount<R: Runtime = Os> {
    pub(crate) seq: R::W,
    pub(crate) waiters: R::W,
    /// How many free units the sleeper waits for (`room` only; 0: any change).
    pub(crate) need: R::W,
}

/// JoinableQueue's words.
#[repr(C, align(128))]
pub(crate) struct JoinWords<R: Runtime = Os> {
    /// How many items `task_done` has acknowledged; joiners sleep on it.
    pub(crate) done: R::W,
    pub(crate) waiters: R::W,
}

/// A pipe's words (`connection/shm.rs`): receivers that sleep in `poll` on the pipe's socket
/// rather than on a futex count themselves here, so a producer knows to ring the doorbell.
#[repr(C, align(128))]
pub(crate) struct PipeWords<R: Runtime = Os> {
    pub(crate) sleepers: R::W,
}

/// The control page.
#[repr(C)]
pub(crate) struct Control<R: Runtime = Os> {
    pub(crate) header: Header<R>,
    pub(crate) plock: LockBlock<R>,
    pub(crate) producer: ProducerWords<R>,
    pub(crate) tail: Position<R>,
    pub(crate) clock: LockBlock<R>,
    pub(crate) consumer: ConsumerWords<R>,
    pub(crate) head: Position<R>,
    pub(crate) data: EventCount<R>,
    pub(crate) room: EventCount<R>,
    pub(crate) join: JoinWords<R>,
    pub(crate) pipe: PipeWords<R>,
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
pub(crate) struct Guard<'a, S, R: Runtime = Os> {
    word: &'a R::W,
    me: Me,
    /// The side; and `!Send`: only the thread whose id is in the word may release it.
    side: PhantomData<(S, *const ())>,
}

impl<S, R: Runtime> std::fmt::Debug for Guard<'_, S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("me", &self.me).finish()
    }
}

impl<S, R: Runtime> Drop for Guard<'_, S, R> {
    fn drop(&mut self) {
        // A process being killed runs no code: its lock is left to the kernel's robust
        // list (only a model victim unwinds; in production this is `false`).
        if R::W::dying() {
            return;
        }
        mutex::unlock(self.word, self.me);
    }
}

impl<R: Runtime> LockBlock<R> {
    fn word(&self) -> &R::W {
        &self.0[LOCK_WORD / 4]
    }

    fn guard<S>(&self, me: Me, died: bool) -> (Guard<'_, S, R>, Acquired) {
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

    fn lock<S>(&self, deadline: Option<Instant>) -> Option<(Guard<'_, S, R>, Acquired)> {
        let me = R::W::me();
        let died = mutex::lock(self.word(), me, deadline)?;
        Some(self.guard(me, died))
    }

    fn try_lock<S>(&self) -> Option<(Guard<'_, S, R>, Acquired)> {
        let me = R::W::me();
        let died = mutex::try_lock(self.word(), me)?;
        Some(self.guard(me, died))
    }

    /// The raw word, for tests that look at or forge the lock state.
    #[cfg(test)]
    pub(crate) fn raw_word(&self) -> &R::W {
        self.word()
    }
}

impl<R: Runtime> Control<R> {
    /// Takes the producer lock, waiting until `deadline` at most.
    #[inline]
    pub(crate) fn lock_producer(
        &self,
        deadline: Option<Instant>,
    ) -> Option<(Guard<'_, Producing, R>, Acquired)> {
        self.plock.lock(deadline)
    }

    /// Takes the producer lock if it is free (or its owner died); never waits.
    pub(crate) fn try_lock_producer(&self) -> Option<(Guard<'_, Producing, R>, Acquired)> {
        self.plock.try_lock()
    }

    /// Takes the consumer lock, waiting until `deadline` at most.
    #[inline]
    pub(crate) fn lock_consumer(
        &self,
        deadline: Option<Instant>,
    ) -> Option<(Guard<'_, Consuming, R>, Acquired)> {
        self.clock.lock(deadline)
    }
}

#[cfg(test)]
impl Control<super::runtime::Model> {
    /// A fresh control page of model words, all zero as a fresh memfd's.
    pub(crate) fn model() -> Self {
        use crate::shim::model::{MWord, MWord64};
        let w = MWord::default;
        let event = || EventCount {
            seq: w(),
            waiters: w(),
            need: w(),
        };
        Control {
            header: Header {
                magic: w(),
                maxsize: w(),
                capacity: MWord64::default(),
            },
            plock: LockBlock(std::array::from_fn(|_| w())),
            producer: ProducerWords {
                stream: w(),
                head_seen: w(),
                fd_seq: w(),
            },
            tail: Position(MWord64::default()),
            clock: LockBlock(std::array::from_fn(|_| w())),
            consumer: ConsumerWords { tail_seen: w() },
            head: Position(MWord64::default()),
            data: event(),
            room: event(),
            join: JoinWords {
                done: w(),
                waiters: w(),
            },
            pipe: PipeWords { sleepers: w() },
        }
    }
}
