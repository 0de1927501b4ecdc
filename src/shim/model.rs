//! The loom model of the runtime: atomics, the futex, the kernel's robust-futex handling of
//! a dead owner, and process death at chosen points.
//!
//! * **Futex.** As the kernel does it: `wait` compares the word under the bucket lock and
//!   queues itself there; `wake` dequeues under the same lock. One bucket for all words
//!   (the kernel hashes; one bucket only serialises more). A deadline in the past times out
//!   at once, any other never does, so a protocol that needs a timer to recover from a lost
//!   wake-up deadlocks under the model and loom reports it. The clock ([`Word::now`]) is
//!   frozen, so that rule never depends on how fast the checker runs.
//! * **Time after a death.** Protocols find a dead partner by waking from a bounded sleep
//!   (a probe slice) and looking. So once a model process has died, time flows: every
//!   sleeper with a deadline is woken as timed out, and every later wait with one times out
//!   at once (after yielding to the other threads, so a prober's loop is a spin loom can
//!   schedule). Before the first death a lost wake-up is still a deadlock.
//! * **Death.** [`victim`] runs a closure that dies at its `k`-th [`Word::die_point`]: the
//!   thread unwinds with [`Died`] while [`Word::dying`] is true, so lock guards leave their
//!   locks held, and then the "kernel" walks the thread's robust list as `exit` does: every
//!   linked (or pending) word still holding the thread's id becomes
//!   `WAITERS|OWNER_DIED`-marked, and one waiter is woken if `WAITERS` was set.
//! * **Bounds.** [`check`] runs a loom model with the preemption bound from
//!   `MPROC_MODEL_BOUND` (default 2; CI runs the default, deeper runs set it higher), and
//!   `MPROC_MODEL_DEEP=1` lets a model choose its larger sizes (see the README's
//!   "Guarantees").

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::Ordering;
use std::time::Instant;

use loom::sync::atomic::{AtomicU32, AtomicU64};
use loom::sync::{Condvar, Mutex};

use super::{Me, Wake, Word, Word64};
use crate::sync::raw::mutex::{OWNER_DIED, WAITERS};
use crate::sync::raw::robust::TID_MASK;

/// A 32-bit word under the model.
#[derive(Debug)]
pub(crate) struct MWord(AtomicU32);

/// A 64-bit word under the model.
#[derive(Debug)]
pub(crate) struct MWord64(AtomicU64);

impl MWord {
    pub(crate) fn new(v: u32) -> MWord {
        MWord(AtomicU32::new(v))
    }
    /// The value without a model step, for assertions once every thread has joined.
    pub(crate) fn value(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Default for MWord {
    fn default() -> Self {
        MWord::new(0)
    }
}

impl MWord64 {
    pub(crate) fn new(v: u64) -> MWord64 {
        MWord64(AtomicU64::new(v))
    }
}

impl Default for MWord64 {
    fn default() -> Self {
        MWord64::new(0)
    }
}

/// The futex bucket: who waits on which word (by address), in arrival order, and whether
/// with a deadline; and the sleepers the last death timed out.
#[derive(Default)]
struct Bucket {
    queued: Vec<(usize, u64, bool)>,
    next: u64,
    timed_out: Vec<u64>,
    /// A model process has died: deadlines pass.
    time_flows: bool,
}

loom::lazy_static! {
    static ref BUCKET: Mutex<Bucket> = Mutex::new(Bucket::default());
    static ref WOKEN: Condvar = Condvar::new();
    static ref NEXT_TID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
}

/// One model thread's kernel-side state.
#[derive(Default)]
struct ThreadState {
    tid: u32,
    /// Die at this many more die points (`None`: never).
    die_in: Option<u32>,
    dying: bool,
    /// Robust list: linked lock words, and the pending one.
    linked: Vec<*const MWord>,
    pending: Option<*const MWord>,
    /// How many lock words the "kernel" marked `OWNER_DIED` at this thread's last death.
    marked: usize,
}

loom::thread_local! {
    static THREAD: RefCell<ThreadState> = RefCell::new(ThreadState::default());
}

std::thread_local! {
    /// Whether a model victim is unwinding (read in `dying`, which must not take a loom step).
    static DYING: Cell<bool> = const { Cell::new(false) };
}

/// The panic payload of a model process death.
#[derive(Debug)]
pub(crate) struct Died;

fn tid() -> u32 {
    THREAD.with(|t| {
        let mut t = t.borrow_mut();
        if t.tid == 0 {
            t.tid = NEXT_TID.fetch_add(1, Ordering::Relaxed);
        }
        t.tid
    })
}

impl Word for MWord {
    fn load(&self, order: Ordering) -> u32 {
        self.0.load(order)
    }
    fn store(&self, v: u32, order: Ordering) {
        self.0.store(v, order)
    }
    fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32> {
        self.0.compare_exchange(current, new, success, failure)
    }
    fn compare_exchange_weak(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32> {
        // loom's weak CAS never fails spuriously; the strong one explores the same states.
        self.0.compare_exchange(current, new, success, failure)
    }
    fn fetch_add(&self, v: u32, order: Ordering) -> u32 {
        self.0.fetch_add(v, order)
    }
    fn fetch_sub(&self, v: u32, order: Ordering) -> u32 {
        self.0.fetch_sub(v, order)
    }
    fn fetch_and(&self, v: u32, order: Ordering) -> u32 {
        self.0.fetch_and(v, order)
    }

    fn wait(&self, expected: u32, deadline: Option<Instant>) -> Wake {
        if deadline.is_some_and(|d| Self::now() >= d) {
            return Wake::TimedOut;
        }
        let addr = self as *const MWord as usize;
        let mut b = BUCKET.lock().expect("model bucket");
        if deadline.is_some() && b.time_flows {
            drop(b);
            loom::thread::yield_now();
            return Wake::TimedOut;
        }
        // The kernel reads the word under the bucket lock: a waker that changed it first
        // is seen here, one that changes it later finds us queued.
        if self.0.load(Ordering::SeqCst) != expected {
            return Wake::Retry;
        }
        let ticket = b.next;
        b.next += 1;
        b.queued.push((addr, ticket, deadline.is_some()));
        while b.queued.iter().any(|&(_, t, _)| t == ticket) {
            b = WOKEN.wait(b).expect("model bucket");
        }
        if let Some(i) = b.timed_out.iter().position(|&t| t == ticket) {
            b.timed_out.swap_remove(i);
            return Wake::TimedOut;
        }
        Wake::Retry
    }

    fn wake(&self, n: u32) -> usize {
        let addr = self as *const MWord as usize;
        let mut b = BUCKET.lock().expect("model bucket");
        let mut woken = 0usize;
        b.queued.retain(|&(a, _, _)| {
            if a == addr && woken < n as usize {
                woken += 1;
                false
            } else {
                true
            }
        });
        if woken > 0 {
            WOKEN.notify_all();
        }
        woken
    }

    fn now() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }
    fn fence(order: Ordering) {
        loom::sync::atomic::fence(order)
    }
    fn model_seqcst_fence() {
        loom::sync::atomic::fence(Ordering::SeqCst)
    }
    const SPINS: bool = false;

    fn die_point() {
        let die = THREAD.with(|t| {
            let mut t = t.borrow_mut();
            match t.die_in {
                Some(0) => {
                    t.die_in = None;
                    t.dying = true;
                    true
                }
                Some(k) => {
                    t.die_in = Some(k - 1);
                    false
                }
                None => false,
            }
        });
        if die {
            quiet_deaths();
            DYING.set(true);
            std::panic::panic_any(Died);
        }
    }

    fn dying() -> bool {
        DYING.get()
    }

    fn me() -> Me {
        Me::model(tid())
    }
    fn set_pending(&self, _me: Me) {
        THREAD.with(|t| t.borrow_mut().pending = Some(self as *const MWord));
    }
    fn clear_pending(_me: Me) {
        THREAD.with(|t| t.borrow_mut().pending = None);
    }
    fn link(&self, _me: Me) {
        THREAD.with(|t| t.borrow_mut().linked.push(self as *const MWord));
    }
    fn unlink(&self, _me: Me) {
        let me = self as *const MWord;
        THREAD.with(|t| t.borrow_mut().linked.retain(|&w| w != me));
    }
}

impl Word64 for MWord64 {
    fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
    fn store(&self, v: u64, order: Ordering) {
        self.0.store(v, order)
    }
    fn swap(&self, v: u64, order: Ordering) -> u64 {
        self.0.swap(v, order)
    }
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        self.0.compare_exchange(current, new, success, failure)
    }
}

/// How a [`victim`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate<T> {
    /// It ran to the end.
    Lived(T),
    /// It died at its `k`-th die point.
    Died,
}

/// Runs `f` on the calling model thread as a process that dies at its `k`-th die point
/// (counting from 0; `None`: never), then does what the kernel does at a thread's death.
///
/// # Safety of the robust walk
/// The words `f` linked must outlive this call (keep them in an `Arc` the caller holds).
pub(crate) fn victim<T>(k: Option<u32>, f: impl FnOnce() -> T) -> Fate<T> {
    THREAD.with(|t| {
        let mut t = t.borrow_mut();
        t.die_in = k;
        t.marked = 0;
    });
    let r = catch_unwind(AssertUnwindSafe(f));
    THREAD.with(|t| t.borrow_mut().die_in = None);
    match r {
        Ok(v) => Fate::Lived(v),
        Err(e) if e.is::<Died>() => {
            DYING.set(false);
            kernel_exit();
            Fate::Died
        }
        Err(e) => resume_unwind(e),
    }
}

/// How many lock words the "kernel" marked `OWNER_DIED` when the calling thread's last
/// [`victim`] died: the locks it died holding.
pub(crate) fn marked_at_death() -> usize {
    THREAD.with(|t| t.borrow().marked)
}

/// The kernel's `exit_robust_list`: marks every lock the dead thread held. And time
/// starts to flow (see the module docs): the sleepers with a deadline time out.
fn kernel_exit() {
    {
        let mut b = BUCKET.lock().expect("model bucket");
        b.time_flows = true;
        let mut timed = Vec::new();
        b.queued.retain(|&(_, t, bounded)| {
            if bounded {
                timed.push(t);
            }
            !bounded
        });
        if !timed.is_empty() {
            b.timed_out.extend(timed);
            WOKEN.notify_all();
        }
    }
    let (tid, words) = THREAD.with(|t| {
        let mut t = t.borrow_mut();
        t.dying = false;
        let mut words = std::mem::take(&mut t.linked);
        words.extend(t.pending.take());
        (t.tid, words)
    });
    for w in words {
        #[allow(unsafe_code)]
        // SAFETY: `victim`'s contract: the words outlive the call.
        let word = unsafe { &*w };
        let mut v = word.0.load(Ordering::SeqCst);
        while v & TID_MASK == tid {
            let new = (v & WAITERS) | OWNER_DIED;
            match word
                .0
                .compare_exchange(v, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    THREAD.with(|t| t.borrow_mut().marked += 1);
                    if v & WAITERS != 0 {
                        word.wake(1);
                    }
                    break;
                }
                Err(now) => v = now,
            }
        }
    }
}

/// The preemption bound for CI's model runs (`MPROC_MODEL_BOUND` to change it).
pub(crate) fn bound() -> usize {
    std::env::var("MPROC_MODEL_BOUND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// Whether the long explorations were asked for (`MPROC_MODEL_DEEP=1`).
pub(crate) fn deep() -> bool {
    std::env::var_os("MPROC_MODEL_DEEP").is_some_and(|v| v == "1")
}

/// Runs `f` under loom with the preemption bound `bound` (or [`bound()`] when `None`).
pub(crate) fn check_with(bound: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound.unwrap_or_else(self::bound));
    b.check(f);
}

/// Runs `f` under loom with the default bound.
pub(crate) fn check(f: impl Fn() + Sync + Send + 'static) {
    check_with(None, f)
}

/// Keeps the panic hook from printing a model death (one per schedule explored); every
/// other panic is reported as before.
fn quiet_deaths() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Died>() {
                report(info);
            }
        }));
    });
}
