//! `ForkServer`: one server per process, spawned on first use, forks every child.
//!
//! The server is a fresh, single-threaded copy of the executable (spawned like a `Spawn`
//! child and routed before `main`), so its children start from clean state at fork speed.
//! It makes them with `clone(CLONE_PARENT)`: each is a real child of the process that asked
//! for it, which waits for it, signals it through a pidfd and sees its exit status, exactly
//! as under `Fork`.
//!
//! Protocol on the client's socket (frames): server → client `hello` = its fingerprint
//! (u64 LE). Then per child: client → server a [`Request`] (the bootstrap, the client's
//! working directory, and its environment if it differs from the one the server started
//! with), with descriptors `[result end, argument descriptors...]`; server → client the
//! child's pid (u32 LE). The server exits when the client's end closes, or when the client
//! dies (parent-death signal).
//!
//! **Inheritance.** A child sees its requester's cwd and environment at `start`, as under
//! `Fork` and `Spawn`: it `chdir`s and, if the client sent one, replaces its environment
//! before the target runs. The server ignores SIGINT (Ctrl-C is its parent's to decide; it
//! dies with its parent); each child gets SIGINT's default action back.

// Forking is this file's purpose; the one `unsafe` call is the fork itself.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use serde::{Deserialize, Serialize};

use super::{Bootstrap, ENV_FORKSERVER, Launched, child, launched, state};
use crate::codec::{self, HandleFd};
use crate::connection::framing;
use crate::error::{Error, Result};
use crate::sys;
use crate::sys::process::Forked;

/// A process's connection to its fork server.
#[derive(Debug)]
pub(crate) struct Client {
    sock: HandleFd,
    pidfd: HandleFd,
    /// The environment the server started with (so inherited by its children).
    env: Vec<(OsString, OsString)>,
}

/// One request for a child, as the server reads it.
#[derive(Deserialize)]
struct Request {
    boot: Bootstrap,
    /// The requester's working directory, as bytes.
    cwd: Option<Vec<u8>>,
    /// The requester's environment, when it is not the one the server started with.
    env: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// A [`Request`] as the client writes it (the same fields, the bootstrap borrowed).
#[derive(Serialize)]
struct RequestRef<'a> {
    boot: &'a Bootstrap,
    cwd: Option<Vec<u8>>,
    env: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Client {
    fn start() -> Result<Client> {
        let (ours, theirs) = sys::fd::socketpair()?;
        let route = format!("{}:{}", theirs.as_raw_fd(), sys::pid::current());
        let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        let pid = sys::process::spawn_exe(
            &super::method::executable(),
            &super::spawn::argv0(),
            &[(ENV_FORKSERVER, route)],
            theirs.as_fd(),
        )?;
        drop(theirs);
        // The server is our child: reap it when it exits, like any other.
        let pidfd = HandleFd::new(sys::process::pidfd_open(pid)?);
        let client = Client {
            sock: HandleFd::new(ours),
            pidfd,
            env,
        };
        let mut hello = Vec::new();
        framing::read_frame(client.sock.as_fd(), &mut hello, &mut Vec::new())?;
        if hello != crate::target::fingerprint().to_le_bytes() {
            return Err(Error::BinaryMismatch);
        }
        Ok(client)
    }

    /// Asks for a child. On failure, says whether the request was delivered: if it was,
    /// the server may have made the child before it failed, so the request must not be
    /// repeated (the child would run twice).
    fn request(
        &self,
        boot: &Bootstrap,
        fds: &[BorrowedFd<'_>],
    ) -> std::result::Result<u32, (bool, Error)> {
        let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        let request = RequestRef {
            boot,
            cwd: std::env::current_dir()
                .ok()
                .map(|d| d.into_os_string().into_vec()),
            env: (env != self.env).then(|| {
                env.into_iter()
                    .map(|(k, v)| (k.into_vec(), v.into_vec()))
                    .collect()
            }),
        };
        let mut buf = Vec::new();
        codec::encode_plain_into(&request, &mut buf).map_err(|e| (false, e))?;
        framing::write_frame(self.sock.as_fd(), &buf, fds).map_err(|e| (false, e))?;
        buf.clear();
        framing::read_frame(self.sock.as_fd(), &mut buf, &mut Vec::new()).map_err(|e| (true, e))?;
        parse_pid_reply(&buf).map_err(|e| (true, e))
    }
}

/// The server's reply to a request: the child's pid (4 bytes, not 0), or a pid of 0 and
/// the OS error code of the failed fork (8 bytes).
pub(crate) fn parse_pid_reply(reply: &[u8]) -> Result<u32> {
    match *reply {
        [a, b, c, d] if [a, b, c, d] != [0; 4] => Ok(u32::from_le_bytes([a, b, c, d])),
        [0, 0, 0, 0, a, b, c, d] => {
            let os = std::io::Error::from_raw_os_error(i32::from_le_bytes([a, b, c, d]));
            Err(Error::Io(std::io::Error::new(os.kind(), ForkFailed(os))))
        }
        _ => Err(Error::Codec(format!(
            "malformed reply from the fork server: {} bytes, expected a pid or an error code",
            reply.len()
        ))),
    }
}

/// The reply for a fork that failed with `e`: a pid of 0, then the OS error code.
fn failure_reply(e: &std::io::Error) -> [u8; 8] {
    let mut reply = [0; 8];
    // A fork error always has an OS code (it comes from clone); EIO stands in otherwise.
    let errno = crate::sys::process::os_code(e);
    reply[4..].copy_from_slice(&errno.to_le_bytes());
    reply
}

/// "fork server could not fork the child: ...", with the OS error as its source.
#[derive(Debug)]
struct ForkFailed(std::io::Error);

impl std::fmt::Display for ForkFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fork server could not fork the child: {}", self.0)
    }
}

impl std::error::Error for ForkFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Closing our end makes the server exit; reap it so it leaves no zombie.
        let _ = sys::fd::shutdown(self.sock.as_fd(), true);
        let _ = sys::fd::poll_readable(self.pidfd.as_fd(), Some(std::time::Duration::from_secs(2)));
        if !matches!(sys::process::try_reap(self.pidfd.as_fd()), Ok(Some(_))) {
            let _ = sys::process::pidfd_signal(self.pidfd.as_fd(), sys::process::SIGKILL);
            let _ = sys::fd::poll_readable(self.pidfd.as_fd(), None);
            let _ = sys::process::try_reap(self.pidfd.as_fd());
        }
    }
}

pub(super) fn launch(boot: &Bootstrap, fds: Vec<HandleFd>) -> Result<Launched> {
    let (parent_end, child_end) = sys::fd::socketpair()?;
    let mut all: Vec<BorrowedFd<'_>> = vec![child_end.as_fd()];
    all.extend(sys::fd::borrowed(&fds));
    let mut st = state();
    // A server that died is replaced once; a second failure is the caller's error.
    for attempt in 0..2 {
        if st.forkserver.is_none() {
            st.forkserver = Some(Client::start()?);
        }
        let client = st.forkserver.as_ref().expect("set just above");
        match client.request(boot, &all) {
            Ok(pid) => {
                drop(st);
                drop(all);
                drop(child_end);
                return launched(pid, parent_end);
            }
            // The server was gone before it got the request: start a new one and ask again.
            Err((false, e)) if attempt == 0 && matches!(e, Error::Closed | Error::Io(_)) => {
                st.forkserver = None;
            }
            Err((delivered, e)) => {
                if delivered {
                    // A server that failed mid-request is not to be trusted again.
                    st.forkserver = None;
                }
                return Err(e);
            }
        }
    }
    unreachable!("the loop returns on its second pass")
}

/// The fork server's main loop; never returns.
pub(super) fn serve(route: &str) -> ! {
    let (sock, _parent) = super::enter_routed(route);
    super::comm::show(super::comm::FORKSERVER);
    sys::signal::ignore_interrupts();
    // Read once here, so every child resolves its entry without touching `/proc`; if that
    // fails now, each child reads them itself (nothing failed is cached).
    let _ = crate::target::warm();
    if framing::write_frame(
        sock.as_fd(),
        &crate::target::fingerprint().to_le_bytes(),
        &[],
    )
    .is_err()
    {
        sys::process::exit_now(0);
    }
    let mut buf = Vec::new();
    loop {
        let mut fds = Vec::new();
        match framing::read_frame(sock.as_fd(), &mut buf, &mut fds) {
            Ok(()) => {}
            Err(Error::Closed) => sys::process::exit_now(0),
            Err(_) => sys::process::exit_now(72),
        }
        let Request { boot, cwd, env } = match codec::decode_plain(&buf) {
            Ok(r) => r,
            Err(_) => sys::process::exit_now(73),
        };
        if fds.is_empty() {
            sys::process::exit_now(74);
        }
        let result_end = fds.remove(0);
        // SAFETY: the server is single-threaded (routed before `main`, it starts no
        // threads), so the child may run anything.
        match unsafe { sys::process::clone_parent() } {
            Ok(Forked::Child) => {
                drop(sock);
                sys::signal::default_interrupts();
                take_on(cwd, env);
                state().become_child(&boot, &mut crate::name::hold());
                child::run(boot.parent_pid, &boot, fds, result_end)
            }
            Ok(Forked::Parent(pid)) => {
                drop(fds);
                drop(result_end);
                if framing::write_frame(sock.as_fd(), &pid.to_le_bytes(), &[]).is_err() {
                    sys::process::exit_now(0);
                }
            }
            Err(e) => {
                // Tell the client why: a pid of 0 and the OS error code.
                let _ = framing::write_frame(sock.as_fd(), &failure_reply(&e), &[]);
            }
        }
    }
}

/// In a child just forked by the server: the requester's working directory and environment.
/// A directory that no longer exists leaves the server's (the child of a `Fork` or `Spawn`
/// would be in a deleted directory; this one cannot be).
fn take_on(cwd: Option<Vec<u8>>, env: Option<Vec<(Vec<u8>, Vec<u8>)>>) {
    if let Some(dir) = cwd {
        let _ = sys::process::chdir(std::path::Path::new(std::ffi::OsStr::from_bytes(&dir)));
    }
    if let Some(env) = env {
        let vars: Vec<(OsString, OsString)> = env
            .into_iter()
            .map(|(k, v)| (OsString::from_vec(k), OsString::from_vec(v)))
            .collect();
        // SAFETY: the child of the single-threaded server is single-threaded.
        unsafe { sys::process::replace_env(&vars) };
    }
}
