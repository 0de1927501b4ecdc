//! The futures of `recv_async` and `get_async`: no runtime needed, woken through this
//! process's reactor thread (`reactor.rs`).
//!
//! **Cancel safety.** A future takes a message in `poll` only when it can return it from
//! that same `poll`: it takes one only if one is in the ring and the receive lock is free
//! at once (`Link::try_recv`, `queue::Inner::try_get`), reads a message begun to its end,
//! and never drops one on a deadline. Between polls it holds nothing but its place in the
//! reactor, so dropping it at any point loses no message.
//!
//! **Polling.** Each `poll` looks first; only when nothing can be taken does it arm its
//! registration on the pollable descriptor (a pipe end's `AsFd`, a queue's
//! `as_pollable_fd`), which turns readable when something arrives (`ready.rs`). A look
//! that finds the ring busy (another holder is taking a message) arms a 1 ms timer
//! instead.

use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::reactor::Registration;
use super::{Connection, Receiver};
use crate::error::Result;
use crate::queue::Queue;

/// What one look at a ring found.
#[derive(Debug)]
pub(crate) enum Look<T> {
    /// A message, taken.
    Took(T),
    /// Nothing waits.
    Nothing,
    /// Something waits but another holder is taking it: look again shortly.
    Busy,
}

/// The future of [`Connection::recv_async`] and [`Receiver::recv_async`].
#[must_use = "futures do nothing unless awaited or polled"]
#[derive(Debug)]
pub struct RecvFuture<'a, T> {
    conn: &'a mut Connection<T>,
    reg: Registration,
}

impl<T: Serialize + DeserializeOwned> Future for RecvFuture<'_, T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        let busy = match this.conn.look() {
            Ok(Look::Took(v)) => return Poll::Ready(Ok(v)),
            Err(e) => return Poll::Ready(Err(e)),
            Ok(Look::Nothing) => false,
            Ok(Look::Busy) => true,
        };
        match this.reg.arm(this.conn.as_fd(), cx.waker(), busy) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Receives one value, as a future: [`recv`](Connection::recv) for async code, with no
    /// runtime required (tokio, async-std, smol or a hand-written `block_on` all do).
    ///
    /// Cancel-safe: dropping the future before it completes loses no message (it takes a
    /// message only when it can return it at once). The end's descriptor is counted as
    /// polled from the first `poll` on (as by its `AsFd`, whose docs say what that costs);
    /// the future is woken by a helper thread (one per process, started on first use) that
    /// waits on it. A message larger than the ring that is still streaming when the
    /// future looks is read to its end in that `poll`, as `recv` would.
    ///
    /// It takes `&mut self` so that the future is `Send` (a `Connection` is `Send`, not
    /// `Sync`): it can be awaited in a spawned task.
    ///
    /// ```
    /// # fn main() -> mproc::Result<()> {
    /// let (mut a, b) = mproc::pipe::<String>()?;
    /// b.send(&"hi".to_string())?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// assert_eq!(rt.block_on(a.recv_async())?, "hi");
    /// # Ok(()) }
    /// ```
    pub fn recv_async(&mut self) -> RecvFuture<'_, T> {
        RecvFuture {
            conn: self,
            reg: Registration::default(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> Receiver<T> {
    /// Receives one value, as a future (see [`Connection::recv_async`]).
    pub fn recv_async(&mut self) -> RecvFuture<'_, T> {
        self.conn.recv_async()
    }
}

/// The future of [`Queue::get_async`](crate::Queue::get_async) and
/// [`JoinableQueue::get_async`](crate::JoinableQueue::get_async).
#[must_use = "futures do nothing unless awaited or polled"]
pub struct GetFuture<'a, T> {
    queue: &'a Queue<T>,
    reg: Registration,
}

impl<T> std::fmt::Debug for GetFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetFuture").field("reg", &self.reg).finish()
    }
}

impl<'a, T> GetFuture<'a, T> {
    pub(crate) fn new(queue: &'a Queue<T>) -> Self {
        GetFuture {
            queue,
            reg: Registration::default(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> Future for GetFuture<'_, T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        let busy = match this.queue.look() {
            Ok(Look::Took(v)) => return Poll::Ready(Ok(v)),
            Err(e) => return Poll::Ready(Err(e)),
            Ok(Look::Nothing) => false,
            Ok(Look::Busy) => true,
        };
        match this.reg.arm(this.queue.as_pollable_fd(), cx.waker(), busy) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
