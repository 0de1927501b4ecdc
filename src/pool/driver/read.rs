//! What the driver (or a harvesting caller) reads from a worker: answers from its ring,
//! then frames from its socket, each checked before anything is recorded (`link.rs` says
//! which frame goes where, `worker.rs` what each one is).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::codec::HandleFd;
use crate::connection::framing::Arrival;
use crate::error::Error;
use crate::pool::engine::{Shared, State};
use crate::pool::jobs::{Callback, ChunkResult};
use crate::pool::link::RingRead;
use crate::pool::slot;
use crate::pool::worker;

/// Which of a worker's links a frame came on (`link.rs`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    Ring,
    Socket,
}

impl Shared {
    /// Reads what worker `i` has sent: its answers (ring), then its socket (control
    /// frames, and an answer too large for the ring, announced there); true if one was an
    /// answer. Unless `to_end`, reading its ring stops after an answer once no other
    /// waits.
    pub(super) fn read_answers(
        &self,
        st: &mut State,
        i: usize,
        callbacks: &mut Vec<Callback>,
        to_end: bool,
    ) -> bool {
        let mut answered = self.read_ring(st, i, callbacks, to_end);
        let due = st.workers[i].link.body_due.is_some();
        answered |= self.read_socket(st, i, callbacks);
        // The answer announced came: the ring's next ones, which waited behind it.
        if due && st.workers[i].link.body_due.is_none() {
            answered |= self.read_ring(st, i, callbacks, to_end);
        }
        answered
    }

    /// Reads the frames waiting on worker `i`'s socket, without blocking.
    fn read_socket(&self, st: &mut State, i: usize, callbacks: &mut Vec<Callback>) -> bool {
        let mut answered = false;
        while !st.workers[i].link.eof {
            let arrival = {
                let link = &mut st.workers[i].link;
                let sock = Arc::clone(&link.sock);
                link.incoming.poll_frame(sock.as_fd())
            };
            match arrival {
                Ok(Arrival::Frame(bytes, fds)) => {
                    answered |= self.on_frame(st, i, bytes, fds, callbacks, From::Socket);
                }
                Ok(Arrival::Pending) => break,
                Ok(Arrival::Closed) | Err(_) => {
                    // The worker is gone or going: what it put in its ring before it
                    // closed its socket is there now; read it, then nothing more.
                    answered |= self.read_ring(st, i, callbacks, true);
                    let w = &mut st.workers[i];
                    // A reset is a death (a worker that dies with tasks sent ahead unread
                    // resets its socket), not a refused reply: its exit says how it died.
                    match arrival {
                        Err(e) if !matches!(e, Error::Closed) => {
                            w.refuse(e.to_string());
                        }
                        _ => {
                            w.link.eof = true;
                            w.fail_link();
                        }
                    }
                }
            }
        }
        st.workers[i].note_read();
        answered
    }

    /// Reads the answers waiting whole in worker `i`'s ring, never waiting (`link.rs`);
    /// true if one was an answer. Unless `to_end`, stops after an answer once no other
    /// waits.
    fn read_ring(
        &self,
        st: &mut State,
        i: usize,
        callbacks: &mut Vec<Callback>,
        to_end: bool,
    ) -> bool {
        let mut answered = false;
        let drain = to_end || self.on_driver_thread();
        loop {
            let link = &st.workers[i].link;
            if !link.ring_open() || (!drain && !link.ring_pending()) {
                break;
            }
            match link.read_ring() {
                RingRead::Took(bytes, fds) => {
                    let done = self.on_frame(st, i, bytes, fds, callbacks, From::Ring);
                    answered |= done;
                    if done && !to_end && !st.workers[i].ring_pending() {
                        break;
                    }
                }
                // Nothing waits (and the ring's readiness flag is put right).
                RingRead::Nothing => break,
                // Its end is closed: it is gone or going. Its control socket is still read
                // (a LIMIT_MEMORY report may wait there), to its own end of stream.
                RingRead::Closed => {
                    let w = &mut st.workers[i];
                    w.link.rings_closed = true;
                    w.fail_link();
                    break;
                }
                RingRead::Refuse(why) => {
                    st.workers[i].refuse(why);
                    break;
                }
            }
        }
        answered
    }

    fn on_frame(
        &self,
        st: &mut State,
        i: usize,
        bytes: Vec<u8>,
        fds: Vec<OwnedFd>,
        callbacks: &mut Vec<Callback>,
        from: From,
    ) -> bool {
        match bytes.first().copied() {
            Some(worker::READY) => {
                st.init_failures = 0;
                st.workers[i].on_ready();
            }
            Some(worker::RETIRING) => st.workers[i].retiring = true,
            Some(worker::LIMIT_MEMORY) => st.workers[i].memory_reported = true,
            Some(worker::INIT_FAILED) => {
                let message = String::from_utf8_lossy(&bytes[1..]).into_owned();
                if !st.workers[i].on_init_failed(message) {
                    let why = "it reported a failed initializer after it was ready";
                    st.workers[i].refuse(why.into());
                }
            }
            // An answer too large for the ring: its frame follows on the socket, and the
            // ring's next items wait behind it.
            Some(worker::ON_SOCKET) if from == From::Ring => match worker::parse_answer(&bytes) {
                Some((_, seq, _)) if st.workers[i].link.body_due.is_none() => {
                    st.workers[i].link.body_due = Some(seq);
                }
                _ => {
                    st.workers[i].refuse("a malformed or second answer marker".into());
                }
            },
            Some(worker::CHUNK_OK | worker::CHUNK_FAILED) if from == From::Socket => {
                // Only the answer its ring announced may come on the socket.
                let seq = worker::parse_answer(&bytes).map(|(_, seq, _)| seq);
                let due = st.workers[i].link.body_due.take();
                if seq.is_none() || seq != due {
                    let why = format!(
                        "an answer on its socket for task {seq:?}, where its ring announced {due:?}"
                    );
                    st.workers[i].refuse(why);
                    return false;
                }
                return self.on_answer(st, i, bytes, fds, callbacks);
            }
            Some(worker::CHUNK_OK | worker::CHUNK_FAILED | worker::DROPPED) => {
                return self.on_answer(st, i, bytes, fds, callbacks);
            }
            // Not our protocol: stop trusting this worker.
            Some(kind) => {
                st.workers[i].refuse(format!("a frame of unknown kind {kind:#x}"));
            }
            None => {
                st.workers[i].refuse("an empty frame".into());
            }
        }
        false
    }

    /// An answer (or a refusal at the gate) from worker `i`, checked before anything is
    /// recorded: it must name the task the worker runs and carry exactly that chunk's
    /// number of results; else the worker is refused (killed, replaced; the tasks it
    /// started fail saying why), and no result is shifted onto another task. True if a
    /// task was answered.
    fn on_answer(
        &self,
        st: &mut State,
        i: usize,
        mut bytes: Vec<u8>,
        fds: Vec<OwnedFd>,
        callbacks: &mut Vec<Callback>,
    ) -> bool {
        let Some((status, seq, count)) = worker::parse_answer(&bytes) else {
            st.workers[i].refuse(format!("a truncated answer ({} bytes)", bytes.len()));
            return false;
        };
        let w = &mut st.workers[i];
        if status == worker::DROPPED {
            // Honest when the pool took the task back; a task it still holds means its
            // gate word was in a state no honest party writes: fail it, replace the worker.
            let Some(task) = w.on_dropped(seq) else {
                return false;
            };
            let word = bytes
                .get(worker::ANSWER_HEADER..worker::ANSWER_HEADER + 8)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            let why = format!(
                "it refused task {seq} at its gate, which the pool had not taken back \
                 (its gate word held {word:#x}, a state no honest party writes)"
            );
            let why = w.refuse(why);
            let failed = ChunkResult::Failed(slot::refused(&why));
            st.jobs.complete(task.job, task.index, failed, callbacks);
            return true;
        }
        let Some(task) = w.on_answer(seq, self.config.maxtasks) else {
            w.refuse(format!(
                "an answer for task {seq}, which it was not running"
            ));
            return false;
        };
        let result = if status == worker::CHUNK_OK {
            let body = &bytes[worker::ANSWER_HEADER..];
            let carried = worker::leading_len(body);
            if count != task.nitems as u64 || carried != Some(count) {
                let why = format!(
                    "its answer to task {seq} carries {count} results (its body {carried:?}) \
                     for a chunk of {} items",
                    task.nitems
                );
                let why = w.refuse(why);
                ChunkResult::Failed(slot::refused(&why))
            } else {
                bytes.drain(..worker::ANSWER_HEADER);
                ChunkResult::Done(bytes, fds.into_iter().map(HandleFd::new).collect())
            }
        } else {
            ChunkResult::Failed(Error::Codec(
                String::from_utf8_lossy(&bytes[worker::ANSWER_HEADER..]).into_owned(),
            ))
        };
        st.jobs.complete(task.job, task.index, result, callbacks);
        true
    }
}
