//! The raw state machines: one per primitive, generic over the runtime's 32-bit word
//! ([`crate::shim::Word`]): `&AtomicU32` words wherever they live in production (a shared
//! region, or the heap in unit tests), loom's under the models that end each file. Each
//! file's `//!` states its protocol. Nothing here allocates or knows about processes,
//! except `robust`, which links lock words into the calling thread's kernel robust list.

pub(crate) mod backoff;
pub(crate) mod barrier;
pub(crate) mod condvar;
pub(crate) mod event;
pub(crate) mod mutex;
pub(crate) mod robust;
pub(crate) mod semaphore;
