//! The waking handshake of a shared-memory pipe (`shm.rs`): a receiver that finds its ring
//! empty sleeps on the pipe's stream socket, and a sender rings that socket's doorbell only
//! when a receiver may be asleep.
//!
//! **Who writes what.** The receiver counts itself in the ring's `pipe.sleepers` word
//! ([`begin_sleep`]: a SeqCst increment, then a SeqCst fence), looks at the ring once
//! more, and only then sleeps on the socket ([`Bell::sleep`]), uncounting itself when it
//! wakes ([`end_sleep`]). The sender publishes (the ring's SeqCst swap of its tail), then
//! reads `sleepers` (SeqCst, `ready::after_change`) and writes a doorbell byte if it is not zero
//! ([`after_publish`]). In the single total order of SeqCst operations either the
//! receiver's fence comes before the publishing swap, and then the sender's later load
//! sees the count, or after it, and then the receiver's second look sees the item: a
//! sleeper is always rung or never sleeps. A doorbell byte stays in the socket until a
//! receiver takes it, so one written before the receiver reached its `recv` still ends
//! that sleep.
//!
//! The word's high half counts pollers instead (`ready.rs`); both share the one load.
//!
//! **Sans-IO.** The handshake is written over the words ([`Word`]) and a [`Bell`] (the
//! socket's three operations), so the loom model at the end of this file runs the same
//! code over model words and an in-memory socket whose sleep has no timeout: a lost
//! wake-up is a loom deadlock there, where production would hide it behind the
//! [`SLEEP_SLICE`] timeout of its socket.

use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::ready::{self, Flag, SLEEPERS};
use super::shm::SLEEP_SLICE;
use crate::error::{Error, Result};
use crate::shim::Word;
use crate::sync::raw::backoff::{self, Backoff};
use crate::sys;

/// A doorbell's byte.
const DOORBELL: u8 = 0xdb;

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    Data,
    Eof,
    TimedOut,
}

/// What the handshake needs of the stream socket.
pub(crate) trait Bell {
    /// Writes a doorbell, never blocking (a full socket already wakes its reader).
    fn ring(&self);
    /// Takes every queued doorbell without blocking: `true` if the stream has ended (every
    /// copy of the peer's end is closed).
    fn drain(&self) -> Result<bool>;
    /// Sleeps until a doorbell comes (and takes it and any queued with it), the stream
    /// ends (`true`), or `left` passes (`None`: a slice of the production socket's choosing;
    /// under the model, for ever).
    fn sleep(&self, left: Option<Duration>) -> Result<bool>;
}

/// Counts the caller in `sleepers`, then looks (`pending`) once more: `true` if an item is
/// there (the caller must not sleep; it still calls [`end_sleep`]).
#[inline]
pub(crate) fn begin_sleep<W: Word>(sleepers: &W, pending: impl FnOnce() -> bool) -> bool {
    sleepers.fetch_add(1, Ordering::SeqCst);
    // Orders the count before the second look (see the module docs).
    W::fence(Ordering::SeqCst);
    pending()
}

/// Undoes [`begin_sleep`]: never below zero, whatever another process wrote (the high
/// half of the word counts pollers, `ready.rs`, and is left alone).
#[inline]
pub(crate) fn end_sleep<W: Word>(sleepers: &W) {
    let mut n = sleepers.load(Ordering::Relaxed);
    while n & SLEEPERS != 0 {
        match sleepers.compare_exchange_weak(n, n - 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => n = now,
        }
    }
}

/// The sender's half, right after a publish (a SeqCst swap): one load of the word
/// (`ready::after_change`), then, only if it is not zero, a doorbell if a receiver may be
/// asleep and a settle of the readiness flag if a poller is counted (`ready.rs`).
#[inline]
pub(crate) fn after_publish<W: Word, B: Bell, F: Flag + ?Sized>(
    sleepers: &W,
    bell: &B,
    flag: &F,
    pending: impl Fn() -> bool,
) {
    let n = ready::after_change(sleepers);
    if n != 0 {
        rung::<W, B, F>(n, bell, flag, pending);
    }
}

#[cold]
fn rung<W: Word, B: Bell, F: Flag + ?Sized>(
    n: u32,
    bell: &B,
    flag: &F,
    pending: impl Fn() -> bool,
) {
    if n & SLEEPERS != 0 {
        bell.ring();
    }
    if n >= ready::POLLER {
        ready::settle::<W, F>(flag, pending);
    }
}

/// The receiver's half: waits until `pending`, the stream ended, or `deadline` passed.
pub(crate) fn wait<W: Word, B: Bell>(
    sleepers: &W,
    bell: &B,
    pending: impl Fn() -> bool,
    deadline: Option<Instant>,
) -> Result<Ready> {
    if pending() {
        return Ok(Ready::Data);
    }
    if W::SPINS
        && !backoff::oversubscribed(Instant::now())
        && Backoff::new().wait_until(deadline, &pending)
    {
        return Ok(Ready::Data);
    }
    loop {
        if pending() {
            return Ok(Ready::Data);
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            // Time is up: one last look, for end of stream.
            let ended = bell.drain()?;
            return Ok(if pending() {
                Ready::Data
            } else if ended {
                Ready::Eof
            } else {
                Ready::TimedOut
            });
        }
        if begin_sleep(sleepers, &pending) {
            end_sleep(sleepers);
            return Ok(Ready::Data);
        }
        let slept = bell.sleep(left);
        end_sleep(sleepers);
        // Whatever was sent before the peer closed is in the ring by now.
        if slept? && !pending() {
            return Ok(Ready::Eof);
        }
    }
}

/// A pipe end's stream socket as its doorbell.
#[derive(Clone, Copy)]
pub(crate) struct Stream<'a>(pub(crate) BorrowedFd<'a>);

impl Bell for Stream<'_> {
    #[inline]
    fn ring(&self) {
        sys::fd::try_send_byte(self.0, DOORBELL);
    }

    fn drain(&self) -> Result<bool> {
        drain_doorbells(self.0)
    }

    fn sleep(&self, left: Option<Duration>) -> Result<bool> {
        match left {
            Some(l) if l < SLEEP_SLICE => sys::fd::poll_readable(self.0, Some(l))
                .map_err(Error::from)
                .and_then(|_| drain_doorbells(self.0)),
            // The usual sleep: a blocking `recv` that takes the doorbell that ends it (one
            // syscall per wake-up, as a plain socket read), in slices of the socket's
            // receive timeout.
            _ => sleep_in_recv(self.0),
        }
    }
}

/// Takes every doorbell byte queued on the stream socket (one `recv` in the usual case);
/// `true` if the stream has ended.
fn drain_doorbells(sock: BorrowedFd<'_>) -> Result<bool> {
    let mut buf = [0u8; 256];
    loop {
        match sys::fd::recv_plain(sock, &mut buf, false).map_err(super::framing::map_recv_error) {
            Ok(None) => return Ok(false),
            Ok(Some(0)) | Err(Error::Closed) => return Ok(true),
            Ok(Some(n)) if n < buf.len() => return Ok(false),
            Ok(Some(_)) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sleeps in a blocking `recv` on the stream socket until a doorbell comes, the stream
/// ends (`true`), or the socket's receive timeout ([`SLEEP_SLICE`]) passes.
fn sleep_in_recv(sock: BorrowedFd<'_>) -> Result<bool> {
    let mut buf = [0u8; 256];
    match sys::fd::recv_plain(sock, &mut buf, true).map_err(super::framing::map_recv_error) {
        Ok(Some(0)) | Err(Error::Closed) => Ok(true),
        Ok(Some(n)) if n == buf.len() => drain_doorbells(sock),
        Ok(_) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod model;
