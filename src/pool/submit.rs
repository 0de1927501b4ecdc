//! How a caller's work becomes tasks: chunking (Python's `chunksize`), encoding each chunk
//! as one task frame's payload, and submitting the chunks of one job as they are encoded.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::jobs::{Job, Order};
use super::slot::Task;
use super::{AsyncResult, Pool, imap};
use crate::codec;
use crate::error::{Error, Result};
use crate::target::{self, Target};

/// Python's default chunk size: `ceil(len / (4 × workers))`.
pub(super) fn default_chunksize(len: usize, processes: usize) -> usize {
    len.div_ceil(processes * 4).max(1)
}

/// Encodes one chunk: `[entry][Vec<Args>]` and the descriptors of handles inside.
fn encode_chunk<A: Serialize>(entry: i64, items: &[A]) -> Result<(Vec<u8>, Vec<codec::HandleFd>)> {
    let mut buf = entry.to_le_bytes().to_vec();
    let mut fds = Vec::new();
    codec::encode_into(items, &mut buf, &mut fds)?;
    if fds.len() > MAX_HANDLES_PER_TASK {
        return Err(Error::TooManyHandles {
            count: fds.len(),
            max: MAX_HANDLES_PER_TASK,
        });
    }
    Ok((buf, fds))
}

/// Python's check: `chunksize` must be 1 or more.
pub(super) fn check_chunksize(chunksize: usize) -> Result<()> {
    if chunksize == 0 {
        return Err(Error::ValueError(
            "chunksize must be 1 or more, not 0".into(),
        ));
    }
    Ok(())
}

/// An `imap`'s input, encoded a chunk at a time as the iterator asks for it.
pub(super) struct ChunkFeed<I> {
    pub(super) input: I,
    pub(super) chunksize: usize,
    pub(super) entry: i64,
}

impl<I, T> imap::Feed for ChunkFeed<I>
where
    I: Iterator<Item = T>,
    T: Serialize,
{
    fn next_chunk(&mut self) -> Option<imap::EncodedChunk> {
        let chunk: Vec<(T,)> = self
            .input
            .by_ref()
            .take(self.chunksize)
            .map(|t| (t,))
            .collect();
        if chunk.is_empty() {
            return None;
        }
        let n = chunk.len();
        Some((encode_chunk(self.entry, &chunk), n))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.input.size_hint()
    }
}

/// Descriptors one message can carry (the kernel's `SCM_MAX_FD`).
const MAX_HANDLES_PER_TASK: usize = 253;

impl Pool {
    /// Submits `items` (argument tuples) in chunks of `chunksize` as one job; `watched`:
    /// the caller waits for it at once (see `Shared::submit`).
    pub(super) fn submit_chunks<F, Args, R>(
        &self,
        items: Vec<Args>,
        chunksize: usize,
        watched: bool,
    ) -> Result<u64>
    where
        F: Target<Args, R>,
        Args: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        check_chunksize(chunksize)?;
        let entry = target::pool_entry_offset::<F, Args, R>();
        let id = {
            let mut st = self.shared.lock();
            self.shared.new_job(&mut st, Order::InOrder)?
        };
        // Each chunk goes out as soon as it is encoded, so workers start while the rest
        // is still being encoded. Until the job is sealed the pool counts it as work to
        // come. Only a job of one chunk is left to the caller alone to watch: while a
        // longer one is still being encoded, the driver reads the first answers.
        let single = items.len() <= chunksize;
        for c in items.chunks(chunksize) {
            let encoded = encode_chunk(entry, c);
            let mut st = self.shared.lock();
            match encoded {
                Ok((payload, fds)) => {
                    let Some(index) = st.jobs.add_chunk(id, c.len()) else {
                        return Err(Error::PoolClosed);
                    };
                    let payload = Arc::new(payload);
                    let task = Task {
                        job: id,
                        index,
                        nitems: c.len(),
                        payload,
                        fds,
                    };
                    self.shared.submit(&mut st, task, watched && single);
                }
                Err(e) => {
                    st.abandon(id);
                    drop(st);
                    self.shared.wake();
                    return Err(e);
                }
            }
        }
        let closed = {
            let mut st = self.shared.lock();
            st.jobs.seal(id);
            st.closed
        };
        if closed {
            self.shared.wake(); // the driver may be waiting for this job to be whole
        }
        Ok(id)
    }

    pub(super) fn async_result<T>(
        &self,
        job: Result<u64>,
        decode: fn(&Job) -> Result<T>,
    ) -> AsyncResult<T> {
        match job {
            Ok(id) => AsyncResult::new(Arc::clone(&self.shared), id, decode),
            Err(e) => AsyncResult::failed(Arc::clone(&self.shared), e, decode),
        }
    }
}
