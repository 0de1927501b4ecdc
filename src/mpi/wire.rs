//! The messages between rank 0 and the worker ranks: one MPI message of bytes each, its
//! kind in the MPI tag.
//!
//! - worker → rank 0, once, first: `HELLO [fingerprint u64 LE]`;
//! - rank 0 → worker: `TASK [seq u64 LE][payload]`, where the payload is exactly what a local
//!   pool worker gets on its socket (`entry i64 LE ++ encoded Vec<Args>`); `seq` counts the
//!   tasks sent to that worker from 0, so that a result names the task it answers;
//! - worker → rank 0, per task, in the order the tasks came: `RESULT [seq u64 LE][status u8]
//!   [body]`; status `OK`: the encoded `Vec<ItemOutcome<R>>`; `FAILED`: a UTF-8 message;
//!   `CANCELLED`: empty (the task was still queued when rank 0 cancelled it);
//! - rank 0 → worker: `CANCEL` (empty): drop the queued tasks that have not started;
//!   `STOP` (empty): finalize MPI and exit;
//! - worker → rank 0: `BEAT` (empty), at least every [`BEAT_EVERY`] while the worker holds
//!   tasks and has nothing else to say, so that rank 0 can tell a silent rank from a dead one; `BYE`
//!   (empty), its last message, after `STOP`.
//! - rank 0 → worker: `LEVEL [level u8]`, the `log` level rank 0 runs at (`log.rs`'s
//!   numbering, 0 for off), before a task whenever it changed since the last one;
//! - worker → rank 0: `LOG [record]`, one `log` record logged on the worker, encoded as a
//!   child forwards one to its parent (`log.rs`), before the `RESULT` of the task that
//!   logged it; rank 0 hands it to its own logger.
//!
//! Every byte here comes from another process, maybe over a network: decoding checks kinds,
//! lengths and status bytes and returns an error instead of trusting them. A message is at
//! most [`MAX_MESSAGE`] bytes, the largest count of bytes one MPI message can carry.

use std::time::Duration;

/// MPI tags of our messages: a range of their own, so that stray user traffic on
/// `MPI_COMM_WORLD` is never taken for ours.
const TAG_BASE: i32 = 0x6d70;

/// The largest message MPI can carry in one call (its counts are C `int`s).
pub(crate) const MAX_MESSAGE: usize = i32::MAX as usize;

/// The longest failure message kept from a worker.
const MAX_FAILURE_TEXT: usize = 64 * 1024;

/// How often a worker with nothing else to send says it is alive.
pub(crate) const BEAT_EVERY: Duration = Duration::from_millis(500);

/// The kind of a message (its MPI tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Hello,
    Task,
    Result,
    Cancel,
    Stop,
    Beat,
    Bye,
    Level,
    Log,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::Hello,
        Kind::Task,
        Kind::Result,
        Kind::Cancel,
        Kind::Stop,
        Kind::Beat,
        Kind::Bye,
        Kind::Level,
        Kind::Log,
    ];

    /// The MPI tag carrying this kind.
    pub(crate) fn tag(self) -> i32 {
        TAG_BASE + self as i32
    }

    /// The kind an MPI tag carries, if it is one of ours.
    pub(crate) fn from_tag(tag: i32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

/// What became of a task on a worker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Status<'a> {
    /// It ran: the encoded `Vec<ItemOutcome<R>>`.
    Ok(&'a [u8]),
    /// It could not run (arguments did not decode, result did not encode, ...).
    Failed(String),
    /// It was dropped from the queue by a `CANCEL` before it started.
    Cancelled,
}

const OK: u8 = 0;
const FAILED: u8 = 1;
const CANCELLED: u8 = 2;

/// A malformed message: what was wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn split_u64<'a>(bytes: &'a [u8], what: &str) -> Result<(u64, &'a [u8]), Malformed> {
    match bytes.split_first_chunk::<8>() {
        Some((head, rest)) => Ok((u64::from_le_bytes(*head), rest)),
        None => Err(Malformed(format!(
            "{what} message of {} bytes is shorter than its 8-byte header",
            bytes.len()
        ))),
    }
}

/// `HELLO`.
pub(crate) fn hello(fingerprint: u64) -> Vec<u8> {
    fingerprint.to_le_bytes().to_vec()
}

/// Reads a `HELLO`: the worker's build fingerprint.
pub(crate) fn read_hello(bytes: &[u8]) -> Result<u64, Malformed> {
    match split_u64(bytes, "hello")? {
        (fp, []) => Ok(fp),
        (_, rest) => Err(Malformed(format!(
            "hello message has {} trailing bytes",
            rest.len()
        ))),
    }
}

/// `LEVEL`.
pub(crate) fn level(level: u8) -> Vec<u8> {
    vec![level]
}

/// Reads a `LEVEL`: one byte, a level `log.rs` knows.
pub(crate) fn read_level(bytes: &[u8]) -> Result<u8, Malformed> {
    match *bytes {
        [l] if l <= crate::log::MAX_WIRE_LEVEL => Ok(l),
        _ => Err(Malformed(format!(
            "level message of {} bytes is not one known level",
            bytes.len()
        ))),
    }
}

/// `TASK`: `seq` and the chunk's payload (`entry ++ args`). Errors if it is too large for
/// one MPI message.
pub(crate) fn task(seq: u64, payload: &[u8]) -> Result<Vec<u8>, Malformed> {
    if payload.len() > MAX_MESSAGE - 8 {
        return Err(Malformed(format!(
            "a task of {} bytes is larger than one MPI message can carry ({MAX_MESSAGE} \
             bytes): use a smaller chunk size",
            payload.len()
        )));
    }
    let mut m = Vec::with_capacity(8 + payload.len());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(payload);
    Ok(m)
}

/// Reads a `TASK`: its `seq` and the payload, which starts with the 8-byte entry offset.
pub(crate) fn read_task(bytes: &[u8]) -> Result<(u64, i64, &[u8]), Malformed> {
    let (seq, rest) = split_u64(bytes, "task")?;
    let (entry, args) = split_u64(rest, "task payload")?;
    Ok((seq, entry as i64, args))
}

/// `RESULT`. A failure message longer than the limit is cut (at a character boundary).
pub(crate) fn result(seq: u64, status: &Status<'_>) -> Vec<u8> {
    let mut m = seq.to_le_bytes().to_vec();
    match status {
        Status::Ok(body) => {
            m.push(OK);
            m.extend_from_slice(body);
        }
        Status::Failed(text) => {
            m.push(FAILED);
            m.extend_from_slice(truncate(text, MAX_FAILURE_TEXT).as_bytes());
        }
        Status::Cancelled => m.push(CANCELLED),
    }
    m
}

/// Whether a `RESULT` would be too large for one MPI message (checked before sending; the
/// task then fails with a message instead).
pub(crate) fn result_fits(body_len: usize) -> bool {
    body_len <= MAX_MESSAGE - 9
}

/// Reads a `RESULT`.
pub(crate) fn read_result(bytes: &[u8]) -> Result<(u64, Status<'_>), Malformed> {
    let (seq, rest) = split_u64(bytes, "result")?;
    let Some((&status, body)) = rest.split_first() else {
        return Err(Malformed("result message has no status byte".into()));
    };
    let status = match status {
        OK => Status::Ok(body),
        FAILED if body.len() <= MAX_FAILURE_TEXT => {
            Status::Failed(String::from_utf8_lossy(body).into_owned())
        }
        FAILED => {
            return Err(Malformed(format!(
                "failure message of {} bytes is longer than {MAX_FAILURE_TEXT}",
                body.len()
            )));
        }
        CANCELLED if body.is_empty() => Status::Cancelled,
        other => {
            return Err(Malformed(format!(
                "result message has an unknown status {other} or a body it cannot have"
            )));
        }
    };
    Ok((seq, status))
}

/// Checks that a message meant to be empty (`CANCEL`, `STOP`, `BEAT`, `BYE`) is.
pub(crate) fn read_empty(kind: Kind, bytes: &[u8]) -> Result<(), Malformed> {
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(Malformed(format!(
            "{kind:?} message carries {} bytes, expected none",
            bytes.len()
        )))
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tags_round_trip_and_stay_ours() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_tag(k.tag()), Some(k));
        }
        assert_eq!(Kind::from_tag(0), None);
        assert_eq!(Kind::from_tag(TAG_BASE + 9), None);
    }

    #[test]
    fn short_messages_are_refused() {
        assert!(read_hello(&[1, 2, 3]).is_err());
        assert!(read_task(&[0; 15]).is_err());
        assert!(read_result(&[0; 8]).is_err());
        assert!(read_result(&[0, 0, 0, 0, 0, 0, 0, 0, 9]).is_err());
        assert!(read_result(&[0, 0, 0, 0, 0, 0, 0, 0, CANCELLED, 1]).is_err());
        assert!(read_empty(Kind::Stop, &[0]).is_err());
    }

    #[test]
    fn long_failures_are_cut_at_a_character() {
        let text = "é".repeat(MAX_FAILURE_TEXT);
        let m = result(3, &Status::Failed(text));
        match read_result(&m).unwrap() {
            (3, Status::Failed(t)) => {
                assert!(t.len() <= MAX_FAILURE_TEXT && t.chars().all(|c| c == 'é'))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn tasks_round_trip(seq: u64, entry: i64, args in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut payload = entry.to_le_bytes().to_vec();
            payload.extend_from_slice(&args);
            let m = task(seq, &payload).unwrap();
            prop_assert_eq!(read_task(&m).unwrap(), (seq, entry, &args[..]));
        }

        #[test]
        fn results_round_trip(seq: u64, body in proptest::collection::vec(any::<u8>(), 0..256), text in ".{0,64}") {
            let m = result(seq, &Status::Ok(&body));
            prop_assert_eq!(read_result(&m).unwrap(), (seq, Status::Ok(&body[..])));
            let m = result(seq, &Status::Failed(text.clone()));
            prop_assert_eq!(read_result(&m).unwrap(), (seq, Status::Failed(text)));
            let m = result(seq, &Status::Cancelled);
            prop_assert_eq!(read_result(&m).unwrap(), (seq, Status::Cancelled));
        }

        /// Any bytes at all: every reader returns, and never panics.
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = read_hello(&bytes);
            let _ = read_task(&bytes);
            let _ = read_result(&bytes);
            for k in Kind::ALL {
                let _ = read_empty(k, &bytes);
            }
        }
    }
}
