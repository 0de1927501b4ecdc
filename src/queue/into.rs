//! `get_into`: an item's bytes received into the caller's buffer (Python's
//! `Connection.recv_bytes_into`, for queues).
//!
//! A 64 MiB item gathered into a fresh `Vec` faults in 64 MiB of fresh pages (and the
//! kernel zeroes each one) before a byte of it is copied: on a 2-vCPU machine that costs
//! about as much as the copy itself. A consumer that hands the same buffer back each time
//! pays that once.
//!
//! **Which items.** Those whose encoding *is* their bytes: `varint(n)` then `n` bytes that
//! are the value. That is a byte string (`serde_bytes::ByteBuf`, a `#[serde(with =
//! "serde_bytes")]` field in a newtype, a `String`: its UTF-8) or a sequence of `u8` (a
//! `Vec<u8>`, which postcard writes the same way). The item type is probed, as the fast
//! path of `get` probes it (`bytes.rs`); any other `T` is refused with
//! `Error::ValueError` before anything is taken, so a typed queue never hands out bytes
//! that were not a value of its type. `T`'s `Deserialize` is not run: the bytes are what
//! its `Serialize` wrote.
//!
//! **How.** A `WHOLE` item (up to a quarter of the ring) is copied from the ring into the
//! buffer. A streamed one is gathered into the buffer itself, piece by piece, as the ring
//! hands them over (`Ring::recv_into`); it grows only if it is smaller than the item. The
//! buffer travels through a `Cell` the ring and both callbacks share, so every path, the
//! error paths included, leaves it in the caller's hands.
//!
//! **On error** the buffer is left empty, its allocation kept: no partial item is ever
//! visible in it, and an item dropped half-way (deadline, producer killed) costs the next
//! call no fresh pages.

use std::cell::Cell;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::queue::{Inner, deadline_in};
use super::{JoinableQueue, Queue, SimpleQueue, bytes};
use crate::error::{Error, Result};

impl Inner {
    fn get_into<T: DeserializeOwned>(
        &self,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<usize> {
        let got = self.take_into::<T>(buf, deadline);
        if got.is_err() {
            buf.clear();
        }
        got
    }

    fn take_into<T: DeserializeOwned>(
        &self,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<usize> {
        self.check_open()?;
        if !bytes::is_bytes::<T>() {
            return Err(Error::ValueError(format!(
                "get_into needs items that are bytes (a byte string or a sequence of u8), \
                 not `{}`",
                std::any::type_name::<T>()
            )));
        }
        let spare = Cell::new(std::mem::take(buf));
        let got = self.ring().recv_into(
            deadline,
            |item| {
                let (n, prefix) = announced::<T>(item)?;
                if prefix as u64 + n != item.len() as u64 {
                    return Err(disagrees::<T>(n, item.len() - prefix));
                }
                let mut out = spare.take();
                out.clear();
                out.extend_from_slice(&item[prefix..]);
                spare.set(out);
                Ok(n as usize)
            },
            |n, body| {
                let len = body.len();
                // Kept either way: emptied below on error.
                spare.set(body);
                if len as u64 != n {
                    return Err(disagrees::<T>(n, len));
                }
                Ok(len)
            },
            &spare,
        );
        *buf = spare.into_inner();
        got?
    }
}

/// The length a byte item announces, and the bytes of its varint.
fn announced<T>(item: &[u8]) -> Result<(u64, usize)> {
    bytes::varint(item).ok_or_else(|| {
        Error::Codec(format!(
            "could not decode a `{}`: no length before its bytes",
            std::any::type_name::<T>()
        ))
    })
}

fn disagrees<T>(n: u64, got: usize) -> Error {
    Error::Codec(format!(
        "could not decode a `{}`: {n} bytes announced, {got} received",
        std::any::type_name::<T>()
    ))
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Removes the oldest item and puts its bytes into `buf` (replacing its contents,
    /// reusing its allocation), waiting for one as long as it takes; returns their number.
    /// Python's `Connection.recv_bytes_into`, for queues.
    ///
    /// For items that are bytes: a byte string (`serde_bytes::ByteBuf`, a
    /// `#[serde(with = "serde_bytes")]` newtype, a `String`, whose UTF-8 this gives) or a
    /// sequence of `u8` (`Vec<u8>`). A consumer of large items that passes the same `buf`
    /// each time receives them without touching fresh memory: an item larger than a
    /// quarter of the ring is gathered into `buf` as it streams through, and `buf` grows
    /// only when an item is larger than it. `T`'s `Deserialize` is not run.
    ///
    /// Errors: `Error::ValueError` if `T` is not such a type (nothing is taken);
    /// `Error::Codec` if the item's length disagrees with its bytes (it is consumed);
    /// `Error::QueueClosed` if this queue was closed. On error `buf` is left empty (its
    /// allocation kept): it never holds part of an item.
    ///
    /// ```
    /// # fn main() -> mproc::Result<()> {
    /// let q = mproc::Queue::<Vec<u8>>::new()?;
    /// q.put(vec![1, 2, 3])?;
    /// q.put(vec![4])?;
    /// let mut buf = Vec::with_capacity(1 << 10);
    /// assert_eq!(q.get_into(&mut buf)?, 3);
    /// assert_eq!(buf, [1, 2, 3]);
    /// assert_eq!(q.get_into(&mut buf)?, 1);
    /// assert_eq!(buf, [4]);
    /// assert!(buf.capacity() >= 1 << 10);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.inner().get_into::<T>(buf, None)
    }

    /// [`get_into`](Queue::get_into), waiting at most `timeout`; `Err(Error::Empty)` (and
    /// `buf` empty) if no item arrived whole by then. An item whose producer stalls past
    /// the deadline half-way is dropped whole, as with
    /// [`get_timeout`](Queue::get_timeout).
    pub fn get_into_timeout(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize> {
        self.inner().get_into::<T>(buf, deadline_in(timeout))
    }

    /// [`get_into`](Queue::get_into) if an item is there now; `Err(Error::Empty)` (and
    /// `buf` empty) if not.
    pub fn try_get_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.inner().get_into::<T>(buf, Some(Instant::now()))
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// Removes the oldest item into `buf`; see [`Queue::get_into`].
    pub fn get_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.queue.get_into(buf)
    }

    /// Removes the oldest item into `buf`, waiting at most `timeout`; see
    /// [`Queue::get_into_timeout`].
    pub fn get_into_timeout(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize> {
        self.queue.get_into_timeout(buf, timeout)
    }

    /// Removes the oldest item into `buf` if there is one now; see
    /// [`Queue::try_get_into`].
    pub fn try_get_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.queue.try_get_into(buf)
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// Removes the oldest item into `buf`, waiting for one; see [`Queue::get_into`].
    pub fn get_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.queue.get_into(buf)
    }

    /// Removes the oldest item into `buf`, waiting at most `timeout`; see
    /// [`Queue::get_into_timeout`].
    pub fn get_into_timeout(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize> {
        self.queue.get_into_timeout(buf, timeout)
    }
}
