//! `Queue<T>`: typed items over the ring, with Python's `multiprocessing.Queue` methods.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use postcard::ser_flavors::Flavor;

use std::os::fd::{AsFd, BorrowedFd};

use super::bytes;
use super::ring::{DEFAULT_CAPACITY, ItemWriter, Ring};
use crate::codec;
use crate::codec::HandleFd;
use crate::connection::future::{GetFuture, Look};
use crate::connection::ready::{self, EventFd};
use crate::error::{Error, Result};
use crate::shared::region::Region;
use crate::sys;

thread_local! {
    /// Each thread's encoding buffer, reused across puts.
    static ENCODE_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A buffer grown beyond this by one huge item is dropped rather than kept for the next.
const KEEP_BUF: usize = 1 << 20;

/// What every queue handle holds: the ring, its readiness flag (an eventfd shared by
/// every handle in every process, `connection/ready.rs`), and whether this process closed
/// it or polls it.
#[derive(Debug)]
pub(super) struct Inner {
    ring: Ring,
    flag: HandleFd,
    closed: AtomicBool,
    /// Whether this process's handles count a poller in the ring (from the first
    /// `as_pollable_fd` or `get_async` until the last handle here is dropped).
    watching: AtomicBool,
}

impl Inner {
    pub(super) fn create(maxsize: usize, ring_bytes: usize) -> Result<Arc<Inner>> {
        Ok(Arc::new(Inner::over(
            Ring::create(ring_bytes, maxsize)?,
            HandleFd::new(sys::ready::flag()?),
        )))
    }

    fn over(ring: Ring, flag: HandleFd) -> Inner {
        Inner {
            ring,
            flag,
            closed: AtomicBool::new(false),
            watching: AtomicBool::new(false),
        }
    }

    /// The descriptor readable iff a frame waits in the ring; counts this process as a
    /// poller first (once).
    pub(super) fn pollable_fd(&self) -> BorrowedFd<'_> {
        self.watch();
        self.flag.as_fd()
    }

    fn watch(&self) {
        if !self.watching.swap(true, Ordering::AcqRel) {
            ready::watch(self.ring.sleepers(), &EventFd(self.flag.as_fd()), || {
                self.ring.pending()
            });
        }
    }

    /// After a put or a get: keeps a poller's flag in step (one load when nobody polls).
    #[inline]
    fn changed(&self) {
        ready::changed(self.ring.sleepers(), &EventFd(self.flag.as_fd()), || {
            self.ring.pending()
        });
    }

    /// One look for `get_async` (`connection/future.rs`): an item only if one is there and
    /// the consumer lock is free at once; an item begun is read to its end, never dropped.
    pub(super) fn look<T: DeserializeOwned>(&self) -> Result<Look<T>> {
        self.check_open()?;
        self.watch();
        if !self.ring.pending() {
            // A flag left set (an item another process took, a getter killed before it
            // settled) would wake the caller again for nothing.
            ready::settle::<std::sync::atomic::AtomicU32, _>(&EventFd(self.flag.as_fd()), || {
                self.ring.pending()
            });
            return Ok(Look::Nothing);
        }
        let now = Some(Instant::now());
        let got = if bytes::is_byte_string::<T>() {
            let owned = |n, body| bytes::decode_owned::<T>(n, body);
            self.ring
                .recv_inner(now, None, codec::decode_plain::<T>, Some(owned), false)
        } else {
            self.ring.recv_inner(
                now,
                None,
                codec::decode_plain::<T>,
                None::<fn(u64, Vec<u8>) -> Result<T>>,
                false,
            )
        };
        self.changed();
        match got {
            Ok(item) => Ok(Look::Took(item?)),
            Err(Error::Empty) => Ok(Look::Busy),
            Err(e) => Err(e),
        }
    }

    pub(super) fn ring(&self) -> &Ring {
        &self.ring
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::QueueClosed);
        }
        Ok(())
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub(super) fn put<T: Serialize>(&self, item: &T, deadline: Option<Instant>) -> Result<()> {
        self.check_open()?;
        // A streamed item's first pieces are published before the put ends: a poller must
        // see them while the put waits for room, or a consumer waiting on the flag (a
        // `get_async`) and this put would wait for each other.
        let stalled = || {
            self.changed();
            false
        };
        let mut writer = self.ring.writer(deadline, ENCODE_BUF.take());
        writer.on_stall(&stalled);
        let mut failed = None;
        let encoded = postcard::serialize_with_flavor(
            item,
            IntoRing {
                writer: &mut writer,
                failed: &mut failed,
            },
        );
        if let Err(e) = encoded {
            // Dropping the writer abandons what was written of the item.
            drop(writer);
            self.changed();
            return Err(failed.unwrap_or_else(|| encode_error(item, e)));
        }
        let buf = writer.finish();
        self.changed();
        let buf = buf?;
        if buf.capacity() <= KEEP_BUF {
            ENCODE_BUF.set(buf);
        }
        Ok(())
    }

    pub(super) fn get<T: DeserializeOwned>(&self, deadline: Option<Instant>) -> Result<T> {
        self.check_open()?;
        let got = if bytes::is_byte_string::<T>() {
            let owned = |n, body| bytes::decode_owned::<T>(n, body);
            self.ring
                .recv_with(deadline, codec::decode_plain::<T>, Some(owned))
        } else {
            self.ring.recv(deadline, codec::decode_plain::<T>)
        };
        self.changed();
        got?
    }

    pub(super) fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.ring.region() {
            Some(region) => (&**region, &self.flag).serialize(s),
            None => Err(serde::ser::Error::custom(
                "this queue is not in shared memory",
            )),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Arc<Inner>, D::Error> {
        let (region, flag) = <(Region, HandleFd)>::deserialize(d)?;
        sys::ready::adopt_flag(flag.as_fd()).map_err(serde::de::Error::custom)?;
        let ring = Ring::attach(Arc::new(region)).map_err(serde::de::Error::custom)?;
        Ok(Arc::new(Inner::over(ring, flag)))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if *self.watching.get_mut() {
            ready::unwatch(self.ring.sleepers());
        }
    }
}

/// A postcard output that writes straight into the ring: small items are buffered and
/// written whole, large ones streamed without a buffer of their size.
struct IntoRing<'w, 'r> {
    writer: &'w mut ItemWriter<'r>,
    /// Why the ring refused the bytes (postcard's own error cannot carry it).
    failed: &'w mut Option<Error>,
}

impl Flavor for IntoRing<'_, '_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.try_extend(&[byte])
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.writer.write(data).map_err(|e| {
            *self.failed = Some(e);
            postcard::Error::SerializeBufferFull
        })
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// The codec's own error for an item that failed to encode (a handle inside it, a
/// serializer error): encoding it the codec's way again fails the same way, with the
/// message the codec keeps for it.
#[cold]
fn encode_error<T: Serialize>(item: &T, e: postcard::Error) -> Error {
    match codec::encode_plain_into(item, &mut Vec::new()) {
        Err(err) => err,
        Ok(()) => Error::Codec(e.to_string()),
    }
}

/// A deadline `d` from now; `None` (no deadline) if that is beyond the clock's range.
pub(super) fn deadline_in(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// A multi-producer, multi-consumer FIFO queue shared between processes: Python's
/// `multiprocessing.Queue`.
///
/// Items are serde values, encoded into a ring of frames in shared memory. There is no
/// feeder thread: when [`put`](Queue::put) returns, the item is in shared memory, and it
/// arrives even if the producer exits or is killed the next instant. A producer or consumer
/// killed in the middle of a `put` or `get` does not wedge the queue: the others go on, and
/// a half-written item is discarded, never delivered torn (the protocol is described in
/// `src/queue/mod.rs`).
///
/// Clones share the same queue. A `Queue` is a handle: pass it to a child in its arguments,
/// or send it inside a connection message, under every start method.
///
/// The ring holds [`DEFAULT_RING_SIZE`](Queue::DEFAULT_RING_SIZE) bytes of encoded items
/// unless made with [`with_ring_size`](Queue::with_ring_size). Larger items still go
/// through (streamed in pieces, atomically), but then a `put` waits for a consumer; in
/// particular a child that has put more than that many bytes cannot be joined before the
/// queue is drained (CPython's "joining processes that use queues" rule, at a much larger
/// size). Below it, joining first is fine.
///
/// **Large byte payloads** go fastest as one byte string: `serde_bytes::ByteBuf`, a
/// `#[serde(with = "serde_bytes")]` field, or a `String`. Such an item, when larger than a
/// quarter of the ring, is received straight into a buffer reserved at its size, which the
/// item then keeps: one copy out of the ring, and no second buffer. A plain `Vec<u8>` is a
/// *sequence* to serde, encoded and decoded one element at a time (correct, but several
/// times slower for megabytes).
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let q = mproc::Queue::new()?;
/// q.put("sudh".to_string())?;
/// q.put("kumar".to_string())?;
/// assert_eq!(q.qsize(), 2);
/// assert_eq!(q.get()?, "sudh");
/// assert_eq!(q.get()?, "kumar");
/// assert!(matches!(q.try_get(), Err(mproc::Error::Empty)));
/// # Ok(())
/// # }
/// ```
pub struct Queue<T> {
    inner: Arc<Inner>,
    _item: PhantomData<fn(T) -> T>,
}

impl<T> Queue<T> {
    /// Bytes of frames a queue's ring holds by default (1 MiB).
    pub const DEFAULT_RING_SIZE: usize = DEFAULT_CAPACITY;

    pub(super) fn from_inner(inner: Arc<Inner>) -> Self {
        Queue {
            inner,
            _item: PhantomData,
        }
    }

    pub(super) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// An unbounded queue (Python's `Queue()`).
    pub fn new() -> Result<Self> {
        Self::with_ring_size(0, DEFAULT_CAPACITY)
    }

    /// A queue holding at most `maxsize` items: `put` waits while it is full (Python's
    /// `Queue(maxsize)`; as there, 0 means unbounded).
    ///
    /// ```
    /// # fn main() -> mproc::Result<()> {
    /// let q = mproc::Queue::bounded(1)?;
    /// q.put(1)?;
    /// assert!(q.is_full());
    /// assert!(matches!(q.try_put(2), Err(mproc::Error::Full)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn bounded(maxsize: usize) -> Result<Self> {
        Self::with_ring_size(maxsize, DEFAULT_CAPACITY)
    }

    /// A queue of at most `maxsize` items (0: unbounded) whose ring holds `ring_bytes`
    /// bytes of encoded items (rounded up to a power of two, at least 256). Memory is
    /// reserved, not touched: pages are used as the ring cycles through them.
    pub fn with_ring_size(maxsize: usize, ring_bytes: usize) -> Result<Self> {
        Ok(Self::from_inner(Inner::create(maxsize, ring_bytes)?))
    }

    /// Appends `item`, waiting for room as long as it takes.
    ///
    /// Errors: `Error::Codec` if `item` cannot be encoded, or contains a handle (a
    /// `Connection`, a `Queue`...: those travel in process arguments and connection
    /// messages, not through a queue); `Error::QueueClosed` if this queue was closed. On
    /// error the item is dropped.
    pub fn put(&self, item: T) -> Result<()> {
        self.inner.put(&item, None)
    }

    /// Appends `item`, waiting at most `timeout` for room; `Err(Error::Full)` (and the item
    /// dropped) if none came in time.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        self.inner.put(&item, deadline_in(timeout))
    }

    /// Appends `item` if there is room now; `Err(Error::Full)` (and the item dropped) if
    /// not. Python's `put_nowait`.
    pub fn try_put(&self, item: T) -> Result<()> {
        self.inner.put(&item, Some(Instant::now()))
    }

    /// Removes and returns the oldest item, waiting for one as long as it takes.
    ///
    /// Errors: `Error::Codec` if the item does not decode as a `T` (it is consumed);
    /// `Error::QueueClosed` if this queue was closed.
    pub fn get(&self) -> Result<T> {
        self.inner.get(None)
    }

    /// Removes and returns the oldest item, waiting at most `timeout` for it;
    /// `Err(Error::Empty)` if none arrived whole by then. (An item larger than the ring
    /// whose producer stalls past the deadline, half-way, is dropped whole: nothing torn
    /// is ever delivered.)
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.inner.get(deadline_in(timeout))
    }

    /// Removes and returns the oldest item if there is one now; `Err(Error::Empty)` if not.
    /// Python's `get_nowait`.
    pub fn try_get(&self) -> Result<T> {
        self.inner.get(Some(Instant::now()))
    }

    /// Removes and returns the oldest item, as a future: [`get`](Queue::get) for async
    /// code, with no runtime required (tokio, async-std, smol or a hand-written
    /// `block_on`).
    ///
    /// Cancel-safe: dropping the future before it completes loses no item (it takes one
    /// only when it can return it at once; an item larger than the ring that is still
    /// streaming when it looks is read to its end in that `poll`, as `get` would). It is
    /// woken by a helper thread (one per process, started on first use) waiting on
    /// [`as_pollable_fd`](Queue::as_pollable_fd).
    ///
    /// ```
    /// # fn main() -> mproc::Result<()> {
    /// let q = mproc::Queue::new()?;
    /// q.put(7u32)?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// assert_eq!(rt.block_on(q.get_async())?, 7);
    /// # Ok(()) }
    /// ```
    pub fn get_async(&self) -> GetFuture<'_, T> {
        GetFuture::new(self)
    }

    /// One look for [`get_async`](Queue::get_async).
    pub(crate) fn look(&self) -> Result<Look<T>> {
        self.inner.look()
    }

    /// The number of items in the queue: exact at the instant it is read (items being
    /// streamed count once their last piece is in).
    pub fn qsize(&self) -> usize {
        self.inner.ring.len()
    }

    /// Whether the queue holds no item.
    pub fn is_empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether a bounded queue holds `maxsize` items (always `false` when unbounded).
    pub fn is_full(&self) -> bool {
        self.inner.ring.is_full()
    }

    /// The item limit given to [`bounded`](Queue::bounded); `None` if unbounded.
    pub fn maxsize(&self) -> Option<usize> {
        self.inner.ring.maxsize()
    }

    /// Bytes of encoded items the ring holds.
    pub fn ring_size(&self) -> usize {
        self.inner.ring.capacity()
    }

    /// Closes this handle, and its clones, in this process: later `put`s and `get`s return
    /// `Error::QueueClosed`. Other processes' handles are unaffected, and items already put
    /// stay in the queue (nothing is buffered, so there is nothing to flush). Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl<T> Queue<T> {
    /// A descriptor that is readable iff an item (or the first piece of one larger than
    /// the ring) waits in the queue, and not readable otherwise, for `poll(2)`, epoll, mio
    /// or tokio's `AsyncFd` (level-triggered; read nothing from it, call
    /// [`try_get`](Queue::try_get)). A queue has no end of stream: any process holding it
    /// may still put, so nothing else makes it readable.
    ///
    /// It is an eventfd shared by every handle of the queue in every process. The first
    /// call (or `get_async`) counts this process's handles as a poller until the last of
    /// them is dropped; from then on each `put` and `get`, in any process, costs one
    /// eventfd syscall to keep it in step (before, nothing: a `put` already reads the
    /// word that says whether anyone polls). A process killed in the middle of a `get`
    /// may leave it readable with nothing waiting until the next `put` or `get`: treat it
    /// as a hint, as any readiness.
    pub fn as_pollable_fd(&self) -> BorrowedFd<'_> {
        self.inner.pollable_fd()
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self::from_inner(self.inner.clone())
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.inner.ring.len())
            .field("maxsize", &self.inner.ring.maxsize())
            .field("ring_size", &self.inner.ring.capacity())
            .finish()
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Inner::deserialize(d).map(Self::from_inner)
    }
}
