//! Python's `log_to_stderr`: a logger that prints `[LEVEL/ProcessName] message` on stderr.
//!
//! Records from children arrive through the hub tagged with the child's name (the
//! `process_name` key); this process's own records take its name from `name.rs`. One write
//! per line, so lines from several threads never interleave.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use ::log::kv::Key;
use ::log::{Level, LevelFilter, Log, Metadata, Record};

use crate::error::{Error, Result};

/// Python's `log_to_stderr` logger.
#[derive(Debug)]
struct Stderr;

static STDERR: Stderr = Stderr;
static STDERR_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Python's level names (`WARNING`, not `WARN`); `TRACE` has no Python name.
pub(super) fn python_level(l: Level) -> &'static str {
    match l {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= ::log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let name = match record.key_values().get(Key::from_str("process_name")) {
            Some(v) => v.to_string(),
            None => crate::name::get(),
        };
        let line = format!(
            "[{}/{}] {}\n",
            python_level(record.level()),
            name,
            record.args()
        );
        // One write per line, so lines from several threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Python's `multiprocessing.log_to_stderr()`: installs a logger that prints
/// `[LEVEL/ProcessName] message` on stderr, at `level`. Records logged in children (every
/// start method, pool workers) are printed by this process with the child's name.
///
/// Calling it again changes the level. `Err(Error::LoggerAlreadySet)` if another logger is
/// installed (Python would add a handler; the `log` crate has one logger per process).
/// Level names are Python's: `ERROR`, `WARNING`, `INFO`, `DEBUG`, and `TRACE`.
///
/// ```
/// # fn main() -> mproc::Result<()> {
/// fn work(n: u32) -> u32 {
///     log::info!("working on {n}");   // printed by the parent: [INFO/Process-1] working on 3
///     n * 2
/// }
/// mproc::log_to_stderr(log::LevelFilter::Info)?;
/// log::warn!("doomed");               // [WARNING/MainProcess] doomed
/// assert_eq!(mproc::spawn(work, (3,))?.result()?, 6);
/// # Ok(()) }
/// ```
pub fn log_to_stderr(level: LevelFilter) -> Result<()> {
    if !STDERR_INSTALLED.load(Ordering::Acquire) {
        ::log::set_logger(&STDERR).map_err(|_| Error::LoggerAlreadySet)?;
        STDERR_INSTALLED.store(true, Ordering::Release);
    }
    ::log::set_max_level(level);
    Ok(())
}
