//! Who is who: this process, its parent, its running children (Python's
//! `current_process()`, `parent_process()`, `active_children()`).

use crate::start::children;
use crate::start::state;
use crate::sys;

/// The name and pid of a process (Python's `current_process()` and friends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
}

impl ProcessInfo {
    /// The process's name: `"MainProcess"` at the top, `"Process-N"` below.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// This process.
pub fn current_process() -> ProcessInfo {
    let st = state();
    ProcessInfo {
        name: st.name(),
        pid: sys::pid::current(),
    }
}

/// The process that started this one, if mproc did.
pub fn parent_process() -> Option<ProcessInfo> {
    let st = state();
    st.parent.as_ref().map(|(name, pid)| ProcessInfo {
        name: name.clone(),
        pid: *pid,
    })
}

/// This process's children that are still running. Finished children are reaped on the
/// way (so they leave no zombies), as in Python.
pub fn active_children() -> Vec<ProcessInfo> {
    children::running()
        .iter()
        .map(|c| ProcessInfo {
            name: c.name().to_string(),
            pid: c.pid(),
        })
        .collect()
}
