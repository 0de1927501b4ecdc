//! One error type for the whole crate.
//!
//! Every mechanism converts `io::Error` once, at its boundary, into [`Error::Io`] and keeps it
//! as the `source()`. Messages are lowercase, without a trailing period, and name what failed.

use std::fmt;
use std::io;

/// The result type of every fallible call in mproc.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in mproc.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    Io(io::Error),
    /// A message could not be encoded or decoded; the codec's own message is kept.
    Codec(String),
    /// The other end of a connection or queue is gone (Python's `EOFError`).
    Closed,
    /// Nothing to receive (Python's `queue.Empty`).
    Empty,
    /// No room to send (Python's `queue.Full`).
    Full,
    /// The caller's own wait ran out of time (a `*_timeout` call); what it waited for may
    /// still happen.
    Timeout,
    /// An argument was out of range, where Python raises `ValueError`: a zero size, a bad
    /// name, `task_done` called more times than items were put, a bounded semaphore
    /// released above its initial value. States that are not bad arguments (a closed queue,
    /// a one-way connection, a torn stream) have variants of their own.
    ValueError(String),
    /// A barrier was aborted, reset, or timed out while this party waited.
    BrokenBarrier,
    /// The target panicked; `message` is the panic's payload, `location` where it happened.
    TaskPanicked {
        /// The panic message.
        message: String,
        /// Where the panic happened, `file:line:column` (`"src/main.rs:12:5"`); `None` when
        /// not known (a pool's initializer failing everywhere, or a target that installed
        /// its own panic hook).
        location: Option<String>,
    },
    /// A pool worker died while running this task.
    WorkerDied {
        /// The worker's exit code: `-N` for signal `N`.
        exitcode: i32,
        /// The dead worker's peak resident memory in bytes (the kernel's `ru_maxrss`, read
        /// when it was reaped; 0 if someone else reaped it).
        peak_rss: u64,
    },
    /// The task's worker was stopped by one of its [`Limits`](crate::Limits) (memory, CPU
    /// time, file size); a pool replaces the worker and goes on.
    LimitExceeded {
        /// The limit it hit.
        limit: crate::Limit,
    },
    /// The kernel or platform cannot do what was asked (a sandbox feature it lacks); the
    /// message names the feature.
    Unsupported(String),
    /// A child ended without producing its result.
    ChildFailed {
        /// The child's exit code: `-N` for signal `N`, `N` for `exit(N)`.
        exitcode: i32,
    },
    /// The process has not been started.
    NotStarted,
    /// The process was already started once.
    AlreadyStarted,
    /// The pool no longer takes work.
    PoolClosed,
    /// The child runs a different executable than its parent, so function addresses differ.
    BinaryMismatch,
    /// A peer failed the authentication handshake.
    AuthenticationError,
    /// This handle's queue was closed with `close()`; put and get on it are refused
    /// (Python raises `ValueError` here; a variant of its own lets callers match it).
    QueueClosed,
    /// `recv` on the sending end of a one-way pipe (Python's `OSError`).
    WriteOnly,
    /// `send` on the receiving end of a one-way pipe (Python's `OSError`).
    ReadOnly,
    /// A timed-out send or receive left part of a message on this connection, so the stream
    /// no longer starts at a message boundary; the connection must be dropped.
    TornMessage {
        /// `true` if the torn message was being sent, `false` if being received.
        sending: bool,
    },
    /// `set_start_method` was called a second time (Python's `RuntimeError`).
    ContextAlreadySet,
    /// `log_to_stderr` found another logger installed (the `log` crate allows one).
    LoggerAlreadySet,
    /// One message carries more handles (descriptors) than a message can carry.
    TooManyHandles {
        /// How many the message carried.
        count: usize,
        /// The most one message can carry.
        max: usize,
    },
    /// A pool task ran longer than the pool's `task_timeout`: its worker was killed.
    TaskTimedOut {
        /// The pool's `task_timeout`.
        timeout: std::time::Duration,
    },
    /// The pool task was cancelled with `AsyncResult::cancel` before it started: it never
    /// ran (concurrent.futures' `CancelledError`).
    Cancelled,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::Codec(m) => write!(f, "codec error: {m}"),
            Error::Closed => f.write_str("the other end is closed"),
            Error::Empty => f.write_str("nothing to receive"),
            Error::Full => f.write_str("no room to send"),
            Error::Timeout => f.write_str("timed out"),
            Error::ValueError(m) => f.write_str(m),
            Error::BrokenBarrier => f.write_str("barrier is broken"),
            Error::TaskPanicked {
                message,
                location: Some(at),
            } => write!(f, "task panicked at {at}: {message}"),
            Error::TaskPanicked {
                message,
                location: None,
            } => write!(f, "task panicked: {message}"),
            Error::WorkerDied { exitcode, peak_rss } => write!(
                f,
                "worker died {} (peak resident memory {peak_rss} bytes)",
                describe_exit(*exitcode)
            ),
            Error::LimitExceeded { limit } => write!(f, "worker stopped by its {limit}"),
            Error::Unsupported(m) => write!(f, "not supported here: {m}"),
            Error::ChildFailed { exitcode } => {
                write!(f, "child failed: it {}", describe_exit_verb(*exitcode))
            }
            Error::NotStarted => f.write_str("process was not started"),
            Error::AlreadyStarted => f.write_str("cannot start a process twice"),
            Error::PoolClosed => f.write_str("pool is not running"),
            Error::BinaryMismatch => {
                f.write_str("child runs a different executable than its parent")
            }
            Error::AuthenticationError => f.write_str("authentication failed"),
            Error::QueueClosed => f.write_str("queue is closed"),
            Error::WriteOnly => f.write_str("connection is write-only"),
            Error::ReadOnly => f.write_str("connection is read-only"),
            Error::TornMessage { sending } => write!(
                f,
                "a timed-out {} left part of a message on this connection",
                if *sending { "send" } else { "receive" }
            ),
            Error::ContextAlreadySet => f.write_str("context has already been set"),
            Error::LoggerAlreadySet => f.write_str("another logger is already installed"),
            Error::TooManyHandles { count, max } => write!(
                f,
                "one message carries {count} handles, more than the {max} a message can carry"
            ),
            Error::TaskTimedOut { timeout } => {
                write!(
                    f,
                    "task ran longer than the pool's task_timeout of {timeout:?}"
                )
            }
            Error::Cancelled => f.write_str("task cancelled"),
        }
    }
}

impl Error {
    /// A copy of this error, for results that several items share (a failed chunk).
    pub(crate) fn duplicate(&self) -> Error {
        Error::from_wire(self.to_wire())
    }
}

/// `Error` is `Clone` so that a result shared by several callers (a callback, a failed
/// chunk, a stored outcome) can hand each its own. `io::Error` is not `Clone`: the copy of an
/// [`Error::Io`] keeps the OS error code, or the kind and the message, and so its `source()`,
/// but not a custom inner error's own chain.
impl Clone for Error {
    fn clone(&self) -> Self {
        self.duplicate()
    }
}

/// "with signal 9" or "with exit code 3".
fn describe_exit(code: i32) -> String {
    if code < 0 {
        format!("with signal {}", -code)
    } else {
        format!("with exit code {code}")
    }
}

fn describe_exit_verb(code: i32) -> String {
    if code < 0 {
        format!("was killed by signal {}", -code)
    } else {
        format!("exited with code {code}")
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Io(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed() {
        assert_eq!(
            Error::WorkerDied {
                exitcode: -9,
                peak_rss: 4096
            }
            .to_string(),
            "worker died with signal 9 (peak resident memory 4096 bytes)"
        );
        assert_eq!(
            Error::ChildFailed { exitcode: 3 }.to_string(),
            "child failed: it exited with code 3"
        );
        let io = Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(std::error::Error::source(&io).is_some());
        let panicked = Error::TaskPanicked {
            message: "boom".into(),
            location: Some("src/main.rs:12:5".into()),
        };
        assert_eq!(
            panicked.to_string(),
            "task panicked at src/main.rs:12:5: boom"
        );
        assert!(
            matches!(panicked.clone(), Error::TaskPanicked { message, location }
            if message == "boom" && location.as_deref() == Some("src/main.rs:12:5"))
        );
        let nowhere = Error::TaskPanicked {
            message: "boom".into(),
            location: None,
        };
        assert_eq!(nowhere.to_string(), "task panicked: boom");
    }

    #[test]
    fn clones_keep_the_kind_the_code_and_the_source() {
        let os = Error::from(io::Error::from_raw_os_error(32));
        let copy = os.clone();
        assert!(matches!(&copy, Error::Io(e) if e.raw_os_error() == Some(32)));
        assert!(std::error::Error::source(&copy).is_some());
        let custom = Error::Io(io::Error::new(io::ErrorKind::InvalidData, "bad header"));
        assert!(matches!(custom.clone(), Error::Io(e)
            if e.kind() == io::ErrorKind::InvalidData && e.to_string() == "bad header"));
        for e in [
            Error::QueueClosed,
            Error::WriteOnly,
            Error::ReadOnly,
            Error::TornMessage { sending: false },
            Error::ContextAlreadySet,
            Error::TooManyHandles {
                count: 300,
                max: 253,
            },
            Error::TaskTimedOut {
                timeout: std::time::Duration::from_millis(300),
            },
            Error::ValueError("x must be positive".into()),
            Error::WorkerDied {
                exitcode: -6,
                peak_rss: 1 << 20,
            },
            Error::LimitExceeded {
                limit: crate::Limit::CpuTime(std::time::Duration::from_millis(200)),
            },
            Error::LimitExceeded {
                limit: crate::Limit::Memory(64 << 20),
            },
            Error::Unsupported("read_only: landlock".into()),
        ] {
            assert_eq!(e.clone().to_string(), e.to_string());
            assert_eq!(format!("{:?}", e.clone()), format!("{e:?}"));
        }
        assert_eq!(
            Error::TornMessage { sending: false }.to_string(),
            "a timed-out receive left part of a message on this connection"
        );
        assert_eq!(Error::Cancelled.to_string(), "task cancelled");
        assert!(matches!(Error::Cancelled.duplicate(), Error::Cancelled));
    }
}

/// How an `Error` crosses a process boundary: a target may return `mproc::Result<T>`.
/// An I/O error keeps its OS error code, or its kind and message.
#[derive(serde::Serialize, serde::Deserialize)]
enum WireError {
    Os(i32),
    Io(String, String),
    Codec(String),
    Closed,
    Empty,
    Full,
    Timeout,
    ValueError(String),
    BrokenBarrier,
    TaskPanicked(String, Option<String>),
    WorkerDied(i32, u64),
    ChildFailed(i32),
    NotStarted,
    AlreadyStarted,
    PoolClosed,
    BinaryMismatch,
    AuthenticationError,
    QueueClosed,
    WriteOnly,
    ReadOnly,
    TornMessage(bool),
    ContextAlreadySet,
    TooManyHandles(u64, u64),
    LoggerAlreadySet,
    TaskTimedOut(std::time::Duration),
    LimitExceeded(crate::Limit),
    Unsupported(String),
    Cancelled,
}

impl Error {
    fn to_wire(&self) -> WireError {
        match self {
            Error::Io(e) => match e.raw_os_error() {
                Some(code) => WireError::Os(code),
                None => WireError::Io(format!("{:?}", e.kind()), e.to_string()),
            },
            Error::Codec(m) => WireError::Codec(m.clone()),
            Error::Closed => WireError::Closed,
            Error::Empty => WireError::Empty,
            Error::Full => WireError::Full,
            Error::Timeout => WireError::Timeout,
            Error::ValueError(m) => WireError::ValueError(m.clone()),
            Error::BrokenBarrier => WireError::BrokenBarrier,
            Error::TaskPanicked { message, location } => {
                WireError::TaskPanicked(message.clone(), location.clone())
            }
            Error::WorkerDied { exitcode, peak_rss } => WireError::WorkerDied(*exitcode, *peak_rss),
            Error::LimitExceeded { limit } => WireError::LimitExceeded(*limit),
            Error::Unsupported(m) => WireError::Unsupported(m.clone()),
            Error::ChildFailed { exitcode } => WireError::ChildFailed(*exitcode),
            Error::NotStarted => WireError::NotStarted,
            Error::AlreadyStarted => WireError::AlreadyStarted,
            Error::PoolClosed => WireError::PoolClosed,
            Error::BinaryMismatch => WireError::BinaryMismatch,
            Error::AuthenticationError => WireError::AuthenticationError,
            Error::QueueClosed => WireError::QueueClosed,
            Error::WriteOnly => WireError::WriteOnly,
            Error::ReadOnly => WireError::ReadOnly,
            Error::TornMessage { sending } => WireError::TornMessage(*sending),
            Error::ContextAlreadySet => WireError::ContextAlreadySet,
            Error::LoggerAlreadySet => WireError::LoggerAlreadySet,
            Error::TooManyHandles { count, max } => {
                WireError::TooManyHandles(*count as u64, *max as u64)
            }
            Error::TaskTimedOut { timeout } => WireError::TaskTimedOut(*timeout),
            Error::Cancelled => WireError::Cancelled,
        }
    }

    fn from_wire(wire: WireError) -> Error {
        match wire {
            WireError::Os(code) => Error::Io(io::Error::from_raw_os_error(code)),
            WireError::Io(kind, message) => {
                Error::Io(io::Error::new(kind_from_name(&kind), message))
            }
            WireError::Codec(m) => Error::Codec(m),
            WireError::Closed => Error::Closed,
            WireError::Empty => Error::Empty,
            WireError::Full => Error::Full,
            WireError::Timeout => Error::Timeout,
            WireError::ValueError(m) => Error::ValueError(m),
            WireError::BrokenBarrier => Error::BrokenBarrier,
            WireError::TaskPanicked(message, location) => Error::TaskPanicked { message, location },
            WireError::WorkerDied(exitcode, peak_rss) => Error::WorkerDied { exitcode, peak_rss },
            WireError::LimitExceeded(limit) => Error::LimitExceeded { limit },
            WireError::Unsupported(m) => Error::Unsupported(m),
            WireError::ChildFailed(exitcode) => Error::ChildFailed { exitcode },
            WireError::NotStarted => Error::NotStarted,
            WireError::AlreadyStarted => Error::AlreadyStarted,
            WireError::PoolClosed => Error::PoolClosed,
            WireError::BinaryMismatch => Error::BinaryMismatch,
            WireError::AuthenticationError => Error::AuthenticationError,
            WireError::QueueClosed => Error::QueueClosed,
            WireError::WriteOnly => Error::WriteOnly,
            WireError::ReadOnly => Error::ReadOnly,
            WireError::TornMessage(sending) => Error::TornMessage { sending },
            WireError::ContextAlreadySet => Error::ContextAlreadySet,
            WireError::LoggerAlreadySet => Error::LoggerAlreadySet,
            WireError::TooManyHandles(count, max) => Error::TooManyHandles {
                count: usize::try_from(count).unwrap_or(usize::MAX),
                max: usize::try_from(max).unwrap_or(usize::MAX),
            },
            WireError::TaskTimedOut(timeout) => Error::TaskTimedOut { timeout },
            WireError::Cancelled => Error::Cancelled,
        }
    }
}

impl serde::Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_wire().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        WireError::deserialize(d).map(Error::from_wire)
    }
}

fn kind_from_name(name: &str) -> io::ErrorKind {
    use io::ErrorKind::*;
    [
        NotFound,
        PermissionDenied,
        ConnectionRefused,
        ConnectionReset,
        BrokenPipe,
        AlreadyExists,
        WouldBlock,
        InvalidInput,
        InvalidData,
        TimedOut,
        WriteZero,
        Interrupted,
        Unsupported,
        UnexpectedEof,
        OutOfMemory,
    ]
    .into_iter()
    .find(|k| format!("{k:?}") == name)
    .unwrap_or(Other)
}
