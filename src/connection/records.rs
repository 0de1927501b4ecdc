//! The side channel of a shared-memory pipe: what travels over its seqpacket socket.
//!
//! Data never does (it goes through the rings, `shm.rs`). The socket carries records, each
//! one `sendmsg` kept whole by `SOCK_SEQPACKET`, so two kinds can never be confused:
//!
//! * a **doorbell**: exactly one byte, [`DOORBELL`], no descriptors. A producer sends one
//!   (never blocking: a full socket already wakes the receiver) when it published a frame
//!   and saw a receiver counted as asleep in `poll`.
//! * a **descriptor record**: exactly [`RECORD_LEN`] bytes, `b"mpFD"`, `seq: u32`,
//!   `nfds: u32`, `0u32` (little-endian), with exactly `nfds` descriptors attached
//!   (SCM_RIGHTS). `seq` matches the trailer of the ring item the descriptors belong to.
//!
//! Anything else (another length, a wrong magic, a count that disagrees with what arrived)
//! is refused by [`parse_record`], which every received record goes through.

use crate::sys::fd::MAX_FDS_PER_MESSAGE;

/// A doorbell record's one byte.
pub(crate) const DOORBELL: u8 = 0xdb;
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

/// What a received record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    Doorbell,
    /// The descriptors of the ring item whose trailer carries `seq`.
    Fds { seq: u32 },
}

/// Decodes a record of `bytes` (as received: a longer record shows as more bytes than
/// [`RECORD_LEN`], since callers read into a larger buffer) that arrived with `nfds`
/// descriptors. `Err` names what is wrong.
pub(crate) fn parse_record(bytes: &[u8], nfds: usize) -> Result<Record, String> {
    if bytes == [DOORBELL] && nfds == 0 {
        return Ok(Record::Doorbell);
    }
    if bytes.len() != RECORD_LEN {
        return Err(format!(
            "a {}-byte record (doorbells are 1 byte, descriptor records {RECORD_LEN})",
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
    Ok(Record::Fds { seq })
}

/// What a peek at the socket's next record shows, from its first bytes.
pub(crate) fn looks_like_doorbell(peeked: &[u8]) -> bool {
    peeked == [DOORBELL]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip() {
        assert_eq!(parse_record(&[DOORBELL], 0), Ok(Record::Doorbell));
        assert!(parse_record(&[DOORBELL], 1).is_err());
        let r = encode_record(7, 3);
        assert_eq!(parse_record(&r, 3), Ok(Record::Fds { seq: 7 }));
        assert!(parse_record(&r, 2).is_err());
        assert!(parse_record(&encode_record(7, 0), 0).is_err());
        assert!(parse_record(&encode_record(7, 300), 300).is_err());
        let mut long = r.to_vec();
        long.push(0);
        assert!(parse_record(&long, 3).is_err());
    }

    proptest! {
        /// Any bytes and any descriptor count: a doorbell only for the exact doorbell, a
        /// descriptor record only when its count agrees with what arrived and is in range.
        #[test]
        fn arbitrary_records_never_mislead(bytes in proptest::collection::vec(any::<u8>(), 0..40),
                                           nfds in 0usize..300) {
            match parse_record(&bytes, nfds) {
                Ok(Record::Doorbell) => prop_assert!(bytes == [DOORBELL] && nfds == 0),
                Ok(Record::Fds { seq }) => {
                    prop_assert_eq!(bytes.len(), RECORD_LEN);
                    prop_assert!(nfds >= 1 && nfds <= MAX_FDS_PER_MESSAGE);
                    prop_assert_eq!(&bytes[..], &encode_record(seq, nfds)[..]);
                }
                Err(_) => {}
            }
        }
    }
}
