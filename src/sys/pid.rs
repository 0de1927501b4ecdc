//! Process identity and `/proc`: the one place that asks who a process is.
//!
//! **One pid type.** A pid is a `u32` everywhere in mproc (what `std::process::id` and
//! `Process::pid` give); the conversion to the kernel's signed `pid_t` happens here and in
//! the few calls of `sys::process` that pass one to the kernel.
//!
//! [`current`] is asked often (process records, log records), so the pid is cached, tagged
//! with [`robust::fork_generation`](super::robust::fork_generation), which changes in the
//! child of every fork (libc's, through `pthread_atfork`, and the fork server's raw
//! `clone`): a child then asks the kernel again.
//!
//! No lock asks whether its owner's pid is alive: pids are recycled, so the queue ring's
//! locks learn of a dead owner from the kernel's robust-futex list instead.
//!
//! Every other `/proc` read of the crate is here too: the running executable, a process's
//! parent and executable, the pid namespace, the thread count.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::robust;

/// `(fork generation << 32) | pid`, or `NOT_CACHED`.
static PID: AtomicU64 = AtomicU64::new(NOT_CACHED);
const NOT_CACHED: u64 = 0;

/// This process's id (never 0).
#[inline]
pub(crate) fn current() -> u32 {
    let cached = PID.load(Ordering::Relaxed);
    if cached != NOT_CACHED && (cached >> 32) as u32 == robust::fork_generation() {
        return cached as u32;
    }
    current_slow()
}

#[cold]
fn current_slow() -> u32 {
    // Installed before the first read of the generation, so no fork goes unnoticed after.
    robust::watch_forks();
    let generation = robust::fork_generation();
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    PID.store(
        (u64::from(generation) << 32) | u64::from(pid),
        Ordering::Relaxed,
    );
    pid
}

/// The kernel's form of `pid`, if it is one (1 ..= `i32::MAX`).
pub(crate) fn to_kernel(pid: u32) -> Option<rustix::process::Pid> {
    rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)
}

/// Field `n` (1-based, as in proc(5)) of `/proc/<who>/stat`, for `n >= 3`. The command name
/// (field 2) is in parentheses and may contain spaces: count from the last `)`.
fn stat_field(who: &str, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{who}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n - 3).map(str::to_string)
}

/// When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat` field 22):
/// with the pid, an identity that a recycled pid does not share.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    stat_field(&pid.to_string(), 22)?.parse().ok()
}

/// The number of threads in this process (1 if unknown).
pub(crate) fn thread_count() -> usize {
    stat_field("self", 20)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// Whether `tid` names a live thread of the calling process.
pub(crate) fn is_own_thread(tid: u32) -> bool {
    std::fs::metadata(format!("/proc/self/task/{tid}")).is_ok()
}

/// A path that opens the running executable, even if its file was renamed or replaced.
pub(crate) fn self_exe() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

/// A fingerprint of the executable file at `path` (device, inode, size, mtime), so that a
/// child can tell whether it runs the same binary as its parent.
pub(crate) fn exe_identity(path: &Path) -> io::Result<[u64; 4]> {
    let st = rustix::fs::stat(path)?;
    Ok([
        st.st_dev,
        st.st_ino,
        st.st_size as u64,
        (st.st_mtime as u64).wrapping_mul(1_000_000_007) ^ st.st_mtime_nsec as u64,
    ])
}

/// One mapping of the running executable's file (`/proc/self/maps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ImageMapping {
    /// First address.
    pub(crate) start: usize,
    /// One past the last address.
    pub(crate) end: usize,
    /// Whether it may be written (`w`).
    pub(crate) writable: bool,
    /// Whether it holds code (`x`).
    pub(crate) executable: bool,
}

/// The mappings of the running executable's own file, read once per process image (a
/// forked child inherits them: its mappings are the parent's). Empty if they could not be
/// read *this time*: a failure (no descriptor free, `/proc` briefly unreadable) is not
/// remembered, so the next call reads again rather than refusing every later entry.
pub(crate) fn image_mappings() -> &'static [ImageMapping] {
    try_image_mappings().unwrap_or(&[])
}

/// As [`image_mappings`], with the reason they could not be read.
pub(crate) fn try_image_mappings() -> std::io::Result<&'static [ImageMapping]> {
    static MAPS: std::sync::OnceLock<Vec<ImageMapping>> = std::sync::OnceLock::new();
    if let Some(maps) = MAPS.get() {
        return Ok(maps);
    }
    let maps = read_image_mappings()?;
    Ok(MAPS.get_or_init(|| maps))
}

fn read_image_mappings() -> std::io::Result<Vec<ImageMapping>> {
    let malformed =
        || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed /proc/self/maps");
    // The executable's file, by device and inode: its path may have been replaced since.
    let st = rustix::fs::stat("/proc/self/exe")?;
    let dev = format!(
        "{:02x}:{:02x}",
        rustix::fs::major(st.st_dev),
        rustix::fs::minor(st.st_dev)
    );
    let ino = st.st_ino.to_string();
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut out = Vec::new();
    for line in maps.lines() {
        // start-end perms offset dev inode [path]
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(_), Some(d), Some(i)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if d != dev || i != ino {
            continue;
        }
        let (a, b) = range.split_once('-').ok_or_else(malformed)?;
        let perms = perms.as_bytes();
        if perms.first() != Some(&b'r') {
            continue;
        }
        out.push(ImageMapping {
            start: usize::from_str_radix(a, 16).map_err(|_| malformed())?,
            end: usize::from_str_radix(b, 16).map_err(|_| malformed())?,
            writable: perms.get(1) == Some(&b'w'),
            executable: perms.get(2) == Some(&b'x'),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_is_alive_and_cached() {
        assert_eq!(current(), std::process::id());
        assert_eq!(current(), std::process::id());
        assert!(start_time(current()).is_some());
        assert_ne!(start_time(current()), None);
        assert!(thread_count() >= 1);
        assert!(is_own_thread(super::super::robust::gettid()));
        // This very function is code of the executable; a heap address is not in it.
        let code = self_is_alive_and_cached as fn() as usize;
        let maps = image_mappings();
        assert!(
            maps.iter()
                .any(|m| m.executable && (m.start..m.end).contains(&code))
        );
        let heap = Box::new(0u64);
        let heap = &*heap as *const u64 as usize;
        assert!(!maps.iter().any(|m| (m.start..m.end).contains(&heap)));
    }
}
