//! The descriptor records of a shared-memory pipe (`shm.rs`): what travels over its
//! seqpacket socket.
//!
//! Data never does (it goes through the rings), nor do wake-ups (they have their own
//! stream socket). This socket carries only **descriptor records**, each one `sendmsg` kept
//! whole by `SOCK_SEQPACKET`: exactly [`RECORD_LEN`] bytes, `b"mpFD"`, `seq: u32`,
//! `nfds: u32`, `0u32` (little-endian), with exactly `nfds` descriptors attached
//! (SCM_RIGHTS). `seq` matches the trailer of the ring item the descriptors belong to.
//!
//! Anything else (another length, a wrong magic, a count that disagrees with what arrived)
//! is refused by [`parse_record`], which every received record goes through.

use crate::sys::fd::MAX_FDS_PER_MESSAGE;

/// Bytes of a descriptor record.
pub(crate) const RECORD_LEN: usize = 16;
const MAGIC: [u8; 4] = *b"mpFD";

/// A descriptor record's bytes.
pub(crate) fn encode_record(seq: u32, nfds: usize) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[..4].copy_from_slice(&MAGIC);
    r[4..8].copy_from_slice(&seq.to_le_bytes());
    r[8..12].copy_from_slice(&(nfds as u32).to_le_bytes());
    r
}

/// Decodes a record of `bytes` (as received: a longer record shows as more bytes than
/// [`RECORD_LEN`], since callers read into a larger buffer) that arrived with `nfds`
/// descriptors: the `seq` of the ring item they belong to. `Err` names what is wrong.
pub(crate) fn parse_record(bytes: &[u8], nfds: usize) -> Result<u32, String> {
    if bytes.len() != RECORD_LEN {
        return Err(format!(
            "a {}-byte record (descriptor records are {RECORD_LEN})",
            bytes.len()
        ));
    }
    if bytes[..4] != MAGIC {
        return Err("a record with a bad magic".into());
    }
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let (seq, announced, reserved) = (word(4), word(8), word(12));
    if reserved != 0 {
        return Err("a record with a non-zero reserved word".into());
    }
    if announced as usize > MAX_FDS_PER_MESSAGE || announced as usize != nfds || nfds == 0 {
        return Err(format!(
            "a record announcing {announced} descriptors arrived with {nfds}"
        ));
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip() {
        assert!(parse_record(&[0xdb], 0).is_err());
        let r = encode_record(7, 3);
        assert_eq!(parse_record(&r, 3), Ok(7));
        assert!(parse_record(&r, 2).is_err());
        assert!(parse_record(&encode_record(7, 0), 0).is_err());
        assert!(parse_record(&encode_record(7, 300), 300).is_err());
        let mut long = r.to_vec();
        long.push(0);
        assert!(parse_record(&long, 3).is_err());
    }

    proptest! {
        /// Any bytes and any descriptor count: a record only when its count agrees with
        /// what arrived and is in range, and it is exactly what the encoder makes.
        #[test]
        fn arbitrary_records_never_mislead(bytes in proptest::collection::vec(any::<u8>(), 0..40),
                                           nfds in 0usize..300) {
            if let Ok(seq) = parse_record(&bytes, nfds) {
                prop_assert_eq!(bytes.len(), RECORD_LEN);
                prop_assert!((1..=MAX_FDS_PER_MESSAGE).contains(&nfds));
                prop_assert_eq!(&bytes[..], &encode_record(seq, nfds)[..]);
            }
        }
    }
}
