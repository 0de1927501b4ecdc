//! Test helpers: a watchdog so nothing hangs CI, and process-table probes for leak checks.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(crate) use mproc::StartMethod::{self, Fork, ForkServer, Spawn};

/// Every start method, for tests that must hold under each.
pub(crate) const METHODS: [StartMethod; 3] = [Fork, Spawn, ForkServer];

/// Fails the whole test binary with a message if not dropped within `secs` seconds.
pub(crate) struct Watchdog {
    done: Arc<AtomicBool>,
}

pub(crate) fn watchdog(what: &'static str, secs: u64) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("watchdog: '{what}' did not finish within {secs} s: it hangs");
        // Not `exit`: that runs mproc's exit hook, which joins the non-daemon children,
        // and a child stuck with the test would keep the watchdog from ending it. The
        // children die with this process (their parent-death watch).
        std::process::abort();
    });
    Watchdog { done }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Open descriptors of this process.
pub(crate) fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The state letter of process `pid` ('R', 'S', 'Z', ...), or None if it is gone.
pub(crate) fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].chars().next()
}

/// Whether `pid` is gone or a zombie (dead either way).
pub(crate) fn is_dead(pid: u32) -> bool {
    matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

/// Waits up to `secs` for `pid` to die.
pub(crate) fn wait_dead(pid: u32, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Zombie children of this process (all threads).
pub(crate) fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) {
        for t in tasks.flatten() {
            let path = t.path().join("children");
            if let Ok(s) = std::fs::read_to_string(path) {
                for pid in s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
                    if proc_state(pid) == Some('Z') {
                        out.push(pid);
                    }
                }
            }
        }
    }
    out
}

/// Tests that count descriptors or children take this exclusively; every other test in
/// the binary takes it shared, so the counts are not skewed by parallel tests.
pub(crate) static COUNTING: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub(crate) fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    COUNTING.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    COUNTING.write().unwrap_or_else(|e| e.into_inner())
}

/// The pids of this process's children (every thread's).
pub(crate) fn child_pids() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Writes `bytes` on every socket this process holds, as a hostile task (or a C library
/// scribbling on descriptors) could: only std, no knowledge of mproc's types.
pub(crate) fn write_on_every_socket(bytes: &[u8]) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        let is_socket = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|p| p.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        #[allow(unsafe_code)]
        // SAFETY: `fd` is open in this process (just listed); ManuallyDrop keeps the
        // stream from closing it, so ownership is never really taken.
        let s =
            std::mem::ManuallyDrop::new(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) });
        let _ = (&*s).write_all(bytes);
    }
}

/// Writes `fill(len)` over each mapping of this process whose name contains `name` (a
/// memfd's), through `/proc/self/mem`, as any code in the process could; how many.
pub(crate) fn scribble_mappings(name: &str, fill: impl Fn(usize) -> Vec<u8>) -> usize {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")
        .unwrap();
    let mut found = 0;
    for line in maps.lines().filter(|l| l.contains(name)) {
        let range = line.split_whitespace().next().unwrap();
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let _ = mem.write_all_at(&fill((end - start) as usize), start);
        found += 1;
    }
    found
}

/// Bytes that serialize as one byte string (what `serde_bytes` does): bulk copies all the
/// way, where a `Vec<u8>` is a sequence encoded byte by byte.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Blob(pub(crate) Vec<u8>);

impl serde::Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, b: &[u8]) -> Result<Blob, E> {
                Ok(Blob(b.to_vec()))
            }
            fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(b))
            }
        }
        d.deserialize_byte_buf(V)
    }
}
