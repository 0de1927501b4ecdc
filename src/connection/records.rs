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
//!
//! **Matching records to items** ([`take_fds`]). Records are queued in the order of their
//! items' numbers, each before its item is visible, and taken only under the ring's
//! consumer lock; so at a receiver's turn the front record is never newer than its item's
//! unless that item's record is gone. It goes when a receiver takes it and dies before it
//! moves the ring's head past the item: the next receiver meets the same item again, and
//! the front record is the next item's. The receiver therefore *peeks* at the front record
//! and compares numbers with the wrap of the counter: older records (items never
//! published) are taken and closed, the item's own is taken, and a newer one is left for
//! its item while this one item fails with [`lost_descriptors`]. (Taking before looking, as
//! this code once did, closed every queued record, newer ones included, and each of their
//! items failed after it: 30 to 300 messages per receiver killed under a saturating
//! sender.) The logic is written over the [`Records`] trait, so the loom model in
//! `records/model.rs` runs it against an in-memory queue with a receiver that dies at each
//! step.

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

/// The `seq` of a record looked at before it is taken (its descriptors not yet counted):
/// the length, magic and reserved word checked as [`parse_record`] does.
fn parse_front(bytes: &[u8]) -> Result<u32, String> {
    let announced = match bytes.get(8..12) {
        Some(w) => u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize,
        None => 0,
    };
    if announced == 0 || announced > MAX_FDS_PER_MESSAGE {
        return Err(format!("a record announcing {announced} descriptors"));
    }
    parse_record(bytes, announced)
}

/// What the matching logic ([`take_fds`]) needs of the record socket: the receiving half
/// of a queue of records, front first. The pipe's seqpacket socket in production
/// ([`SeqPacket`]); an in-memory queue under the loom model (`records/model.rs`).
pub(crate) trait Records {
    /// A descriptor as it comes out of a record.
    type Fd;
    /// The `seq` of the record at the front, without taking it; `None` if none is queued.
    fn peek(&self) -> crate::Result<Option<u32>>;
    /// Takes the record at the front (one [`peek`](Records::peek) found): its `seq`, its
    /// descriptors appended to `fds`.
    fn take(&self, fds: &mut Vec<Self::Fd>) -> crate::Result<u32>;
}

/// Whether record `a` was numbered before record `b`, with the wrap of the `u32` counter
/// (numbers in flight at once span far less than half of it).
#[inline]
pub(crate) fn older(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Takes the descriptors of the item whose trailer said `seq` (if any) off `records`.
/// Runs under the consumer lock, after the item was published: its record was queued
/// before it, behind the records of every older item.
///
/// The front record, looked at before it is taken, is one of three:
/// * older than the item: its item was never published (its sender died or timed out
///   between the record and the item); it is taken and its descriptors closed;
/// * the item's own: taken, and checked against the trailer;
/// * newer: the item's record is gone, taken by a receiver that died before it moved the
///   head past the item (the item stayed, its record did not). Only this item fails; the
///   newer record stays for its own item. Nothing queued at all means the same.
pub(crate) fn take_fds<R: Records>(
    records: &R,
    seq: Option<(u32, usize)>,
    fds: &mut Vec<R::Fd>,
) -> crate::Result<()> {
    let Some((seq, nfds)) = seq else {
        return Ok(());
    };
    loop {
        let front = match records.peek()? {
            Some(front) if !older(seq, front) => front,
            _ => return Err(lost_descriptors()),
        };
        let mut got = Vec::new();
        let took = records.take(&mut got)?;
        if took != front {
            return Err(corrupt(
                "a descriptor record changed under the consumer lock",
            ));
        }
        if took == seq {
            if got.len() != nfds {
                return Err(super::framing::fd_mismatch(nfds, got.len()));
            }
            fds.extend(got);
            return Ok(());
        }
        // Older: a record whose item was never published. Its descriptors close here.
    }
}

/// The error of an item whose descriptor record is gone.
pub(crate) fn lost_descriptors() -> Error {
    corrupt("its descriptors were lost with a receiver that died while taking it")
}

/// The receiving half of a pipe's record socket.
#[derive(Clone, Copy)]
pub(crate) struct SeqPacket<'a>(pub(crate) BorrowedFd<'a>);

impl Records for SeqPacket<'_> {
    type Fd = OwnedFd;

    fn peek(&self) -> crate::Result<Option<u32>> {
        let mut buf = [0u8; RECORD_LEN + 1];
        let n = sys::fd::try_peek(self.0, &mut buf).map_err(super::framing::map_recv_error)?;
        match n {
            None | Some(0) => Ok(None),
            // The count is checked when the record is taken, with its descriptors.
            Some(n) => parse_front(&buf[..n])
                .map(Some)
                .map_err(|why| corrupt(&why)),
        }
    }

    fn take(&self, fds: &mut Vec<OwnedFd>) -> crate::Result<u32> {
        let mut buf = [0u8; RECORD_LEN + 1];
        let mut got = Vec::new();
        let n = sys::fd::try_recv_with_fds(self.0, &mut buf, &mut got)
            .map_err(super::framing::map_recv_error)?;
        let n = match n {
            Some(n) if n > 0 => n,
            _ => {
                return Err(corrupt(
                    "a descriptor record vanished under the consumer lock",
                ));
            }
        };
        let seq = parse_record(&buf[..n], got.len()).map_err(|why| corrupt(&why))?;
        fds.extend(got);
        Ok(seq)
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
mod model;

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
