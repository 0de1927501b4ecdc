//! The bytes of one message in a shared-memory pipe's ring (`shm.rs`): `varint(m)`, then
//! `m` bytes — the payload, then a trailer, `[0]` for a message without descriptors or
//! `seq: u32 LE, nfds: u8` for one with. Written by the sending end under the ring's
//! producer lock; every piece a receiver reads goes through [`get_varint`] and [`trailer`],
//! which accept only what fits in the bytes at hand.

use crate::error::{Error, Result};
use crate::sys;

/// Splits an item's body into its payload length and its descriptor trailer.
pub(super) fn trailer(body: &[u8]) -> Result<(usize, Option<(u32, usize)>)> {
    match body.split_last() {
        None => Err(corrupt("an empty item")),
        Some((&0, rest)) => Ok((rest.len(), None)),
        Some((&nfds, rest)) if rest.len() >= 4 => {
            let len = rest.len() - 4;
            let seq = u32::from_le_bytes([rest[len], rest[len + 1], rest[len + 2], rest[len + 3]]);
            if usize::from(nfds) > sys::fd::MAX_FDS_PER_MESSAGE {
                return Err(corrupt("a trailer announcing too many descriptors"));
            }
            Ok((len, Some((seq, usize::from(nfds)))))
        }
        Some(_) => Err(corrupt("a truncated trailer")),
    }
}

/// A pipe message that does not parse.
pub(super) fn corrupt(why: &str) -> Error {
    Error::Codec(format!("corrupt pipe message: {why}"))
}

/// Writes `n` as a varint into `out`; returns its length.
pub(super) fn put_varint(mut n: u64, out: &mut [u8; 10]) -> usize {
    let mut i = 0;
    while n >= 0x80 {
        out[i] = n as u8 | 0x80;
        n >>= 7;
        i += 1;
    }
    out[i] = n as u8;
    i + 1
}

/// The varint at the start of `b`: `(value, its length)`; `None` if malformed.
pub(super) fn get_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().take(10).enumerate() {
        if i == 9 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The item decoder's pieces (length prefix, trailer) accept only what fits.
        #[test]
        fn item_parts_stay_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some((v, n)) = get_varint(&bytes) {
                prop_assert!(n <= bytes.len() && n <= 10);
                let mut out = [0u8; 10];
                let k = put_varint(v, &mut out);
                prop_assert!(k <= n);
            }
            if let Ok((len, fds)) = trailer(&bytes) {
                let extra = if fds.is_some() { 5 } else { 1 };
                prop_assert_eq!(len + extra, bytes.len());
                if let Some((_, n)) = fds {
                    prop_assert!(n <= sys::fd::MAX_FDS_PER_MESSAGE);
                }
            }
        }

        #[test]
        fn varints_round_trip(v in any::<u64>()) {
            let mut out = [0u8; 10];
            let k = put_varint(v, &mut out);
            prop_assert_eq!(get_varint(&out[..k]), Some((v, k)));
        }
    }
}
