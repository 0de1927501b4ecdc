//! [`Backoff`]: how a waiter spends the time between "not yet" and going to sleep.
//!
//! The one spin loop of the crate (crossbeam-utils' shape). A waiter that looks at a shared
//! word again after a few hundred nanoseconds catches a partner process that is running on
//! another CPU without paying a futex sleep and wake (tens of microseconds when the CPU it
//! wakes on has gone idle); a waiter that spins for long, or while the machine has more
//! runnable threads than CPUs, only steals CPU time from the very process it waits for.
//!
//! **Phases** of [`Backoff::snooze`], the call for waiting on another party:
//! 1. *Spin*: look, then pause 1, 2, 4 ... [`SNOOZE_PAUSES`] `spin_loop` hints before the next
//!    look. The pauses grow because every look pulls the watched cache line away from its
//!    writer; a writer left alone longer writes several items per line transfer.
//! 2. *Hold*: keep spinning at the longest pause until the budget (default [`SPIN_BUDGET`],
//!    counted from the first snooze) has passed.
//! 3. *Yield*: [`YIELDS`] `sched_yield`s, which return at once on a machine with idle CPUs
//!    and let a thread that was just woken on ours run first.
//! 4. *Completed*: [`Backoff::is_completed`] turns true; the caller parks (futex or poll).
//!
//! **Adaptive.** At its first snooze a `Backoff` asks whether the machine is oversubscribed
//! (runnable threads > usable CPUs + [`SLACK`], from `/proc/loadavg`, refreshed at most every
//! [`LOAD_REFRESH`] by whichever process looks first); if so it completes at once and the
//! caller parks, as the plain blocking path would: spinning there cannot make the partner
//! run sooner, and a `sched_yield` among runnable threads can give the CPU away for a whole
//! time slice (the pipe's oversubscribed round trip went from 4.4x to 1.2x the blocking
//! floor when its receivers parked at once). Callers add their own rule where they know
//! more: a waiter should not spin on a word that another waiter already sleeps on.
//!
//! [`Backoff::spin`] is for retrying a lost compare-and-swap: it only pauses (up to
//! 2^[`SPIN_LIMIT`]), never yields and never completes.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sys::sched;

/// `spin()` pauses at most 2^SPIN_LIMIT hints between retries (crossbeam's limit).
pub(crate) const SPIN_LIMIT: u32 = 6;
/// `snooze()` pauses at most this many hints between two looks at the watched word: long
/// enough to leave a busy writer its cache line, short enough to see a reply within ~1 µs.
pub(crate) const SNOOZE_PAUSES: u32 = 16;
/// How long `snooze()` spins by default before it yields: a round trip between two running
/// processes is ~1 µs, a sleeping CPU's wake-up ~30 µs, so this catches the partner that is
/// running and costs little next to the sleep that follows when it is not.
pub(crate) const SPIN_BUDGET: Duration = Duration::from_micros(20);
/// `sched_yield`s after the spin, before the caller parks.
pub(crate) const YIELDS: u32 = 4;
/// How stale the oversubscription verdict may be.
pub(crate) const LOAD_REFRESH: Duration = Duration::from_millis(10);

/// Exponential backoff for a waiter; see the module docs. Cheap to make: nothing is read
/// until the first `snooze`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// Looks so far (saturating); the pause doubles with each up to the cap.
    step: u32,
    budget: Duration,
    /// End of the spin phases, set at the first snooze; `None` before it.
    spin_end: Option<Instant>,
    /// Whether to spin at all (not on an oversubscribed machine); set at the first snooze.
    spin: bool,
    yielded: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// A backoff that spins for [`SPIN_BUDGET`] before it yields.
    #[inline]
    pub(crate) fn new() -> Self {
        Backoff::with_budget(SPIN_BUDGET)
    }

    /// A backoff that spins for `budget` before it yields (zero: only the doubling pauses).
    #[inline]
    pub(crate) fn with_budget(budget: Duration) -> Self {
        Backoff {
            step: 0,
            budget,
            spin_end: None,
            spin: true,
            yielded: 0,
        }
    }

    /// Pauses after a lost compare-and-swap: 1, 2, 4 ... 2^[`SPIN_LIMIT`] hints.
    #[inline]
    pub(crate) fn spin(&mut self) {
        pause(1 << self.step.min(SPIN_LIMIT));
        self.step = self.step.saturating_add(1);
    }

    /// Waits a little before the caller looks again at what it waits for; see the phases in
    /// the module docs. Once [`is_completed`](Backoff::is_completed), the caller should park.
    #[inline]
    pub(crate) fn snooze(&mut self) {
        let spin_end = match self.spin_end {
            Some(end) => end,
            None => self.first_snooze(),
        };
        if self.spin {
            let pauses = (1u32 << self.step.min(8)).min(SNOOZE_PAUSES);
            self.step = self.step.saturating_add(1);
            // The clock is read only once the pauses are at their cap: a quick partner is
            // caught in the first few looks without it.
            if pauses < SNOOZE_PAUSES || Instant::now() < spin_end {
                pause(pauses);
                return;
            }
            self.spin = false;
        }
        if self.yielded < YIELDS {
            self.yielded += 1;
            std::thread::yield_now();
        }
    }

    #[cold]
    fn first_snooze(&mut self) -> Instant {
        let now = Instant::now();
        let end = now + self.budget;
        self.spin_end = Some(end);
        self.spin = !oversubscribed(now);
        if !self.spin {
            // Oversubscribed: park at once (see the module docs).
            self.yielded = YIELDS;
        }
        end
    }

    /// Whether spinning and yielding are done: the caller should now park.
    #[inline]
    pub(crate) fn is_completed(&self) -> bool {
        self.yielded >= YIELDS
    }

    /// Waits, snoozing, until `ready()` or the backoff completes; returns the last
    /// `ready()`. Stops early at `deadline`.
    #[inline]
    pub(crate) fn wait_until(
        &mut self,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        loop {
            if ready() {
                return true;
            }
            if self.is_completed() || deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            self.snooze();
        }
    }
}

#[inline]
fn pause(n: u32) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

/// The verdict and when it expires: `(expiry in µs since EPOCH) << 1 | oversubscribed`.
static LOAD: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Whether more threads are runnable than this process has CPUs (cached for
/// [`LOAD_REFRESH`]).
pub(crate) fn oversubscribed(now: Instant) -> bool {
    let now_us = now.saturating_duration_since(epoch()).as_micros() as u64;
    let cached = LOAD.load(Ordering::Relaxed);
    if cached >> 1 > now_us {
        return cached & 1 != 0;
    }
    let expiry = now_us + LOAD_REFRESH.as_micros() as u64;
    // One refresher at a time; the others use the old verdict meanwhile.
    if LOAD
        .compare_exchange(
            cached,
            expiry << 1 | (cached & 1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        )
        .is_err()
    {
        return cached & 1 != 0;
    }
    let over = too_busy(sched::runnable(), sched::cpus());
    LOAD.store(expiry << 1 | u64::from(over), Ordering::Relaxed);
    over
}

/// Runnable threads beyond the CPUs that still count as "not oversubscribed".
///
/// The count is one instantaneous sample, and it catches passers-by: a harness's parent, a
/// kernel worker, a pool's driver thread waking to reap. With the threshold at exactly the
/// CPUs, two partners spinning on a 2-CPU machine lost their spin for a whole
/// [`LOAD_REFRESH`] whenever a third thread happened to run at the sample, and every hop in
/// that window paid a wake-up (measured, quiet 2-vCPU VM, two runs each: Pool `apply`
/// 32.0 / 18.8 µs at slack 0, 14.1 / 13.8 µs at slack 1; `map_chunked(.., 1)` 7.25 / 6.80
/// against 4.46 / 6.01 µs per task; the oversubscribed pipe row unchanged within noise).
/// One thread kept waiting by a spinner loses at most that spinner's budget.
pub(crate) const SLACK: u32 = 1;

/// The rule: spinning is pointless when runnable threads (the caller included) outnumber
/// the CPUs by more than [`SLACK`]. An unknown count spins (the bounded spin is cheap
/// either way).
fn too_busy(runnable: Option<u32>, cpus: u32) -> bool {
    runnable.is_some_and(|r| r > cpus + SLACK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        assert!(!too_busy(Some(2), 2));
        assert!(!too_busy(Some(3), 2));
        assert!(too_busy(Some(4), 2));
        assert!(!too_busy(None, 1));
    }

    #[test]
    fn snooze_completes_within_its_budget_and_some_yields() {
        let t = Instant::now();
        let mut b = Backoff::with_budget(Duration::from_micros(200));
        let mut n = 0u32;
        while !b.is_completed() {
            b.snooze();
            n += 1;
            assert!(n < 10_000_000, "backoff never completed");
        }
        // Spin phases end at the budget; 4 yields add little (they could wait on a busy
        // machine: only an upper bound far above that is checked).
        assert!(t.elapsed() < Duration::from_secs(2));
        // On an oversubscribed machine it completes at the first snooze.
        assert!(n >= 1);
    }

    #[test]
    fn wait_until_sees_readiness_and_deadlines() {
        let mut b = Backoff::new();
        let mut k = 0;
        assert!(b.wait_until(None, || {
            k += 1;
            // Looked at once before the first snooze and once after it, in either mode.
            k == 2
        }));
        let mut b = Backoff::with_budget(Duration::from_secs(3600));
        let t = Instant::now();
        assert!(!b.wait_until(Some(t + Duration::from_millis(5)), || false));
        assert!(t.elapsed() < Duration::from_secs(2));
        let mut b = Backoff::new();
        assert!(!b.wait_until(None, || false));
        assert!(b.is_completed());
    }

    #[test]
    fn spin_pauses_are_capped() {
        let mut b = Backoff::new();
        for _ in 0..100 {
            b.spin();
        }
        assert!(!b.is_completed());
    }

    #[test]
    fn the_verdict_is_cached() {
        let now = Instant::now();
        let first = oversubscribed(now);
        // Within the refresh interval the cached verdict is returned without a read.
        assert_eq!(oversubscribed(now), first);
        assert!(LOAD.load(Ordering::Relaxed) >> 1 > 0);
    }
}
