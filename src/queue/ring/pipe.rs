//! What a pipe (`connection/shm.rs`) needs of a ring beyond what a queue does.
//!
//! A pipe's receiver sleeps in `poll` on the pipe's socket (so `wait()` over many
//! connections works), not on the ring's data futex: it counts itself in `pipe.sleepers`,
//! fences, looks at the ring once more ([`Ring::pending`]), and only then polls. A producer
//! publishes with a SeqCst swap of the tail (`commit`), then reads `sleepers`: the two
//! SeqCst orders pair up as in `eventcount.rs`, so either the receiver's second look sees
//! the frame or the producer sees the sleeper and rings the socket's doorbell. That
//! handshake is written over the bare word in `connection/doorbell.rs` (and model-checked
//! there); this file hands it the ring's word and its look at the ring.
//!
//! Several processes may receive from one end; the ring's consumer lock is their receive
//! lock. One that finds it held (by a receiver half-way through an item larger than the
//! ring, say) sleeps on the lock's futex ([`Ring::await_consumer`]) rather than looking
//! again and again: it takes the lock as any waiter would, so the mutex's chain of wake-ups
//! (a waiter woken by a release keeps `WAITERS` set for the next) stays whole, and lets it
//! go at once.
//!
//! A pipe's descriptors travel over a socket beside the ring, one record per item, each
//! numbered from `producer.fd_seq` by the producer-lock holder
//! ([`Ring::locked_writer`](super::Ring::locked_writer)), so a receiver can tell its
//! item's record from one whose item was never published.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::control::Acquired;
use super::{Ring, pos_of};

impl Ring {
    /// Whether any frame (an item, or a piece of one) is published past the head.
    #[inline]
    pub(crate) fn pending(&self) -> bool {
        let head = pos_of(self.ctl().head.0.load(Ordering::Acquire));
        pos_of(self.ctl().tail.0.load(Ordering::Acquire)) != head
    }

    /// The count of receivers asleep (or about to sleep) in `poll`: the word of the
    /// handshake in `connection/doorbell.rs`.
    #[inline]
    pub(crate) fn sleepers(&self) -> &AtomicU32 {
        &self.ctl().pipe.sleepers
    }

    /// Sleeps until the consumer lock is free (taking it and letting it go), or `deadline`
    /// passes (`false`).
    pub(crate) fn await_consumer(&self, deadline: Option<Instant>) -> bool {
        let Some((_guard, acquired)) = self.ctl().lock_consumer(deadline) else {
            return false;
        };
        if acquired == Acquired::OwnerDied {
            // Taking the lock clears the kernel's mark, so the repair the next taker
            // would make (`consume.rs`: the dead holder may have been counted asleep on
            // `data`) is made here.
            self.ctl().data.waiters.store(0, Ordering::Relaxed);
        }
        true
    }
}
