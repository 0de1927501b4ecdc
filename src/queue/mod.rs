//! Queues: [`Queue`], [`JoinableQueue`] and [`SimpleQueue`], all one shared-memory ring.
//!
//! # The ring (`ring/`)
//!
//! A memfd region: one control page, then a data area of `capacity` bytes (a power of two;
//! 1 MiB by default, its pages touched only as the ring cycles through them). Items are
//! encoded with the crate's codec (postcard) and written as length-prefixed frames, 8-byte
//! aligned: `len: u32, kind: u32, payload`. A `WHOLE` frame is one item: an item of up to a
//! quarter of the ring is encoded into a reused buffer, then copied in with its header in
//! one go. A larger item is encoded straight into the ring and *streamed*: `FIRST`,
//! `MORE`..., `LAST`, each piece published as soon as it is full, so a consumer drains the
//! ring while the producer fills it, and neither side needs a second buffer of the item's
//! size to send it. `ABORT` ends a streamed item that will never be finished.
//!
//! **Who writes what.** Two locks, one per side. The holder of the *producer lock* is the
//! only writer of `TAIL` and of the bytes past it; the holder of the *consumer lock* is the
//! only writer of `HEAD`. Within its lock each side is a single-producer (or
//! single-consumer) ring, and a streamed item is atomic with respect to other producers and
//! consumers because each side holds its lock from the first piece to the last. `TAIL` and
//! `HEAD` are 64-bit words packing `(items << 32) | position`: one release store publishes a
//! frame's bytes and, for a `WHOLE`/`LAST` frame, the item count, together. So
//! `qsize = TAIL.items - HEAD.items` is exact and never counts half an item, and a
//! JoinableQueue's unfinished count is `TAIL.items - DONE` with no extra word to keep in step.
//! `Queue::bounded(n)` makes a producer wait, holding its lock, until `qsize < n`.
//!
//! **Who wakes whom.** Two eventcounts (`DATA`, `ROOM`): a futex sequence word and a waiter
//! count. A waiter backs off (`sync::raw::backoff`: spins ~20 µs with growing pauses between
//! looks, so it does not steal the cache line it watches on every cycle, or not at all on an
//! oversubscribed machine), then registers in the count, fences (SeqCst),
//! re-checks, and sleeps on the sequence. A producer publishes with a SeqCst swap (the
//! store and the fence in one instruction) and, only if the count is non-zero, bumps the
//! sequence and wakes; consumers likewise for room. The fences pair up (a waiter either sees
//! the new tail or is seen by the producer), so no wakeup is lost, and the uncontended path
//! makes no syscall. A producer that found the ring full asks (`ROOM_NEED`) to be woken only
//! once a sixteenth of it is free, and re-checks its own need every 2 ms: one wakeup per
//! many items, not per item. Joiners sleep on `DONE` itself.
//!
//! **Pollers.** A queue also has a readiness flag, an eventfd every handle carries
//! (`Queue::as_pollable_fd`, and what `get_async` waits on), kept readable iff a frame
//! waits while some process counts itself a poller in the ring's `sleepers` word
//! (`connection/ready.rs`, model-checked there): after each put and each get the caller
//! reads that word (one load) and, only if a poller is counted, settles the flag.
//!
//! **Locks that survive their holder.** Each side's lock is the crate's robust mutex
//! (`sync::raw::mutex`): its word holds the owner's thread id and is linked into the
//! owner's kernel robust list, so when the owner dies (SIGKILL, abort, a thread exiting
//! with the lock) the kernel marks the word `OWNER_DIED` and wakes a waiter, which takes the
//! lock and repairs the side. No pid is stored, so no recycled pid can pass for a live
//! owner. Repair is local: the new producer-lock holder finds `stream = IN_ITEM` (set before
//! a `First` frame is published, cleared after its `Last`) and writes an `Abort`, for which
//! a streaming producer always leaves one unit free. A consumer waiting for the rest of a
//! streamed item looks at the producer lock after each 50 ms sleep slice, and repairs it if
//! it is free or its owner died. A new consumer needs no repair: pieces of an item whose
//! `First` it never saw are skipped (their `Last` still counts as consumed). A half-written
//! frame is never visible (the tail moves only after it), so no item is ever delivered
//! torn. A producer whose `put` times out in the middle of a stream writes the `Abort`
//! itself.
//!
//! # What that gives
//!
//! * **No feeder thread, no loss.** `put` returns once the item is in shared memory, so a
//!   producer may exit, or be killed, the next instant: the item is delivered.
//! * **Joining a producer before draining is fine** as long as what it put fits in the ring
//!   (`capacity` bytes of frames, 1 MiB by default; each item costs its encoded size plus
//!   8 bytes of header, rounded up to 8). A producer whose items exceed that
//!   blocks in `put` until someone reads, exactly as CPython documents for its pipes.
//! * **No wedge.** A producer or consumer killed in the middle of `put` or `get` costs at most
//!   the item it was moving; the others go on after at most one probe interval.
//! * A message containing a handle (a `Connection`, a `Queue`, ...) cannot cross the ring:
//!   `put` returns `Error::Codec` and leaves the queue unchanged.

mod bytes;
pub(crate) mod ring;

mod joinable;
#[allow(clippy::module_inception)]
mod queue;
mod simple;

pub use crate::connection::future::GetFuture;
pub use joinable::JoinableQueue;
pub use queue::Queue;
pub use simple::SimpleQueue;
