//! Applying an [`Isolation`] in the child, in an order that keeps each step possible: the
//! rlimits and the CPU timer first (the filter below refuses changing rlimits), then the
//! SIGABRT report, then Landlock (it opens the writable paths), then the seccomp filter,
//! which refuses calls the earlier steps make.

use std::os::fd::BorrowedFd;

use super::Isolation;
use crate::codec;
use crate::connection::framing::{Format, FrameHeader};
use crate::sys;
use crate::sys::limits::{self, CpuTimer, Kind};
use crate::target::Outcome;

/// What a restricted child keeps doing per task: re-arming its CPU timer.
#[derive(Debug, Default)]
pub(crate) struct Armed {
    cpu: Option<CpuTimer>,
}

impl Armed {
    /// Before each task: the task gets the whole CPU-time limit (one syscall, only when
    /// that limit is set).
    pub(crate) fn before_task(&self) -> Result<(), String> {
        match &self.cpu {
            Some(t) => t
                .arm()
                .map_err(|e| format!("cannot arm the cpu timer: {e}")),
            None => Ok(()),
        }
    }
}

/// Restricts this process as `iso` asks. The error names the step that failed.
pub(crate) fn enter(iso: &Isolation) -> Result<Armed, String> {
    let l = &iso.limits;
    limits::default_limit_signals();
    if let Some(bytes) = l.memory {
        let base = limits::data_in_use().map_err(|e| format!("memory limit: {e}"))?;
        limits::set(Kind::Data, base.saturating_add(bytes))
            .map_err(|e| format!("memory limit: {e}"))?;
        limits::install_memory_death_report().map_err(|e| format!("memory limit: {e}"))?;
    }
    if let Some(n) = l.open_files {
        limits::set(Kind::OpenFiles, n).map_err(|e| format!("open files limit: {e}"))?;
    }
    if let Some(n) = l.file_size {
        limits::set(Kind::FileSize, n).map_err(|e| format!("file size limit: {e}"))?;
    }
    let cpu = match l.cpu_time {
        Some(d) => Some(CpuTimer::new(d).map_err(|e| format!("cpu time limit: {e}"))?),
        None => None,
    };
    if iso.sandbox.read_only {
        sys::sandbox::restrict_writes(&iso.sandbox.writable)
            .map_err(|e| format!("read_only: {e}"))?;
    }
    sys::sandbox::refuse(iso.refusals()).map_err(|e| format!("seccomp: {e}"))?;
    Ok(Armed { cpu })
}

/// Where this process reports a memory-limit death: `frame`, written whole to `fd`.
pub(crate) fn report_memory_death_to(fd: BorrowedFd<'_>, frame: Vec<u8>) {
    limits::report_memory_death_to(fd, frame);
}

/// The failure a plain child reports for a memory-limit death, as its outcome's message
/// (`Process::result` turns it into `LimitExceeded`).
pub(crate) const MEMORY_DEATH: &str = "mproc: the process died of its memory limit";

/// A frame as `framing::write_frame` sends it, without descriptors.
pub(crate) fn frame(payload: &[u8]) -> Result<Vec<u8>, String> {
    let (header, n) = FrameHeader::new(0, payload.len())
        .map_err(|e| e.to_string())?
        .encode(Format::Mproc);
    let mut frame = header[..n].to_vec();
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// A plain child's outcome frame saying it failed with `message`.
pub(crate) fn failed_outcome(message: &str) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    codec::encode_into(
        &Outcome::<()>::Failed(message.to_string()),
        &mut buf,
        &mut fds,
    )
    .map_err(|e| e.to_string())?;
    frame(&buf)
}

/// Restricts a plain child (a `Process`) before its target runs: its whole run is one
/// task for the CPU-time limit, and a memory-limit death is reported on `result`, its
/// outcome socket.
pub(crate) fn enter_process(iso: &Isolation, result: BorrowedFd<'_>) -> Result<(), String> {
    if iso.limits_memory() {
        report_memory_death_to(result, failed_outcome(MEMORY_DEATH)?);
    }
    enter(iso)?.before_task()
}
