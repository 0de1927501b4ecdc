//! File descriptors and Unix sockets: creation (always CLOEXEC), SCM_RIGHTS, poll.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::{Errno, FdFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// The kernel's limit on descriptors in one SCM_RIGHTS message (`SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// A connected pair of Unix stream sockets, both CLOEXEC.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A connected pair of Unix seqpacket sockets (each send is one record, kept whole), both
/// CLOEXEC: the side channel of a shared-memory pipe (`connection/shm.rs`).
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Makes a blocking `recv` on `sock` give up after `d` (`SO_RCVTIMEO`; it belongs to the
/// open socket, so every holder of a copy shares it).
pub(crate) fn set_recv_timeout(sock: BorrowedFd<'_>, d: Duration) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_timeout(
        sock,
        rustix::net::sockopt::Timeout::Recv,
        Some(d),
    )?)
}

/// One plain `recv` (no descriptors accepted: any attached are closed by the kernel).
/// `wait`: block (up to the socket's receive timeout) rather than return at once.
/// `Ok(None)` when nothing came (empty, timed out, or interrupted), `Ok(Some(0))` at end
/// of stream.
pub(crate) fn recv_plain(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    wait: bool,
) -> io::Result<Option<usize>> {
    let flags = if wait {
        RecvFlags::empty()
    } else {
        RecvFlags::DONTWAIT
    };
    match rustix::net::recv(sock, buf, flags) {
        Ok((n, _)) => Ok(Some(n)),
        Err(Errno::AGAIN | Errno::INTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Copies the front of the next message on `sock` into `buf` without taking it, never
/// blocking: `Ok(None)` when nothing is waiting, `Ok(Some(0))` at end of stream. No control
/// buffer is passed, so descriptors attached to the message stay queued with it (the
/// kernel installs none on a peek without room for them).
pub(crate) fn try_peek(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    match rustix::net::recv(sock, buf, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((n, _)) => Ok(Some(n)),
        Err(Errno::AGAIN | Errno::INTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sends one byte without blocking and without SIGPIPE; whether it went.
pub(crate) fn try_send_byte(sock: BorrowedFd<'_>, b: u8) -> bool {
    rustix::net::send(sock, &[b], SendFlags::DONTWAIT | SendFlags::NOSIGNAL).is_ok_and(|n| n == 1)
}

/// Half-closes a socket: `how_write` shuts down sending, otherwise receiving.
pub(crate) fn shutdown(fd: BorrowedFd<'_>, how_write: bool) -> io::Result<()> {
    let how = if how_write {
        rustix::net::Shutdown::Write
    } else {
        rustix::net::Shutdown::Read
    };
    Ok(rustix::net::shutdown(fd, how)?)
}

/// Sends `bufs` with `fds` attached to their first byte. Returns the bytes sent, which
/// may be fewer than offered; the descriptors go with the first call only.
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.is_empty() {
        return retry_eintr(|| {
            rustix::net::sendmsg(
                sock,
                bufs,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        });
    }
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "too many handles in one message ({} > {MAX_FDS_PER_MESSAGE})",
                fds.len()
            ),
        ));
    }
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let pushed = control.push(SendAncillaryMessage::ScmRights(fds));
    debug_assert!(pushed, "control buffer sized by cmsg_space!");
    retry_eintr(|| rustix::net::sendmsg(sock, bufs, &mut control, SendFlags::NOSIGNAL))
}

/// Like [`send_with_fds`], but never blocks: `Ok(0)` (nothing sent) when the socket
/// buffer is full.
pub(crate) fn try_send_with_fds(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many handles in one message",
        ));
    }
    match retry_eintr(|| {
        rustix::net::sendmsg(
            sock,
            bufs,
            &mut control,
            SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
        )
    }) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        other => other,
    }
}

/// Like [`recv_with_fds`], but never blocks: `Ok(None)` when nothing is waiting,
/// `Ok(Some(0))` at end of stream.
pub(crate) fn try_recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Option<usize>> {
    match recvmsg_fds(sock, &mut [IoSliceMut::new(buf)], fds, RecvFlags::DONTWAIT) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        other => other.map(Some),
    }
}

/// Waits until any of `fds` is ready for what `want_write` asks (readable, or also
/// writable where true) or `timeout` passes; returns (readable, writable) per descriptor.
pub(crate) fn poll_rw(
    fds: &[(BorrowedFd<'_>, bool)],
    timeout: Option<Duration>,
) -> io::Result<Vec<(bool, bool)>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|(fd, w)| {
            let mut flags = PollFlags::IN;
            if *w {
                flags |= PollFlags::OUT;
            }
            PollFd::new(fd, flags)
        })
        .collect();
    let ts = timeout.map(|r| rustix::time::Timespec {
        tv_sec: r.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(r.subsec_nanos()),
    });
    match rustix::event::poll(&mut pfds, ts.as_ref()) {
        Ok(_) | Err(Errno::INTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(pfds
        .iter()
        .map(|p| {
            let r = p.revents();
            (
                r.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR),
                r.intersects(PollFlags::OUT | PollFlags::HUP | PollFlags::ERR),
            )
        })
        .collect())
}

/// Sends all of `buf` (no descriptors), blocking as needed.
pub(crate) fn send_all(sock: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = retry_eintr(|| rustix::net::send(sock, buf, SendFlags::NOSIGNAL))?;
        buf = &buf[n..];
    }
    Ok(())
}

/// Receives into `buf`; descriptors that arrive are appended to `fds` (as CLOEXEC).
/// Returns 0 at end of stream.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    recvmsg_fds(sock, &mut [IoSliceMut::new(buf)], fds, RecvFlags::empty())
}

/// One `recvmsg` into `bufs` that appends received descriptors (CLOEXEC) to `fds`; every
/// socket read that can carry descriptors goes through here.
pub(crate) fn recvmsg_fds(
    sock: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    fds: &mut Vec<OwnedFd>,
    flags: RecvFlags,
) -> io::Result<usize> {
    let mut space =
        [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = retry_eintr(|| {
        rustix::net::recvmsg(
            sock,
            &mut *bufs,
            &mut control,
            RecvFlags::CMSG_CLOEXEC | flags,
        )
    })?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::other(
            "descriptors were lost in transit (control data truncated)",
        ));
    }
    Ok(msg.bytes)
}

/// Waits until `fd` is readable (data or end of stream) or `timeout` passes.
/// `None` waits forever. Returns whether it is readable.
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let ready = poll_many(&[fd], timeout)?;
    Ok(ready[0])
}

/// Waits until any of `fds` is readable or `timeout` passes; returns which are.
pub(crate) fn poll_many(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<bool>> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(fd, PollFlags::IN))
            .collect();
        let remaining = match (timeout, deadline) {
            (None, _) => None,
            (Some(_), Some(d)) => Some(d.saturating_duration_since(Instant::now())),
            // A timeout too large for `Instant` is as good as forever.
            (Some(_), None) => None,
        };
        let ts = remaining.map(|r| rustix::time::Timespec {
            tv_sec: r.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(r.subsec_nanos()),
        });
        match rustix::event::poll(&mut pfds, ts.as_ref()) {
            Ok(_) => {
                return Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect());
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A CLOEXEC duplicate of `fd`.
pub(crate) fn dup_cloexec(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// Turns CLOEXEC off (`inherit == true`) or on for `fd`.
pub(crate) fn set_inheritable(fd: BorrowedFd<'_>, inherit: bool) -> io::Result<()> {
    let flags = if inherit {
        FdFlags::empty()
    } else {
        FdFlags::CLOEXEC
    };
    Ok(rustix::io::fcntl_setfd(fd, flags)?)
}

/// Closes a descriptor this process owns but holds no `OwnedFd` for (a copy inherited
/// through `fork`). Errors are ignored: the descriptor is gone either way.
pub(crate) fn close_inherited(fd: RawFd) {
    // SAFETY: called only in a freshly forked child, for descriptors that belonged to mproc
    // handles of the parent; the child never uses the parent's handle objects, so nothing
    // else will close or use this number.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    drop(owned);
}

/// Takes ownership of the descriptor a parent passed across `exec` (named in a routing
/// variable), and makes it CLOEXEC again so it goes no further.
///
/// Called once, before `main`, for the one number the routing variable names: nothing else
/// in the new process can own it yet.
pub(crate) fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad inherited descriptor",
        ));
    }
    // SAFETY: `fcntl(F_GETFD)` on any number is harmless; it fails with EBADF if closed.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked) and unowned (see above).
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    set_inheritable(owned.as_fd(), false)?;
    Ok(owned)
}

/// The pid and user id of the process that created the peer end of Unix socket `sock`
/// (`SO_PEERCRED`; for a socketpair, the process that called `socketpair`). An error if
/// `sock` is not a Unix socket.
pub(crate) fn peer_credentials(sock: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let cred = rustix::net::sockopt::socket_peercred(sock)?;
    Ok((cred.pid.as_raw_nonzero().get() as u32, cred.uid.as_raw()))
}

fn retry_eintr<T>(mut f: impl FnMut() -> Result<T, Errno>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other.map_err(Into::into),
        }
    }
}

/// Used where a borrowed fd of an owned one is wanted in a slice.
pub(crate) fn borrowed<T: AsFd>(v: &[T]) -> Vec<BorrowedFd<'_>> {
    v.iter().map(AsFd::as_fd).collect()
}

/// Receives until `buf` holds `want` bytes more than it did, appending without zeroing
/// first. Returns false if the stream ended before that.
pub(crate) fn recv_exact_into(
    sock: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    want: usize,
) -> io::Result<bool> {
    let target = buf.len() + want;
    while buf.len() < target {
        let missing = target - buf.len();
        // Grow in steps so a corrupt length cannot make us reserve absurd memory up front.
        buf.reserve(missing.min(64 << 20));
        let room = buf.capacity() - buf.len();
        let n = retry_eintr(|| {
            let spare = &mut buf.spare_capacity_mut()[..room.min(missing)];
            rustix::net::recv(sock, spare, RecvFlags::WAITALL).map(|(_, n)| n)
        })?;
        if n == 0 {
            return Ok(false);
        }
        // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
    }
    Ok(true)
}
