//! Cross-process synchronization: [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`],
//! [`Event`], [`Condition`], [`Barrier`].
//!
//! **Where they live.** Each primitive is one or a few futex words in a shared region (an
//! anonymous memfd, see `shared::region`): no named semaphores, no server process, no
//! helper thread. Handles are `Clone` (same primitive) and travel to children in process
//! arguments and inside messages as the region's fd. The state machines are in `raw/`,
//! one file per primitive, each generic over its words (`&AtomicU32` in production),
//! unit-tested on the heap and model-checked under loom;
//! the files here own the regions and give them Python's names. All futex operations are
//! shared (never `FUTEX_PRIVATE_FLAG`), since waiters and wakers are in different
//! processes. Every wait has a timeout form, with deadlines on the monotonic clock.
//!
//! **Owner death: the kernel's robust-futex list.** A lock word holds its owner's TID, plus
//! `FUTEX_WAITERS` and `FUTEX_OWNER_DIED`, the layout the kernel understands. The holding
//! thread links the lock into its robust list — the list glibc registers for every thread
//! (read with `get_robust_list`), laid out like glibc's robust `pthread_mutex_t` so glibc's
//! own robust mutexes and ours share it safely (see `raw/robust.rs`). When a thread dies
//! (any way: `abort`, SIGKILL, segfault, thread exit, exec) the kernel walks its list,
//! marks each lock it still held `OWNER_DIED` and wakes one waiter. The next acquirer takes
//! the lock at once and its guard reports [`LockGuard::owner_died`]. No polling, no pid
//! checks, no cost on the fast path beyond a few stores to the thread's list; uncontended
//! acquire is one CAS and release one swap. This covers `Lock`, `RLock`, a
//! `Value`/`Array`'s lock, a `Condition`'s lock and the `Barrier`'s internal lock. Guards
//! are not `Send`, because the thread that linked a lock must unlink it.
//!
//! Chosen over owner pids with liveness checks: those need a waiter to wake up
//! periodically to look (latency of the poll period, syscalls while waiting), and a pid
//! can be reused. The kernel's list is exact and immediate. If a thread has no usable list
//! (a libc whose head has another layout), its locks still work; only its death goes
//! unreported.
//!
//! **What is not recovered.** Semaphore permits held by a dead process are lost, as with
//! every semaphore (there is no owner to record). An `Event` whose setter died, a
//! `Condition` whose notifier died, a `Barrier` missing a dead party: the waiters wait,
//! which is why every wait has a timeout form; they are never woken falsely.

mod barrier;
mod condition;
mod event;
mod lock;
pub(crate) mod raw;
mod rlock;
mod semaphore;

pub use barrier::Barrier;
pub use condition::Condition;
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
