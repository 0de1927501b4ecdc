//! `SharedMemory`: named POSIX shared-memory segments (`/dev/shm`), Python's
//! `multiprocessing.shared_memory.SharedMemory`.
//!
//! **Cleanup.** A segment a program creates and never unlinks is unlinked when that
//! program's process tree ends, however it ends (a normal exit, a panic, SIGKILL), by the
//! tree's tracker process (`tracker.rs`): creating a segment registers its name there, and a
//! creation that cannot be registered fails rather than leave a segment nobody would remove.
//! [`SharedMemory::unlink`] and [`SharedMemory::persist`] (Python's `track=False`)
//! unregister it. Children never unlink on exit (unlike CPython's per-process tracking, which
//! destroys segments still in use elsewhere); opening a segment by name tracks nothing.
//!
//! **Truncation.** A named object cannot be sealed (unlike the memfds behind every other
//! shared structure), so, as in Python, any process that can open a segment can
//! `ftruncate` it, and every process mapping it then dies of `SIGBUS` on its next touch
//! past the new end. Share segment names only with processes you trust that far.

use std::fmt;
use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::cell;
use super::region::Region;
use super::tracker;
use crate::codec::HandleFd;
use crate::error::{Error, Result};
use crate::sys::{mman, shm};

/// A named shared-memory segment: bytes that any process can open by name.
///
/// A handle sent to a child (in its arguments or a message) carries the segment's
/// descriptor, not just its name: the child maps the same memory even if the name was
/// unlinked in between (where unpickling in Python fails with `FileNotFoundError`).
/// Bytes are read and written by volatile copies ([`read_at`](SharedMemory::read_at),
/// [`write_at`](SharedMemory::write_at)), never through a `&[u8]` that another process
/// could change underneath; coordinate writers with a [`Lock`](crate::Lock).
///
/// As in Python, a process that truncates the segment (by name) makes every process
/// mapping it die of `SIGBUS`: named objects, unlike mproc's other shared memory, cannot
/// be sealed against shrinking.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// let a = mproc::SharedMemory::create(16)?;
/// a.write_at(0, b"hello")?;
/// let b = mproc::SharedMemory::open(a.name())?;
/// let mut buf = [0u8; 5];
/// b.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// a.unlink()?;
/// assert!(mproc::SharedMemory::open(a.name()).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct SharedMemory {
    #[serde(deserialize_with = "Region::deserialize_unsealed")]
    region: Arc<Region>,
    name: String,
    size: usize,
}

impl SharedMemory {
    /// Creates a segment of `size` bytes with a fresh unique name (Python's
    /// `SharedMemory(create=True, size=size)`).
    pub fn create(size: usize) -> Result<Self> {
        loop {
            let name = format!("mproc_{:016x}", shm::random_u64());
            match SharedMemory::create_named(&name, size) {
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                other => return other,
            }
        }
    }

    /// Creates the segment `name` of `size` bytes; `Err(Error::Io)` of kind
    /// `AlreadyExists` if it exists, `Err(Error::ValueError)` for size 0 or a bad name.
    pub fn create_named(name: &str, size: usize) -> Result<Self> {
        let name = check_name(name)?;
        if size == 0 {
            return Err(Error::ValueError(
                "shared memory size must be a positive number".into(),
            ));
        }
        let fd = shm::create(&format!("/{name}"), size)?;
        let region = match Region::map(HandleFd::new(fd), size) {
            Ok(r) => r,
            Err(e) => {
                let _ = shm::unlink(&format!("/{name}"));
                return Err(e);
            }
        };
        if let Err(e) = tracker::register(name) {
            // Nobody would remove it at the end: do not leave it behind.
            let _ = shm::unlink(&format!("/{name}"));
            return Err(Error::from(io::Error::new(
                e.kind(),
                format!("cannot track shared memory segment {name:?} for cleanup: {e}"),
            )));
        }
        Ok(SharedMemory {
            region: Arc::new(region),
            name: name.to_string(),
            size,
        })
    }

    /// Opens the existing segment `name`; `Err(Error::Io)` of kind `NotFound` if there is
    /// none.
    pub fn open(name: &str) -> Result<Self> {
        let name = check_name(name)?;
        let fd = shm::open(&format!("/{name}"))?;
        let size = mman::fd_size(std::os::fd::AsFd::as_fd(&fd))?;
        if size == 0 {
            return Err(Error::ValueError(format!(
                "shared memory segment {name:?} is empty"
            )));
        }
        Ok(SharedMemory {
            region: Arc::new(Region::map(HandleFd::new(fd), size)?),
            name: name.to_string(),
            size,
        })
    }

    /// The segment's name (without a leading `/`), as `open` takes it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Removes the name: no new process can open it; the memory lives while mapped.
    /// Unlinking twice is `Err(Error::Io)` of kind `NotFound`, as in Python.
    pub fn unlink(&self) -> Result<()> {
        shm::unlink(&format!("/{}", self.name))?;
        self.persist();
        Ok(())
    }

    /// Stops tracking the segment: it is no longer unlinked when the program's process
    /// tree is done (Python's `track=False`).
    pub fn persist(&self) {
        let _ = tracker::unregister(&self.name);
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        cell::read_bytes(&self.region, offset, buf);
        Ok(())
    }

    /// Copies `data` into the segment at `offset`.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        cell::write_bytes(&self.region, offset, data);
        Ok(())
    }

    /// A copy of the whole segment.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.size];
        cell::read_bytes(&self.region, 0, &mut v);
        v
    }

    /// The start of this process's mapping, for code that manages its own
    /// synchronization (valid while any clone of this handle lives).
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.as_ptr()
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::ValueError(format!(
                "range {offset}..{} is outside the {}-byte segment",
                offset.saturating_add(len),
                self.size
            ))),
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedMemory({:?}, size={})", self.name, self.size)
    }
}

/// Python's rules, plus the kernel's: no NUL, no `/` after an optional leading one.
fn check_name(name: &str) -> Result<&str> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare.contains('\0') || bare.contains('/') || bare.len() > 255 {
        return Err(Error::ValueError(format!(
            "invalid shared memory name {name:?}"
        )));
    }
    Ok(bare)
}

#[ctor::ctor(unsafe)]
fn install_exit_sweep() {
    // Before `main`: every process of the program registers the hook; only a tree's root
    // acts on it.
    crate::sys::process::at_exit(sweep_at_exit);
}

/// Run at normal exit of every process: the root of a tree has the tracker sweep.
extern "C" fn sweep_at_exit() {
    tracker::sweep_at_exit();
}
