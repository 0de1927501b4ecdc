//! Reference counting: who holds claims on which object, and freeing an object when its
//! last claim goes (Python's manager `incref`/`decref`, without a connection per change).
//!
//! A claim is held by one of three things:
//! - a client process's *session* (a random id each process sends in `Hello`): one claim
//!   per live [`Life`](crate::manager::handle) in that process, that is per group of clones
//!   of a proxy; `Create` gives the creator's session its claim;
//! - a *token* in transit: serializing a proxy asks for one (`Lend`, a round trip), and the
//!   bytes carry it. A process that decodes them turns the token's claim into its session's
//!   (`Convert`), or gives it back if it already had one (`Return`). A token decoded twice
//!   (bytes read again) gets a fresh claim the second time: the first reader converted it.
//! - a *container*: tokens serialized into a request's values are held by the object the
//!   request stores into (by the published names, for `Publish`) until that object is
//!   freed; a reader of the stored bytes converts a held token into a fresh claim. A
//!   queue keeps an item's tokens with the item: a `get` puts them back in transit, for
//!   the getter to convert.
//!
//! Claim changes ride on the next request of the process that made them ([`RefOp`]s before
//! the request in its frame), in the order it made them, so a process never gives back a
//! claim before a claim it took depends on it: a decoded proxy's `Convert` precedes the
//! `Release` of the proxy it was read from. An object whose count reaches zero is freed,
//! with the tokens it held (which may free more).
//!
//! A session ends when its process is gone: its last connection closed and its pid no
//! longer runs the process that said `Hello` (same start time). The janitor checks
//! sessions without connections every second (a live process may hold proxies without
//! any connection open). Its claims are then dropped. Over TCP the pid means nothing: a
//! remote session's claims stay until it releases them.

use std::collections::HashMap;

use super::Store;
use crate::error::Error;
use crate::manager::wire::{ObjectId, RefOp, Session, Token};

/// The claims of one server.
#[derive(Default)]
pub(crate) struct Claims {
    refs: HashMap<ObjectId, u64>,
    tokens: HashMap<Token, TokenState>,
    /// The tokens each container holds (0: the published names, never freed).
    holds: HashMap<ObjectId, Vec<Token>>,
    sessions: HashMap<Session, SessionState>,
    last_token: Token,
}

struct TokenState {
    object: ObjectId,
    /// The container that holds it; `None` while in transit.
    held_by: Option<ObjectId>,
}

#[derive(Default)]
struct SessionState {
    conns: u32,
    /// For a local session: the process, and its start time (a reused pid is another).
    process: Option<(u32, u64)>,
    /// Its claims on each object (below zero: releases that came before their claims).
    claims: HashMap<ObjectId, i64>,
}

impl Store {
    /// A connection of `session` said hello from process `pid` (`remote`: over TCP).
    pub(crate) fn hello(&mut self, session: Session, pid: u32, remote: bool) {
        let s = self.claims.sessions.entry(session).or_default();
        s.conns += 1;
        if !remote && s.process.is_none() {
            s.process = crate::sys::pid::start_time(pid).map(|t| (pid, t));
        }
    }

    /// A connection of `session` closed.
    pub(crate) fn bye(&mut self, session: Session) {
        if let Some(s) = self.claims.sessions.get_mut(&session) {
            s.conns = s.conns.saturating_sub(1);
        }
        self.reap_sessions();
    }

    /// Ends the sessions whose process is gone (see the module docs).
    pub(crate) fn reap_sessions(&mut self) {
        let gone: Vec<Session> = self
            .claims
            .sessions
            .iter()
            .filter(|(_, s)| {
                // Without a connection: a dead process's, or one that holds nothing (it
                // starts afresh if it comes back).
                s.conns == 0
                    && (s.claims.is_empty()
                        || s.process
                            .is_some_and(|(pid, t)| crate::sys::pid::start_time(pid) != Some(t)))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(s) = self.claims.sessions.remove(&id) {
                for (object, n) in s.claims {
                    if n > 0 {
                        self.drop_refs(object, n as u64);
                    }
                }
            }
        }
    }

    /// The creator's claim on a new object.
    pub(super) fn claim_new(&mut self, session: Session, id: ObjectId) {
        self.claims.refs.insert(id, 1);
        *self
            .claims
            .sessions
            .entry(session)
            .or_default()
            .claims
            .entry(id)
            .or_default() += 1;
    }

    /// A claim for a proxy being serialized: its token.
    pub(super) fn lend(&mut self, id: ObjectId) -> Result<Token, Error> {
        let Some(refs) = self.claims.refs.get_mut(&id) else {
            return Err(Error::ValueError(format!("no manager object with id {id}")));
        };
        *refs += 1;
        self.claims.last_token += 1;
        let token = self.claims.last_token;
        self.claims.tokens.insert(
            token,
            TokenState {
                object: id,
                held_by: None,
            },
        );
        Ok(token)
    }

    /// The tokens serialized into a request's values pass to `container`.
    pub(crate) fn embed(&mut self, tokens: &[Token], container: ObjectId) {
        if container != 0 && !self.objects.contains_key(&container) {
            return;
        }
        for t in tokens {
            if let Some(state) = self.claims.tokens.get_mut(t) {
                if state.held_by.is_none() {
                    state.held_by = Some(container);
                    self.claims.holds.entry(container).or_default().push(*t);
                }
            }
        }
    }

    /// Tokens `container` held go back in transit: the bytes that carry them left it (a
    /// queue's item, taken by a `get`), and their reader converts them.
    pub(super) fn release_held(&mut self, container: ObjectId, tokens: &[Token]) {
        if tokens.is_empty() {
            return;
        }
        for t in tokens {
            if let Some(state) = self.claims.tokens.get_mut(t) {
                if state.held_by == Some(container) {
                    state.held_by = None;
                }
            }
        }
        if let Some(held) = self.claims.holds.get_mut(&container) {
            held.retain(|t| !tokens.contains(t));
        }
    }

    /// Applies a session's claim changes, in order.
    pub(crate) fn apply_ops(&mut self, session: Session, ops: &[RefOp]) {
        for op in ops {
            match *op {
                RefOp::Release(id, n) => {
                    // A session's threads send their changes on their own connections, so
                    // a release may arrive before the conversion it undoes: the balance
                    // then goes below zero, and the conversion, when it comes, is given
                    // back at once.
                    let s = self.claims.sessions.entry(session).or_default();
                    let n = i64::try_from(n).unwrap_or(i64::MAX);
                    let have = s.claims.get(&id).copied().unwrap_or(0);
                    let give = n.min(have.max(0));
                    let left = have.saturating_sub(n);
                    if left == 0 {
                        s.claims.remove(&id);
                    } else {
                        s.claims.insert(id, left);
                    }
                    self.drop_refs(id, give as u64);
                }
                RefOp::Convert(token, id) => {
                    let transit = match self.claims.tokens.get(&token) {
                        Some(t) if t.object == id => t.held_by.is_none(),
                        _ => false,
                    };
                    if transit {
                        self.claims.tokens.remove(&token);
                    } else {
                        // A held token, or one converted already: a fresh claim, if the
                        // object still exists.
                        let Some(refs) = self.claims.refs.get_mut(&id) else {
                            continue;
                        };
                        *refs += 1;
                    }
                    let s = self.claims.sessions.entry(session).or_default();
                    let have = s.claims.get(&id).copied().unwrap_or(0);
                    if have + 1 == 0 {
                        s.claims.remove(&id);
                    } else {
                        s.claims.insert(id, have + 1);
                    }
                    if have < 0 {
                        // Its release came first.
                        self.drop_refs(id, 1);
                    }
                }
                RefOp::Return(token) => {
                    if let Some(t) = self.claims.tokens.get(&token) {
                        if t.held_by.is_none() {
                            let id = t.object;
                            self.claims.tokens.remove(&token);
                            self.drop_refs(id, 1);
                        }
                    }
                }
            }
        }
    }

    /// Drops `n` claims on `id`; frees it, and what only it held, at zero.
    fn drop_refs(&mut self, id: ObjectId, n: u64) {
        let mut work = vec![(id, n)];
        while let Some((id, n)) = work.pop() {
            let Some(refs) = self.claims.refs.get_mut(&id) else {
                continue;
            };
            *refs = refs.saturating_sub(n);
            if *refs > 0 {
                continue;
            }
            self.claims.refs.remove(&id);
            self.objects.remove(&id);
            for t in self.claims.holds.remove(&id).unwrap_or_default() {
                if let Some(state) = self.claims.tokens.remove(&t) {
                    work.push((state.object, 1));
                }
            }
        }
        if self.objects.capacity() > 64 && self.objects.len() < self.objects.capacity() / 4 {
            self.objects.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::store::Caller;
    use crate::manager::wire::{Answer, Bytes, Kind, Request};

    fn caller(session: Session) -> Caller {
        Caller {
            conn: session,
            remote: false,
            session,
        }
    }

    fn list(s: &mut Store, session: Session) -> ObjectId {
        match s.apply(&Request::Create(Kind::List), caller(session)) {
            Some(Ok(Answer::Id(id))) => id,
            other => panic!("{other:?}"),
        }
    }

    fn lend(s: &mut Store, id: ObjectId) -> Token {
        match s.apply(&Request::Lend(id), caller(1)) {
            Some(Ok(Answer::Token(t))) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_token_keeps_the_object_until_converted_then_the_claim_does() {
        let mut s = Store::default();
        let x = list(&mut s, 1);
        let t = lend(&mut s, x);
        s.apply_ops(1, &[RefOp::Release(x, 1)]);
        assert!(s.objects.contains_key(&x), "the token in transit keeps it");
        s.apply_ops(2, &[RefOp::Convert(t, x)]);
        // A second decoding of the same bytes gets a fresh claim.
        s.apply_ops(3, &[RefOp::Convert(t, x)]);
        s.apply_ops(2, &[RefOp::Release(x, 1)]);
        assert!(s.objects.contains_key(&x));
        // A session cannot give back claims it does not hold: they count against claims
        // it takes later.
        s.apply_ops(2, &[RefOp::Release(x, 5)]);
        assert!(s.objects.contains_key(&x));
        s.apply_ops(3, &[RefOp::Release(x, 1)]);
        assert!(!s.objects.contains_key(&x), "the last claim went");
        // Returning a token gives its claim back.
        let y = list(&mut s, 1);
        let t = lend(&mut s, y);
        s.apply_ops(1, &[RefOp::Return(t), RefOp::Release(y, 1)]);
        assert!(!s.objects.contains_key(&y));
    }

    #[test]
    fn a_release_that_overtakes_its_conversion_still_counts() {
        let mut s = Store::default();
        let x = list(&mut s, 1);
        let t = lend(&mut s, x);
        s.apply_ops(1, &[RefOp::Release(x, 1)]);
        // Session 2 decoded the proxy and dropped it; its threads' frames crossed.
        s.apply_ops(2, &[RefOp::Release(x, 1)]);
        assert!(s.objects.contains_key(&x), "the token in transit keeps it");
        s.apply_ops(2, &[RefOp::Convert(t, x)]);
        assert!(!s.objects.contains_key(&x), "no claim is left");
    }

    #[test]
    fn a_container_holds_the_tokens_stored_in_it_until_it_is_freed() {
        let mut s = Store::default();
        let (outer, inner) = (list(&mut s, 1), list(&mut s, 1));
        let t = lend(&mut s, inner);
        s.embed(&[t], outer);
        s.apply(&Request::ListAppend(outer, Bytes(&[0])), caller(1));
        s.apply_ops(1, &[RefOp::Release(inner, 1)]);
        assert!(s.objects.contains_key(&inner), "held by the outer list");
        // A reader of the stored bytes gets a claim of its own.
        s.apply_ops(2, &[RefOp::Convert(t, inner)]);
        s.apply_ops(1, &[RefOp::Release(outer, 1)]);
        assert!(!s.objects.contains_key(&outer));
        assert!(s.objects.contains_key(&inner), "the reader's claim");
        s.apply_ops(2, &[RefOp::Release(inner, 1)]);
        assert!(s.objects.is_empty());
    }

    #[test]
    fn a_dead_processs_session_gives_its_claims_back() {
        let mut s = Store::default();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let session = 7;
        s.hello(session, child.id(), false);
        let x = list(&mut s, session);
        s.bye(session);
        assert!(
            s.objects.contains_key(&x),
            "no connection, but the process lives"
        );
        child.kill().expect("kill");
        child.wait().expect("reaped");
        s.reap_sessions();
        assert!(!s.objects.contains_key(&x), "its process is gone");
    }
}
