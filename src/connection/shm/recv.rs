//! Receiving on a shared-memory pipe end: waiting, taking an item and its descriptors,
//! and the deadlines (the parent module's "Deadlines" and "Waking" say why).

use super::*;

impl Link {
    /// Receives one message: its payload replaces `out`'s contents, its descriptors are
    /// appended to `fds`. `Err(Timeout)` if none came whole by `deadline` (one begun is
    /// dropped whole: see the module docs); `Err(Closed)` at end of stream.
    pub(crate) fn recv(
        &self,
        sock: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        fds: &mut Vec<OwnedFd>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let rx = self.rx()?;
        loop {
            match self.wait(sock, deadline)? {
                Ready::Data => {}
                Ready::Eof => return Err(Error::Closed),
                Ready::TimedOut => return Err(Error::Timeout),
            }
            let attempt = Instant::now() + TAKE_SLICE;
            let begin = Some(deadline.map_or(attempt, |d| d.min(attempt)));
            match self.take(rx, begin, deadline, out, fds) {
                Ok(()) => return Ok(()),
                // Another holder of this end took the item first (the next look finds the
                // ring empty and sleeps on the socket), or holds the consumer lock, perhaps
                // for long (it is receiving an item larger than the ring, or it is stopped):
                // sleep until it lets go, not past the deadline. Or our own deadline
                // passed in the middle of an item (dropped whole): the same `Timeout`.
                Err(Error::Empty) => {
                    if !rx.await_consumer(deadline) {
                        return Err(Error::Timeout);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes a message only if one is there now and this end's receive lock is free
    /// (`Took`, with it in `out`/`fds`); `Busy` if one is there but could not be taken at
    /// once. Untimed (`item_deadline` `None`), a message begun is read to its end (as an
    /// untimed `recv` reads it), never dropped: what an async receive does in `poll`, so
    /// that a dropped future loses nothing. Else one not whole by `item_deadline` is
    /// dropped whole, and that is `Busy` too (the pool, which only ever receives items
    /// sent whole, passes "now": a begun one is a peer's forgery, `pool/link.rs`).
    pub(crate) fn try_recv(
        &self,
        sock: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        fds: &mut Vec<OwnedFd>,
        item_deadline: Option<Instant>,
    ) -> Result<Look<()>> {
        let rx = self.rx()?;
        self.watch();
        // End of stream first: whatever was sent before it is in the ring by then.
        let gone = peer_gone(sock);
        if rx.pending() {
            return match self.take(rx, Some(Instant::now()), item_deadline, out, fds) {
                Ok(()) => Ok(Look::Took(())),
                Err(Error::Empty) => Ok(Look::Busy),
                Err(e) => Err(e),
            };
        }
        if gone {
            return Err(Error::Closed);
        }
        // Nothing here: a flag left set (by a receiver killed before it settled, or an
        // item another holder took) would wake the caller for nothing again.
        self.settle();
        Ok(Look::Nothing)
    }

    /// One attempt at the ring: `begin` bounds the wait for an item to begin,
    /// `item_deadline` the wait for the rest of one begun.
    fn take(
        &self,
        rx: &Ring,
        begin: Option<Instant>,
        item_deadline: Option<Instant>,
        out: &mut Vec<u8>,
        fds: &mut Vec<OwnedFd>,
    ) -> Result<()> {
        let rec = SeqPacket(self.records.as_fd());
        // A large message is gathered into `out`'s own allocation (`recv_bytes_into`'s
        // buffer, the end's reused one for `recv`), which is left there, emptied, on error.
        let spare = Cell::new(std::mem::take(out));
        // Both callbacks fill these (only one runs per item).
        let fds = RefCell::new(fds);
        let got = rx.recv_pipe(
            begin,
            item_deadline,
            |bytes| {
                let (m, prefix) = get_varint(bytes).ok_or_else(|| corrupt("no length"))?;
                if prefix as u64 + m != bytes.len() as u64 {
                    return Err(corrupt("a length that disagrees with the item"));
                }
                let body = &bytes[prefix..];
                let (len, fd_seq) = trailer(body)?;
                let mut out = spare.take();
                out.clear();
                out.extend_from_slice(&body[..len]);
                spare.set(out);
                take_fds(&rec, fd_seq, &mut fds.borrow_mut())
            },
            Some(|m: u64, mut body: Vec<u8>| {
                let checked = if m == body.len() as u64 {
                    trailer(&body)
                } else {
                    Err(corrupt("a length that disagrees with the item"))
                };
                if let Ok((len, _)) = checked {
                    body.truncate(len);
                }
                // Kept either way: emptied below on error.
                spare.set(body);
                take_fds(&rec, checked?.1, &mut fds.borrow_mut())
            }),
            &spare,
        );
        *out = spare.into_inner();
        if !matches!(got, Ok(Ok(()))) {
            out.clear();
        }
        // The head may have moved (an item taken, or one dropped): keep a poller's flag
        // in step (one load when nobody polls).
        if let Some(flag) = &self.rx_flag {
            ready::changed(rx.sleepers(), &EventFd(flag.as_fd()), || rx.pending());
        }
        got?
    }

    /// Waits until a frame is in the ring, the stream ended, or `deadline` passed (see the
    /// module docs for the order of looks).
    pub(crate) fn wait(&self, sock: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<Ready> {
        let rx = self.rx()?;
        doorbell::wait(rx.sleepers(), &Stream(sock), || rx.pending(), deadline)
    }

    /// Whether a frame is in the ring this end receives from.
    pub(crate) fn pending(&self) -> bool {
        self.rx.as_ref().is_some_and(Ring::pending)
    }
}
