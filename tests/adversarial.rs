//! Hostile input: what a peer process, a forged environment or a crafted message can do,
//! and that each gets an error (or is ignored), never a crash, a hang or a takeover.
//!
//! Regression tests for issue 12's defects live here; the property tests over every
//! decoder are in `tests/fuzz_decoders.rs`.

mod util;

use serde::{Deserialize, Serialize};
use util::*;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Tree {
    Leaf,
    Node(Box<Tree>),
}

/// The bytes of a `Tree` nested `levels` deep: postcard writes `Node` as variant 1, then
/// the inner tree; `Leaf` as variant 0.
fn nested(levels: usize) -> Vec<u8> {
    let mut b = vec![1u8; levels];
    b.push(0);
    b
}

fn tree(levels: usize) -> Tree {
    (0..levels).fold(Tree::Leaf, |t, _| Tree::Node(Box::new(t)))
}

/// Defect 2: a million levels of nesting used to overflow the receiver's stack (SIGABRT).
#[test]
fn deep_nesting_is_a_codec_error_naming_the_limit() {
    let _g = shared();
    let _w = watchdog("deep nesting", 60);
    let (a, b) = mproc::pipe::<Tree>().unwrap();
    // More than a socket buffer holds: sent from another thread while the receiver reads.
    let sender = std::thread::spawn(move || a.send_bytes(&nested(1_000_000)));
    // Received on a thread with a small stack: the limit must hold well inside it.
    let err = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || b.recv())
        .unwrap()
        .join()
        .unwrap()
        .unwrap_err();
    sender.join().unwrap().unwrap();
    assert!(matches!(err, mproc::Error::Codec(_)), "{err:?}");
    assert!(err.to_string().contains("depth limit"), "{err}");
    // Just inside the limit still decodes; the encoder makes exactly these bytes.
    let (a, b) = mproc::pipe::<Tree>().unwrap();
    a.send(&tree(100)).unwrap();
    assert_eq!(b.recv().unwrap(), tree(100));
    a.send_bytes(&nested(100)).unwrap();
    assert_eq!(b.recv().unwrap(), tree(100));
}

/// The same limit guards a child's arguments and a process result.
#[test]
fn deep_nesting_in_a_result_fails_the_result_not_the_parent() {
    let _g = shared();
    let _w = watchdog("deep result", 60);
    fn deep() -> Tree {
        tree(1_000)
    }
    for m in METHODS {
        let mut p = mproc::get_context(m).process(deep, ());
        p.start().unwrap();
        let err = p.result().unwrap_err();
        assert!(err.to_string().contains("depth limit"), "{m:?}: {err}");
    }
}

// ---------------------------------------------------------------------------------------
// Defect 3: pre-`main` routing cannot be forged into a jump.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

/// `start::Bootstrap`, field for field (postcard encodes fields in order, by position).
#[derive(Serialize)]
struct ForgedBootstrap {
    fingerprint: u64,
    entry: i64,
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    parent_name: String,
    parent_pid: u32,
    args: Vec<u8>,
    log: Option<u8>,
    start_method: Option<mproc::StartMethod>,
    /// `shared::tracker::Tree`: the root's pid and start time.
    tree: (u32, u64),
    /// The limits and sandbox (none: postcard's `None` is one zero byte whatever the type).
    isolation: Option<u8>,
    comm: String,
    program: String,
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = b"MPRF".to_vec();
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

fn read_frame(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 16];
    s.read_exact(&mut h)?;
    assert_eq!(&h[..4], b"MPRF");
    let len = u64::from_le_bytes(h[8..].try_into().unwrap()) as usize;
    assert!(len < 1 << 20, "a reply of {len} bytes");
    let mut b = vec![0; len];
    s.read_exact(&mut b)?;
    Ok(b)
}

/// Starts this test binary with `var=<fd>:<parent>` and `fd` inherited, as an attacker who
/// controls the environment and one descriptor would.
fn start_forged<F: AsRawFd + std::os::fd::AsFd>(var: &str, fd: &F, parent: u32) -> Child {
    let raw = fd.as_raw_fd();
    // Inheritable in the child: clear CLOEXEC (the test's own copy too, briefly).
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .env(var, format!("{raw}:{parent}"))
        .arg("--exact")
        .arg("no_such_test")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC).unwrap();
    child
}

fn exit_code(mut c: Child) -> Option<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            use std::os::unix::process::ExitStatusExt;
            assert!(st.signal().is_none(), "the forged process died of {st:?}");
            return st.code();
        }
        assert!(std::time::Instant::now() < deadline, "forged process hangs");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The fingerprint a forged fork server hands out (the attacker's first step).
fn fingerprint_from_a_forged_server() -> u64 {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let server = start_forged("MPROC_FORKSERVER", &theirs, std::process::id());
    drop(theirs);
    let hello = read_frame(&mut ours).unwrap();
    drop(ours); // the server exits when its client goes
    assert_eq!(exit_code(server), Some(0));
    u64::from_le_bytes(hello.try_into().unwrap())
}

/// A forged start-up message can name any offset: each is refused (exit 75, a `Failed`
/// outcome) without a jump. The old code jumped to `anchor + offset`: a function the
/// program never calls ran, and `0x41414141` was a SIGSEGV.
#[test]
fn a_forged_entry_offset_is_refused_without_a_jump() {
    let _g = shared();
    let _w = watchdog("forged entry", 120);
    let fingerprint = fingerprint_from_a_forged_server();
    for entry in [0x4141_4141i64, 0, 16, -16, 64, -4096, i64::MIN] {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let child = start_forged("MPROC_CHILD_BOOTSTRAP", &theirs, std::process::id());
        drop(theirs);
        let boot = ForgedBootstrap {
            fingerprint,
            entry,
            name: "Forged".into(),
            identity: vec![1],
            daemon: false,
            parent_name: "Attacker".into(),
            parent_pid: std::process::id(),
            args: vec![],
            log: None,
            start_method: None,
            tree: (std::process::id(), 0),
            isolation: None,
            comm: "forged".into(),
            program: "forged".into(),
        };
        ours.write_all(&frame(&postcard::to_allocvec(&boot).unwrap()))
            .unwrap();
        assert_eq!(
            read_frame(&mut ours).unwrap(),
            [1],
            "the fingerprint matched"
        );
        let outcome = read_frame(&mut ours).unwrap();
        assert!(
            String::from_utf8_lossy(&outcome).contains("not a target entry"),
            "entry {entry:#x}: {outcome:?}"
        );
        assert_eq!(exit_code(child), Some(75), "entry {entry:#x}");
    }
}

/// The descriptor must be a socket made by the named parent: anything else is refused
/// before a byte is read or written (exit 76).
#[test]
fn a_route_not_made_by_the_named_parent_is_refused() {
    let _g = shared();
    let _w = watchdog("forged route", 60);
    for var in ["MPROC_CHILD_BOOTSTRAP", "MPROC_FORKSERVER"] {
        // A socket, but the route names another parent (init).
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let child = start_forged(var, &theirs, 1);
        drop(theirs);
        assert_eq!(exit_code(child), Some(76), "{var}: wrong parent");
        let mut buf = Vec::new();
        assert_eq!(ours.read_to_end(&mut buf).unwrap(), 0, "{var}: it wrote");
        // Not a socket at all.
        let null = std::fs::File::open("/dev/null").unwrap();
        let child = start_forged(var, &null, std::process::id());
        assert_eq!(exit_code(child), Some(76), "{var}: /dev/null");
    }
}

fn mproc_variables() -> Vec<String> {
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k == "MPROC_CHILD_BOOTSTRAP" || k == "MPROC_FORKSERVER")
        .collect()
}

/// A child does not keep its routing variables: a program it starts is not routed again.
#[test]
fn routing_variables_are_gone_once_read() {
    let _g = shared();
    let _w = watchdog("routing variables", 60);
    for m in METHODS {
        let mut p = mproc::get_context(m).process(mproc_variables, ());
        p.start().unwrap();
        assert_eq!(p.result().unwrap(), Vec::<String>::new(), "{m:?}");
    }
}

fn twenty_one() -> u32 {
    21
}

/// Run only as a helper by `a_descriptor_shortage_does_not_disable_fork`, in a program of its
/// own with a small descriptor limit.
#[test]
#[ignore]
fn helper_fork_after_a_descriptor_shortage() {
    if std::env::var_os("MPROC_TEST_FD_SHORTAGE").is_none() {
        return;
    }
    let mut held = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        held.push(f);
    }
    let mut p = mproc::get_context(mproc::StartMethod::Fork).process(twenty_one, ());
    let first = p.start();
    println!(
        "SHORT={}",
        if first.is_ok() { "started" } else { "refused" }
    );
    drop(held);
    let mut p = mproc::get_context(mproc::StartMethod::Fork).process(twenty_one, ());
    let after = p.start().and_then(|()| p.result());
    println!("AFTER={after:?}");
}

/// Issue 19, item 7: one descriptor shortage at the first Fork start used to cache an empty
/// list of the executable's mappings, and every later Fork start of the process failed
/// ("entry ... is not a target entry"). The shortage fails that start only.
#[test]
fn a_descriptor_shortage_does_not_disable_fork() {
    let _g = shared();
    let _w = watchdog("fork after a descriptor shortage", 60);
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_fork_after_a_descriptor_shortage",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MPROC_TEST_FD_SHORTAGE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SHORT=refused"), "{stdout}");
    assert!(stdout.contains("AFTER=Ok(21)"), "{stdout}");
}
