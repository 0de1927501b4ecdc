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
