//! The shared-memory tracker: one small process per program tree that unlinks the named
//! segments the tree left behind, when the tree ends, however it ends.
//!
//! **The tree** is a program's first process (its *root*) and every process mproc started
//! from it, directly or not: a child learns its root from its parent's bootstrap, never
//! from the executable or the environment, so a program started any other way
//! (`std::process::Command`, a shell), even the same executable, is a tree of its own. A
//! root is named by its pid and its start time, which a recycled pid does not share.
//!
//! **Who writes what.** The first process of a tree that creates a named segment binds the
//! tree's abstract seqpacket name, opens a pidfd of the root, and starts the tracker (the
//! same executable, routed before `main`, in a session of its own, with no parent-death
//! signal) with both descriptors. Every creation then registers its name (`R`) and waits for
//! the answer: a creation the tracker cannot record fails, and its segment is removed, so no
//! segment exists that nobody would clean up. `unlink` and `persist` unregister (`U`). The
//! root's normal exit asks for the sweep (`S`) and waits for it (at most
//! [`ANSWER_TIMEOUT`]), so the segments are gone when the program's exit returns; if the root
//! is killed instead, its pidfd becomes readable and the tracker sweeps on its own, within
//! milliseconds. Then it exits. Children never sweep: what they created lives until the
//! tree ends (or until someone unlinks it), as the tree may still use it.
//!
//! **Hostile input.** Only processes of our own user are served (`SO_PEERCRED`); a request
//! is one record of at most 1 + 255 bytes, and a name must be a legal segment name; the
//! tracker holds at most [`MAX_NAMES`] names and [`MAX_CONNECTIONS`] connections, and only
//! the root may ask for the sweep. A process that squats on the tree's name with another
//! user's identity is refused by the client the same way.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sys::{fd, pid, process, seqpacket, shm};

/// Environment variable that routes a tracker: `<listener fd>:<root pidfd>:<root pid>`.
pub(crate) const ENV_TRACKER: &str = "MPROC_SHM_TRACKER";
/// How long a request waits for the tracker's answer.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most names one tracker holds.
pub(crate) const MAX_NAMES: usize = 1 << 20;
/// The most connections one tracker serves at once.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// The longest request: an opcode and a name of at most 255 bytes.
const MAX_REQUEST: usize = 1 + 255;

const REGISTER: u8 = b'R';
const UNREGISTER: u8 = b'U';
const SWEEP: u8 = b'S';
const DONE: u8 = b'+';
const REFUSED: u8 = b'-';

/// A program tree, named by its root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tree {
    pid: u32,
    start: u64,
}

/// This process's tree, once known: set from the bootstrap in a child, computed in a root.
static TREE: Mutex<Option<Tree>> = Mutex::new(None);

/// This process's tree.
pub(crate) fn tree() -> Tree {
    let mut t = TREE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *t.get_or_insert_with(|| {
        let me = pid::current();
        Tree {
            pid: me,
            start: pid::start_time(me).unwrap_or(0),
        }
    })
}

/// Joins the tree of the parent that started this process (from its bootstrap).
pub(crate) fn join(tree: Tree) {
    *TREE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tree);
}

fn socket_name(t: Tree) -> Vec<u8> {
    format!("mproc-shm-tracker-{}-{}-{}", process::uid(), t.pid, t.start).into_bytes()
}

/// Records `name` (a segment just created) for removal when the tree ends, starting the
/// tree's tracker if there is none yet.
pub(crate) fn register(name: &str) -> io::Result<()> {
    request(REGISTER, name, true).map(|_| ())
}

/// Forgets `name` (unlinked, or to persist).
pub(crate) fn unregister(name: &str) -> io::Result<()> {
    request(UNREGISTER, name, false).map(|_| ())
}

/// At the root's normal exit: has the tracker remove what the tree left, if it runs.
pub(crate) fn sweep_at_exit() {
    let t = tree();
    if t.pid == pid::current() {
        let _ = request(SWEEP, "", false);
    }
}

/// Sends one request; `Ok(false)` if no tracker runs and `start` is false.
fn request(op: u8, name: &str, start: bool) -> io::Result<bool> {
    let Some(sock) = connect(start)? else {
        return Ok(false);
    };
    let mut msg = Vec::with_capacity(1 + name.len());
    msg.push(op);
    msg.extend_from_slice(name.as_bytes());
    seqpacket::send(sock.as_fd(), &msg)?;
    let mut answer = [0u8; 1];
    match seqpacket::recv(sock.as_fd(), &mut answer, Some(ANSWER_TIMEOUT))? {
        1 if answer[0] == DONE => Ok(true),
        1 if answer[0] == REFUSED => Err(io::Error::other(
            "the shared-memory tracker refused the request (too many names, or not the root)",
        )),
        _ => Err(io::Error::other(
            "the shared-memory tracker gave no answer (it exited?)",
        )),
    }
}

/// A connection to this tree's tracker, started if `start` and there is none.
fn connect(start: bool) -> io::Result<Option<OwnedFd>> {
    let t = tree();
    let name = socket_name(t);
    for _ in 0..100 {
        match seqpacket::connect_abstract(&name) {
            Ok(sock) => {
                let (_, uid) = fd::peer_credentials(sock.as_fd())?;
                if uid != process::uid() {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "the shared-memory tracker's name is held by another user",
                    ));
                }
                return Ok(Some(sock));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                if !start {
                    return Ok(None);
                }
                match launch(t, &name) {
                    Ok(()) => {}
                    // Another process of the tree is starting it: connect to theirs.
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "could not reach or start the shared-memory tracker",
    ))
}

/// Binds the tree's name and starts the tracker over it.
fn launch(t: Tree, name: &[u8]) -> io::Result<()> {
    let listener = seqpacket::listen_abstract(name, 128)?;
    let root = process::pidfd_open(t.pid)?;
    // The pidfd was opened first: if the root's start time still matches, it names the root
    // (our ancestor, alive when we began), not a process that took over its pid.
    // (A start time of 0 means /proc did not tell, and then neither can we.)
    if t.start != 0 && pid::start_time(t.pid) != Some(t.start) {
        return Err(io::Error::other(
            "the program's first process has exited: its tree is ending",
        ));
    }
    let route = format!(
        "{}:{}:{}",
        std::os::fd::AsRawFd::as_raw_fd(&listener),
        std::os::fd::AsRawFd::as_raw_fd(&root),
        t.pid
    );
    process::spawn_detached(
        &pid::self_exe(),
        "mproc-shm-tracker",
        &[(ENV_TRACKER, route)],
        &[listener.as_fd(), root.as_fd()],
    )?;
    Ok(())
}

/// The tracker's life, from the route before `main`; never returns.
pub(crate) fn serve(route: &str) -> ! {
    process::ignore_sigpipe();
    let _ = crate::sys::prctl::set_comm("mproc-shm-tracker");
    let parsed = parse_route(route);
    let Some((lfd, rfd, root_pid)) = parsed else {
        process::exit_now(70)
    };
    let (Ok(listener), Ok(root)) = (fd::take_inherited(lfd), fd::take_inherited(rfd)) else {
        process::exit_now(71)
    };
    let mut tracker = Tracker {
        names: BTreeSet::new(),
        root_pid,
        me: process::uid(),
    };
    let mut conns: Vec<(OwnedFd, u32)> = Vec::new();
    loop {
        let mut fds = vec![root.as_fd(), listener.as_fd()];
        fds.extend(conns.iter().map(|(c, _)| c.as_fd()));
        let Ok(ready) = fd::poll_many(&fds, None) else {
            continue;
        };
        if ready[0] {
            tracker.sweep();
            process::exit_now(0);
        }
        let mut gone = Vec::new();
        for (i, &r) in ready[2..].iter().enumerate() {
            if r && !tracker.serve_one(conns[i].0.as_fd(), conns[i].1) {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            conns.swap_remove(i);
        }
        if ready[1] {
            while let Ok(Some(c)) = seqpacket::accept(listener.as_fd()) {
                match fd::peer_credentials(c.as_fd()) {
                    Ok((pid, uid)) if uid == tracker.me && conns.len() < MAX_CONNECTIONS => {
                        conns.push((c, pid))
                    }
                    _ => drop(c),
                }
            }
        }
    }
}

fn parse_route(v: &str) -> Option<(RawFd, RawFd, u32)> {
    let mut it = v.split(':');
    let l = it.next()?.parse().ok()?;
    let r = it.next()?.parse().ok()?;
    let p = it.next()?.parse().ok()?;
    it.next().is_none().then_some((l, r, p))
}

/// The tracker's state: the names it will remove.
struct Tracker {
    names: BTreeSet<String>,
    root_pid: u32,
    me: u32,
}

impl Tracker {
    /// Serves one request on `conn` from process `peer`; false when the connection is done.
    fn serve_one(&mut self, conn: std::os::fd::BorrowedFd<'_>, peer: u32) -> bool {
        let mut buf = [0u8; MAX_REQUEST + 1];
        let len = match seqpacket::recv(conn, &mut buf, Some(Duration::ZERO)) {
            Ok(0) | Err(_) => return false,
            Ok(n) if n > MAX_REQUEST => return false,
            Ok(n) => n,
        };
        let answer = self.handle(&buf[..len], peer);
        seqpacket::send(conn, &[answer]).is_ok()
    }

    fn handle(&mut self, msg: &[u8], peer: u32) -> u8 {
        let (op, rest) = match msg.split_first() {
            Some((&op, rest)) => (op, rest),
            None => return REFUSED,
        };
        let name = match std::str::from_utf8(rest) {
            Ok(n) => n,
            Err(_) => return REFUSED,
        };
        match op {
            REGISTER if legal(name) && self.names.len() < MAX_NAMES => {
                self.names.insert(name.to_string());
                DONE
            }
            UNREGISTER => {
                self.names.remove(name);
                DONE
            }
            SWEEP if peer == self.root_pid => {
                self.sweep();
                DONE
            }
            _ => REFUSED,
        }
    }

    fn sweep(&mut self) {
        for name in std::mem::take(&mut self.names) {
            let _ = shm::unlink(&format!("/{name}"));
        }
    }
}

/// A segment name as `SharedMemory` accepts it (without the leading `/`).
fn legal(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.contains('/') && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        let mut t = Tracker {
            names: BTreeSet::new(),
            root_pid: 7,
            me: 0,
        };
        assert_eq!(t.handle(b"Rmproc_a", 9), DONE);
        assert_eq!(t.handle(b"Ra/b", 9), REFUSED);
        assert_eq!(t.handle(b"R", 9), REFUSED);
        assert_eq!(t.handle(b"", 9), REFUSED);
        assert_eq!(t.handle(b"R\xff", 9), REFUSED);
        assert_eq!(t.handle(b"S", 9), REFUSED, "only the root sweeps");
        assert_eq!(t.handle(b"X", 9), REFUSED);
        assert_eq!(t.names.len(), 1);
        assert_eq!(t.handle(b"Umproc_a", 9), DONE);
        assert!(t.names.is_empty());
        assert_eq!(parse_route("3:4:99"), Some((3, 4, 99)));
        assert_eq!(parse_route("3:4"), None);
        assert_eq!(parse_route("3:4:5:6"), None);
    }

    proptest::proptest! {
        /// Whatever a peer sends, the tracker answers DONE or REFUSED, never panics, and
        /// holds only legal names.
        #[test]
        fn any_request_is_answered_and_only_legal_names_are_kept(
            reqs in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..40),
            peer in 0u32..10,
        ) {
            let mut t = Tracker { names: BTreeSet::new(), root_pid: 7, me: 0 };
            for r in &reqs {
                let a = t.handle(r, peer);
                proptest::prop_assert!(a == DONE || a == REFUSED);
            }
            proptest::prop_assert!(t.names.iter().all(|n| legal(n)));
        }
    }
}
