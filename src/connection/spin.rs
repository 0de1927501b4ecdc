//! Waiting for a socket to become readable: a bounded, adaptive look before the sleep.
//!
//! Why: a receiver asleep in the kernel pays the CPU's wake-up (~30 µs on an idle VM, the
//! same order as deep C-states on bare metal) on every hop. A receiver still running when
//! the bytes land pays nothing. So [`Spin::wait_readable`] first looks at the socket
//! without blocking (a `MSG_PEEK | MSG_DONTWAIT` probe), for at most the current window,
//! then sleeps in `poll`.
//!
//! How it stays cheap:
//! - The window is bounded ([`MAX_WINDOW`]) and adapts per connection end: it grows toward
//!   twice the wait just seen when a message came soon after the spin gave up (a longer
//!   look would have caught it), and halves when waits are long (the peer is slow or idle,
//!   looking is waste). A receiver blocked for a second spins once, for at most
//!   `MAX_WINDOW`: well under 1% of a CPU.
//! - Between probes it backs off with the crate's one [`Backoff`]: `spin_loop` hints for
//!   the window, then a few `sched_yield`s. On a machine with more runnable threads than
//!   CPUs it does not look at all: it sleeps at once, because a yield there gives the CPU
//!   away for a whole time slice while a woken sleeper is scheduled at once (measured:
//!   4 ping-pong pairs on 2 busy cores, yielding made a round trip ~4× slower than the
//!   plain blocking socket).
//!
//! **For mproc's other readers** (the pool's worker and driver, later manager connections):
//! keep one `Spin` per socket you wait on and call [`Spin::wait_readable`] (or
//! [`Spin::wait_peek`]) where you would `poll` for one socket; then read as usual. The
//! window adapts to that socket's traffic, and oversubscription is handled by `Backoff`.
//!
//! Nothing here is shared between processes: the window is a per-process hint, so an end
//! handed to another process starts with a fresh one.

use std::cell::Cell;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::sync::raw::backoff::{self, Backoff};
use crate::sys;
use crate::sys::stream::Peek;

/// The longest look before sleeping.
pub(crate) const MAX_WINDOW: Duration = Duration::from_micros(100);
/// The window a new end starts with.
const START_WINDOW: Duration = Duration::from_micros(50);

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The spin saw this (never `Empty`); the probe buffer holds the peeked bytes.
    Peeked(Peek),
    /// The socket became readable during the sleep: look again.
    Readable,
    /// The deadline passed.
    TimedOut,
}

/// The adaptive spin state of one receiving end (see the module docs).
#[derive(Debug)]
pub(crate) struct Spin {
    window_ns: Cell<u32>,
}

impl Default for Spin {
    fn default() -> Self {
        Spin {
            window_ns: Cell::new(START_WINDOW.as_nanos() as u32),
        }
    }
}

impl Spin {
    /// A spin that never looks: straight to the sleep (handshakes, tests of the blocking
    /// path).
    pub(crate) fn off() -> Spin {
        Spin {
            window_ns: Cell::new(0),
        }
    }

    /// The current window.
    pub(crate) fn window(&self) -> Duration {
        Duration::from_nanos(u64::from(self.window_ns.get()))
    }

    fn set_window(&self, d: Duration) {
        self.window_ns
            .set(d.min(MAX_WINDOW).as_nanos().min(u128::from(u32::MAX)) as u32);
    }

    /// Waits until `sock` has bytes to read (or end of stream) or `deadline` passes;
    /// returns whether it is readable. Spins for up to the window first (see the module
    /// docs). `deadline: None` waits forever.
    pub(crate) fn wait_readable(
        &self,
        sock: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        Ok(match self.wait_peek(sock, deadline, &mut [0u8; 1])? {
            Waited::Peeked(_) | Waited::Readable => true,
            Waited::TimedOut => false,
        })
    }

    /// [`wait_readable`](Spin::wait_readable), peeking into `probe` while it spins: when
    /// the spin sees the bytes, `probe` already holds the first of them (saving the caller
    /// a second look).
    pub(crate) fn wait_peek(
        &self,
        sock: BorrowedFd<'_>,
        deadline: Option<Instant>,
        probe: &mut [u8],
    ) -> Result<Waited> {
        let start = Instant::now();
        let window = self.window();
        // On an oversubscribed machine even yielding hurts: a yield hands the CPU to a
        // runnable process for a whole slice, while a sleeper that is woken gets the CPU
        // back at once (the scheduler favours wakers). So there, sleep at once.
        if !window.is_zero() && !backoff::oversubscribed(start) {
            let mut seen = Ok(Peek::Empty);
            Backoff::with_budget(window).wait_until(deadline, || {
                seen = sys::stream::peek(sock, probe);
                !matches!(seen, Ok(Peek::Empty))
            });
            match seen? {
                Peek::Empty => {}
                p => return Ok(Waited::Peeked(p)),
            }
        }
        let left = match deadline {
            None => None,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Ok(Waited::TimedOut);
                }
                Some(d - now)
            }
        };
        if !sys::fd::poll_readable(sock, left)? {
            return Ok(Waited::TimedOut);
        }
        self.after_sleep(start.elapsed());
        Ok(Waited::Readable)
    }

    /// A message came `waited` after the wait began, after a sleep: grow the window if a
    /// longer look would have caught it, shrink it if the wait was long.
    fn after_sleep(&self, waited: Duration) {
        if waited < MAX_WINDOW {
            self.set_window(self.window().max(waited * 2));
        } else {
            self.set_window(self.window() / 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_follows_the_waits_and_stays_bounded() {
        let s = Spin::default();
        assert_eq!(s.window(), START_WINDOW);
        // Messages that came soon after the spin gave up: look longer, up to the bound.
        s.after_sleep(Duration::from_micros(80));
        assert_eq!(s.window(), MAX_WINDOW);
        // Long waits: looking is waste; the window halves each time, down to nothing.
        for _ in 0..40 {
            s.after_sleep(Duration::from_millis(5));
        }
        assert_eq!(s.window(), Duration::ZERO);
        // A short wait brings it back.
        s.after_sleep(Duration::from_micros(10));
        assert_eq!(s.window(), Duration::from_micros(20));
        assert_eq!(Spin::off().window(), Duration::ZERO);
    }
}
