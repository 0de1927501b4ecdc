//! mproc: Python's `multiprocessing`, done right, in Rust.

mod codec;
mod error;
mod shared;
mod sys;

pub use crate::error::{Error, Result};
