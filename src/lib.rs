//! mproc: Python's `multiprocessing`, done right, in Rust.

mod codec;
mod error;
mod shared;
mod sync;
mod sys;

pub use crate::error::{Error, Result};
pub use crate::shared::{Array, ArrayGuard, Pod, RawArray, RawValue, SharedMemory, Value, ValueGuard};
pub use crate::sync::{
    Barrier, BoundedSemaphore, Condition, Event, Lock, LockGuard, RLock, RLockGuard, Semaphore,
    SemaphoreGuard,
};
