//! The message codec, and the side table that carries descriptors inside messages.
//!
//! **Codec.** Values are serde types encoded with postcard: maintained, compact
//! (varint integers), with a stable documented wire format, and the codec ipc-channel
//! moved to in 2026. Measured against bitcode and wincode in `bench/` (`codec` workload);
//! see the crate docs for the figures that decided it.
//!
//! **Depth.** Decoding counts nesting (`codec/depth.rs`): a message nested deeper than
//! 128 levels is an `Error::Codec` naming the limit, never a stack overflow in the receiver;
//! so is one claiming more than a million elements that encode as nothing (a `Vec<()>` of
//! length 2^63), which would otherwise keep the receiver looping.
//!
//! **Handles.** A [`HandleFd`] (inside a `Connection`, a `Queue`, a `Lock`, ...) cannot be
//! written as bytes. While a value is encoded for a channel that can carry descriptors, a
//! thread-local side table is active: a handle's `Serialize` pushes its descriptor there and
//! writes only its index. The channel sends the table beside the bytes (SCM_RIGHTS, or
//! inheritance at start). On the other side, decoding installs the received descriptors
//! as the table, and each handle's `Deserialize` takes its own by index, exactly once.
//! Encoding a handle with no table active (into the shared-memory ring, or with another
//! serde format) is a clear error, never a dangling number.
//!
//! **The registry.** Every `HandleFd` is listed in a process-wide registry, so that a child
//! made by `fork` can close the handles it inherited but was not given: its copy of a pipe
//! end must not keep the other end from seeing EOF.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

mod depth;

#[cfg(test)]
pub(crate) use depth::MAX_EMPTY;

thread_local! {
    /// Descriptors collected while encoding, in index order: duplicates, so they stay valid
    /// until sent whatever the value's handles do meanwhile.
    static ENCODE_TABLE: RefCell<Option<Vec<HandleFd>>> = const { RefCell::new(None) };
    /// Descriptors received with the message being decoded; each taken at most once.
    static DECODE_TABLE: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// postcard drops the text of custom serde errors; mproc's own are kept here so the
    /// `Error::Codec` names what failed.
    static LAST_HANDLE_ERROR: RefCell<Option<&'static str>> = const { RefCell::new(None) };
}

fn handle_error(message: &'static str) -> &'static str {
    LAST_HANDLE_ERROR.with(|e| *e.borrow_mut() = Some(message));
    message
}

/// Encodes `value` onto the end of `buf`; duplicates of the descriptors of handles inside
/// it are appended to `fds`, for the channel to send (and then drop). The duplicates are
/// registered handles themselves, so a child forked meanwhile does not keep them.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
    fds: &mut Vec<HandleFd>,
) -> Result<()> {
    let previous = ENCODE_TABLE.with(|t| t.borrow_mut().replace(Vec::new()));
    let result = postcard::to_extend(value, std::mem::take(buf));
    let table = ENCODE_TABLE.with(|t| std::mem::replace(&mut *t.borrow_mut(), previous));
    match result {
        Ok(out) => {
            *buf = out;
            fds.extend(table.unwrap_or_default());
            Ok(())
        }
        Err(e) => Err(codec_error::<T>("encode", e)),
    }
}

/// Encodes `value` onto the end of `buf` for a channel that cannot carry descriptors:
/// a handle inside it is an error.
pub(crate) fn encode_plain_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
    let previous = ENCODE_TABLE.with(|t| t.borrow_mut().take());
    let result = postcard::to_extend(value, std::mem::take(buf));
    ENCODE_TABLE.with(|t| *t.borrow_mut() = previous);
    *buf = result.map_err(|e| codec_error::<T>("encode", e))?;
    Ok(())
}

/// Decodes one value from exactly `bytes`, giving handles inside it the descriptors `fds`.
/// Descriptors no handle claimed are closed.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    let table: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let previous = DECODE_TABLE.with(|t| t.borrow_mut().replace(table));
    let result = take_from_bytes::<T>(bytes);
    DECODE_TABLE.with(|t| *t.borrow_mut() = previous);
    match result {
        Ok((value, 0)) => Ok(value),
        Ok((_, rest)) => Err(Error::Codec(format!(
            "could not decode a `{}`: {rest} trailing bytes after the message",
            std::any::type_name::<T>(),
        ))),
        Err(e) => Err(codec_error::<T>("decode", e)),
    }
}

/// postcard's `take_from_bytes`, with the nesting counted (see [`depth`]).
/// Returns the value and how many bytes were left after it.
fn take_from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> postcard::Result<(T, usize)> {
    let budget = depth::Budget::new(bytes.len());
    let mut de = postcard::Deserializer::from_flavor(depth::Counted::new(bytes, &budget));
    let value = T::deserialize(depth::Depth {
        de: &mut de,
        depth: &budget,
    })?;
    Ok((value, de.finalize()?.len()))
}

/// Decodes a value from a channel that carries no descriptors.
pub(crate) fn decode_plain<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    decode(bytes, Vec::new())
}

/// "could not decode a `my_crate::Point`: ...": the Rust type names which side of a
/// mismatched pair expected what.
fn codec_error<T: ?Sized>(verb: &str, e: postcard::Error) -> Error {
    let why = match LAST_HANDLE_ERROR.with(|m| m.borrow_mut().take()) {
        Some(m) => m.to_string(),
        None => e.to_string(),
    };
    Error::Codec(format!(
        "could not {verb} a `{}`: {why}",
        std::any::type_name::<T>()
    ))
}

/// A descriptor owned by an mproc handle: listed in the registry while it lives, and
/// serialized through the side table.
#[derive(Debug)]
pub(crate) struct HandleFd(OwnedFd);

impl HandleFd {
    /// Takes ownership of `fd` and lists it in the registry.
    pub(crate) fn new(fd: OwnedFd) -> Self {
        registry().insert(fd.as_raw_fd());
        HandleFd(fd)
    }

    /// The descriptor as a plain `OwnedFd` (a duplicate; this handle is closed).
    pub(crate) fn into_owned(self) -> Result<OwnedFd> {
        Ok(crate::sys::fd::dup_cloexec(self.0.as_fd())?)
    }

    /// A new handle on the same open file (a `dup`, CLOEXEC).
    pub(crate) fn try_clone(&self) -> Result<Self> {
        Ok(self.try_clone_io()?)
    }

    fn try_clone_io(&self) -> std::io::Result<Self> {
        Ok(HandleFd::new(crate::sys::fd::dup_cloexec(self.0.as_fd())?))
    }
}

impl AsFd for HandleFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Drop for HandleFd {
    fn drop(&mut self) {
        registry().remove(&self.0.as_raw_fd());
    }
}

impl Serialize for HandleFd {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let index = ENCODE_TABLE.with(|t| {
            t.borrow_mut().as_mut().map(|table| {
                table.push(self.try_clone_io()?);
                Ok::<usize, std::io::Error>(table.len() - 1)
            })
        });
        match index {
            Some(Ok(i)) => serializer.serialize_u32(i as u32),
            Some(Err(e)) => Err(S::Error::custom(format!(
                "could not duplicate a handle: {e}"
            ))),
            None => Err(S::Error::custom(handle_error(
                "an mproc handle can only travel through a connection or process arguments, \
                 not through this channel",
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for HandleFd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let index = u32::deserialize(deserializer)? as usize;
        let fd = DECODE_TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let table = t
                .as_mut()
                .ok_or("a handle arrived through a channel without descriptors")?;
            let slot = table
                .get_mut(index)
                .ok_or("a handle refers to a descriptor that did not arrive")?;
            slot.take()
                .ok_or("a descriptor was claimed twice by one message")
        });
        fd.map(HandleFd::new)
            .map_err(|m| D::Error::custom(handle_error(m)))
    }
}

/// The registry of descriptors owned by mproc handles in this process.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    fds: BTreeSet<RawFd>,
}

impl Registry {
    fn insert(&mut self, fd: RawFd) {
        self.fds.insert(fd);
    }

    fn remove(&mut self, fd: &RawFd) {
        self.fds.remove(fd);
    }

    /// In a child made by `fork`: closes every inherited handle descriptor except `keep`,
    /// and forgets them all.
    pub(crate) fn close_inherited_except(&mut self, keep: &[RawFd]) {
        for fd in std::mem::take(&mut self.fds) {
            if !keep.contains(&fd) {
                crate::sys::fd::close_inherited(fd);
            }
        }
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    fds: BTreeSet::new(),
});

/// Locks the registry. `fork` holds this lock across the call, so the child finds it
/// consistent and held by its own (only) thread.
pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Msg {
        a: u64,
        s: String,
        v: Vec<i32>,
    }

    #[test]
    fn round_trip_plain() {
        let m = Msg {
            a: 7,
            s: "hi".into(),
            v: vec![1, -2, 3],
        };
        let mut buf = Vec::new();
        encode_plain_into(&m, &mut buf).unwrap();
        assert_eq!(decode_plain::<Msg>(&buf).unwrap(), m);
    }

    #[test]
    fn garbage_is_a_codec_error_not_a_panic() {
        let err = decode_plain::<Msg>(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ])
        .unwrap_err();
        assert!(matches!(err, Error::Codec(_)), "{err}");
        assert!(
            err.to_string()
                .contains("could not decode a `mproc::codec::tests::Msg`"),
            "the message names the Rust type it expected: {err}"
        );
        let err = decode_plain::<u8>(&[1, 2]).unwrap_err();
        assert!(err.to_string().contains("`u8`"), "{err}");
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn nesting_past_the_limit_is_refused_and_within_it_decodes() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        enum Tree {
            Leaf,
            Node(Box<Tree>),
        }
        let mut bytes = vec![1u8; depth::MAX_DEPTH as usize];
        bytes.push(0);
        let err = decode_plain::<Tree>(&bytes).unwrap_err();
        assert!(err.to_string().contains(depth::TOO_DEEP), "{err}");
        bytes.drain(..1);
        assert!(decode_plain::<Tree>(&bytes).is_ok());
        // Vectors of vectors count too; siblings do not add up.
        let v: Vec<Vec<Vec<u8>>> = vec![vec![vec![1; 3]; 3]; 300];
        let mut buf = Vec::new();
        encode_plain_into(&v, &mut buf).unwrap();
        assert_eq!(decode_plain::<Vec<Vec<Vec<u8>>>>(&buf).unwrap(), v);
    }

    #[test]
    fn handles_need_a_side_table() {
        let (a, _b) = crate::sys::fd::socketpair().unwrap();
        let h = HandleFd::new(a);
        let mut buf = Vec::new();
        let err = encode_plain_into(&h, &mut buf).unwrap_err();
        assert!(err.to_string().contains("can only travel"), "{err}");
        let mut fds = Vec::new();
        encode_into(&(1u8, &h), &mut buf, &mut fds).unwrap();
        assert_eq!(fds.len(), 1);
        let fds = fds.into_iter().map(|h| h.into_owned().unwrap()).collect();
        let back: (u8, HandleFd) = decode(&buf, fds).unwrap();
        assert_eq!(back.0, 1);
        assert_ne!(back.1.as_fd().as_raw_fd(), h.as_fd().as_raw_fd());
    }
}
