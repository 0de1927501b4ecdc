//! Shared memory: regions mapped in several processes, and the values that live in them.
//!
//! `region` is the raw mapping (an anonymous memfd). `Value`/`Array` put a robust lock
//! block (see `sync::raw::robust`) in front of their data; `RawValue`/`RawArray` hold the
//! data alone. `cell` is the only code that turns region addresses into typed accesses.
//! `SharedMemory` is the one named object, in `/dev/shm`.

mod array;
pub(crate) mod cell;
mod pod;
pub(crate) mod region;
mod segment;
pub(crate) mod tracker;
mod value;

pub use array::{Array, RawArray};
pub use cell::{ArrayGuard, ValueGuard};
pub use pod::Pod;
pub use segment::SharedMemory;
pub use value::{RawValue, Value};
