//! CPython's framing, spoken by the connections that `Listener` and `connect` make.
//!
//! Python's `multiprocessing.connection` writes each message as a 4-byte big-endian signed
//! length, then the bytes; a message longer than `0x7fff_ffff` bytes is `-1`, an 8-byte
//! big-endian length, then the bytes. Either side writes whole frames, and reads one frame
//! per call.
//!
//! The reader never reads past the frame it is reading: the rest of the stream stays in the
//! socket, so an end handed to another process (or shared under a lock) delivers every
//! message exactly once. Descriptors (Unix sockets only; Python never sends any) ride on the
//! first byte of the header, so they are in hand once the header is read and belong to that
//! frame. A length read from the peer is never allocated up front: the buffer grows with
//! the bytes that actually arrive, so a peer announcing 2^60 bytes costs what it sends.
//!
//! A read with a deadline that runs out part-way keeps what it read here, and the next call
//! goes on from there: nothing is lost, nothing is read twice.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sys;

/// The longest message CPython writes with the short header.
const SHORT_MAX: usize = 0x7fff_ffff;
/// The longest header: `-1` then a u64.
pub(crate) const MAX_HEADER: usize = 12;
/// The first read of a body reserves at most this much; later reads double what has
/// arrived, so memory follows the bytes the peer really sent.
const FIRST_CHUNK: usize = 64 * 1024;

/// The header for a message of `len` bytes, as CPython writes it; returns its length.
pub(crate) fn encode_header(len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    if len <= SHORT_MAX {
        out[..4].copy_from_slice(&(len as u32).to_be_bytes());
        4
    } else {
        out[..4].copy_from_slice(&(-1i32).to_be_bytes());
        out[4..12].copy_from_slice(&(len as u64).to_be_bytes());
        12
    }
}

/// What the first bytes of a frame say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// The header is this many bytes long; fewer have arrived.
    NeedMore(usize),
    /// A whole header of `size` bytes, announcing a body of `len` bytes.
    Done {
        /// Bytes in the header (4 or 12).
        size: usize,
        /// Bytes in the body.
        len: usize,
    },
}

/// Parses the start of a frame. Errors on lengths CPython never writes (negative other than
/// `-1`) and on lengths that cannot be a message in this process (beyond `isize::MAX`).
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header> {
    let Some(short) = bytes.get(..4) else {
        return Ok(Header::NeedMore(4));
    };
    let short = i32::from_be_bytes(short.try_into().expect("4 bytes"));
    if short >= 0 {
        return Ok(Header::Done {
            size: 4,
            len: short as usize,
        });
    }
    if short != -1 {
        return Err(Error::Codec(format!(
            "corrupt frame: negative length {short} in header"
        )));
    }
    let Some(long) = bytes.get(4..12) else {
        return Ok(Header::NeedMore(12));
    };
    let long = u64::from_be_bytes(long.try_into().expect("8 bytes"));
    match usize::try_from(long) {
        Ok(len) if len <= isize::MAX as usize => Ok(Header::Done { size: 12, len }),
        _ => Err(Error::Codec(format!(
            "corrupt frame: length {long} cannot be a message"
        ))),
    }
}

/// Writes one frame: header and body in one `sendmsg` (so a small message is one TCP
/// segment), with `fds` attached to the header's first byte. `deadline`: give up then with
/// `Ok(false)`, setting `partial` if part of the frame had gone out.
pub(crate) fn write_frame(
    sock: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
    partial: &mut bool,
) -> Result<bool> {
    let mut header = [0u8; MAX_HEADER];
    let hlen = encode_header(payload.len(), &mut header);
    let header = &header[..hlen];
    let total = hlen + payload.len();
    let mut sent = 0;
    while sent < total {
        let bufs: [IoSlice<'_>; 2] = if sent < hlen {
            [IoSlice::new(&header[sent..]), IoSlice::new(payload)]
        } else {
            [IoSlice::new(&payload[sent - hlen..]), IoSlice::new(&[])]
        };
        let with = if sent == 0 { fds } else { &[] };
        let n = match deadline {
            None => sys::fd::send_with_fds(sock, &bufs, with),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    *partial = sent > 0;
                    return Ok(false);
                }
                let ready = sys::fd::poll_rw(&[(sock, true)], Some(deadline - now))?;
                if !ready[0].1 {
                    continue;
                }
                sys::fd::try_send_with_fds(sock, &bufs, with)
            }
        }
        .map_err(send_error)?;
        sent += n;
    }
    Ok(true)
}

fn send_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::Closed,
        _ => Error::Io(e),
    }
}

fn recv_error(e: io::Error) -> Error {
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

/// Where a reader is inside the current frame.
#[derive(Debug, Default)]
enum Phase {
    /// Between frames, or inside the header (`have` bytes of it read).
    #[default]
    Header,
    /// The header said `len`; `body` holds what has arrived of it.
    Body { len: usize },
}

/// Reads CPython frames from a stream socket, one at a time, never past the current one.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    phase: Phase,
    header: [u8; MAX_HEADER],
    have: usize,
    /// The body so far, kept only while a timed-out read waits to be resumed.
    body: Vec<u8>,
    /// Descriptors that came with this frame's header.
    fds: Vec<OwnedFd>,
}

impl Reader {
    /// Whether part of a frame has been read (so this end cannot travel to another process:
    /// those bytes are in this process's memory).
    pub(crate) fn mid_frame(&self) -> bool {
        self.have > 0
    }

    /// Reads one frame: its body replaces `out`'s contents, its descriptors are appended to
    /// `out_fds`. `limit`: a frame announcing more is refused before its body is read (the
    /// stream is then unusable). `deadline`: `Err(Timeout)` then, keeping the progress.
    pub(crate) fn read_frame(
        &mut self,
        sock: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        out_fds: &mut Vec<OwnedFd>,
        limit: Option<usize>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let len = loop {
            match self.phase {
                Phase::Body { len } => break len,
                Phase::Header => match parse_header(&self.header[..self.have])? {
                    Header::NeedMore(size) => self.read_header(sock, size, deadline)?,
                    Header::Done { len, .. } => {
                        if limit.is_some_and(|limit| len > limit) {
                            self.reset();
                            return Err(Error::Codec(format!(
                                "message of {len} bytes refused: a short message was expected"
                            )));
                        }
                        self.phase = Phase::Body { len };
                    }
                },
            }
        };
        out.clear();
        if !self.body.is_empty() {
            // Resuming a timed-out read: its bytes so far become the caller's.
            std::mem::swap(out, &mut self.body);
        }
        while out.len() < len {
            let missing = len - out.len();
            let step = missing.min(out.len().max(FIRST_CHUNK));
            let got = match deadline {
                None => sys::net::recv_append(sock, out, step, true),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if !sys::fd::poll_readable(sock, Some(left))? {
                        std::mem::swap(out, &mut self.body);
                        return Err(Error::Timeout);
                    }
                    sys::net::recv_append(sock, out, step, false)
                }
            };
            match got.map_err(recv_error) {
                Ok(Some(0)) => {
                    self.reset();
                    return Err(died_mid_message());
                }
                Ok(Some(_) | None) => {}
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            }
        }
        out_fds.append(&mut self.fds);
        self.reset();
        Ok(())
    }

    /// Reads header bytes up to `size` (or what comes in one call).
    fn read_header(
        &mut self,
        sock: BorrowedFd<'_>,
        size: usize,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let buf = &mut self.header[self.have..size];
        let n = match deadline {
            None => sys::fd::recv_with_fds(sock, buf, &mut self.fds),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if !sys::fd::poll_readable(sock, Some(left))? {
                    return Err(Error::Timeout);
                }
                match sys::fd::try_recv_with_fds(sock, buf, &mut self.fds) {
                    Ok(Some(n)) => Ok(n),
                    // Readable, then not (someone else read): poll again next time round.
                    Ok(None) => return Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
        .map_err(recv_error)?;
        if n == 0 {
            let clean = self.have == 0;
            self.reset();
            return Err(if clean {
                Error::Closed
            } else {
                died_mid_message()
            });
        }
        self.have += n;
        Ok(())
    }

    fn reset(&mut self) {
        self.phase = Phase::Header;
        self.have = 0;
        self.body = Vec::new();
        self.fds.clear();
    }
}

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
    /// in Python as a dict. Handles cannot travel this way.
    #[cfg(feature = "pickle")]
    Pickle,
}

/// A connection's life on CPython's wire: its reader, and what it may carry.
#[derive(Debug)]
pub(crate) struct Python {
    reader: RefCell<Reader>,
    /// A TCP socket: no descriptors can travel.
    tcp: bool,
    codec: Codec,
}

impl Python {
    pub(crate) fn new(tcp: bool, codec: Codec) -> Self {
        Python {
            reader: RefCell::new(Reader::default()),
            tcp,
            codec,
        }
    }

    /// What travels with the connection when it is sent to another process.
    pub(crate) fn describe(&self) -> Result<(bool, Codec)> {
        if self.reader.borrow().mid_frame() {
            return Err(Error::ValueError(
                "a connection in the middle of receiving a message cannot be sent; \
                 finish the receive first"
                    .into(),
            ));
        }
        Ok((self.tcp, self.codec))
    }

    /// Sends one frame; see [`write_frame`]. A deadline that cut a frame in two marks the
    /// connection `torn` (it can send no more).
    pub(crate) fn send_frame(
        &self,
        sock: BorrowedFd<'_>,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
        torn: &Cell<bool>,
    ) -> Result<()> {
        if !fds.is_empty() && self.tcp {
            return Err(Error::ValueError(
                "a message carrying a handle cannot travel over TCP: descriptors pass only \
                 between processes on one machine (use a Unix address)"
                    .into(),
            ));
        }
        let mut partial = false;
        if write_frame(sock, payload, fds, deadline, &mut partial)? {
            return Ok(());
        }
        torn.set(partial);
        Err(Error::Timeout)
    }

    /// Receives one frame's bytes into `out`, its descriptors into `fds`.
    pub(crate) fn recv_frame(
        &self,
        sock: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        fds: &mut Vec<OwnedFd>,
        limit: Option<usize>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        self.reader
            .borrow_mut()
            .read_frame(sock, out, fds, limit, deadline)
    }

    /// Encodes and sends one value, `buf` being the connection's encode buffer.
    pub(crate) fn send_value<T: Serialize>(
        &self,
        sock: BorrowedFd<'_>,
        item: &T,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
        torn: &Cell<bool>,
    ) -> Result<()> {
        buf.clear();
        match self.codec {
            Codec::Postcard => {
                let mut fds = Vec::new();
                crate::codec::encode_into(item, buf, &mut fds)?;
                self.send_frame(sock, buf, &sys::fd::borrowed(&fds), deadline, torn)
            }
            #[cfg(feature = "pickle")]
            Codec::Pickle => {
                super::pickle::encode_into(item, buf)?;
                self.send_frame(sock, buf, &[], deadline, torn)
            }
        }
    }

    /// Receives and decodes one value, `buf` being the connection's receive buffer.
    pub(crate) fn recv_value<T: DeserializeOwned>(
        &self,
        sock: BorrowedFd<'_>,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<T> {
        let mut fds = Vec::new();
        self.recv_frame(sock, buf, &mut fds, None, deadline)?;
        match self.codec {
            Codec::Postcard => crate::codec::decode(buf, fds),
            #[cfg(feature = "pickle")]
            Codec::Pickle => super::pickle::decode(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn headers_match_cpython() {
        // struct.pack("!i", 5) and, for a large message, pack("!i", -1) + pack("!Q", n).
        let mut h = [0u8; MAX_HEADER];
        assert_eq!(encode_header(5, &mut h), 4);
        assert_eq!(&h[..4], &[0, 0, 0, 5]);
        assert_eq!(encode_header(0x8000_0000, &mut h), 12);
        assert_eq!(&h, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]);
        assert_eq!(
            parse_header(&h).unwrap(),
            Header::Done {
                size: 12,
                len: 0x8000_0000
            }
        );
        assert!(parse_header(&[0xff, 0xff, 0xff, 0xfe]).is_err());
        assert!(parse_header(&[0xff; 12]).is_err());
    }

    proptest! {
        #[test]
        fn any_header_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            match parse_header(&bytes) {
                Ok(Header::NeedMore(n)) => prop_assert!(n > bytes.len() && n <= MAX_HEADER),
                Ok(Header::Done { size, len }) => {
                    prop_assert!(size <= bytes.len());
                    prop_assert!(len <= isize::MAX as usize);
                    let mut h = [0u8; MAX_HEADER];
                    // Lengths that fit the short form are written short, as CPython does.
                    let back = encode_header(len, &mut h);
                    if size == 4 { prop_assert_eq!(&h[..back], &bytes[..4]); }
                }
                Err(e) => prop_assert!(matches!(e, Error::Codec(_))),
            }
        }

        #[test]
        fn header_round_trip(len in 0usize..(1 << 40)) {
            let mut h = [0u8; MAX_HEADER];
            let n = encode_header(len, &mut h);
            prop_assert_eq!(parse_header(&h[..n]).unwrap(), Header::Done { size: n, len });
        }

        #[test]
        fn garbage_streams_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Whatever a peer writes then closes: frames, an error, or Closed; never a
            // panic, and never a buffer larger than what was written plus a first chunk.
            let (a, b) = sys::fd::socketpair().unwrap();
            sys::fd::send_all(std::os::fd::AsFd::as_fd(&a), &bytes).unwrap();
            drop(a);
            let mut r = Reader::default();
            let mut out = Vec::new();
            let mut fds = Vec::new();
            for _ in 0..bytes.len() + 1 {
                match r.read_frame(std::os::fd::AsFd::as_fd(&b), &mut out, &mut fds, None, None) {
                    Ok(()) => prop_assert!(out.len() <= bytes.len()),
                    Err(_) => break,
                }
                prop_assert!(out.capacity() <= bytes.len() + FIRST_CHUNK);
            }
        }
    }
}
