//! Shared memory: regions mapped in several processes, and the values that live in them.

pub(crate) mod region;
