//! A manager client that writes its own rings' memory cannot keep what it held after it
//! dies: a client's death always runs its connection's cleanup, and the server's connection
//! thread waits on a client's ring only in bounded attempts, looking at the client between
//! them (but for the ring's own wait for the rest of a begun item: see the ignored test).
//!
//! Each hostile client is a child process that holds a manager lock on a connection of its
//! own (a fresh thread: connections are per thread), finds that connection's two rings
//! among its memfds (the request ring is made first, so it has the lower descriptor), and
//! writes into them through `/proc/self/fd`, as any process that maps them could. The
//! layout it writes (the control page's words, a frame header) is the ring's of today; the
//! child checks the ring's magic and that its words look idle before it writes, so a change
//! of layout fails these tests with a message rather than silently testing nothing.

mod util;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mproc::{EventProxy, LockProxy};
use util::*;

const LONG: Duration = Duration::from_secs(20);

// The ring's layout (src/queue/ring/control.rs, frame.rs): a 4 KiB control page of
// 128-byte groups, then the data area of 8-byte units.
const MAGIC: u32 = u32::from_le_bytes(*b"mpQ2");
const CAPACITY_AT: u64 = 8;
/// The producer lock's word: its block is the second group, the word 40 bytes in.
const PLOCK_WORD_AT: u64 = 128 + 40;
/// `(items << 32) | position in units`.
const TAIL_AT: u64 = 384;
const HEAD_AT: u64 = 768;
const DATA_AT: u64 = 4096;
const KIND_FIRST: u32 = 1;
/// `FUTEX_WAITERS`: a taker sleeps on the lock word.
const WAITERS: u32 = 0x8000_0000;

type Res<T> = std::result::Result<T, String>;

/// The memfd descriptors of queue rings this process holds, ascending.
fn ring_fds() -> Vec<u32> {
    let mut fds: Vec<u32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("/memfd:mproc-queue"))
                })
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

/// One ring's memory, opened for reading and writing.
struct RingFile(File);

impl RingFile {
    fn open(fd: u32) -> Res<RingFile> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .map_err(|e| format!("open memfd {fd}: {e}"))?;
        let r = RingFile(f);
        if r.u32_at(0)? != MAGIC {
            return Err("not a ring of the expected layout (magic)".into());
        }
        if r.u64_at(CAPACITY_AT)? != 64 << 10 {
            return Err("not a manager ring (capacity)".into());
        }
        Ok(r)
    }

    fn u32_at(&self, at: u64) -> Res<u32> {
        let mut b = [0u8; 4];
        self.0
            .read_exact_at(&mut b, at)
            .map_err(|e| e.to_string())?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64_at(&self, at: u64) -> Res<u64> {
        let mut b = [0u8; 8];
        self.0
            .read_exact_at(&mut b, at)
            .map_err(|e| e.to_string())?;
        Ok(u64::from_le_bytes(b))
    }

    fn put_at(&self, at: u64, bytes: &[u8]) -> Res<()> {
        self.0.write_all_at(bytes, at).map_err(|e| e.to_string())
    }

    /// Waits up to 5 s for `ok` to hold of the ring.
    fn await_state(&self, what: &str, ok: impl Fn(&RingFile) -> Res<bool>) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ok(self)? {
            if Instant::now() >= deadline {
                return Err(format!("the server never {what}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

/// Takes `lock` on a connection of a fresh thread and returns that connection's request
/// and reply rings; the thread keeps the lock, runs `then` with the rings, and then sleeps
/// until the process dies.
fn hold_on_own_connection(
    lock: LockProxy,
    then: impl FnOnce(RingFile, RingFile, &mpsc::Sender<Res<()>>) + Send + 'static,
) -> Res<()> {
    let before = ring_fds();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rings = (|| {
            let guard = lock.acquire().map_err(|e| format!("acquire: {e}"))?;
            // Held for the life of the process: a guard's drop would release it.
            std::mem::forget(guard);
            let new: Vec<u32> = ring_fds()
                .into_iter()
                .filter(|fd| !before.contains(fd))
                .collect();
            match new[..] {
                [requests, replies] => Ok((RingFile::open(requests)?, RingFile::open(replies)?)),
                _ => Err(format!("expected two new rings, found {new:?}")),
            }
        })();
        match rings {
            Ok((requests, replies)) => then(requests, replies, &tx),
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
        // Keep the connection (and the proxy) alive: the process is killed.
        loop {
            std::thread::park();
        }
    });
    rx.recv_timeout(LONG)
        .map_err(|_| "the holding thread never reported".to_string())?
}

/// Holds `lock`, then publishes the first piece of a streamed request on its request ring
/// and nothing after it (no producer holds the ring's lock, none is marked mid-item): the
/// server's consumer waits for the rest. Sets `ready` once the server has taken the piece.
fn scribble_requests(lock: LockProxy, ready: EventProxy) -> mproc::Result<()> {
    hold_on_own_connection(lock, |requests, _, tx| {
        let r = (|| {
            let tail = requests.u64_at(TAIL_AT)?;
            let head = requests.u64_at(HEAD_AT)?;
            if tail != head || tail >> 32 == 0 {
                return Err(format!(
                    "request ring not idle: tail {tail:#x} head {head:#x}"
                ));
            }
            let pos = tail as u32;
            // A `First` frame of 8 payload bytes: two units.
            let at = DATA_AT + (u64::from(pos) * 8) % (64 << 10);
            let mut frame = [0u8; 16];
            frame[..4].copy_from_slice(&8u32.to_le_bytes());
            frame[4..8].copy_from_slice(&KIND_FIRST.to_le_bytes());
            requests.put_at(at, &frame)?;
            // The tail's position only (its low half): the item count stays.
            let next = pos.wrapping_add(2);
            requests.put_at(TAIL_AT, &next.to_le_bytes())?;
            requests.await_state("took the first piece", |r| {
                Ok(r.u64_at(HEAD_AT)? as u32 == next)
            })
        })();
        let _ = tx.send(r);
    })
    .map_err(mproc::Error::ValueError)?;
    ready.set()?;
    loop {
        std::thread::park();
    }
}

/// Holds `lock`, then writes its own thread id into its reply ring's producer lock, as a
/// holder that never registered it with the kernel (so its death marks nothing), and makes
/// a call whose reply the server cannot put. Sets `ready` once the server sleeps on that
/// lock.
fn scribble_reply_lock(lock: LockProxy, ready: EventProxy) -> mproc::Result<()> {
    let probe = ready.clone();
    hold_on_own_connection(lock, move |_, replies, tx| {
        let r = (|| {
            // The server releases the lock just after it published our last reply.
            replies.await_state("released the reply ring's lock", |r| {
                Ok(r.u32_at(PLOCK_WORD_AT)? == 0)
            })?;
            // The main thread's id is the pid: alive until the process is killed.
            replies.put_at(PLOCK_WORD_AT, &std::process::id().to_le_bytes())?;
            Ok(replies)
        })();
        match r {
            Ok(replies) => {
                // Reported from a helper: this thread blocks in the call below.
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let r = replies.await_state("waited for the reply ring's lock", |r| {
                        Ok(r.u32_at(PLOCK_WORD_AT)? & WAITERS != 0)
                    });
                    let _ = tx.send(r);
                });
                // Never answered: the server cannot put the reply.
                let _ = probe.is_set();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })
    .map_err(mproc::Error::ValueError)?;
    ready.set()?;
    loop {
        std::thread::park();
    }
}

/// One manager at a time in this binary: its server is then the one new child named so.
static ONE_MANAGER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn manager_servers() -> Vec<u32> {
    mproc::active_children()
        .into_iter()
        .filter(|p| p.name().starts_with("SyncManager-"))
        .map(|p| p.pid())
        .collect()
}

/// The server's connection threads (named `mproc-manager-conn-N`, cut to 15 bytes).
fn conn_threads(server: u32) -> usize {
    std::fs::read_dir(format!("/proc/{server}/task"))
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("mproc-manager-c"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Starts `child` holding the manager lock, waits until it has done its harm, kills it,
/// and asserts that the lock comes free within `within` of its death; then, if
/// `thread_ends`, that the server's thread for the child's connection ends too (it must
/// not stay blocked on the dead client's ring).
fn lock_is_freed_after<F>(child: F, what: &str, within: Duration, thread_ends: bool)
where
    F: mproc::Target<(LockProxy, EventProxy), mproc::Result<()>>,
{
    let _one = ONE_MANAGER.lock().unwrap_or_else(|e| e.into_inner());
    let before = manager_servers();
    let m = mproc::Manager::start().unwrap();
    let server = *manager_servers()
        .iter()
        .find(|p| !before.contains(p))
        .expect("the new manager's server");
    let (lock, ready) = (m.lock().unwrap(), m.event().unwrap());
    let threads = conn_threads(server);
    let p = mproc::spawn(child, (lock.clone(), ready.clone())).unwrap();
    if !ready.wait_timeout(LONG).unwrap() {
        let _ = p.kill();
        panic!("{what}: the child never got ready: {:?}", p.result());
    }
    assert!(
        lock.try_acquire().unwrap().is_none(),
        "{what}: the child holds the lock"
    );
    p.kill().unwrap();
    assert!(
        wait_dead(p.pid().unwrap(), 10),
        "{what}: the child did not die"
    );
    let t = Instant::now();
    let got = lock.acquire_timeout(Duration::from_secs(10)).unwrap();
    let took = t.elapsed();
    assert!(
        got.is_some(),
        "{what}: the dead child's lock was never freed ({took:?})"
    );
    assert!(
        took < within,
        "{what}: the dead child's lock was freed only after {took:?}"
    );
    if thread_ends {
        let deadline = Instant::now() + Duration::from_secs(5);
        while conn_threads(server) > threads {
            assert!(
                Instant::now() < deadline,
                "{what}: the server's thread for the dead child is still there after {:?}",
                t.elapsed()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_client_that_scribbled_its_request_ring_loses_its_lock_when_it_dies() {
    let _s = shared();
    let _w = watchdog("scribbled_request_ring", 60);
    lock_is_freed_after(
        scribble_requests,
        "a first piece left alone on the request ring",
        Duration::from_secs(2),
        false,
    );
}

// The ring's consumer drops a first piece its dead producer left alone (issue 19 item 1,
// `queue/ring/consume.rs`), so the connection's thread ends too, not only its cleanup.
#[test]
fn the_thread_of_a_client_that_scribbled_its_request_ring_ends_when_it_dies() {
    let _s = shared();
    let _w = watchdog("scribbled_request_ring_thread", 60);
    lock_is_freed_after(
        scribble_requests,
        "a first piece left alone on the request ring",
        Duration::from_secs(2),
        true,
    );
}

#[test]
fn a_client_that_holds_its_reply_rings_lock_loses_its_lock_when_it_dies() {
    let _s = shared();
    let _w = watchdog("held_reply_ring_lock", 60);
    lock_is_freed_after(
        scribble_reply_lock,
        "the reply ring's producer lock held by the dead client",
        Duration::from_secs(2),
        true,
    );
}
