//! A process's name as `ps` and `top` show it: the kernel's `comm` (`PR_SET_NAME`).
//!
//! `comm` belongs to a thread; `ps` shows the main thread's. mproc names a process from
//! its main thread before anything else runs in it (`start::comm`), so one call names the
//! process. The kernel keeps 15 bytes and silently drops the rest; a name with a NUL byte is
//! cut at the NUL (a C string ends there anyway).

use std::ffi::CString;
use std::io;

/// Sets the calling thread's `comm` to `name` (the first 15 bytes of it, by the kernel).
pub(crate) fn set_comm(name: &str) -> io::Result<()> {
    let bytes = name.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let c = CString::new(&bytes[..end]).expect("cut at the first NUL above");
    rustix::thread::set_name(&c).map_err(io::Error::from)
}

/// The main thread's `comm`: what `ps` shows for this process (`None` if `/proc` is not
/// readable).
pub(crate) fn process_comm() -> Option<String> {
    let s = std::fs::read_to_string("/proc/self/comm").ok()?;
    Some(s.trim_end_matches('\n').to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_thread_name_is_set_and_truncated_by_the_kernel() {
        std::thread::spawn(|| {
            super::set_comm("a-rather-long-thread-name").unwrap();
            let mine = rustix::thread::name().unwrap();
            assert_eq!(mine.to_str().unwrap(), "a-rather-long-t");
            super::set_comm("cut\0here").unwrap();
            assert_eq!(rustix::thread::name().unwrap().to_str().unwrap(), "cut");
        })
        .join()
        .unwrap();
    }
}
