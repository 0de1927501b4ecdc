//! `Spawn`: a fresh copy of the executable, re-executed with one inherited socket.
//!
//! Parent: socketpair → exec with `MPROC_CHILD_BOOTSTRAP=<fd>:<pid>` → send the bootstrap
//! frame (with the arguments' descriptors) → read the child's one-byte acknowledgement:
//! 1 if its executable fingerprint matched, 0 if not (then the child exits and `start`
//! fails with `Error::BinaryMismatch`).

use std::os::fd::{AsFd, AsRawFd};

use super::{Bootstrap, ENV_CHILD, Launched, launched};
use crate::codec::{self, HandleFd};
use crate::connection::framing;
use crate::error::{Error, Result};
use crate::sys;

pub(super) fn launch(boot: &Bootstrap, fds: Vec<HandleFd>) -> Result<Launched> {
    let (parent_end, child_end) = sys::fd::socketpair()?;
    let route = format!("{}:{}", child_end.as_raw_fd(), sys::pid::current());
    let pid = sys::process::spawn_exe(
        &super::method::executable(),
        &argv0(),
        &[(ENV_CHILD, route)],
        child_end.as_fd(),
    )?;
    drop(child_end);
    let l = launched(pid, parent_end)?;
    let mut buf = Vec::new();
    codec::encode_plain_into(boot, &mut buf)?;
    let sent = framing::write_frame(l.result.as_fd(), &buf, &sys::fd::borrowed(&fds));
    drop(fds);
    let mut ack = Vec::new();
    let acked = sent.and_then(|()| super::read_handshake(l.result.as_fd(), &mut ack));
    match acked {
        Ok(()) if ack == [1] => Ok(l),
        Ok(()) => {
            reap(&l);
            Err(Error::BinaryMismatch)
        }
        Err(Error::Timeout) => {
            let _ = sys::process::pidfd_signal(l.pidfd.as_fd(), sys::process::SIGKILL);
            reap(&l);
            Err(Error::Timeout)
        }
        Err(_) => Err(Error::ChildFailed { exitcode: reap(&l) }),
    }
}

/// Waits for a child that failed its handshake, so it leaves no zombie.
fn reap(l: &Launched) -> i32 {
    let _ = sys::fd::poll_readable(l.pidfd.as_fd(), Some(std::time::Duration::from_secs(5)));
    match sys::process::try_reap(l.pidfd.as_fd()) {
        Ok(Some(code)) => code,
        _ => {
            let _ = sys::process::pidfd_signal(l.pidfd.as_fd(), sys::process::SIGKILL);
            let _ = sys::fd::poll_readable(l.pidfd.as_fd(), None);
            sys::process::try_reap(l.pidfd.as_fd())
                .ok()
                .flatten()
                .unwrap_or(-9)
        }
    }
}

/// The parent's `argv[0]`, so `ps` shows children under the program's name.
pub(super) fn argv0() -> String {
    std::env::args_os()
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mproc-child".to_string())
}
