//! The gate: how a busy worker gets its next task in advance without it ever waiting
//! behind a long task while another worker is free.
//!
//! With pull scheduling alone, a stream of quick tasks pays a parent round trip between
//! every two tasks of a worker (answer → parent → next task). So when every worker is busy
//! and tasks are pending, the pool sends a busy worker its next tasks at once (up to
//! [`AHEAD`]), each marked tentative. Every task frame starts with [`TASK_HEADER`] bytes,
//! `[kind u8][seq u64 LE]`, then the task's own payload: `seq` numbers the worker's tasks
//! (one numbering for both kinds, from [`Gate::arm`] or [`Gate::number`]; the worker's
//! answer names it, `worker.rs`), and `kind` says whether it came ahead. Each worker
//! has a shared gate of [`WORDS`] words; task `seq` sent ahead uses word `seq % WORDS`:
//!
//! - the pool *arms* it (`seq << 2 | ARMED`) before it sends the task;
//! - the worker, reaching the task, *takes* it: compare-and-swap `ARMED -> TAKEN` for that
//!   `seq`; if that fails it drops the task unrun and reports it (`worker::DROPPED`,
//!   with the word it found). The pool decides what that meant: a task it revoked (it no
//!   longer holds it) was honestly taken back; one it still holds found its word in a
//!   state no honest party writes (a task scribbled the gate), and the pool fails that
//!   task and replaces the worker rather than wait for an answer that will never come;
//! - the pool *revokes* it (`ARMED -> REVOKED`), first not-yet-taken task first, when
//!   another worker is idle and nothing else is pending, and gives the task to the idle
//!   worker instead: a task never waits behind another while a worker is free, and tasks
//!   still start in the order they were submitted.
//!
//! Exactly one of take and revoke wins, so a task runs once. The pool never arms a task
//! on the word of a task it still tracks (queued, or the one its worker is to start next;
//! [`same_word`]): revoked tasks free places in the queue but not numbers, so the numbers
//! in flight can spread wider than the words, and overwriting a word still armed would
//! make the worker refuse that task. A stale marked task
//! (revoked, read late) carries an older `seq` and can no longer take anything. After a
//! worker's death the pool reads each tracked task's word once the process is gone (no
//! take can follow): a task taken was started, and fails with the worker; one still armed
//! never will be, and goes to another worker. Only pools without `task_timeout` and
//! `maxtasksperchild` send tasks ahead (both count the tasks a worker runs from the moment
//! they are sent). The accounting around the gate (who is queued, what a death means) is
//! `ahead.rs`'s.
//!
//! The words are [`Word64`]s (`std`'s atomics in a shared mapping in production, loom's
//! under the model), and the number of words is a parameter, so that the model can shrink
//! the gate to two words and reach the states where the numbers in flight wrap around it.
//! Every access is SeqCst: take and revoke are compare-and-swaps on one word, which decide
//! on their own; the arming store is read by the worker only after the frame it precedes,
//! through the socket (a syscall, a full barrier).

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use crate::error::Result;
use crate::shared::region::Region;
use crate::shim::Word64;

const ARMED: u64 = 1;
const TAKEN: u64 = 2;
const REVOKED: u64 = 3;

/// Tasks a busy worker may have queued ahead: enough to cover the parent's reaction time
/// (a wake-up, ~30 µs) with quick tasks.
pub(crate) const AHEAD: usize = 8;

/// Gate words per worker: more than the tasks that can be unresolved at once (`AHEAD`
/// queued and the one about to start).
pub(crate) const WORDS: usize = 2 * AHEAD;

/// Bytes of a task frame before the task's payload: `[kind u8][seq u64 LE]`.
pub(crate) const TASK_HEADER: usize = 9;

/// A task frame's kind: given to an idle worker, to run at once.
const PLAIN: u8 = 0;

/// A ring item that stands for a task frame too large for the ring (`link.rs`): the
/// frame itself follows on the worker's socket. `[ON_SOCKET][seq u64 LE]`.
pub(crate) const ON_SOCKET: u8 = 2;

/// A task frame's kind: sent ahead, to run only if the worker wins its gate word.
const GATED: u8 = 1;

/// Where a gate's words live: a shared mapping in production, the heap under the model.
pub(crate) trait Words {
    type W: Word64;
    /// Word `i` (below the gate's number of words).
    fn word(&self, i: usize) -> &Self::W;
}

impl Words for Region {
    type W = AtomicU64;
    #[inline]
    fn word(&self, i: usize) -> &AtomicU64 {
        self.atomic_u64(i * 8)
    }
}

impl<W: Word64> Words for std::sync::Arc<[W]> {
    type W = W;
    fn word(&self, i: usize) -> &W {
        &self[i]
    }
}

/// The pool's side of one worker's gate of `N` words in `M`.
#[derive(Debug)]
pub(crate) struct Gate<M, const N: usize = WORDS> {
    words: M,
    next: u64,
}

/// The production gate: its words in a mapping shared with the worker.
pub(crate) type SharedGate = Gate<Region>;

impl SharedGate {
    /// A closed gate, and the worker's view of it (to send with its start arguments).
    pub(crate) fn new() -> Result<(SharedGate, Region)> {
        let region = Region::new("mproc-pool-gate", 8 * WORDS)?;
        let theirs = region.duplicate()?;
        Ok((Gate::over(region), theirs))
    }
}

impl<M: Words, const N: usize> Gate<M, N> {
    /// A closed gate over `words` (all zero: nothing armed).
    pub(crate) fn over(words: M) -> Gate<M, N> {
        Gate { words, next: 0 }
    }

    /// Arms the gate for a new next task; its sequence number.
    pub(crate) fn arm(&mut self) -> u64 {
        self.next += 1;
        word::<M, N>(&self.words, self.next).store(self.next << 2 | ARMED, SeqCst);
        self.next
    }

    /// Numbers a task given to an idle worker (it runs unconditionally: no word is armed);
    /// its sequence number.
    pub(crate) fn number(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// The sequence number the next [`arm`](Gate::arm) will use.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next + 1
    }

    /// Takes task `seq` back; false if the worker took it first.
    pub(crate) fn revoke(&self, seq: u64) -> bool {
        word::<M, N>(&self.words, seq)
            .compare_exchange(seq << 2 | ARMED, seq << 2 | REVOKED, SeqCst, SeqCst)
            .is_ok()
    }

    /// Whether the worker took task `seq` (started it). Final once the worker is dead, as
    /// long as no newer task was armed on its word (see [`same_word`]).
    pub(crate) fn was_taken(&self, seq: u64) -> bool {
        word::<M, N>(&self.words, seq).load(SeqCst) == seq << 2 | TAKEN
    }
}

/// Whether tasks `a` and `b` use the same word of a gate of `N`. The pool never arms a
/// task on the word of one it still tracks (queued, or next to start): revoked tasks free
/// their places in the queue but not their numbers, so without this check the numbers in
/// flight could span more than `N`, and arming a new task would overwrite the word of an
/// older one not yet taken (its worker would then skip it, and the pool wait for it for
/// ever).
pub(crate) fn same_word<const N: usize>(a: u64, b: u64) -> bool {
    a % N as u64 == b % N as u64
}

/// Task `seq`'s word.
#[inline]
fn word<M: Words, const N: usize>(words: &M, seq: u64) -> &M::W {
    words.word((seq % N as u64) as usize)
}

/// The worker's side: takes task `seq`; false if the pool revoked it.
pub(crate) fn take(gate: &Region, seq: u64) -> bool {
    take_in::<_, WORDS>(gate, seq)
}

/// [`take`] on a gate of `N` words in `M`.
pub(crate) fn take_in<M: Words, const N: usize>(words: &M, seq: u64) -> bool {
    word::<M, N>(words, seq)
        .compare_exchange(seq << 2 | ARMED, seq << 2 | TAKEN, SeqCst, SeqCst)
        .is_ok()
}

/// The frame of task `seq`: the header, then the task's payload; `ahead`: sent ahead,
/// behind the gate.
/// The ring's marker for task `seq`, whose frame goes on the socket.
pub(crate) fn task_marker(seq: u64) -> Vec<u8> {
    let mut m = vec![ON_SOCKET];
    m.extend_from_slice(&seq.to_le_bytes());
    m
}

/// The task a ring marker announces, if `item` is one.
pub(crate) fn parse_marker(item: &[u8]) -> Option<u64> {
    match item {
        [ON_SOCKET, seq @ ..] => Some(u64::from_le_bytes(seq.try_into().ok()?)),
        _ => None,
    }
}

pub(crate) fn task_frame(seq: u64, ahead: bool, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(TASK_HEADER + payload.len());
    m.push(if ahead { GATED } else { PLAIN });
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(payload);
    m
}

/// A task frame's sequence number and whether it came ahead (its payload follows
/// [`TASK_HEADER`] bytes in); `None` if it is no task frame (a marker included).
pub(crate) fn parse_task(frame: &[u8]) -> Option<(u64, bool)> {
    let ahead = match *frame.first()? {
        PLAIN => false,
        GATED => true,
        _ => return None,
    };
    let seq = frame.get(1..TASK_HEADER)?;
    Some((u64::from_le_bytes(seq.try_into().ok()?), ahead))
}

/// What task `seq`'s word holds now (for the worker's report of a refused take).
pub(crate) fn word_now(gate: &Region, seq: u64) -> u64 {
    word::<Region, WORDS>(gate, seq).load(SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_and_revoke_exclude_each_other() {
        let (mut gate, theirs) = SharedGate::new().unwrap();
        let a = gate.arm();
        assert!(take(&theirs, a));
        assert!(gate.was_taken(a));
        assert!(!gate.revoke(a), "taken: cannot revoke");
        let b = gate.arm();
        assert!(!gate.was_taken(b));
        assert!(gate.revoke(b));
        assert!(!take(&theirs, b), "revoked: cannot take");
        // Arming the next task leaves one not yet taken alone; a stale marker (an older
        // sequence) never takes a newer arming.
        let c = gate.arm();
        let d = gate.arm();
        assert!(take(&theirs, c));
        assert!(!take(&theirs, b));
        for _ in 0..WORDS {
            gate.arm();
        }
        assert!(
            !take(&theirs, d),
            "re-armed word: the stale marker takes nothing"
        );
        assert_eq!(parse_task(&task_frame(c, true, b"task")), Some((c, true)));
        let w = WORDS as u64;
        assert!(same_word::<WORDS>(c, c + w) && !same_word::<WORDS>(c, c + 1));
        let next = gate.next_seq();
        assert_eq!(gate.arm(), next);
        assert_eq!(gate.number(), next + 1, "one numbering for both kinds");
        assert_eq!(&task_frame(c, false, b"task")[TASK_HEADER..], b"task");
        assert_eq!(parse_task(&task_frame(c, false, &[])), Some((c, false)));
        assert_eq!(parse_task(&[2; 16]), None);
        assert_eq!(parse_task(&task_frame(c, true, &[])[..8]), None);
        let e = gate.arm();
        assert!(take(&theirs, e));
        assert_eq!(word_now(&theirs, e), e << 2 | TAKEN);
    }
}
