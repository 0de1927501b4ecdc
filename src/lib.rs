//! mproc: Python's `multiprocessing`, done right, in Rust.

mod codec;
mod error;
mod queue;
mod shared;
mod sys;

pub use crate::error::{Error, Result};
pub use crate::queue::{JoinableQueue, Queue, SimpleQueue};
