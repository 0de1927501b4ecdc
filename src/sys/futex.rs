//! Futex wait and wake on words that may live in memory shared between processes.
//!
//! Never the PRIVATE flag: a private futex is keyed by (mm, address) and would not wake a
//! waiter in another process that maps the same page.

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use rustix::io::Errno;
use rustix::thread::futex;

/// Why a [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken, or the word no longer held `expected`, or a signal: re-check the word.
    Retry,
    /// The deadline passed.
    TimedOut,
}

/// Blocks while `*word == expected`, until woken or `deadline` (monotonic) passes.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Wake {
    let timeout = match deadline {
        None => None,
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Wake::TimedOut;
            }
            let r = d - now;
            Some(rustix::time::Timespec {
                tv_sec: r.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(r.subsec_nanos()),
            })
        }
    };
    match futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref()) {
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) => Wake::Retry,
        Err(Errno::TIMEDOUT) => Wake::TimedOut,
        // EFAULT/EINVAL would mean a bad address: a bug, not a runtime condition.
        Err(e) => panic!("futex wait failed: {}", io::Error::from(e)),
    }
}

/// Wakes up to `n` waiters on `word`; returns how many were woken.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
}
