//! A worker's links as the pool holds them: a control socket and a shared-memory pipe.
//!
//! **What goes where.** The pipe (`connection/shm.rs`: one ring each way, its doorbell and
//! descriptor records) carries every task and answer that fits a ring whole ([`RING_MAX`]
//! bytes: published by one store, never streamed), and the worker's RETIRING and DROPPED.
//! A larger task or answer goes on the control socket, announced in its place in the
//! ring by a marker (`gate::ON_SOCKET` for a task, `worker::ON_SOCKET` for an answer):
//! the reader takes the marker, then the frame from the socket, so order is kept across
//! the two. The socket also carries READY / INIT_FAILED, LIMIT_MEMORY from the worker's
//! signal handler, and the end of stream that says the worker is gone.
//!
//! **Nothing the worker's memory holds can stall the pool.** The pool reads a ring under
//! its state lock, so it never waits there: it takes an item only if one is whole now
//! (`try_recv` with the item deadline "now"). An honest worker only ever publishes whole
//! items, so the ring holding anything the pool cannot take at once — a streamed piece,
//! a consumer lock held, a corrupt word — was written by a task running in the worker,
//! and the worker is refused at once ([`RingRead::Refuse`]). A frame on the socket is
//! read without blocking, and one begun that gets no byte for [`FRAME_STALL`] refuses
//! the worker too (`slot.rs`). The pool sends into a ring without waiting for room: what
//! does not fit now stays queued and is tried again by the driver.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use crate::codec::HandleFd;
use crate::connection::Connection;
use crate::connection::framing::{Incoming, Outgoing};
use crate::connection::future::Look;
use crate::error::{Error, Result};

/// The largest frame sent through a ring: well within a quarter of a pipe's ring
/// (`connection/shm.rs`'s 512 KiB), past which an item would stream in pieces.
pub(crate) const RING_MAX: usize = (128 << 10) - 64;

/// A frame waiting to go out, in order.
#[derive(Debug)]
pub(crate) enum Out {
    /// Into the ring, whole, with its descriptors (as records); `plain`: a task for an
    /// idle worker (or the marker of one), which drains its ring at once.
    Ring(Arc<Vec<u8>>, Vec<HandleFd>, bool),
    /// Onto the socket, in as many writes as it takes.
    Socket(Outgoing),
}

/// What one look at the answer ring found.
pub(crate) enum RingRead {
    /// An item, whole.
    Took(Vec<u8>, Vec<OwnedFd>),
    /// Nothing waits.
    Nothing,
    /// The worker's end is closed: it is gone or going.
    Closed,
    /// Something only a task writing on the ring leaves there: refuse the worker, why.
    Refuse(String),
}

/// The parent's end of a worker's links.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) sock: Arc<HandleFd>,
    pub(crate) incoming: Incoming,
    /// The pipe end of its rings.
    pub(crate) rings: Connection<()>,
    /// A copy of the rings' pollable descriptor (readable iff an answer waits or the
    /// worker's end is closed), for the driver to poll outside the pool's lock.
    pub(crate) bell: Arc<HandleFd>,
    /// Frames not yet sent (its ring was full, or the socket took part of one).
    pub(crate) outgoing: VecDeque<Out>,
    /// An answer announced in the ring whose frame comes on the socket: its task.
    pub(crate) body_due: Option<u64>,
    /// Since when a task for this (idle) worker has found no room in its ring.
    stuck: Option<Instant>,
    /// Its streams ended (or are corrupt): nothing more to read.
    pub(crate) eof: bool,
    /// Its rings' end of stream was read: they are no longer watched.
    pub(crate) rings_closed: bool,
    /// Sending failed: nothing more can be sent.
    pub(crate) broken: bool,
    /// Why its stream was refused (a corrupt frame): what its task fails with.
    pub(crate) corrupt: Option<String>,
    /// A frame begun on the socket and not yet whole: the bytes of it read so far, and
    /// since when no more came (see `slot::FRAME_STALL`).
    pub(crate) partial: Option<(usize, Instant)>,
}

impl Link {
    pub(crate) fn new(sock: HandleFd, rings: Connection<()>, bell: HandleFd) -> Link {
        Link {
            sock: Arc::new(sock),
            incoming: Incoming::default(),
            rings,
            bell: Arc::new(bell),
            outgoing: VecDeque::new(),
            body_due: None,
            stuck: None,
            eof: false,
            rings_closed: false,
            broken: false,
            corrupt: None,
            partial: None,
        }
    }

    /// Whether the ring may be read now: open, and no answer announced there is still
    /// to come on the socket (the ring's next answers wait behind it).
    pub(crate) fn ring_open(&self) -> bool {
        !self.eof && !self.rings_closed && self.body_due.is_none()
    }

    /// Whether an item waits in its answer ring, to be read now.
    pub(crate) fn ring_pending(&self) -> bool {
        self.ring_open() && self.rings.link().is_some_and(|l| l.pending())
    }

    /// Takes the next item of the answer ring if one is whole now; never waits.
    pub(crate) fn read_ring(&self) -> RingRead {
        let Some(l) = self.rings.link() else {
            return RingRead::Closed;
        };
        let (mut bytes, mut fds) = (Vec::new(), Vec::new());
        let now = Some(Instant::now());
        match l.try_recv(self.rings.stream_fd(), &mut bytes, &mut fds, now) {
            Ok(Look::Took(())) => RingRead::Took(bytes, fds),
            Ok(Look::Nothing) => RingRead::Nothing,
            Ok(Look::Busy) => RingRead::Refuse(
                "its answer ring held what no honest worker leaves there (a piece of a \
                 streamed item, or its lock taken)"
                    .into(),
            ),
            Err(Error::Closed) => RingRead::Closed,
            Err(e) => RingRead::Refuse(format!("its answer ring: {e}")),
        }
    }

    /// Queues `frame` (a task; `plain`: for an idle worker): whole into the ring if it
    /// fits one, else a marker there and the frame on the socket.
    pub(crate) fn post(
        &mut self,
        frame: Vec<u8>,
        marker: Vec<u8>,
        fds: Vec<HandleFd>,
        plain: bool,
    ) {
        if frame.len() <= RING_MAX {
            self.outgoing
                .push_back(Out::Ring(Arc::new(frame), fds, plain));
        } else {
            self.outgoing
                .push_back(Out::Ring(Arc::new(marker), Vec::new(), plain));
            self.outgoing
                .push_back(Out::Socket(Outgoing::new(Arc::new(frame), fds)));
        }
    }

    /// Whether a task for this idle worker has found no room in its ring for `limit`. An
    /// idle worker takes from its ring at once (only tasks sent ahead to a busy one wait
    /// there), so its ring's producer side was written over, or the worker is stuck
    /// in it: a task that never goes would wait for ever.
    pub(crate) fn send_stalled(&self, limit: std::time::Duration) -> bool {
        self.stuck.is_some_and(|since| since.elapsed() >= limit)
    }

    /// Pushes the queued frames out without waiting; `Ok(true)` if some is left to send,
    /// `Err` if nothing more can be sent.
    pub(crate) fn flush(&mut self) -> Result<bool> {
        let Some(l) = self.rings.link() else {
            return Err(Error::Closed);
        };
        let rsock = self.rings.stream_fd();
        let torn = std::cell::Cell::new(false);
        while let Some(o) = self.outgoing.front_mut() {
            match o {
                Out::Ring(payload, fds, plain) => {
                    let fds = crate::sys::fd::borrowed(fds);
                    // Whole items only: one that does not fit now leaves nothing behind.
                    match l.send(rsock, payload, &fds, Some(Instant::now()), &torn) {
                        Ok(()) => self.stuck = None,
                        Err(Error::Timeout) if !torn.get() => {
                            if *plain && self.stuck.is_none() {
                                self.stuck = Some(Instant::now());
                            }
                            return Ok(true);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Out::Socket(o) => {
                    if !o.advance(self.sock.as_fd())? {
                        return Ok(true);
                    }
                }
            }
            self.outgoing.pop_front();
        }
        Ok(false)
    }
}
