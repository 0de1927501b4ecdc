//! Read-ahead readers for mproc's private protocol sockets.
//!
//! One [`ReadBuf`] holds what has been read from a socket but not yet consumed: bytes, and
//! the descriptors that came with them. [`Reader`] blocks, [`Incoming`] never does; both
//! read ahead (a burst of small frames costs one `recvmsg`), which is right only where one
//! process reads the socket for its whole life — a pool worker's task socket, the pool's
//! and a parent's result sockets. A user's `Connection` uses the exact reader in `recv.rs`
//! instead.
//!
//! The buffer never grows by what a header claims: to complete a frame it grows to at most
//! twice the bytes already buffered (at least [`READ_AHEAD`]), so its size stays within
//! `max(READ_AHEAD, 2 × bytes that really arrived)` whatever a peer announces.
//!
//! **Descriptors belong to the frame that declares them, and to no other.** A sender
//! attaches a frame's descriptors to the frame's first byte (`SCM_RIGHTS` on the header),
//! and the kernel ends a `recvmsg` right after the stretch of bytes they rode on, so one
//! read brings at most one frame's descriptors, and they belong to the *last* header that
//! starts in that read. Each read's descriptors are kept as a [`Batch`] with the stream
//! offsets of the bytes that came in the same read. A header at offset `h` declaring
//! `n > 0` descriptors takes the oldest batch only if that batch's bytes include `h`, no
//! later header starts in them (its frame reaches their end), and it holds exactly `n`. A
//! batch that a frame declaring none would have to own, or whose bytes have all gone by
//! without a header claiming it, was never declared: its descriptors are closed and the
//! stream refused (`Error::Codec`). (The kernel does not say where in a read descriptors
//! rode, so a peer that attaches a frame's own descriptors to its payload instead of its
//! header may see them accepted or refused — but never given to another frame.)
//! An honest stream never has more than [`MAX_BATCHES`] batches waiting (the front frame's
//! and one read ahead), so a third is refused before it is stored.

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::framing::{self, Format, FrameHeader, died_mid_message, fd_mismatch, map_recv_error};
use crate::error::{Error, Result};
use crate::sys::fd;

/// Bytes asked of the kernel at once: one `recvmsg` usually brings a whole small frame,
/// header and payload together.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

/// Descriptor batches a reader keeps waiting for their frame: the front frame's, and one
/// more frame's read ahead with the front frame's last bytes. More is a forged stream.
pub(crate) const MAX_BATCHES: usize = 2;

/// The descriptors one `recvmsg` brought, and the stream offsets `[start, end)` of the
/// bytes that came with them (the frame they belong to starts in that range).
#[derive(Debug)]
struct Batch {
    start: u64,
    end: u64,
    fds: Vec<OwnedFd>,
}

/// Bytes read from a socket and not yet consumed, with the descriptors that came with them.
#[derive(Debug, Default)]
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The stream offset of `buf[start]`: bytes consumed so far.
    offset: u64,
    batches: VecDeque<Batch>,
}

/// Descriptors that arrived with no frame declaring them.
fn undeclared(n: usize) -> Error {
    Error::Codec(format!(
        "corrupt frame: {n} descriptors arrived that no frame header declares (closed)"
    ))
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
        self.offset += n as u64;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The stream offset just past the buffered bytes.
    fn stream_end(&self) -> u64 {
        self.offset + (self.end - self.start) as u64
    }

    /// The allocated size (for the bound checked by the property tests).
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// Descriptors held for frames not yet read (for the tests).
    #[cfg(test)]
    pub(crate) fn held_fds(&self) -> usize {
        self.batches.iter().map(|b| b.fds.len()).sum()
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

    /// Keeps the descriptors one read brought with the bytes `[start, end)`; refuses them
    /// (closing them) if no honest stream could have that many batches waiting.
    fn keep(&mut self, start: u64, end: u64, fds: Vec<OwnedFd>) -> Result<()> {
        if fds.is_empty() {
            return Ok(());
        }
        if self.batches.len() >= MAX_BATCHES || end == start {
            let n = fds.len() + self.held();
            self.batches.clear();
            return Err(undeclared(n));
        }
        self.batches.push_back(Batch { start, end, fds });
        Ok(())
    }

    fn held(&self) -> usize {
        self.batches.iter().map(|b| b.fds.len()).sum()
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
        let start = self.stream_end();
        let n = match &got {
            Ok(Some(n)) => *n,
            _ => 0,
        };
        self.keep(start, start + n as u64, fds)?;
        let got = got.map_err(map_recv_error)?;
        self.end += n;
        Ok(got)
    }

    /// Parses the header at the front and checks that its descriptors, and only they, have
    /// come with it (see the module docs): `Ok(None)` if more bytes are needed. A corrupt
    /// header or a descriptor mismatch closes every descriptor held.
    fn header(&mut self, format: Format, max_len: usize) -> Result<Option<(FrameHeader, usize)>> {
        let parsed = FrameHeader::parse(format, self.pending(), max_len);
        let (h, hlen) = match parsed {
            Err(e) => {
                self.batches.clear();
                return Err(e);
            }
            Ok(None) => return Ok(None),
            Ok(Some(p)) => p,
        };
        if let Err(e) = self.check_fds(h.nfds, hlen + h.len) {
            self.batches.clear();
            return Err(e);
        }
        Ok(Some((h, hlen)))
    }

    /// Whether the frame at the front (`nfds` declared, `total` bytes long) has its
    /// descriptors first in line, and no undeclared ones came before or with it.
    fn check_fds(&self, nfds: usize, total: usize) -> Result<()> {
        let at = self.offset;
        let none = || {
            if nfds == 0 {
                Ok(())
            } else {
                Err(fd_mismatch(nfds, 0))
            }
        };
        let Some(front) = self.batches.front() else {
            return none();
        };
        if front.end <= at {
            // Its bytes have all gone by, and no header claimed it.
            return Err(undeclared(front.fds.len()));
        }
        if front.start > at {
            // It rode on a later read: not this frame's.
            return none();
        }
        // It came in a read with this frame's header. The kernel ends a read after the
        // stretch descriptors rode on, so they belong to the last header in the read: this
        // one if its frame covers the rest of the read, else a later one.
        if at + (total as u64) < front.end {
            return none();
        }
        if nfds == 0 {
            return Err(undeclared(front.fds.len()));
        }
        if front.fds.len() != nfds {
            return Err(fd_mismatch(nfds, front.fds.len()));
        }
        Ok(())
    }

    /// After a frame's bytes are consumed: refuses it (closing every descriptor held) if a
    /// batch came wholly inside its bytes, which no header declared.
    fn check_passed(&mut self) -> Result<()> {
        match self.batches.front() {
            Some(b) if b.end <= self.offset => {
                let n = self.held();
                self.batches.clear();
                Err(undeclared(n))
            }
            _ => Ok(()),
        }
    }

    /// At the end of the stream: descriptors still held were never declared.
    fn check_end(&mut self) -> Result<()> {
        if self.batches.is_empty() {
            return Ok(());
        }
        let n = self.held();
        self.batches.clear();
        Err(undeclared(n))
    }

    /// Takes the descriptors of the frame at the front, once [`check_fds`](Self::check_fds)
    /// has passed for it.
    fn take_fds(&mut self, nfds: usize) -> Vec<OwnedFd> {
        if nfds == 0 {
            return Vec::new();
        }
        self.batches.pop_front().map(|b| b.fds).unwrap_or_default()
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

/// The step in which a large payload's buffer grows: as bytes arrive, never by a claim.
const GROW_STEP: usize = 64 << 20;

impl Reader {
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
                self.rb.check_end()?;
                return Err(if self.rb.pending().is_empty() {
                    Error::Closed
                } else {
                    died_mid_message()
                });
            }
        };
        out_fds.extend(self.rb.take_fds(h.nfds));
        self.rb.consume(hlen);
        out.clear();
        let buffered = self.rb.pending().len().min(h.len);
        out.extend_from_slice(&self.rb.pending()[..buffered]);
        self.rb.consume(buffered);
        if buffered < h.len {
            self.read_rest(sock, out, h.len - buffered)?;
        }
        self.rb.check_passed()
    }

    /// Reads the last `want` bytes of the current frame straight into `out`. No other
    /// frame starts in them, so descriptors arriving with them were never declared.
    fn read_rest(&mut self, sock: BorrowedFd<'_>, out: &mut Vec<u8>, want: usize) -> Result<()> {
        let target = out.len() + want;
        let mut fds = Vec::new();
        while out.len() < target {
            let at = out.len();
            let step = (target - at).min(GROW_STEP);
            out.resize(at + step, 0);
            let n = fd::recv_with_fds(sock, &mut out[at..], &mut fds);
            out.truncate(at + *n.as_ref().unwrap_or(&0));
            if !fds.is_empty() {
                let n = fds.len() + self.rb.held();
                self.rb.batches.clear();
                return Err(undeclared(n));
            }
            match n.map_err(map_recv_error)? {
                0 => return Err(died_mid_message()),
                n => self.rb.offset += n as u64,
            }
        }
        Ok(())
    }

    /// Descriptors held for frames not yet read (for the tests).
    #[cfg(test)]
    pub(crate) fn held_fds(&self) -> usize {
        self.rb.held_fds()
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
    /// frame at the front needs in all. The header's descriptors are checked as soon as the
    /// header is whole, and taken with the frame.
    fn parse(&mut self) -> Result<Parsed> {
        let Some((h, hlen)) = self
            .rb
            .header(Format::Mproc, framing::MAX_PROTOCOL_FRAME_LEN)?
        else {
            return Ok(Err(framing::MAX_HEADER_LEN));
        };
        let total = hlen + h.len;
        if self.rb.pending().len() < total {
            // Not whole yet: its descriptors stay queued, at the front, until it is.
            return Ok(Err(total));
        }
        let fds = self.rb.take_fds(h.nfds);
        let payload = self.rb.pending()[hlen..total].to_vec();
        self.rb.consume(total);
        self.rb.check_passed()?;
        Ok(Ok((payload, fds)))
    }

    /// How many bytes already read wait here (a frame's progress, for a reader that
    /// bounds how long a begun frame may stall).
    pub(crate) fn buffered(&self) -> usize {
        self.rb.pending().len()
    }

    /// Reads what is available and returns the next whole frame, if one is complete.
    pub(crate) fn poll_frame(&mut self, sock: BorrowedFd<'_>) -> Result<Arrival> {
        loop {
            let want = match self.parse()? {
                Ok((payload, fds)) => return Ok(Arrival::Frame(payload, fds)),
                Err(want) => want,
            };
            if self.eof {
                self.rb.check_end()?;
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

    /// Descriptors held for frames not yet read (for the tests).
    #[cfg(test)]
    pub(crate) fn held_fds(&self) -> usize {
        self.rb.held_fds()
    }
}

#[cfg(test)]
mod tests;
