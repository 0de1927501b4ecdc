//! Frames on a Unix stream socket.
//!
//! A frame is a header, then the payload. mproc's header ([`Format::Mproc`]) is 16 bytes —
//! magic `MPRF`, the number of descriptors attached (u32 LE), the payload length (u64 LE).
//! The descriptors ride on the header's first byte (SCM_RIGHTS), so they arrive with the
//! header and cannot be split from their frame. [`FrameHeader`] is the one place that
//! encodes and parses headers; a connection carries its [`Format`] (a `Copy` tag), so a
//! second wire format is a new variant here, not a second reader.
//!
//! Every header is hostile until parsed: a wrong magic, more descriptors than one
//! `SCM_RIGHTS` message can carry, or a length above [`MAX_FRAME_LEN`] is a corrupt stream
//! (`Error::Codec`). No reader allocates by what a header claims: buffers grow in steps as
//! bytes actually arrive (`buffer.rs`, `sys::fd::recv_exact_into`). End of stream before a
//! header is `Error::Closed`; end of stream inside a frame is an I/O error saying the peer
//! died mid-message.
//!
//! The readers: [`read_frame`] and the connection reader (`recv.rs`) take exactly one frame
//! from the socket and nothing more, so an end shared by several processes (or handed on)
//! delivers every message once; `buffer.rs` has the read-ahead readers for mproc's private
//! protocol sockets (a pool worker's, a child's result socket), where one process is the
//! only reader for the socket's whole life.

use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::error::{Error, Result};
use crate::sys::fd;

pub(crate) use super::buffer::{Arrival, Incoming, Reader};

const MAGIC: [u8; 4] = *b"MPRF";
/// Bytes in an mproc frame header.
pub(crate) const HEADER_LEN: usize = 16;
/// The largest header of any [`Format`].
pub(crate) const MAX_HEADER_LEN: usize = 16;

/// The largest payload a frame may carry: 1 TiB − 1 byte, more than any machine mproc runs
/// on can hold. Sending more is `Error::ValueError`; a header that claims more is a corrupt
/// stream (`Error::Codec`).
pub(crate) const MAX_FRAME_LEN: usize = (1 << 40) - 1;

/// The largest frame mproc's own protocol sockets accept (a pool worker's reply, a child's
/// result): 4 GiB − 1 byte. Those readers ([`Incoming`]) assemble a frame in memory before
/// handing it on and must not wait for a peer that announced more than any honest reply
/// carries: a forged length (2^32, 2^40, ...) is refused at once, and the peer is dropped.
pub(crate) const MAX_PROTOCOL_FRAME_LEN: usize = u32::MAX as usize;

/// A wire format: how a frame header is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub(crate) enum Format {
    /// mproc's own: 16-byte header with a descriptor count (see the module docs).
    #[default]
    Mproc,
    /// CPython's `multiprocessing.connection` framing, for connections made by `Listener`
    /// and `connect` (`wire.rs`).
    Python(super::wire::PyWire),
}

/// A parsed frame header: how many descriptors ride on the frame and its payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Descriptors attached to the frame (at most `sys::fd::MAX_FDS_PER_MESSAGE`).
    pub(crate) nfds: usize,
    /// Payload bytes after the header (at most [`MAX_FRAME_LEN`]).
    pub(crate) len: usize,
}

impl FrameHeader {
    /// The header of an outgoing frame; `Err(ValueError)` if the frame is too large.
    pub(crate) fn new(nfds: usize, len: usize) -> Result<FrameHeader> {
        if len > MAX_FRAME_LEN {
            return Err(Error::ValueError(format!(
                "message of {len} bytes is larger than the limit of {MAX_FRAME_LEN} bytes"
            )));
        }
        if nfds > fd::MAX_FDS_PER_MESSAGE {
            return Err(Error::TooManyHandles {
                count: nfds,
                max: fd::MAX_FDS_PER_MESSAGE,
            });
        }
        Ok(FrameHeader { nfds, len })
    }

    /// The header's bytes in `format`: the buffer and how many of its bytes are the header.
    pub(crate) fn encode(self, format: Format) -> ([u8; MAX_HEADER_LEN], usize) {
        let mut h = [0u8; MAX_HEADER_LEN];
        match format {
            Format::Mproc => {
                h[0..4].copy_from_slice(&MAGIC);
                h[4..8].copy_from_slice(&(self.nfds as u32).to_le_bytes());
                h[8..16].copy_from_slice(&(self.len as u64).to_le_bytes());
                (h, HEADER_LEN)
            }
            Format::Python(_) => {
                let n = super::wire::encode_header(self, &mut h);
                (h, n)
            }
        }
    }

    /// Parses the header at the front of `bytes`: `Ok(None)` if more bytes are needed,
    /// `Ok(Some((header, header_len)))`, or `Err(Codec)` for a header that cannot be
    /// honest, or that claims more than `max_len` payload bytes. Looks at no more than
    /// [`MAX_HEADER_LEN`] bytes and allocates nothing.
    pub(crate) fn parse(
        format: Format,
        bytes: &[u8],
        max_len: usize,
    ) -> Result<Option<(FrameHeader, usize)>> {
        match format {
            Format::Mproc => {
                let Some(h) = bytes.get(..HEADER_LEN) else {
                    // A wrong magic is known from the first bytes: say so at once.
                    let n = bytes.len().min(4);
                    if bytes[..n] != MAGIC[..n] {
                        return Err(bad_magic());
                    }
                    return Ok(None);
                };
                if h[0..4] != MAGIC {
                    return Err(bad_magic());
                }
                let nfds = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
                let len =
                    u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
                if nfds > fd::MAX_FDS_PER_MESSAGE {
                    return Err(Error::Codec(format!(
                        "corrupt frame: header announces {nfds} descriptors (at most {})",
                        fd::MAX_FDS_PER_MESSAGE
                    )));
                }
                let len = match usize::try_from(len) {
                    Ok(l) if l <= max_len.min(MAX_FRAME_LEN) => l,
                    _ => {
                        return Err(Error::Codec(format!(
                            "corrupt frame: header claims {len} bytes, more than the limit of \
                             {}",
                            max_len.min(MAX_FRAME_LEN)
                        )));
                    }
                };
                Ok(Some((FrameHeader { nfds, len }, HEADER_LEN)))
            }
            Format::Python(_) => super::wire::parse_header(bytes, max_len),
        }
    }
}

fn bad_magic() -> Error {
    Error::Codec("corrupt frame: bad magic in header".into())
}

/// A frame whose header announces `nfds` descriptors when `arrived` came with it.
pub(crate) fn fd_mismatch(nfds: usize, arrived: usize) -> Error {
    Error::Codec(format!(
        "corrupt frame: header announces {nfds} descriptors, {arrived} arrived"
    ))
}

/// Writes one frame carrying `payload` and `fds`.
pub(crate) fn write_frame(
    sock: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<()> {
    write_frame_as(sock, Format::Mproc, payload, fds)
}

/// [`write_frame`] in a given wire format.
pub(crate) fn write_frame_as(
    sock: BorrowedFd<'_>,
    format: Format,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<()> {
    format.check_handles(fds.len())?;
    let (header, hlen) = FrameHeader::new(fds.len(), payload.len())?.encode(format);
    let header = &header[..hlen];
    let sent = fd::send_with_fds(sock, &[IoSlice::new(header), IoSlice::new(payload)], fds)
        .map_err(map_send_error)?;
    if sent < hlen {
        fd::send_all(sock, &header[sent..]).map_err(map_send_error)?;
        fd::send_all(sock, payload).map_err(map_send_error)?;
    } else {
        fd::send_all(sock, &payload[sent - hlen..]).map_err(map_send_error)?;
    }
    Ok(())
}

pub(crate) fn map_send_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::Closed,
        _ => Error::Io(e),
    }
}

/// Reads exactly one frame, blocking: its payload replaces `buf`'s contents, its
/// descriptors are appended to `fds`. Nothing past the frame is taken from the socket.
pub(crate) fn read_frame(
    sock: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
) -> Result<()> {
    super::recv::read_exact_frame(sock, Format::Mproc, buf, fds)
}

pub(crate) fn map_recv_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::ConnectionReset => Error::Closed,
        _ => Error::Io(e),
    }
}

pub(crate) fn died_mid_message() -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "peer closed the connection in the middle of a message",
    ))
}

/// One frame on its way out of a non-blocking socket.
#[derive(Debug)]
pub(crate) struct Outgoing {
    header: [u8; MAX_HEADER_LEN],
    hlen: usize,
    payload: std::sync::Arc<Vec<u8>>,
    fds: Vec<crate::codec::HandleFd>,
    sent: usize,
}

impl Outgoing {
    /// A frame of `payload` with `fds` (which are sent, then closed here).
    /// A frame too large to send fails in [`advance`](Outgoing::advance), before any byte
    /// of it goes out.
    pub(crate) fn new(payload: std::sync::Arc<Vec<u8>>, fds: Vec<crate::codec::HandleFd>) -> Self {
        let header = FrameHeader {
            nfds: fds.len(),
            len: payload.len(),
        };
        let (header, hlen) = header.encode(Format::Mproc);
        Outgoing {
            header,
            hlen,
            payload,
            fds,
            sent: 0,
        }
    }

    /// Sends as much as the socket takes now. Returns true when the whole frame is out.
    pub(crate) fn advance(&mut self, sock: BorrowedFd<'_>) -> Result<bool> {
        if self.sent == 0 {
            FrameHeader::new(self.fds.len(), self.payload.len())?;
        }
        let hlen = self.hlen;
        let total = hlen + self.payload.len();
        while self.sent < total {
            let bufs: [IoSlice<'_>; 2] = if self.sent < hlen {
                [
                    IoSlice::new(&self.header[self.sent..hlen]),
                    IoSlice::new(&self.payload),
                ]
            } else {
                [
                    IoSlice::new(&self.payload[self.sent - hlen..]),
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

/// Writes one frame, giving up at `deadline`. Returns `Ok(true)` when sent, `Ok(false)`
/// when the deadline came first: with nothing sent if `partial` stays false, else with a
/// part of the frame already in the stream (which the caller must treat as broken).
pub(crate) fn write_frame_until(
    sock: BorrowedFd<'_>,
    format: Format,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
    deadline: std::time::Instant,
    partial: &mut bool,
) -> Result<bool> {
    format.check_handles(fds.len())?;
    let (header, hlen) = FrameHeader::new(fds.len(), payload.len())?.encode(format);
    let total = hlen + payload.len();
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
        let bufs: [IoSlice<'_>; 2] = if sent < hlen {
            [IoSlice::new(&header[sent..hlen]), IoSlice::new(payload)]
        } else {
            [IoSlice::new(&payload[sent - hlen..]), IoSlice::new(&[])]
        };
        let with = if sent == 0 { fds } else { &[] };
        sent += fd::try_send_with_fds(sock, &bufs, with).map_err(map_send_error)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::super::buffer::{Incoming, READ_AHEAD};
    use super::*;
    use proptest::prelude::*;

    fn header(nfds: u32, len: u64) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&nfds.to_le_bytes());
        h.extend_from_slice(&len.to_le_bytes());
        h
    }

    #[test]
    fn headers_round_trip_and_forged_lengths_are_refused() {
        let h = FrameHeader::new(3, 1234).unwrap();
        let (bytes, n) = h.encode(Format::Mproc);
        assert_eq!(
            FrameHeader::parse(Format::Mproc, &bytes[..n], MAX_FRAME_LEN).unwrap(),
            Some((h, HEADER_LEN))
        );
        assert_eq!(
            FrameHeader::parse(Format::Mproc, &bytes[..7], MAX_FRAME_LEN).unwrap(),
            None
        );
        for len in [1u64 << 40, 1 << 63, u64::MAX] {
            let err = FrameHeader::parse(Format::Mproc, &header(0, len), MAX_FRAME_LEN);
            assert!(matches!(err, Err(Error::Codec(_))), "{len}: {err:?}");
        }
        let err = FrameHeader::parse(Format::Mproc, &header(0, 1 << 32), MAX_PROTOCOL_FRAME_LEN)
            .unwrap_err();
        assert!(err.to_string().contains("more than the limit"), "{err}");
        let err = FrameHeader::parse(Format::Mproc, &header(254, 0), MAX_FRAME_LEN).unwrap_err();
        assert!(err.to_string().contains("descriptors"), "{err}");
        assert!(FrameHeader::parse(Format::Mproc, b"XY", MAX_FRAME_LEN).is_err());
        assert!(matches!(
            FrameHeader::new(0, MAX_FRAME_LEN + 1),
            Err(Error::ValueError(_))
        ));
        assert!(matches!(
            FrameHeader::new(254, 0),
            Err(Error::TooManyHandles { count: 254, .. })
        ));
    }

    // issue 12, defect 1: a forged length is refused before anything is allocated for it.
    #[test]
    fn incoming_refuses_a_forged_length_without_allocating_it() {
        for len in [1u64 << 40, 1 << 32] {
            let mut inc = Incoming::default();
            assert!(inc.feed(&header(0, len)).is_err(), "{len}");
            assert!(inc.allocated() <= READ_AHEAD, "{}", inc.allocated());
        }
        // An honest large frame grows with what arrives, not with what it claims.
        let mut inc = Incoming::default();
        assert!(inc.feed(&header(0, 1 << 31)).unwrap().is_none());
        assert!(inc.feed(&[7; 1000]).unwrap().is_none());
        assert!(inc.allocated() <= READ_AHEAD, "{}", inc.allocated());
    }

    proptest! {
        // Arbitrary bytes: an error or frames, never a panic, never a buffer larger than
        // max(READ_AHEAD, 2 × the bytes fed).
        #[test]
        fn the_frame_parser_survives_arbitrary_bytes(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
        ) {
            let _ = FrameHeader::parse(Format::Mproc, &chunks.concat(), MAX_FRAME_LEN);
            let mut inc = Incoming::default();
            let mut fed = 0;
            for c in &chunks {
                fed += c.len();
                match inc.feed(c) {
                    Err(_) => break,
                    Ok(_) => prop_assert!(inc.allocated() <= READ_AHEAD.max(2 * fed)),
                }
            }
        }

        // Valid headers with arbitrary claims, then arbitrary bodies: the same bounds, and
        // a frame whose bytes have all come is delivered whole.
        #[test]
        fn claimed_lengths_never_drive_allocation(
            len in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..5000),
        ) {
            let mut inc = Incoming::default();
            let mut bytes = header(0, len);
            bytes.extend_from_slice(&body);
            match inc.feed(&bytes) {
                Err(_) => prop_assert!(len > MAX_PROTOCOL_FRAME_LEN as u64),
                Ok(Some((payload, 0))) => prop_assert_eq!(payload.len() as u64, len),
                Ok(other) => prop_assert!(other.is_none() && len > body.len() as u64),
            }
            prop_assert!(inc.allocated() <= READ_AHEAD.max(2 * bytes.len()));
        }
    }
}
