//! The raw state machines: one per primitive, over `&AtomicU32` words wherever they live
//! (a shared region in production, the heap in unit tests). Each file's `//!` states its
//! protocol. Nothing here allocates or knows about processes, except `robust`, which links
//! lock words into the calling thread's kernel robust list.

pub(crate) mod backoff;
pub(crate) mod barrier;
pub(crate) mod condvar;
pub(crate) mod event;
pub(crate) mod mutex;
pub(crate) mod robust;
pub(crate) mod semaphore;
