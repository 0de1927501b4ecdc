//! The async receives' helper: at most one thread per process that waits, in `poll(2)`,
//! on the descriptors of pending futures and wakes each future's `Waker` when its
//! descriptor turns readable (or its timer runs out), so the futures need no runtime.
//!
//! **Who writes what.** A future registers once (a [`Registration`]: a duplicate of its
//! descriptor, kept until the future is dropped) and *arms* it each time it returns
//! `Pending`: it stores its waker (and an optional due time) under the reactor's lock,
//! then sets the reactor's own eventfd so the thread, perhaps asleep in `poll` over the
//! old list, looks at the list again. The thread polls every armed descriptor, takes the
//! waker of each that is readable or due (disarming it), drops the lock, and wakes them.
//!
//! **Why no wake-up is lost.** The descriptors are level-triggered and say what is true
//! now (`ready.rs`): a future looks at its ring *after* it is counted as a poller and
//! *before* it arms, so a message sent after its look makes the descriptor readable, and
//! the thread, which polls only after it took the armed list under the lock, sees it
//! however late it polls. A future that finds the ring busy (another holder of the end is
//! taking a message) arms a short timer instead of its descriptor, which stays readable
//! meanwhile and would wake it in a loop.
//!
//! **Forks.** A forked child has no such thread: the reactor is keyed by process id and a
//! child that uses async receives starts its own.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::sys;

/// How long a future that found the ring busy waits before it looks again.
pub(crate) const BUSY_RETRY: Duration = Duration::from_millis(1);

struct Reg {
    fd: Arc<OwnedFd>,
    /// The waker to call, while armed.
    waker: Option<Waker>,
    /// Whether the descriptor counts (`false`: only the timer does).
    watch_fd: bool,
    due: Option<Instant>,
}

#[derive(Default)]
struct State {
    next: u64,
    regs: HashMap<u64, Reg>,
}

pub(crate) struct Reactor {
    state: Mutex<State>,
    /// Set by an arm, so the thread polls the new list.
    bell: OwnedFd,
}

/// This process's reactor, with the id of the process it was started in.
static REACTOR: Mutex<Option<(u32, Arc<Reactor>)>> = Mutex::new(None);

/// This process's reactor, started on first use.
fn reactor() -> Result<Arc<Reactor>> {
    let mut slot = REACTOR.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if let Some((_, r)) = slot.as_ref().filter(|(p, _)| *p == pid) {
        return Ok(r.clone());
    }
    let r = Arc::new(Reactor {
        state: Mutex::new(State::default()),
        bell: sys::ready::flag()?,
    });
    let run = r.clone();
    std::thread::Builder::new()
        .name("mproc-reactor".into())
        .spawn(move || run.run())?;
    *slot = Some((pid, r.clone()));
    Ok(r)
}

impl Reactor {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        loop {
            let (keys, fds, due) = {
                let st = self.lock();
                let mut keys = Vec::new();
                let mut fds = Vec::new();
                let mut due: Option<Instant> = None;
                for (k, r) in &st.regs {
                    if r.waker.is_none() {
                        continue;
                    }
                    if r.watch_fd {
                        keys.push(*k);
                        fds.push(r.fd.clone());
                    }
                    if let Some(d) = r.due {
                        due = Some(due.map_or(d, |x| x.min(d)));
                    }
                }
                (keys, fds, due)
            };
            let mut list: Vec<BorrowedFd<'_>> = vec![self.bell.as_fd()];
            list.extend(fds.iter().map(|f| f.as_fd()));
            let timeout = due.map(|d| d.saturating_duration_since(Instant::now()));
            let ready = match sys::fd::poll_many(&list, timeout) {
                Ok(r) => r,
                Err(e) => {
                    // Not expected (every descriptor is ours and open); look again soon
                    // rather than spin.
                    ::log::warn!("mproc reactor: poll failed: {e}");
                    std::thread::sleep(BUSY_RETRY);
                    continue;
                }
            };
            if ready[0] {
                sys::ready::flag_clear(self.bell.as_fd());
            }
            let now = Instant::now();
            let mut wake = Vec::new();
            {
                let mut st = self.lock();
                let readable: Vec<u64> = keys
                    .iter()
                    .zip(&ready[1..])
                    .filter(|(_, r)| **r)
                    .map(|(k, _)| *k)
                    .collect();
                for (k, r) in st.regs.iter_mut() {
                    if r.waker.is_some()
                        && (readable.contains(k) || r.due.is_some_and(|d| d <= now))
                    {
                        wake.extend(r.waker.take());
                    }
                }
            }
            drop(fds);
            for w in wake {
                w.wake();
            }
        }
    }
}

/// A future's place in the reactor: registered on its first arm, gone when dropped.
#[derive(Default)]
pub(crate) struct Registration {
    at: Option<(Arc<Reactor>, u64)>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.at.as_ref().map(|a| a.1))
            .finish()
    }
}

impl Registration {
    /// Arms the registration: `waker` is woken once `fd` is readable (`busy`: once
    /// [`BUSY_RETRY`] has passed instead).
    pub(crate) fn arm(&mut self, fd: BorrowedFd<'_>, waker: &Waker, busy: bool) -> Result<()> {
        if self.at.is_none() {
            let r = reactor()?;
            let dup = Arc::new(sys::fd::dup_cloexec(fd)?);
            let mut st = r.lock();
            let key = st.next;
            st.next += 1;
            st.regs.insert(
                key,
                Reg {
                    fd: dup,
                    waker: None,
                    watch_fd: true,
                    due: None,
                },
            );
            drop(st);
            self.at = Some((r, key));
        }
        let (r, key) = self.at.as_ref().expect("registered above");
        {
            let mut st = r.lock();
            let reg = st.regs.get_mut(key).expect("a live registration is listed");
            match &mut reg.waker {
                Some(w) if w.will_wake(waker) => {}
                w => *w = Some(waker.clone()),
            }
            reg.watch_fd = !busy;
            reg.due = busy.then(|| Instant::now() + BUSY_RETRY);
        }
        sys::ready::flag_set(r.bell.as_fd());
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some((r, key)) = self.at.take() {
            r.lock().regs.remove(&key);
        }
    }
}
