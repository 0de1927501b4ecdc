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

use std::io::IoSlice;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::item::corrupt;
use crate::error::Error;
use crate::sys;
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

/// Reads the descriptors of the item whose trailer said `seq` (if any) off the socket.
/// Runs under the consumer lock, after the item was published: its record is queued.
pub(super) fn take_fds(
    records: BorrowedFd<'_>,
    seq: Option<(u32, usize)>,
    fds: &mut Vec<OwnedFd>,
) -> crate::Result<()> {
    let Some((seq, nfds)) = seq else {
        return Ok(());
    };
    let mut buf = [0u8; RECORD_LEN + 1];
    loop {
        let mut got = Vec::new();
        let n = sys::fd::try_recv_with_fds(records, &mut buf, &mut got)
            .map_err(super::framing::map_recv_error)?;
        let n = match n {
            Some(n) if n > 0 => n,
            _ => return Err(corrupt("a message's descriptors never arrived")),
        };
        match parse_record(&buf[..n], got.len()) {
            Ok(s) if s == seq => {
                if got.len() != nfds {
                    return Err(super::framing::fd_mismatch(nfds, got.len()));
                }
                fds.extend(got);
                return Ok(());
            }
            // A record whose item was never published: its descriptors close here.
            Ok(_) => {}
            Err(why) => return Err(corrupt(&why)),
        }
    }
}

/// Sends the descriptor record numbered `seq` on `records`, waiting for room until
/// `deadline` (and not past the peer's end: `peer_gone` says when it is gone), looking
/// again at least every `slice`.
pub(super) fn send_record(
    records: BorrowedFd<'_>,
    seq: u32,
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
    peer_gone: &dyn Fn() -> bool,
    slice: Duration,
) -> crate::Result<()> {
    let record = encode_record(seq, fds.len());
    loop {
        match sys::fd::try_send_with_fds(records, &[IoSlice::new(&record)], fds) {
            Ok(0) => {}
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe) => {
                return Err(Error::Closed);
            }
            Err(e) => return Err(super::framing::map_recv_error(e)),
        }
        let left = match deadline {
            None => None,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(Error::Timeout);
                }
                Some(d - now)
            }
        };
        if peer_gone() {
            return Err(Error::Closed);
        }
        let slice = left.map_or(slice, |l| l.min(slice));
        sys::fd::poll_rw(&[(records, true)], Some(slice))?;
    }
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
