//! What a pipe (`connection/shm.rs`) needs of a ring beyond what a queue does.
//!
//! A pipe's receiver sleeps in `poll` on the pipe's socket (so `wait()` over many
//! connections works), not on the ring's data futex: it counts itself in `pipe.sleepers`,
//! fences, looks at the ring once more, and only then polls. A producer publishes with a
//! SeqCst swap of the tail (`commit`), then reads `sleepers` ([`Ring::has_sleepers`]): the
//! two SeqCst orders pair up as in `eventcount.rs`, so either the receiver's second look
//! sees the frame or the producer sees the sleeper and rings the socket's doorbell.
//!
//! A pipe's descriptors travel over a socket beside the ring, one record per item, each
//! numbered from `producer.fd_seq` by the producer-lock holder
//! ([`Ring::locked_writer`](super::Ring::locked_writer)), so a receiver can tell its
//! item's record from one whose item was never published.

use std::sync::atomic::{Ordering, fence};

use super::{Ring, pos_of};

impl Ring {
    /// Whether any frame (an item, or a piece of one) is published past the head.
    #[inline]
    pub(crate) fn pending(&self) -> bool {
        let head = pos_of(self.ctl().head.0.load(Ordering::Acquire));
        pos_of(self.ctl().tail.0.load(Ordering::Acquire)) != head
    }

    /// Counts the caller as a receiver about to sleep in `poll`, then looks again: `true`
    /// if a frame is there (the caller must not sleep; it still calls
    /// [`end_sleep`](Ring::end_sleep)).
    pub(crate) fn begin_sleep(&self) -> bool {
        self.ctl().pipe.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.pending()
    }

    /// Undoes [`begin_sleep`](Ring::begin_sleep).
    pub(crate) fn end_sleep(&self) {
        let s = &self.ctl().pipe.sleepers;
        // Never below zero, whatever another process wrote.
        let _ = s.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Whether a receiver may be asleep in `poll`. Called right after a publish, whose
    /// SeqCst swap orders this load after it.
    #[inline]
    pub(crate) fn has_sleepers(&self) -> bool {
        self.ctl().pipe.sleepers.load(Ordering::SeqCst) != 0
    }
}
