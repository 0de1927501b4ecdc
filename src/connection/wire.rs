//! CPython's framing ([`Format::Python`]), spoken by the connections that `Listener` and
//! `connect` make, and the codec such a connection uses for typed messages.
//!
//! Python's `multiprocessing.connection` writes each message as a 4-byte big-endian signed
//! length, then the bytes; a message longer than `0x7fff_ffff` bytes is `-1`, an 8-byte
//! big-endian length, then the bytes. mproc writes and reads exactly that, through the
//! connection's ordinary reader (`recv.rs`: one frame at a time, never past it, so every
//! message is delivered once whoever holds the end).
//!
//! One extension, for what Python cannot do anyway: a message carrying handles (Unix
//! sockets only) has the header `-2`, the descriptor count (u32) and the length (u64), all
//! big-endian, 16 bytes, with the descriptors riding on its first byte. Python never writes
//! it, and receives it only if a program sends it handles, which it could not use.
//!
//! The handshake (`auth.rs`) reads its frames here too ([`read_short_frame`]): at most 256
//! bytes, refused from the header alone if longer, under a deadline.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::framing::{Format, FrameHeader, MAX_FRAME_LEN, map_recv_error};
use crate::error::{Error, Result};
use crate::sys;

/// The longest message CPython writes with the short header.
const SHORT_MAX: usize = 0x7fff_ffff;
/// The header of a message carrying handles (mproc's extension).
const WITH_HANDLES: i32 = -2;

/// How typed messages (`send`/`recv`) are encoded on a connection made by `Listener` or
/// `connect`. `send_bytes`/`recv_bytes` are raw bytes whatever the codec.
///
/// Chosen at [`Listener::bind_with`](crate::Listener::bind_with) or
/// [`connect_with`](crate::connect_with) time; it travels with the connection when it is
/// sent to another process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Codec {
    /// mproc's own codec (postcard), the one pipes use; handles inside messages travel over
    /// Unix sockets. Use it between mproc programs.
    #[default]
    Postcard,
    /// Python's pickle (cargo feature `pickle`, through serde-pickle), so that a Python
    /// peer's `conn.send({'a': [1, 2]})` arrives as a Rust value and a Rust struct arrives
    /// in Python as a dict. Handles cannot travel this way. Messages are checked before
    /// they are decoded: only plain data, bounded in size and depth, is accepted.
    #[cfg(feature = "pickle")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pickle")))]
    Pickle,
}

/// What a connection on CPython's wire is: over TCP (no handles) or not, and its codec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PyWire {
    /// A TCP socket: descriptors cannot travel.
    pub(crate) tcp: bool,
    /// How typed messages are encoded.
    pub(crate) codec: Codec,
}

/// The bytes of `h` as CPython writes them (or mproc's extension when it carries handles).
pub(crate) fn encode_header(h: FrameHeader, out: &mut [u8; 16]) -> usize {
    if h.nfds > 0 {
        out[..4].copy_from_slice(&WITH_HANDLES.to_be_bytes());
        out[4..8].copy_from_slice(&(h.nfds as u32).to_be_bytes());
        out[8..16].copy_from_slice(&(h.len as u64).to_be_bytes());
        16
    } else if h.len <= SHORT_MAX {
        out[..4].copy_from_slice(&(h.len as u32).to_be_bytes());
        4
    } else {
        out[..4].copy_from_slice(&(-1i32).to_be_bytes());
        out[4..12].copy_from_slice(&(h.len as u64).to_be_bytes());
        12
    }
}

/// How long the header starting with `first4` is.
fn header_len(first4: [u8; 4]) -> Result<usize> {
    match i32::from_be_bytes(first4) {
        n if n >= 0 => Ok(4),
        -1 => Ok(12),
        WITH_HANDLES => Ok(16),
        n => Err(Error::Codec(format!(
            "corrupt frame: negative length {n} in header"
        ))),
    }
}

/// Parses a header at the front of `bytes`: `Ok(None)` if more bytes are needed. A length
/// above `max_len` (or [`MAX_FRAME_LEN`]) is refused before anything is read for it.
pub(crate) fn parse_header(bytes: &[u8], max_len: usize) -> Result<Option<(FrameHeader, usize)>> {
    let Some(first) = bytes.get(..4) else {
        return Ok(None);
    };
    let first: [u8; 4] = first.try_into().expect("4 bytes");
    let size = header_len(first)?;
    let Some(h) = bytes.get(..size) else {
        return Ok(None);
    };
    let (nfds, len) = match size {
        4 => (0, u64::from(u32::from_be_bytes(first))),
        12 => (0, u64::from_be_bytes(h[4..12].try_into().expect("8 bytes"))),
        _ => (
            u32::from_be_bytes(h[4..8].try_into().expect("4 bytes")) as usize,
            u64::from_be_bytes(h[8..16].try_into().expect("8 bytes")),
        ),
    };
    if nfds > sys::fd::MAX_FDS_PER_MESSAGE {
        return Err(Error::Codec(format!(
            "corrupt frame: header announces {nfds} descriptors"
        )));
    }
    let max = max_len.min(MAX_FRAME_LEN);
    match usize::try_from(len) {
        Ok(len) if len <= max => Ok(Some((FrameHeader { nfds, len }, size))),
        _ => Err(Error::Codec(format!(
            "corrupt frame: header claims {len} bytes, more than the limit of {max}"
        ))),
    }
}

impl Format {
    /// Errs if `nfds` descriptors cannot travel in this format (over TCP).
    pub(crate) fn check_handles(self, nfds: usize) -> Result<()> {
        match self {
            Format::Python(PyWire { tcp: true, .. }) if nfds > 0 => Err(Error::ValueError(
                "a message carrying a handle cannot travel over TCP: descriptors pass only \
                 between processes on one machine (use a Unix address)"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Encodes a typed message as `format`'s codec does: descriptors of handles into `fds`.
pub(crate) fn encode_into<T: Serialize>(
    format: Format,
    item: &T,
    buf: &mut Vec<u8>,
    fds: &mut Vec<crate::codec::HandleFd>,
) -> Result<()> {
    match format {
        #[cfg(feature = "pickle")]
        Format::Python(PyWire {
            codec: Codec::Pickle,
            ..
        }) => super::pickle::encode_into(item, buf),
        _ => crate::codec::encode_into(item, buf, fds),
    }
}

/// Decodes a typed message as `format`'s codec does.
pub(crate) fn decode<T: DeserializeOwned>(
    format: Format,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<T> {
    match format {
        #[cfg(feature = "pickle")]
        Format::Python(PyWire {
            codec: Codec::Pickle,
            ..
        }) => super::pickle::decode(bytes),
        _ => crate::codec::decode(bytes, fds),
    }
}

/// Reads one frame of at most `limit` bytes by `deadline`, for the handshake: the header
/// with reads of exactly its size, then the body. A longer frame, a frame with
/// descriptors, end of stream or the deadline are errors (the connection is then dropped).
pub(crate) fn read_short_frame(
    sock: BorrowedFd<'_>,
    limit: usize,
    deadline: Instant,
) -> Result<Vec<u8>> {
    let mut header = [0u8; 16];
    let mut have = 0;
    let mut want = 4;
    let mut fds = Vec::new();
    let len = loop {
        read_some(sock, &mut header[have..want], &mut fds, deadline, have == 0)
            .map(|n| have += n)?;
        if have < want {
            continue;
        }
        match parse_header(&header[..have], limit)? {
            Some((h, _)) if h.nfds == 0 && fds.is_empty() => break h.len,
            Some(_) => return Err(Error::Codec("descriptors during a handshake".into())),
            None => want = header_len(header[..4].try_into().expect("4 bytes"))?,
        }
    };
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        got += read_some(sock, &mut body[got..], &mut fds, deadline, false)?;
    }
    if !fds.is_empty() {
        return Err(Error::Codec("descriptors during a handshake".into()));
    }
    Ok(body)
}

/// One read of at most `buf.len()` bytes once the socket is readable, by `deadline`.
/// End of stream is `Closed` if `clean` (between frames), else a mid-message error.
fn read_some(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    deadline: Instant,
    clean: bool,
) -> Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if !sys::fd::poll_readable(sock, Some(left))? {
            return Err(Error::Timeout);
        }
        match sys::fd::try_recv_with_fds(sock, buf, fds).map_err(map_recv_error)? {
            Some(0) if clean => return Err(Error::Closed),
            Some(0) => {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection in the middle of a message",
                )));
            }
            Some(n) => return Ok(n),
            None => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(nfds: usize, len: usize) -> Vec<u8> {
        let mut h = [0u8; 16];
        let n = encode_header(FrameHeader { nfds, len }, &mut h);
        h[..n].to_vec()
    }

    #[test]
    fn headers_match_cpython() {
        // struct.pack("!i", 5), and for a large message pack("!i", -1) + pack("!Q", n).
        assert_eq!(enc(0, 5), [0, 0, 0, 5]);
        assert_eq!(
            enc(0, 0x8000_0000),
            [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]
        );
        assert_eq!(
            parse_header(&enc(0, 0x8000_0000), MAX_FRAME_LEN).unwrap(),
            Some((
                FrameHeader {
                    nfds: 0,
                    len: 0x8000_0000
                },
                12
            ))
        );
        assert_eq!(
            parse_header(&[0xff, 0xff, 0xff, 0xff, 0], MAX_FRAME_LEN).unwrap(),
            None
        );
        assert!(parse_header(&[0xff, 0xff, 0xff, 0xfd], MAX_FRAME_LEN).is_err());
        assert!(parse_header(&[0xff; 12], MAX_FRAME_LEN).is_err());
        assert!(parse_header(&enc(0, 300), 256).is_err());
    }

    proptest! {
        #[test]
        fn any_header_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            match parse_header(&bytes, MAX_FRAME_LEN) {
                Ok(None) => prop_assert!(bytes.len() < 16),
                Ok(Some((h, size))) => {
                    prop_assert!(size <= bytes.len());
                    prop_assert!(h.len <= MAX_FRAME_LEN);
                    let again = enc(h.nfds, h.len);
                    prop_assert_eq!(parse_header(&again, MAX_FRAME_LEN).unwrap(), Some((h, again.len())));
                }
                Err(e) => prop_assert!(matches!(e, Error::Codec(_))),
            }
        }

        #[test]
        fn header_round_trip(len in 0usize..(1 << 40), nfds in 0usize..4) {
            let h = enc(nfds, len);
            prop_assert_eq!(
                parse_header(&h, MAX_FRAME_LEN).unwrap(),
                Some((FrameHeader { nfds, len }, h.len()))
            );
        }

        #[test]
        fn garbage_handshake_frames_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            // Whatever a peer writes then closes: one short frame or an error, never a
            // panic, never a buffer beyond the limit.
            let (a, b) = sys::fd::socketpair().unwrap();
            sys::fd::send_all(std::os::fd::AsFd::as_fd(&a), &bytes).unwrap();
            drop(a);
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            if let Ok(m) = read_short_frame(std::os::fd::AsFd::as_fd(&b), 256, deadline) {
                prop_assert!(m.len() <= 256 && m.len() + 4 <= bytes.len());
            }
        }
    }
}
