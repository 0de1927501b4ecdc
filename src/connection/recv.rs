//! The exactly-once reader: one frame off the socket, and not a byte more.
//!
//! A `Connection` end may be shared by several processes (each `recv` under a lock, as in
//! Python) or handed on to another process after some reads. Either way every message must
//! reach exactly one `recv`, in order. So this reader keeps no bytes of the stream in
//! process memory between calls: it *looks* at the header first (`MSG_PEEK`, which leaves
//! bytes and descriptors queued), and then takes exactly that frame — header, descriptors
//! and payload — out of the socket. Whatever follows stays in the socket, where any holder
//! of the end can read it. The cost is one extra `recvmsg` per message (the peek), which
//! doubles as the spin's probe (`spin.rs`).
//!
//! Timeouts: a frame of up to [`READ_AHEAD`] bytes is taken only once it has wholly
//! arrived (checked with `FIONREAD`), so a timeout leaves the stream untouched and the
//! next call (in this process or another) reads it. A larger frame cut off by the deadline
//! half-way leaves the stream mid-message: the reader refuses further reads (`torn`) rather
//! than misread the rest.

use std::io::IoSliceMut;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::buffer::READ_AHEAD;
use super::framing::{
    Format, FrameHeader, MAX_FRAME_LEN, MAX_HEADER_LEN, died_mid_message, fd_mismatch,
    map_recv_error,
};
use super::spin::{Spin, Waited};
use crate::error::{Error, Result};
use crate::sys;
use crate::sys::stream::Peek;

/// The step in which a large payload's buffer grows (as `sys::fd::recv_exact_into` does):
/// a reader holds at most this much more than has arrived, whatever a header claims.
const RECV_STEP: usize = 64 << 20;

/// Reads exactly one frame, blocking, with no spin (handshakes and protocol sockets).
pub(crate) fn read_exact_frame(
    sock: BorrowedFd<'_>,
    format: Format,
    out: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
) -> Result<()> {
    ExactReader::with_spin(Spin::off()).read(sock, format, out, fds, None)
}

/// The per-end state of the exactly-once reader: no stream bytes, only whether a timed-out
/// read broke the stream, and the spin's window.
#[derive(Debug, Default)]
pub(crate) struct ExactReader {
    torn: bool,
    spin: Spin,
}

impl ExactReader {
    /// A reader with the given spin.
    pub(crate) fn with_spin(spin: Spin) -> ExactReader {
        ExactReader { torn: false, spin }
    }

    /// Whether a timed-out read stopped inside a frame (the stream is unusable).
    pub(crate) fn is_torn(&self) -> bool {
        self.torn
    }

    /// Waits up to `timeout` (`None`: forever) for the socket to have something to read.
    pub(crate) fn poll(&self, sock: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool> {
        if timeout == Some(Duration::ZERO) {
            return Ok(sys::stream::peek(sock, &mut [0u8; 1])? != Peek::Empty);
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        if timeout.is_some() && deadline.is_none() {
            return self.spin.wait_readable(sock, None);
        }
        self.spin.wait_readable(sock, deadline)
    }

    /// Reads one frame: its payload replaces `out`'s contents, its descriptors are
    /// appended to `fds`. `Err(Timeout)` if it has not arrived by `deadline`.
    pub(crate) fn read(
        &mut self,
        sock: BorrowedFd<'_>,
        format: Format,
        out: &mut Vec<u8>,
        fds: &mut Vec<OwnedFd>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        if self.torn {
            return Err(Error::TornMessage { sending: false });
        }
        // 1. Look at the header, taking nothing.
        let mut hbuf = [0u8; MAX_HEADER_LEN];
        let mut hung_up = false;
        let mut backoff = FIRST_PAUSE;
        let mut looked = None;
        let (h, hlen) = loop {
            let seen = match looked.take() {
                Some(p) => p,
                None => sys::stream::peek(sock, &mut hbuf).map_err(map_recv_error)?,
            };
            match seen {
                Peek::Eof => return Err(Error::Closed),
                Peek::Empty => match self.spin.wait_peek(sock, deadline, &mut hbuf)? {
                    Waited::Peeked(p) => looked = Some(p),
                    Waited::Readable => {}
                    Waited::TimedOut => return Err(Error::Timeout),
                },
                Peek::Bytes(n) => match FrameHeader::parse(format, &hbuf[..n], MAX_FRAME_LEN)? {
                    Some(found) => break found,
                    // The writer is mid-header (or died there).
                    None => wait_for_more(sock, deadline, &mut hung_up, &mut backoff)?,
                },
            }
        };
        let total = hlen + h.len;
        // 2. Against a deadline, a frame that fits the socket's queue is taken whole or not
        //    at all.
        if deadline.is_some() && total <= READ_AHEAD {
            while sys::stream::queued(sock).map_err(map_recv_error)? < total as u64 {
                wait_for_more(sock, deadline, &mut hung_up, &mut backoff)?;
            }
        }
        // 3. Take exactly this frame: header and descriptors, and as much of the payload
        //    as fits the first step, in one `recvmsg`.
        out.clear();
        let first = h.len.min(READ_AHEAD);
        // Room for the whole payload up to one step (what `recv_exact_into` would reserve
        // next anyway), so a large message is not copied again when it grows.
        out.reserve(h.len.min(RECV_STEP));
        out.resize(first, 0);
        let mut got_header = 0;
        let mut body = 0;
        let mut got_fds = Vec::new();
        while got_header < hlen {
            let mut bufs = [
                IoSliceMut::new(&mut hbuf[got_header..hlen]),
                IoSliceMut::new(&mut out[..first]),
            ];
            let n = sys::stream::recv_vectored_with_fds(sock, &mut bufs, &mut got_fds)
                .map_err(map_recv_error)?;
            if n == 0 {
                self.torn = got_header > 0;
                return Err(died_mid_message());
            }
            body = (got_header + n).saturating_sub(hlen);
            got_header = (got_header + n).min(hlen);
        }
        out.truncate(body);
        if h.nfds != got_fds.len() {
            let arrived = got_fds.len();
            drop(got_fds);
            // The header was taken but not the body: the stream is no longer framed.
            self.torn = true;
            return Err(fd_mismatch(h.nfds, arrived));
        }
        fds.extend(got_fds);
        if out.len() < h.len {
            let missing = h.len - out.len();
            match deadline {
                None => {
                    if !sys::fd::recv_exact_into(sock, out, missing).map_err(map_recv_error)? {
                        return Err(died_mid_message());
                    }
                }
                Some(d) => {
                    if let Err(e) = self.rest_until(sock, out, h.len, d) {
                        self.torn = !matches!(e, Error::Closed);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the rest of a large payload against a deadline.
    fn rest_until(
        &self,
        sock: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        len: usize,
        deadline: Instant,
    ) -> Result<()> {
        while out.len() < len {
            if !self.spin.wait_readable(sock, Some(deadline))? {
                return Err(Error::Timeout);
            }
            let step = (len - out.len()).min(READ_AHEAD);
            match sys::stream::peek(sock, &mut [0u8; 1]).map_err(map_recv_error)? {
                Peek::Eof => return Err(died_mid_message()),
                Peek::Empty => continue,
                Peek::Bytes(_) => {}
            }
            let before = out.len();
            out.resize(before + step, 0);
            let n = sys::fd::recv_with_fds(sock, &mut out[before..], &mut Vec::new())
                .map_err(map_recv_error)?;
            out.truncate(before + n);
            if n == 0 {
                return Err(died_mid_message());
            }
        }
        Ok(())
    }
}

/// The first pause while a frame's start is queued and its rest is not.
const FIRST_PAUSE: Duration = Duration::from_micros(50);
/// The longest: a writer that stalls mid-frame (or a peer that sends part of a header and
/// stays) costs a reader about a hundred looks a second, not tens of thousands.
const MAX_PAUSE: Duration = Duration::from_millis(10);

/// Waits a little for more of a frame whose start is already queued: the writer is in the
/// middle of it. Errs if the writer has gone (it never will finish) or `deadline` passes.
/// `hung_up` carries what the last call saw: once the writer is known gone, the caller
/// looks once more (bytes may have come just before the hang-up), then this errs.
/// `backoff` is the pause to take, doubled each call up to [`MAX_PAUSE`]: readability
/// cannot tell us more has come (the queued start already makes the socket readable).
fn wait_for_more(
    sock: BorrowedFd<'_>,
    deadline: Option<Instant>,
    hung_up: &mut bool,
    backoff: &mut Duration,
) -> Result<()> {
    if *hung_up {
        return Err(died_mid_message());
    }
    *hung_up = sys::stream::peer_hung_up(sock).map_err(map_recv_error)?;
    let mut pause = *backoff;
    if let Some(d) = deadline {
        let now = Instant::now();
        if now >= d {
            return Err(Error::Timeout);
        }
        pause = pause.min(d - now);
    }
    *backoff = (*backoff * 2).min(MAX_PAUSE);
    sys::stream::yield_cpu();
    sys::stream::pause(pause);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// This thread's CPU time (user + system), from `/proc/thread-self/stat`, in ticks.
    fn thread_cpu_ticks() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let rest = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime), counted from the state at field 3.
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    // A peer that sends part of a header and stays connected must not make the reader spin:
    // over a second of waiting it uses a small part of a second of CPU.
    #[test]
    fn a_partial_header_does_not_busy_wait() {
        let (a, b) = sys::fd::socketpair().unwrap();
        // The first bytes of a header (its magic), then nothing.
        sys::fd::send_all(a.as_fd(), b"MP").unwrap();
        let mut reader = ExactReader::with_spin(Spin::off());
        let before = thread_cpu_ticks();
        let start = Instant::now();
        let r = reader.read(
            b.as_fd(),
            Format::Mproc,
            &mut Vec::new(),
            &mut Vec::new(),
            Some(start + Duration::from_secs(1)),
        );
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(start.elapsed() >= Duration::from_secs(1));
        let used = thread_cpu_ticks() - before;
        // Ticks are usually 1/100 s. Pausing 50 µs between looks used ~10 ticks here on a
        // busy machine (more on a quiet one); backing off to 10 ms uses ~0.
        assert!(
            used < 5,
            "waiting on a partial header used {used} ticks of CPU"
        );
        drop(a);
    }
}
