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
//!   the window, then a few `sched_yield`s; on a machine with more runnable threads than
//!   CPUs it skips the spin and only yields, handing its CPU to the peer it waits for
//!   instead of competing with it.
//!
//! Nothing here is shared between processes: the window is a per-process hint, so an end
//! handed to another process starts with a fresh one.

use std::cell::Cell;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::sync::raw::backoff::Backoff;
use crate::sys;
use crate::sys::stream::Peek;

/// The longest look before sleeping.
pub(crate) const MAX_WINDOW: Duration = Duration::from_micros(100);
/// The window a new end starts with.
const START_WINDOW: Duration = Duration::from_micros(50);

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
        let start = Instant::now();
        let window = self.window();
        if !window.is_zero() {
            let mut probe = [0u8; 1];
            let mut failed = None;
            let seen =
                Backoff::with_budget(window).wait_until(deadline, || {
                    match sys::stream::peek(sock, &mut probe) {
                        Ok(Peek::Empty) => false,
                        Ok(_) => true,
                        Err(e) => {
                            failed = Some(e);
                            true
                        }
                    }
                });
            if let Some(e) = failed {
                return Err(e.into());
            }
            if seen {
                return Ok(true);
            }
        }
        let left = match deadline {
            None => None,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Ok(false);
                }
                Some(d - now)
            }
        };
        let ready = sys::fd::poll_readable(sock, left)?;
        if ready {
            self.after_sleep(start.elapsed());
        }
        Ok(ready)
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
