//! The signature of a manager server's entries: what the server asks an entry to do, and
//! what the entry gives back.
//!
//! Below both `target/record.rs` (whose server records hold a [`ServerEntry`]) and
//! `manager/` (whose server calls one and whose `managed.rs` defines them), so that the
//! records do not reach up into the manager for the type they carry.

use std::any::Any;

use crate::error::Result;

/// What the server asks an entry to do.
pub(crate) enum Call<'a> {
    /// `modify`: the element's encoded value (`None`: a dict key that is absent).
    Modify(Option<&'a [u8]>),
    /// Build a custom object from its encoded state.
    Create(&'a [u8]),
    /// Serve one encoded request on a custom object.
    Handle(&'a mut (dyn Any + Send), &'a [u8]),
}

/// What an entry gives back.
pub(crate) enum Done {
    /// An encoded value: the new element, or a custom object's response.
    Bytes(Vec<u8>),
    /// A freshly built custom object.
    State(Box<dyn Any + Send>),
}

/// The signature of every server-side entry.
pub(crate) type ServerEntry = fn(Call<'_>) -> Result<Done>;
