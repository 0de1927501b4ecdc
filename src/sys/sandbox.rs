//! The sandbox's kernel mechanisms: a Landlock ruleset for the filesystem and a seccomp
//! filter for syscalls, through the `landlock` and `seccompiler` crates (no hand-written
//! BPF), and probes the parent runs so that what the kernel cannot do is refused before a
//! child starts.
//!
//! Both restrict the calling process for the rest of its life and every process it starts;
//! neither can be undone. The seccomp filter covers every thread (TSYNC); Landlock (ABI < 8)
//! only the calling thread, so [`restrict_writes`] refuses to run in a process that has
//! other threads.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use landlock::{
    ABI, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, path_beneath_rules,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The Landlock ABI `read_only` needs: 3 (Linux 6.2) handles truncation, without which a
/// "read-only" file could still be emptied.
const LANDLOCK_ABI: ABI = ABI::V3;

/// What a seccomp filter refuses (with `EACCES`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Refusals {
    /// `socket`/`socketpair` outside `AF_UNIX`, and `io_uring_setup` (which can open
    /// sockets of its own).
    pub(crate) network: bool,
    /// `execve`, `execveat`.
    pub(crate) exec: bool,
    /// New processes: `fork`, `vfork`, `clone` without `CLONE_THREAD`; `clone3` says
    /// `ENOSYS` so that thread libraries fall back to `clone`.
    pub(crate) processes: bool,
    /// Changing rlimits (`setrlimit`, `prlimit64` with a new limit), which a privileged
    /// process could raise again.
    pub(crate) rlimits: bool,
}

impl Refusals {
    fn any(&self) -> bool {
        self.network || self.exec || self.processes || self.rlimits
    }
}

fn arch() -> io::Result<TargetArch> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else if cfg!(target_arch = "riscv64") {
        Ok(TargetArch::riscv64)
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "seccomp filters are built for x86_64, aarch64 and riscv64 only",
        ))
    }
}

/// Whether this kernel has seccomp filters (the parent's check before a child starts).
pub(crate) fn probe_seccomp() -> io::Result<()> {
    arch()?;
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    let rc = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this kernel enforces Landlock's write restrictions (ABI 3): a ruleset is
/// created and dropped, nothing is restricted.
pub(crate) fn probe_landlock() -> io::Result<()> {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_write(LANDLOCK_ABI))
        .and_then(|r| r.create())
        .map(drop)
        .map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e.to_string()))
}

/// Forbids creating, writing, truncating, renaming or removing any file except under
/// `writable`, for this process and its children. Reading is untouched.
pub(crate) fn restrict_writes(writable: &[PathBuf]) -> io::Result<()> {
    let threads = super::pid::thread_count();
    if threads > 1 {
        return Err(io::Error::other(format!(
            "the process has {threads} threads and Landlock restricts only the calling one"
        )));
    }
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_write(LANDLOCK_ABI))
        .and_then(|r| r.create())
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                writable,
                AccessFs::from_write(LANDLOCK_ABI),
            ))
        })
        .and_then(|r| r.restrict_self())
        .map_err(|e| io::Error::other(e.to_string()))?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(io::Error::other(format!(
            "landlock ruleset only {:?}",
            status.ruleset
        )));
    }
    Ok(())
}

fn unconditional() -> Vec<SeccompRule> {
    Vec::new()
}

fn when(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> io::Result<SeccompRule> {
    let cond = SeccompCondition::new(arg, len, op, value).map_err(io::Error::other)?;
    SeccompRule::new(vec![cond]).map_err(io::Error::other)
}

/// x86_64 also takes x32 syscalls: the same filter arch, numbers with bit 30 set (and
/// their own numbers for `execve`/`execveat`). Each rule is added for those too, or a task
/// could call around it.
#[cfg(target_arch = "x86_64")]
fn with_x32(rules: BTreeMap<i64, Vec<SeccompRule>>) -> BTreeMap<i64, Vec<SeccompRule>> {
    const X32: i64 = 0x4000_0000;
    let mut all = rules.clone();
    for (nr, chain) in rules {
        let x32 = match nr {
            libc::SYS_execve => 520,
            libc::SYS_execveat => 545,
            n => n,
        };
        all.insert(x32 | X32, chain);
    }
    all
}

#[cfg(not(target_arch = "x86_64"))]
fn with_x32(rules: BTreeMap<i64, Vec<SeccompRule>>) -> BTreeMap<i64, Vec<SeccompRule>> {
    rules
}

fn install(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> io::Result<()> {
    let rules = with_x32(rules);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch()?,
    )
    .map_err(io::Error::other)?;
    let program: BpfProgram = filter.try_into().map_err(io::Error::other)?;
    seccompiler::apply_filter_all_threads(&program).map_err(io::Error::other)
}

/// Installs the filter for `what` on every thread of this process (and sets
/// `no_new_privs`, which a filter needs and which also keeps setuid programs from gaining
/// privileges).
pub(crate) fn refuse(what: Refusals) -> io::Result<()> {
    if !what.any() {
        return Ok(());
    }
    let unix = libc::AF_UNIX as u64;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    if what.network {
        let other_domain = || when(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, unix);
        rules.insert(libc::SYS_socket, vec![other_domain()?]);
        rules.insert(libc::SYS_socketpair, vec![other_domain()?]);
        rules.insert(libc::SYS_io_uring_setup, unconditional());
    }
    if what.exec {
        rules.insert(libc::SYS_execve, unconditional());
        rules.insert(libc::SYS_execveat, unconditional());
    }
    if what.processes {
        let thread = libc::CLONE_THREAD as u64;
        let not_thread = when(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(thread),
            0,
        )?;
        rules.insert(libc::SYS_clone, vec![not_thread]);
        #[cfg(target_arch = "x86_64")]
        {
            rules.insert(libc::SYS_fork, unconditional());
            rules.insert(libc::SYS_vfork, unconditional());
        }
    }
    if what.rlimits {
        #[cfg(not(target_arch = "riscv64"))]
        rules.insert(libc::SYS_setrlimit, unconditional());
        let new_limit = when(2, SeccompCmpArgLen::Qword, SeccompCmpOp::Ne, 0)?;
        rules.insert(libc::SYS_prlimit64, vec![new_limit]);
    }
    install(rules, libc::EACCES)?;
    if what.processes {
        // clone3's flags are in memory a filter cannot read: refuse the call as absent.
        let mut rules = BTreeMap::new();
        rules.insert(libc::SYS_clone3, unconditional());
        install(rules, libc::ENOSYS)?;
    }
    Ok(())
}
