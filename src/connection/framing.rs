//! Frames on a Unix stream socket.
//!
//! A frame is a 16-byte header — magic `MPRF`, the number of descriptors attached, the
//! payload length (u64, so frames may exceed 4 GiB) — then the payload. The descriptors ride
//! on the header's first byte (SCM_RIGHTS), so they arrive with the header and cannot be
//! split from their frame. A wrong magic is a corrupt stream (`Error::Codec`); end of stream
//! before a header is `Error::Closed`; end of stream inside a frame is an I/O error saying
//! the peer died mid-message.

use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::sys::fd;

const MAGIC: u32 = u32::from_le_bytes(*b"MPRF");
/// Bytes in a frame header.
pub(crate) const HEADER_LEN: usize = 16;

/// Writes one frame carrying `payload` and `fds`.
pub(crate) fn write_frame(
    sock: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<()> {
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&(fds.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let sent = fd::send_with_fds(sock, &[IoSlice::new(&header), IoSlice::new(payload)], fds)
        .map_err(map_send_error)?;
    if sent < HEADER_LEN {
        fd::send_all(sock, &header[sent..]).map_err(map_send_error)?;
        fd::send_all(sock, payload).map_err(map_send_error)?;
    } else {
        fd::send_all(sock, &payload[sent - HEADER_LEN..]).map_err(map_send_error)?;
    }
    Ok(())
}

fn map_send_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::Closed,
        _ => Error::Io(e),
    }
}

/// Reads one frame: its payload replaces `buf`'s contents, its descriptors are appended to
/// `fds`.
pub(crate) fn read_frame(
    sock: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
) -> Result<()> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = fd::recv_with_fds(sock, &mut header[got..], fds).map_err(map_recv_error)?;
        if n == 0 {
            if got == 0 {
                return Err(Error::Closed);
            }
            return Err(died_mid_message());
        }
        got += n;
    }
    if header[0..4] != MAGIC.to_le_bytes() {
        fds.clear();
        return Err(Error::Codec("corrupt frame: bad magic in header".into()));
    }
    let nfds = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let len = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if nfds != fds.len() {
        fds.clear();
        return Err(Error::Codec(format!(
            "corrupt frame: header announces {nfds} descriptors, {} arrived",
            fds.len()
        )));
    }
    let len = usize::try_from(len).map_err(|_| {
        Error::Codec(format!(
            "corrupt frame: length {len} does not fit in memory"
        ))
    })?;
    buf.clear();
    if !fd::recv_exact_into(sock, buf, len).map_err(map_recv_error)? {
        return Err(died_mid_message());
    }
    Ok(())
}

fn map_recv_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::ConnectionReset => Error::Closed,
        _ => Error::Io(e),
    }
}

fn died_mid_message() -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "peer closed the connection in the middle of a message",
    ))
}

/// Builds the header of a frame with `nfds` descriptors and `len` payload bytes.
pub(crate) fn header(nfds: usize, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(nfds as u32).to_le_bytes());
    h[8..16].copy_from_slice(&(len as u64).to_le_bytes());
    h
}

/// One frame on its way out of a non-blocking socket.
#[derive(Debug)]
pub(crate) struct Outgoing {
    header: [u8; HEADER_LEN],
    payload: std::sync::Arc<Vec<u8>>,
    fds: Vec<crate::codec::HandleFd>,
    sent: usize,
}

impl Outgoing {
    /// A frame of `payload` with `fds` (which are sent, then closed here).
    pub(crate) fn new(payload: std::sync::Arc<Vec<u8>>, fds: Vec<crate::codec::HandleFd>) -> Self {
        Outgoing {
            header: header(fds.len(), payload.len()),
            payload,
            fds,
            sent: 0,
        }
    }

    /// Sends as much as the socket takes now. Returns true when the whole frame is out.
    pub(crate) fn advance(&mut self, sock: BorrowedFd<'_>) -> Result<bool> {
        let total = HEADER_LEN + self.payload.len();
        while self.sent < total {
            let bufs: [IoSlice<'_>; 2] = if self.sent < HEADER_LEN {
                [
                    IoSlice::new(&self.header[self.sent..]),
                    IoSlice::new(&self.payload),
                ]
            } else {
                [
                    IoSlice::new(&self.payload[self.sent - HEADER_LEN..]),
                    IoSlice::new(&[]),
                ]
            };
            let fds = if self.sent == 0 {
                fd::borrowed(&self.fds)
            } else {
                Vec::new()
            };
            let n = fd::try_send_with_fds(sock, &bufs, &fds).map_err(map_send_error)?;
            if n == 0 {
                return Ok(false);
            }
            if self.sent == 0 {
                self.fds.clear();
            }
            self.sent += n;
        }
        Ok(true)
    }
}

/// Frames arriving on a non-blocking socket, assembled as bytes come.
///
/// It reads ahead like [`Reader`] (a burst of small frames costs one `recvmsg`), and never
/// blocks: `Pending` means "nothing more for now, poll again".
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: std::collections::VecDeque<OwnedFd>,
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

impl Incoming {
    /// A whole frame at the front of the buffer, if there is one.
    fn parse(&mut self) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let have = self.end - self.start;
        if have < HEADER_LEN {
            return Ok(None);
        }
        let header = &self.buf[self.start..self.start + HEADER_LEN];
        if header[0..4] != MAGIC.to_le_bytes() {
            return Err(Error::Codec("corrupt frame: bad magic in header".into()));
        }
        let nfds = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let len = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let len = usize::try_from(len)
            .map_err(|_| Error::Codec("corrupt frame: length does not fit".into()))?;
        if have - HEADER_LEN < len {
            // Make room for the whole frame, so the next reads can complete it.
            let need = HEADER_LEN.saturating_add(len);
            if self.buf.len() - self.start < need {
                self.compact();
                if self.buf.len() < need {
                    self.buf.resize(need, 0);
                }
            }
            return Ok(None);
        }
        if nfds > self.fds.len() {
            return Err(Error::Codec(format!(
                "corrupt frame: header announces {nfds} descriptors, {} arrived",
                self.fds.len()
            )));
        }
        let body = self.start + HEADER_LEN;
        let payload = self.buf[body..body + len].to_vec();
        self.start = body + len;
        Ok(Some((payload, self.fds.drain(..nfds).collect())))
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Reads what is available and returns the next whole frame, if one is complete.
    pub(crate) fn poll_frame(&mut self, sock: BorrowedFd<'_>) -> Result<Arrival> {
        loop {
            if let Some((payload, fds)) = self.parse()? {
                return Ok(Arrival::Frame(payload, fds));
            }
            if self.eof {
                return if self.start == self.end {
                    Ok(Arrival::Closed)
                } else {
                    Err(died_mid_message())
                };
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            if self.buf.len() - self.end < READ_AHEAD / 2 {
                self.compact();
                if self.buf.len() - self.end < READ_AHEAD / 2 {
                    self.buf.resize(self.end + READ_AHEAD, 0);
                }
            }
            let mut fds = Vec::new();
            let got = fd::try_recv_with_fds(sock, &mut self.buf[self.end..], &mut fds);
            self.fds.extend(fds);
            match got.map_err(map_recv_error)? {
                None => return Ok(Arrival::Pending),
                Some(0) => self.eof = true,
                Some(n) => self.end += n,
            }
        }
    }
}

/// Bytes a [`Reader`] asks the kernel for at once: one `recvmsg` usually brings a whole
/// small frame, header and payload together.
const READ_AHEAD: usize = 64 * 1024;

/// A frame reader that reads ahead: small frames cost one `recvmsg` instead of two.
///
/// Bytes read past the current frame stay here for the next call, and descriptors wait in
/// arrival order (each frame's ride on its header, so by the time a header has been read
/// its descriptors have arrived). Payloads larger than what is buffered are read straight
/// into the caller's buffer, without a copy. The buffer is allocated (and zeroed) once.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: std::collections::VecDeque<OwnedFd>,
    /// A timed-out read stopped inside a frame: the stream can no longer be read.
    torn: bool,
}

impl Reader {
    /// Whether bytes of a frame are waiting here (so a poll must say readable).
    pub(crate) fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Reads more from `sock` into the buffer; returns how many bytes came (0 at EOF).
    fn fill(&mut self, sock: BorrowedFd<'_>) -> Result<usize> {
        if self.buf.is_empty() {
            self.buf = vec![0; READ_AHEAD];
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let mut fds = Vec::new();
        let got = fd::recv_with_fds(sock, &mut self.buf[self.end..], &mut fds);
        self.fds.extend(fds);
        let n = got.map_err(map_recv_error)?;
        self.end += n;
        Ok(n)
    }

    /// [`fill`](Reader::fill), but `Err(Error::Timeout)` if nothing arrives by `deadline`.
    fn fill_until(&mut self, sock: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<usize> {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if !fd::poll_readable(sock, Some(left))? {
                return Err(Error::Timeout);
            }
        }
        self.fill(sock)
    }

    /// Reads one frame: its payload replaces `out`'s contents, its descriptors are
    /// appended to `out_fds`.
    pub(crate) fn read_frame(
        &mut self,
        sock: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        out_fds: &mut Vec<OwnedFd>,
    ) -> Result<()> {
        self.read_frame_until(sock, out, out_fds, None)
    }

    /// [`read_frame`](Reader::read_frame), giving up at `deadline` with `Error::Timeout`.
    /// A frame that fits the read-ahead buffer is consumed only once it has wholly
    /// arrived, so a timeout loses nothing and the next call picks it up. A larger frame
    /// that stalls half-way leaves the stream mid-message: the reader refuses further
    /// reads rather than misread the rest.
    pub(crate) fn read_frame_until(
        &mut self,
        sock: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        out_fds: &mut Vec<OwnedFd>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        if self.torn {
            return Err(Error::TornMessage { sending: false });
        }
        while self.end - self.start < HEADER_LEN {
            if self.fill_until(sock, deadline)? == 0 {
                return Err(if self.has_buffered() {
                    died_mid_message()
                } else {
                    Error::Closed
                });
            }
        }
        let header = &self.buf[self.start..self.start + HEADER_LEN];
        if header[0..4] != MAGIC.to_le_bytes() {
            self.fds.clear();
            self.start = 0;
            self.end = 0;
            return Err(Error::Codec("corrupt frame: bad magic in header".into()));
        }
        let nfds = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let len = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let len = usize::try_from(len).map_err(|_| {
            Error::Codec(format!(
                "corrupt frame: length {len} does not fit in memory"
            ))
        })?;
        if deadline.is_some() && HEADER_LEN + len <= READ_AHEAD {
            while self.end - self.start < HEADER_LEN + len {
                if self.fill_until(sock, deadline)? == 0 {
                    return Err(died_mid_message());
                }
            }
        }
        self.start += HEADER_LEN;
        if nfds > self.fds.len() {
            let arrived = self.fds.len();
            self.fds.clear();
            return Err(Error::Codec(format!(
                "corrupt frame: header announces {nfds} descriptors, {arrived} arrived"
            )));
        }
        out_fds.extend(self.fds.drain(..nfds));
        out.clear();
        let buffered = (self.end - self.start).min(len);
        out.extend_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        if buffered < len && deadline.is_some() {
            // A large frame against a deadline: the rest passes through the buffer.
            while out.len() < len {
                match self.fill_until(sock, deadline) {
                    Ok(0) => return Err(died_mid_message()),
                    Ok(_) => {
                        let take = (self.end - self.start).min(len - out.len());
                        out.extend_from_slice(&self.buf[self.start..self.start + take]);
                        self.start += take;
                    }
                    Err(e) => {
                        self.torn = true;
                        return Err(e);
                    }
                }
            }
        } else if buffered < len
            && !fd::recv_exact_into(sock, out, len - buffered).map_err(map_recv_error)?
        {
            return Err(died_mid_message());
        }
        Ok(())
    }
}

/// Writes one frame, giving up at `deadline`. Returns `Ok(true)` when sent, `Ok(false)`
/// when the deadline came first: with nothing sent if `partial` stays false, else with a
/// part of the frame already in the stream (which the caller must treat as broken).
pub(crate) fn write_frame_until(
    sock: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
    deadline: std::time::Instant,
    partial: &mut bool,
) -> Result<bool> {
    let header = header(fds.len(), payload.len());
    let total = HEADER_LEN + payload.len();
    let mut sent = 0;
    while sent < total {
        let now = std::time::Instant::now();
        if now >= deadline {
            *partial = sent > 0;
            return Ok(false);
        }
        let ready = fd::poll_rw(&[(sock, true)], Some(deadline - now))?;
        if !ready[0].1 {
            continue;
        }
        let bufs: [IoSlice<'_>; 2] = if sent < HEADER_LEN {
            [IoSlice::new(&header[sent..]), IoSlice::new(payload)]
        } else {
            [
                IoSlice::new(&payload[sent - HEADER_LEN..]),
                IoSlice::new(&[]),
            ]
        };
        let with = if sent == 0 { fds } else { &[] };
        sent += fd::try_send_with_fds(sock, &bufs, with).map_err(map_send_error)?;
    }
    Ok(true)
}
