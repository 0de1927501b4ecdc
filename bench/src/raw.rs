//! The raw floors: the same work with nothing but std and libc, between forked processes.
//! Each is the least an OS-process design can cost for that row on this machine.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::measure::{per_op, reps, rounds};

/// Runs workload `w` with `n` operations per repetition; `None` if there is no floor for it.
pub fn run(w: &str, n: u64, r: usize) -> Option<Vec<f64>> {
    Some(match w {
        "start_fork" => reps(r, || fork_join(n / 10 + 1), || fork_join(n)),
        "start_forkserver" => fork_server(n, r),
        "start_spawn" => reps(r, || reexec(1), || reexec(n)),
        "pipe_rtt" => uds_pingpong(n, r),
        "pipe_bw" => socket_bulk(1 << 20, n, r),
        "pipe_idle_cpu" | "queue_idle_cpu" => crate::transport::raw_idle_cpu(n, r),
        "pipe_oversub" => crate::transport::raw_oversub(n, r),
        "queue_64mib" => socket_bulk(64 << 20, n, r),
        "lock_uncontended" => cas_lock(n, r),
        "value_incr" => reps(r, || counter(n / 10 + 1), || counter(n)),
        "event_wake" => futex_pingpong(n, r, Duration::ZERO)
            .into_iter()
            .map(|x| x / 2.0)
            .collect(),
        "queue_rtt" => futex_pingpong(n, r, Duration::from_micros(20)),
        "queue_stream" => uds_stream(n, r),
        "pi_serial" => reps(
            r,
            || pi_check(calc_pi(0, 1, 1000)),
            || per_op(1, || pi_check(calc_pi(0, 1, std::hint::black_box(n)))),
        ),
        w if w.starts_with("listener_") => return crate::net::raw(w, n, r),
        // Not an OS floor: the same pool without its isolation (see `isolation.rs`).
        w if w.ends_with("_isolated") => return crate::isolation::plain(w, n, r),
        "pi_pool" => reps(
            r,
            || pi_check(fork_pi(1000)),
            || per_op(1, || pi_check(fork_pi(n))),
        ),
        "pool_hetero" => {
            let tasks = hetero_tasks(n);
            reps(
                r,
                || threads_pull(&[1, 1]),
                || per_op(1, || threads_pull(&tasks)),
            )
        }
        _ => return None,
    })
}

/// The heterogeneous batch: one sleep of `n` ms, then `n / 10` sleeps of 10 ms (the same
/// total on the other worker, so the ideal schedule takes `n` ms).
pub fn hetero_tasks(n: u64) -> Vec<u64> {
    std::iter::once(n).chain((0..n / 10).map(|_| 10)).collect()
}

/// The ideal schedule of `tasks` (sleeps, in ms) on 2 workers: two threads that each take
/// the next task from one shared list when free.
fn threads_pull(tasks: &[u64]) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while let Some(&ms) =
                    tasks.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    std::thread::sleep(Duration::from_millis(ms));
                }
            });
        }
    });
}

/// This process's CPU time (user + system, all threads), in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero `rusage` is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call's duration.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds this process uses per second while `idle` runs (`secs` seconds of it).
pub fn cpu_per_idle_second(secs: u64, idle: impl FnOnce()) -> f64 {
    let before = cpu_seconds();
    idle();
    (cpu_seconds() - before) / secs.max(1) as f64
}

/// The midpoint rule for pi, over ranks `rank, rank + nprocs, ...` of `n` steps.
pub fn calc_pi(rank: u64, nprocs: u64, n: u64) -> f64 {
    let dx = 1.0 / n as f64;
    let mut s = 0.0f64;
    let mut i = rank;
    while i < n {
        let x = (i as f64 + 0.5) * dx;
        s += 4.0 / (1.0 + x * x);
        i += nprocs;
    }
    s * dx
}

/// Panics unless `pi` is close enough for the step counts used (≥ 1000 steps).
pub fn pi_check(pi: f64) {
    assert!(
        (pi - std::f64::consts::PI).abs() < 1e-6,
        "pi came out as {pi}"
    );
}

/// Closes the child's copy of the parent's end, so that the parent's close is the child's EOF.
pub(crate) fn close_in_child(end: &UnixStream) {
    // SAFETY: called only in a forked child, which never uses or drops `end` again (it
    // leaves with _exit).
    unsafe { libc::close(end.as_raw_fd()) };
}

/// Forks a child that runs `f` and `_exit(0)`s; returns its pid.
pub(crate) fn fork_with(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the harness worker forks before it starts any thread of its own; the child
    // only runs `f` (plain syscalls and atomics) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        f();
        // SAFETY: _exit ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    pid
}

pub(crate) fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: pid is our own child; status is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status}"
    );
}

fn fork_join(n: u64) -> f64 {
    per_op(n, || {
        for _ in 0..n {
            reap(fork_with(|| {}));
        }
    })
}

/// A minimal fork server: a forked server process that, per request byte, forks a no-op
/// child, reaps it and answers one byte. The floor of a ForkServer start + join: a fork plus
/// one round trip to the server.
fn fork_server(n: u64, r: usize) -> Vec<f64> {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let server = fork_with(|| {
        close_in_child(&a);
        let mut req = [0u8; 1];
        while b.read_exact(&mut req).is_ok() {
            reap(fork_with(|| {}));
            if b.write_all(&req).is_err() {
                break;
            }
        }
    });
    let round = |k: u64| {
        let mut buf = [0u8; 1];
        for _ in 0..k {
            a.write_all(&[1]).expect("request");
            a.read_exact(&mut buf).expect("answer");
        }
    };
    let v = rounds(r, 2, n, round);
    drop(a);
    reap(server);
    v
}

fn reexec(n: u64) -> f64 {
    let exe = std::env::current_exe().expect("the harness knows its own path");
    per_op(n, || {
        for _ in 0..n {
            let st = std::process::Command::new(&exe)
                .arg("noop")
                .status()
                .expect("re-exec");
            assert!(st.success());
        }
    })
}

fn uds_pingpong(n: u64, r: usize) -> Vec<f64> {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let pid = fork_with(|| {
        close_in_child(&a);
        let mut buf = [0u8; 8];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 8];
    let round = |k: u64| {
        for i in 0..k {
            a.write_all(&i.to_le_bytes()).expect("write");
            a.read_exact(&mut buf).expect("read");
        }
    };
    let v = rounds(r, 1000, n, round);
    drop(a);
    reap(pid);
    v
}

fn uds_stream(n: u64, r: usize) -> Vec<f64> {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let pid = fork_with(|| {
        // Sum each round of n messages and ack the sum; stop at EOF.
        close_in_child(&a);
        let mut buf = [0u8; 8];
        loop {
            let mut count = [0u8; 8];
            if b.read_exact(&mut count).is_err() {
                return;
            }
            let k = u64::from_le_bytes(count);
            let mut s = 0u64;
            for _ in 0..k {
                b.read_exact(&mut buf).expect("read");
                s = s.wrapping_add(u64::from_le_bytes(buf));
            }
            b.write_all(&s.to_le_bytes()).expect("ack");
        }
    });
    let round = |k: u64| {
        a.write_all(&k.to_le_bytes()).expect("write");
        for i in 0..k {
            a.write_all(&i.to_le_bytes()).expect("write"); // one write() per message
        }
        let mut buf = [0u8; 8];
        a.read_exact(&mut buf).expect("ack");
        assert_eq!(u64::from_le_bytes(buf), k * k.saturating_sub(1) / 2);
    };
    let v = rounds(r, 1000, n, round);
    drop(a);
    reap(pid);
    v
}

/// `n` messages of `size` bytes per repetition over a socketpair; the reader reads each
/// whole message into one reused buffer and acks the byte count.
fn socket_bulk(size: usize, n: u64, r: usize) -> Vec<f64> {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let pid = fork_with(|| {
        close_in_child(&a);
        let mut buf = vec![0u8; size];
        loop {
            let mut count = [0u8; 8];
            if b.read_exact(&mut count).is_err() {
                return;
            }
            let mut got = 0u64;
            for _ in 0..u64::from_le_bytes(count) {
                b.read_exact(&mut buf).expect("read");
                got += buf.len() as u64;
            }
            b.write_all(&got.to_le_bytes()).expect("ack");
        }
    });
    let payload = vec![7u8; size];
    let round = |k: u64| {
        a.write_all(&k.to_le_bytes()).expect("write");
        for _ in 0..k {
            a.write_all(&payload).expect("write");
        }
        let mut ack = [0u8; 8];
        a.read_exact(&mut ack).expect("ack");
        assert_eq!(u64::from_le_bytes(ack), k * size as u64);
    };
    let v = rounds(r, 4, n, round);
    drop(a);
    reap(pid);
    v
}

/// One page of MAP_SHARED anonymous memory, inherited by forked children.
struct SharedPage(*mut libc::c_void);

impl SharedPage {
    fn new() -> SharedPage {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap failed");
        SharedPage(p)
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= 4096);
        // SAFETY: in bounds, aligned, zero-filled memory that lives as long as `self`;
        // every access goes through the atomic.
        unsafe { &*(self.0.cast::<u8>().add(offset).cast::<AtomicU32>()) }
    }

    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= 4096);
        // SAFETY: as for u32_at.
        unsafe { &*(self.0.cast::<u8>().add(offset).cast::<AtomicU64>()) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(); no reference into it outlives self.
        unsafe { libc::munmap(self.0, 4096) };
    }
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT (shared) on a valid aligned word; returns at once if it changed.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE (shared) on a valid aligned word.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

const STOP: u32 = u32::MAX;

/// Ping-pong on one shared word: the parent stores odd v, the child answers v + 1. A waiter
/// spins for up to `spin`, then sleeps in futex_wait. Seconds per round trip.
fn futex_pingpong(n: u64, r: usize, spin: Duration) -> Vec<f64> {
    let page = SharedPage::new();
    let word = page.u32_at(0);
    let wait_for = |want: u32| {
        let start = Instant::now();
        loop {
            let x = word.load(Ordering::Acquire);
            if x == want || x == STOP {
                return x;
            }
            if start.elapsed() < spin {
                std::hint::spin_loop();
            } else {
                futex_wait(word, x);
            }
        }
    };
    let pid = fork_with(|| {
        let mut expect = 1u32;
        while wait_for(expect) != STOP {
            word.store(expect + 1, Ordering::Release);
            futex_wake(word);
            expect = expect.wrapping_add(2);
        }
    });
    let mut v = 1u32;
    let round = |k: u64| {
        for _ in 0..k {
            word.store(v, Ordering::Release);
            futex_wake(word);
            wait_for(v + 1);
            v = v.wrapping_add(2);
        }
    };
    let out = rounds(r, 1000, n, round);
    word.store(STOP, Ordering::Release);
    futex_wake(word);
    reap(pid);
    out
}

/// Uncontended acquire + release of a word lock in shared memory: the fast path of any
/// futex lock (CAS 0 → 1, store 0).
fn cas_lock(n: u64, r: usize) -> Vec<f64> {
    let page = SharedPage::new();
    let word = page.u32_at(0);
    let round = |k: u64| {
        for _ in 0..k {
            while word
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                std::hint::spin_loop();
            }
            std::hint::black_box(word);
            word.store(0, Ordering::Release);
        }
    };
    rounds(r, 1000, n, round)
}

/// Two forked processes × n increments of a shared counter under a CAS spinlock that
/// yields after 100 spins. Seconds per increment.
fn counter(n: u64) -> f64 {
    let page = SharedPage::new();
    let counter = page.u64_at(0);
    let lock = page.u32_at(64);
    let go = page.u32_at(128);
    let work = || {
        while go.load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
        for _ in 0..n {
            let mut spins = 0;
            while lock
                .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                spins += 1;
                if spins > 100 {
                    // SAFETY: plain syscall.
                    unsafe { libc::sched_yield() };
                    spins = 0;
                }
                std::hint::spin_loop();
            }
            let v = counter.load(Ordering::Relaxed);
            counter.store(v + 1, Ordering::Relaxed);
            lock.store(0, Ordering::Release);
        }
    };
    let p1 = fork_with(work);
    let p2 = fork_with(work);
    let t = Instant::now();
    go.store(1, Ordering::Release);
    reap(p1);
    reap(p2);
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(counter.load(Ordering::SeqCst), 2 * n);
    dt / (2 * n) as f64
}

/// Pi over 2 forked children, one strided rank each; each sends its partial sum back
/// over a pipe.
fn fork_pi(n: u64) -> f64 {
    let mut total = 0.0;
    let mut kids = Vec::new();
    for rank in 0..2u64 {
        let mut fds = [0i32; 2];
        // SAFETY: fds is a valid out-array of two ints.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe failed");
        // SAFETY: pipe() returned two fresh descriptors that nothing else owns.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let pid = fork_with(|| {
            let part = calc_pi(rank, 2, n);
            let mut f = std::fs::File::from(wr.try_clone().expect("dup"));
            f.write_all(&part.to_le_bytes()).expect("write");
        });
        drop(wr);
        kids.push((pid, rd));
    }
    for (pid, rd) in kids {
        let mut f = std::fs::File::from(rd);
        let mut b = [0u8; 8];
        f.read_exact(&mut b).expect("read partial sum");
        total += f64::from_le_bytes(b);
        reap(pid);
    }
    total
}
