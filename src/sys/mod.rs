//! The platform layer: the only home of syscalls.
//!
//! Linux is the platform mproc ships. Each file wraps one family of calls and returns
//! `io::Result`; callers above convert to `mproc::Error` once. A macOS port is a new set of
//! files here, not a rewrite: nothing outside `sys/` names a syscall or a `cfg(target_os)`.
//!
//! # Safety
//! * Every descriptor is created CLOEXEC and owned by an `OwnedFd`; inheritance is always
//!   explicit (`fd::set_inheritable` on the child's side, or SCM_RIGHTS).
//! * Between `fork` and `_exit`/`exec`, the child of a multithreaded parent may run only
//!   async-signal-safe code; see `process::fork`.
//! * Futexes are shared (never `FUTEX_PRIVATE_FLAG`): their words live in memory that other
//!   processes map.
//!
//! **The audit list.** `unsafe_code` is denied crate-wide and re-allowed, file by file, here
//! and in: `target.rs` with `target/record.rs` (an entry read from a checked record, a
//! zero-sized target conjured),
//! `start/{mod,fork,forkserver}.rs` (the `fork`/`clone` calls, the environment edit before
//! `main`), `shared/{region,pod,cell}.rs` (the shared mapping and its plain-old-data views),
//! `sync/raw/robust.rs` (the robust-list entries), `queue/ring/memory.rs` (the ring's
//! control page and bulk copies into its data area) and, in tests only, `shim/model.rs`
//! (the model kernel's walk of a dead thread's robust list) and `queue/ring/runtime.rs`
//! (loom's checked cells shared by the model's threads). `grep -rl 'allow(unsafe_code)' src` must list exactly these.

#![allow(unsafe_code)]

pub(crate) mod dgram;
pub(crate) mod fd;
pub(crate) mod futex;
pub(crate) mod limits;
pub(crate) mod mman;
pub(crate) mod net;
pub(crate) mod pid;
pub(crate) mod prctl;
pub(crate) mod process;
pub(crate) mod ready;
pub(crate) mod robust;
pub(crate) mod sandbox;
pub(crate) mod sched;
pub(crate) mod seqpacket;
pub(crate) mod shm;
pub(crate) mod signal;
pub(crate) mod stream;
