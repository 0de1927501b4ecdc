//! What the store does for queues, reentrant locks, semaphores, conditions and barriers.
//!
//! Same rules as the rest of the store (`store.rs`): nothing here blocks. A request that
//! must wait answers `Ok(None)`; its connection's thread waits on the server's condition
//! variable and applies the very same request again after every wake-up (`server.rs`).
//! A connection has one request in flight, so a multi-step wait (a condition's `wait`: let
//! go of the lock, sleep until notified, take the lock back; a barrier's `wait`: arrive,
//! sleep until the round ends) keeps its progress in the object, keyed by the connection:
//! finding its own entry tells the store that this is a retry. Whatever ends the wait
//! removes the entry: the answer, the deadline ([`Store::expire`]), or the connection
//! closing ([`Store::release_all`]). Every change that can let a waiter proceed sets
//! `Store::wake`.

use super::super::object::{Barrier, Condition, Object, Queue, RLock, Semaphore, Waiter};
use super::{Caller, ConnId, Store, wrong_kind};
use crate::error::Error;
use crate::manager::wire::{Answer, Buf, ObjectId, Reply, Request};

type Step = Result<Option<Answer>, Error>;

fn refused(what: &str) -> Error {
    Error::ValueError(what.into())
}

impl Store {
    fn queue(&mut self, id: ObjectId) -> Result<&mut Queue, Error> {
        match self.get(id)? {
            Object::Queue(q) => Ok(q),
            o => Err(wrong_kind(id, o, "queue")),
        }
    }

    /// The queue, reentrant lock, semaphore, condition and barrier requests.
    pub(super) fn apply_sync(&mut self, req: &Request<'_>, caller: Caller) -> Step {
        use Request as R;
        let me = caller.conn;
        let answer = match req {
            R::QueuePut(id, v, _) => {
                let arriving = std::mem::take(&mut self.arriving);
                let q = self.queue(*id)?;
                if q.maxsize.is_some_and(|m| q.items.len() >= m) {
                    return Ok(None);
                }
                q.items.push_back(v.0.to_vec());
                q.tokens.push_back(arriving);
                q.unfinished += 1;
                self.wake = true;
                Answer::Done
            }
            R::QueueGet(id, _) => {
                let q = self.queue(*id)?;
                let Some(v) = q.items.pop_front() else {
                    return Ok(None);
                };
                let tokens = q.tokens.pop_front().unwrap_or_default();
                // A putter may be waiting for room.
                self.wake |= q.maxsize.is_some();
                // The item's proxies leave the queue with it: their claims travel on to
                // the getter, who converts them.
                self.release_held(*id, &tokens);
                Answer::One(Buf(v))
            }
            R::QueueFull(id) => {
                let q = self.queue(*id)?;
                Answer::Bool(q.maxsize.is_some_and(|m| q.items.len() >= m))
            }
            R::QueueTaskDone(id) => {
                let q = self.queue(*id)?;
                if q.unfinished == 0 {
                    return Err(refused("task_done() called too many times"));
                }
                q.unfinished -= 1;
                self.wake |= q.unfinished == 0;
                Answer::Done
            }
            R::QueueJoin(id, _) => match self.queue(*id)?.unfinished {
                0 => Answer::Bool(true),
                _ => return Ok(None),
            },
            R::RLockAcquire(id, _) => match self.get(*id)? {
                Object::RLock(l) if l.owner.is_none() || l.owner == Some(me) => {
                    l.owner = Some(me);
                    l.count += 1;
                    Answer::Bool(true)
                }
                Object::RLock(_) => return Ok(None),
                o => return Err(wrong_kind(*id, o, "rlock")),
            },
            R::RLockRelease(id) => match self.get(*id)? {
                Object::RLock(l) if l.owner == Some(me) => {
                    l.count -= 1;
                    if l.count == 0 {
                        l.owner = None;
                        self.wake = true;
                    }
                    Answer::Done
                }
                Object::RLock(_) => {
                    return Err(refused(
                        "release of a manager rlock this thread does not hold",
                    ));
                }
                o => return Err(wrong_kind(*id, o, "rlock")),
            },
            R::SemAcquire(id, _) => match self.get(*id)? {
                Object::Semaphore(s) if s.value > 0 => {
                    s.value -= 1;
                    Answer::Bool(true)
                }
                Object::Semaphore(_) => return Ok(None),
                o => return Err(wrong_kind(*id, o, "semaphore")),
            },
            R::SemRelease(id) => match self.get(*id)? {
                Object::Semaphore(s) => {
                    if s.bound.is_some_and(|b| s.value >= b) {
                        return Err(refused("bounded semaphore released too many times"));
                    }
                    s.value += 1;
                    self.wake = true;
                    Answer::Done
                }
                o => return Err(wrong_kind(*id, o, "semaphore")),
            },
            R::SemValue(id) => match self.get(*id)? {
                Object::Semaphore(s) => Answer::Len(s.value),
                o => return Err(wrong_kind(*id, o, "semaphore")),
            },
            R::CondAcquire(..) | R::CondRelease(_) | R::CondWait(..) | R::CondNotify(..) => {
                return self.condition(req, me);
            }
            R::BarrierWait(..) | R::BarrierAbort(_) | R::BarrierReset(_) | R::BarrierState(_) => {
                return self.barrier(req, me);
            }
            _ => return Err(refused("not a synchronization request")),
        };
        Ok(Some(answer))
    }

    fn condition(&mut self, req: &Request<'_>, me: ConnId) -> Step {
        use Request as R;
        let (R::CondAcquire(id, _)
        | R::CondRelease(id)
        | R::CondWait(id, _)
        | R::CondNotify(id, _)) = req
        else {
            return Err(refused("not a condition request"));
        };
        let c = match self.get(*id)? {
            Object::Condition(c) => c,
            o => return Err(wrong_kind(*id, o, "condition")),
        };
        let answer = match req {
            R::CondAcquire(..) => match c.owner {
                None => {
                    c.owner = Some(me);
                    Answer::Bool(true)
                }
                Some(o) if o == me => {
                    return Err(refused(
                        "this thread already holds the condition's lock: acquiring it again \
                         would deadlock",
                    ));
                }
                Some(_) => return Ok(None),
            },
            R::CondRelease(_) => {
                if c.owner != Some(me) {
                    return Err(refused(
                        "release of a condition's lock this thread does not hold",
                    ));
                }
                c.owner = None;
                self.wake = true;
                Answer::Done
            }
            R::CondWait(..) => match c.waiters.get(&me).copied() {
                None => {
                    if c.owner != Some(me) {
                        return Err(refused("wait on a condition whose lock is not held"));
                    }
                    c.owner = None;
                    c.order.push_back(me);
                    c.waiters.insert(me, Waiter::Sleeping);
                    self.wake = true;
                    return Ok(None);
                }
                Some(Waiter::Sleeping) => return Ok(None),
                Some(Waiter::Reacquiring { notified }) => {
                    if c.owner.is_some() {
                        return Ok(None);
                    }
                    c.owner = Some(me);
                    c.waiters.remove(&me);
                    Answer::Bool(notified)
                }
            },
            R::CondNotify(_, n) => {
                let mut woken = 0;
                while woken < *n {
                    let Some(w) = c.order.pop_front() else { break };
                    // Only sleepers are in `order`: whoever left it also left `waiters`
                    // or became a reacquirer, which is no longer in `order`.
                    if let Some(state) = c.waiters.get_mut(&w) {
                        *state = Waiter::Reacquiring { notified: true };
                        woken += 1;
                    }
                }
                self.wake |= woken > 0;
                Answer::Len(woken)
            }
            _ => unreachable!("matched above"),
        };
        Ok(Some(answer))
    }

    fn barrier(&mut self, req: &Request<'_>, me: ConnId) -> Step {
        use Request as R;
        let (R::BarrierWait(id, _)
        | R::BarrierAbort(id)
        | R::BarrierReset(id)
        | R::BarrierState(id)) = req
        else {
            return Err(refused("not a barrier request"));
        };
        let b = match self.get(*id)? {
            Object::Barrier(b) => b,
            o => return Err(wrong_kind(*id, o, "barrier")),
        };
        let answer = match req {
            R::BarrierWait(..) => match b.waiting.get(&me).copied() {
                None => {
                    if b.broken {
                        return Err(Error::BrokenBarrier);
                    }
                    let index = b.count;
                    b.count += 1;
                    if b.count == b.parties {
                        b.count = 0;
                        b.generation += 1;
                        self.wake = true;
                        Answer::Len(index)
                    } else {
                        b.waiting.insert(me, (b.generation, b.epoch, index));
                        return Ok(None);
                    }
                }
                Some((generation, epoch, index)) => {
                    if generation != b.generation {
                        b.waiting.remove(&me);
                        Answer::Len(index)
                    } else if b.broken || epoch != b.epoch {
                        b.waiting.remove(&me);
                        return Err(Error::BrokenBarrier);
                    } else {
                        return Ok(None);
                    }
                }
            },
            R::BarrierAbort(_) => {
                b.broken = true;
                self.wake = true;
                Answer::Done
            }
            R::BarrierReset(_) => {
                // The round in progress is broken for its waiters (a new epoch); the
                // barrier itself starts afresh.
                b.epoch += 1;
                b.count = 0;
                b.broken = false;
                self.wake = true;
                Answer::Done
            }
            R::BarrierState(_) => Answer::Numbers(vec![
                b.parties,
                if b.broken { 0 } else { b.count },
                u64::from(b.broken),
            ]),
            _ => unreachable!("matched above"),
        };
        Ok(Some(answer))
    }

    /// The answer when a waiting request runs out of time, or `None` when it must still
    /// wait (a condition's waiter takes its lock back however its wait ended).
    pub(crate) fn expire(&mut self, req: &Request<'_>, caller: Caller) -> Option<Reply> {
        let me = caller.conn;
        match req {
            Request::QueueGet(..) => Some(Err(Error::Empty)),
            Request::QueuePut(..) => Some(Err(Error::Full)),
            Request::CondWait(id, _) => {
                if let Some(Object::Condition(c)) = self.objects.get_mut(id) {
                    if c.waiters.get(&me) == Some(&Waiter::Sleeping) {
                        c.order.retain(|w| *w != me);
                        c.waiters
                            .insert(me, Waiter::Reacquiring { notified: false });
                    }
                    if c.waiters.contains_key(&me) {
                        return None;
                    }
                }
                Some(Ok(Answer::Bool(false)))
            }
            Request::BarrierWait(id, _) => {
                let Some(Object::Barrier(b)) = self.objects.get_mut(id) else {
                    return Some(Err(Error::BrokenBarrier));
                };
                let Some((generation, epoch, index)) = b.waiting.remove(&me) else {
                    return Some(Err(Error::BrokenBarrier));
                };
                if generation != b.generation {
                    // The round ended just as the deadline passed: this party passed.
                    return Some(Ok(Answer::Len(index)));
                }
                if !b.broken && epoch == b.epoch {
                    // As threading.Barrier: a waiter that times out breaks the round for
                    // every party.
                    b.broken = true;
                    self.wake = true;
                }
                Some(Err(Error::BrokenBarrier))
            }
            _ => Some(Ok(Answer::Bool(false))),
        }
    }

    /// Frees everything `conn` held or waited for: its holder is gone. A barrier one of
    /// whose parties left mid-wait is broken, so that the others do not wait for ever.
    pub(crate) fn release_all(&mut self, conn: ConnId) {
        let mut wake = false;
        for o in self.objects.values_mut() {
            match o {
                Object::Lock(owner) if *owner == Some(conn) => {
                    *owner = None;
                    wake = true;
                }
                Object::RLock(l) if l.owner == Some(conn) => {
                    *l = RLock::default();
                    wake = true;
                }
                Object::Condition(c) => {
                    if c.owner == Some(conn) {
                        c.owner = None;
                        wake = true;
                    }
                    if c.waiters.remove(&conn).is_some() {
                        c.order.retain(|w| *w != conn);
                    }
                }
                Object::Barrier(b) => {
                    if let Some((generation, epoch, _)) = b.waiting.remove(&conn) {
                        if generation == b.generation && epoch == b.epoch {
                            b.broken = true;
                            wake = true;
                        }
                    }
                }
                _ => {}
            }
        }
        self.wake |= wake;
    }
}

/// The new objects of the kinds this file serves.
pub(super) fn queue(maxsize: Option<u64>) -> Object {
    Object::Queue(Queue {
        items: Default::default(),
        tokens: Default::default(),
        maxsize: maxsize.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        unfinished: 0,
    })
}

pub(super) fn semaphore(value: u64, bounded: bool) -> Object {
    Object::Semaphore(Semaphore {
        value,
        bound: bounded.then_some(value),
    })
}

pub(super) fn condition() -> Object {
    Object::Condition(Condition::default())
}

pub(super) fn barrier(parties: u64) -> Result<Object, Error> {
    if parties == 0 {
        return Err(refused("a barrier needs at least one party"));
    }
    Ok(Object::Barrier(Barrier {
        parties,
        count: 0,
        generation: 0,
        epoch: 0,
        broken: false,
        waiting: Default::default(),
    }))
}

#[cfg(test)]
mod tests;
