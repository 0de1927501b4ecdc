//! What descriptors a child holds: under `Spawn` and `ForkServer` only stdio and the ones
//! mproc passes on purpose (Python closes everything else there too); under `Fork`, every
//! descriptor `fork()` copies, except mproc's own handles the child was not given.
//! Issue 12, defect 5: a descriptor opened without CLOEXEC used to leak into spawned and
//! fork-server children. Its own test binary: the descriptor must exist before the fork
//! server starts, and nothing else may run meanwhile.

mod util;

use std::os::fd::AsRawFd;

use util::*;

/// Whether descriptor `fd` is open in this process on /dev/null (the number alone may be
/// reused by a descriptor mproc passed).
fn is_open(fd: i32) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|t| t.as_os_str() == "/dev/null")
}

/// This process's open descriptors above stdio that are not sockets (mproc passes only
/// sockets, and shared-memory handles, which the target here receives none of).
fn non_socket_fds() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            // `read_dir` holds a descriptor on /proc/self/fd while it lists it.
            (n > 2 && !target.starts_with("socket:") && !target.contains("/proc/"))
                .then(|| format!("{n} -> {target}"))
        })
        .collect()
}

fn report(leaked: i32) -> (bool, Vec<String>) {
    (is_open(leaked), non_socket_fds())
}

/// The tests here count descriptors: one at a time.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn children_hold_only_what_mproc_passes_except_under_fork() {
    let _one = ONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _w = watchdog("fd inheritance", 60);
    // An inheritable descriptor, as a C library or a careless `open` would leave one.
    let file = std::fs::File::open("/dev/null").unwrap();
    rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::empty()).unwrap();
    let leaked = file.as_raw_fd();
    for m in [Spawn, ForkServer] {
        let mut p = mproc::get_context(m).process(report, (leaked,));
        p.start().unwrap();
        let (open, others) = p.result().unwrap();
        assert!(!open, "{m:?}: descriptor {leaked} leaked into the child");
        assert!(others.is_empty(), "{m:?}: the child holds {others:?}");
    }
    // Fork copies the process, descriptors included (documented on `StartMethod::Fork`).
    let mut p = mproc::get_context(Fork).process(report, (leaked,));
    p.start().unwrap();
    assert!(p.result().unwrap().0, "Fork keeps what fork() gives");
    drop(file);
}

/// The socket inodes this process holds.
fn socket_inodes() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let t = std::fs::read_link(e.path()).ok()?;
            let t = t.to_string_lossy().into_owned();
            t.starts_with("socket:").then_some(t)
        })
        .collect()
}

fn sockets_of_child(_: ()) -> std::collections::BTreeSet<String> {
    socket_inodes()
}

fn one(x: u32) -> u32 {
    x
}

// Issue 19, item 9: a `Fork` child used to inherit every pool's wake-up socketpair (plain
// descriptors outside the handle registry). It closes every mproc descriptor it was not
// given, the pool's included.
#[test]
fn a_fork_child_holds_none_of_a_pools_sockets() {
    let _one = ONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _w = watchdog("pool sockets in a fork child", 60);
    let before = socket_inodes();
    let pool = mproc::Pool::builder()
        .processes(1)
        .start_method(ForkServer)
        .build()
        .unwrap();
    assert_eq!(pool.apply(one, (1,)).unwrap(), 1);
    let pools: std::collections::BTreeSet<String> =
        socket_inodes().difference(&before).cloned().collect();
    assert!(!pools.is_empty(), "the pool holds sockets");
    let mut p = mproc::get_context(Fork).process(sockets_of_child, ((),));
    p.start().unwrap();
    let inherited: Vec<String> = p.result().unwrap().intersection(&pools).cloned().collect();
    assert!(
        inherited.is_empty(),
        "the fork child holds the pool's {inherited:?}"
    );
    drop(pool);
}
