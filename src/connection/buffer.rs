//! Read-ahead readers for mproc's private protocol sockets.
//!
//! One [`ReadBuf`] holds what has been read from a socket but not yet consumed: bytes, and
//! descriptors in arrival order (each frame's ride on its header, so by the time a header
//! has been read its descriptors have arrived). [`Reader`] blocks, [`Incoming`] never does;
//! both read ahead (a burst of small frames costs one `recvmsg`), which is right only where
//! one process reads the socket for its whole life — a pool worker's task socket, the
//! pool's and a parent's result sockets. A user's `Connection` uses the exact reader in
//! `recv.rs` instead.
//!
//! The buffer never grows by what a header claims: to complete a frame it grows to at most
//! twice the bytes already buffered (at least [`READ_AHEAD`]), so its size stays within
//! `max(READ_AHEAD, 2 × bytes that really arrived)` whatever a peer announces.

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::framing::{self, Format, FrameHeader, died_mid_message, fd_mismatch, map_recv_error};
use crate::error::{Error, Result};
use crate::sys::fd;

/// Bytes asked of the kernel at once: one `recvmsg` usually brings a whole small frame,
/// header and payload together.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

/// Bytes read from a socket and not yet consumed, with the descriptors that came with them.
#[derive(Debug, Default)]
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
}

impl ReadBuf {
    /// The buffered, unconsumed bytes.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops the first `n` buffered bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The allocated size (for the bound checked by the property tests).
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// Makes free room after the buffered bytes, toward holding `want` bytes in all, but
    /// never growing past twice what is buffered (or [`READ_AHEAD`]).
    fn make_room(&mut self, want: usize) {
        let have = self.end - self.start;
        // Never below `have + 1`: `have < READ_AHEAD` gives READ_AHEAD, else `2 × have`.
        let cap = want
            .max(have + READ_AHEAD)
            .min(have.saturating_mul(2).max(READ_AHEAD));
        if self.start + cap > self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = have;
            }
            if cap > self.buf.len() {
                self.buf.reserve_exact(cap - self.buf.len());
                self.buf.resize(cap, 0);
            }
        }
    }

    /// One `recvmsg` into the free room (`want`: the bytes a frame needs in all). Returns
    /// `Ok(None)` when a non-blocking read finds nothing, `Ok(Some(0))` at end of stream.
    fn fill(&mut self, sock: BorrowedFd<'_>, want: usize, block: bool) -> Result<Option<usize>> {
        self.make_room(want);
        let mut fds = Vec::new();
        let room = &mut self.buf[self.end..];
        let got = if block {
            fd::recv_with_fds(sock, room, &mut fds).map(Some)
        } else {
            fd::try_recv_with_fds(sock, room, &mut fds)
        };
        self.fds.extend(fds);
        let got = got.map_err(map_recv_error)?;
        if let Some(n) = got {
            self.end += n;
        }
        Ok(got)
    }

    /// Parses the header at the front, checking that its descriptors have arrived.
    fn header(&mut self, format: Format, max_len: usize) -> Result<Option<(FrameHeader, usize)>> {
        let parsed = FrameHeader::parse(format, self.pending(), max_len);
        let parsed = match parsed {
            Err(e) => {
                self.fds.clear();
                return Err(e);
            }
            Ok(p) => p,
        };
        if let Some((h, _)) = parsed {
            if h.nfds > self.fds.len() {
                let arrived = self.fds.len();
                self.fds.clear();
                return Err(fd_mismatch(h.nfds, arrived));
            }
        }
        Ok(parsed)
    }

    /// Takes the descriptors of the frame at the front.
    fn take_fds(&mut self, n: usize) -> impl Iterator<Item = OwnedFd> + '_ {
        self.fds.drain(..n)
    }

    /// Test access: appends bytes as if they had been read.
    #[cfg(test)]
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let want = self.end - self.start + bytes.len();
        let mut rest = bytes;
        while !rest.is_empty() {
            self.make_room(want);
            let n = (self.buf.len() - self.end).min(rest.len());
            self.buf[self.end..self.end + n].copy_from_slice(&rest[..n]);
            self.end += n;
            rest = &rest[n..];
        }
    }
}

/// A blocking frame reader that reads ahead: small frames cost one `recvmsg` instead of
/// two. Payloads larger than what is buffered are read straight into the caller's buffer.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    rb: ReadBuf,
}

impl Reader {
    /// Whether bytes of a frame are waiting here (so a poll must say readable).
    pub(crate) fn has_buffered(&self) -> bool {
        !self.rb.pending().is_empty()
    }

    /// Reads one frame: its payload replaces `out`'s contents, its descriptors are
    /// appended to `out_fds`.
    pub(crate) fn read_frame(
        &mut self,
        sock: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        out_fds: &mut Vec<OwnedFd>,
    ) -> Result<()> {
        let (h, hlen) = loop {
            if let Some(found) = self.rb.header(Format::Mproc, framing::MAX_FRAME_LEN)? {
                break found;
            }
            if self.rb.fill(sock, framing::MAX_HEADER_LEN, true)? == Some(0) {
                return Err(if self.rb.pending().is_empty() {
                    Error::Closed
                } else {
                    died_mid_message()
                });
            }
        };
        self.rb.consume(hlen);
        out_fds.extend(self.rb.take_fds(h.nfds));
        out.clear();
        let buffered = self.rb.pending().len().min(h.len);
        out.extend_from_slice(&self.rb.pending()[..buffered]);
        self.rb.consume(buffered);
        if buffered < h.len
            && !fd::recv_exact_into(sock, out, h.len - buffered).map_err(map_recv_error)?
        {
            return Err(died_mid_message());
        }
        Ok(())
    }
}

/// Frames arriving on a non-blocking socket, assembled as bytes come.
///
/// It reads ahead like [`Reader`], and never blocks: `Pending` means "nothing more for
/// now, poll again". A header claiming more than `framing::MAX_PROTOCOL_FRAME_LEN` is an
/// error at once.
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    rb: ReadBuf,
    eof: bool,
}

/// What [`Incoming::poll_frame`] found.
#[derive(Debug)]
pub(crate) enum Arrival {
    /// A whole frame: payload and descriptors.
    Frame(Vec<u8>, Vec<OwnedFd>),
    /// Nothing more right now.
    Pending,
    /// The peer closed the stream cleanly between frames.
    Closed,
}

/// A whole frame (payload, descriptors), or the bytes the frame at the front needs in all.
type Parsed = std::result::Result<(Vec<u8>, Vec<OwnedFd>), usize>;

impl Incoming {
    /// A whole frame at the front of the buffer, if there is one; else how many bytes the
    /// frame at the front needs in all.
    fn parse(&mut self) -> Result<Parsed> {
        let Some((h, hlen)) = self
            .rb
            .header(Format::Mproc, framing::MAX_PROTOCOL_FRAME_LEN)?
        else {
            return Ok(Err(framing::MAX_HEADER_LEN));
        };
        let total = hlen + h.len;
        if self.rb.pending().len() < total {
            return Ok(Err(total));
        }
        let payload = self.rb.pending()[hlen..total].to_vec();
        self.rb.consume(total);
        Ok(Ok((payload, self.rb.take_fds(h.nfds).collect())))
    }

    /// Reads what is available and returns the next whole frame, if one is complete.
    pub(crate) fn poll_frame(&mut self, sock: BorrowedFd<'_>) -> Result<Arrival> {
        loop {
            let want = match self.parse()? {
                Ok((payload, fds)) => return Ok(Arrival::Frame(payload, fds)),
                Err(want) => want,
            };
            if self.eof {
                return if self.rb.pending().is_empty() {
                    Ok(Arrival::Closed)
                } else {
                    Err(died_mid_message())
                };
            }
            match self.rb.fill(sock, want, false)? {
                None => return Ok(Arrival::Pending),
                Some(0) => self.eof = true,
                Some(_) => {}
            }
        }
    }

    /// Test access: the frame parser over bytes pushed by hand.
    #[cfg(test)]
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Option<(Vec<u8>, usize)>> {
        self.rb.push(bytes);
        Ok(self.parse()?.ok().map(|(p, f)| (p, f.len())))
    }

    /// Test access: the bytes allocated for buffering.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.rb.allocated()
    }
}
