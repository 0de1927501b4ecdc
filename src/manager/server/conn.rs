//! One client connection's thread: its requests, its replies, and its cleanup.
//!
//! See the parent module for the bounds on every wait on a client's rings.

use std::os::fd::AsFd;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{FIRST_PUT, LAST_PUT, PEER_CHECK, Shared, not_owner, same_token};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::manager::conns::ConnState;
use crate::manager::store::{Caller, ConnId};
use crate::manager::wire::{self, Answer, Buf, Request, Rings};

/// One connection, as its thread sees it.
pub(super) struct Peer<'a> {
    pub(super) conn: &'a Connection<()>,
    pub(super) id: ConnId,
    pub(super) me: &'a ConnState,
    pub(super) shared: &'a Shared,
}

impl Peer<'_> {
    /// Whether to stop serving this client: it left (a client on rings never writes on
    /// the socket, so readable means gone), its connection was ended, or the server stops.
    fn gone(&self) -> bool {
        self.shared.stopping.load(Ordering::Acquire)
            || self.me.ended()
            || self.conn.poll(Some(Duration::ZERO)).unwrap_or(true)
    }
}

/// Receives the next request frame into `inp`; `false` when the peer is gone (or the
/// server stops).
fn next_request(peer: &Peer<'_>, rings: Option<&Rings>, inp: &mut Vec<u8>) -> bool {
    let Some((requests, _)) = rings else {
        return peer.conn.recv_bytes_into(inp).is_ok();
    };
    loop {
        match requests.get_timeout(PEER_CHECK) {
            Ok(frame) => {
                *inp = frame.0;
                return !peer.me.ended();
            }
            // Nothing (or not all of an item) in time: is the client still there?
            Err(Error::Empty | Error::Timeout) => {
                if peer.gone() {
                    return false;
                }
            }
            // A ring that is not one any more (the client wrote over it).
            Err(_) => return false,
        }
    }
}

pub(super) fn serve_conn(peer: &Peer<'_>) {
    let Peer {
        conn, id, shared, ..
    } = *peer;
    let mut caller = Caller {
        conn: id,
        remote: shared.remote,
        session: 0,
    };
    let mut rings: Option<Rings> = None;
    let mut inp = Vec::new();
    let mut out = Vec::new();
    while next_request(peer, rings.as_ref(), &mut inp) {
        let mut embedded = Vec::new();
        let request = match wire::decode::<wire::Frame<'_>>(&inp) {
            Ok((ops, tokens, request)) => {
                if caller.session != 0 && !(ops.is_empty() && tokens.is_empty()) {
                    let Some(mut store) = shared.store_for(peer.me) else {
                        break;
                    };
                    store.apply_ops(caller.session, &ops);
                    // Before the request stores the bytes: no reader may see them while
                    // their tokens are still in transit.
                    match &request {
                        Request::Create(_) => embedded = tokens,
                        Request::QueuePut(queue, ..) => {
                            // Held by the queue while the put waits, then by the item.
                            store.embed(&tokens, *queue);
                            embedded = tokens;
                        }
                        Request::Publish(..) => store.embed(&tokens, 0),
                        r => {
                            if let Some(container) = r.object() {
                                store.embed(&tokens, container);
                            }
                        }
                    }
                }
                Ok(request)
            }
            Err(e) => Err(e),
        };
        if let Ok(Request::Hello(session, pid)) = &request {
            if caller.session == 0 && *session != 0 {
                let Some(mut store) = shared.store_for(peer.me) else {
                    break;
                };
                caller.session = *session;
                // Counted out of the session by the connection's end, however it ends.
                peer.me.set_session(*session);
                store.hello(*session, *pid, shared.remote);
            }
        }
        let (reply, shutdown) = match request {
            Ok(Request::Hello(..)) => (Ok(Answer::Nonce(shared.nonce)), false),
            Ok(Request::Shutdown(token)) if same_token(token.0, &shared.owner_token) => {
                (Ok(Answer::Done), true)
            }
            Ok(Request::Shutdown(_)) => (Err(not_owner()), false),
            Ok(Request::Upgrade) if rings.is_none() && !shared.remote => {
                if send(peer, None, &Ok(Answer::Done), &mut out).is_err() {
                    break;
                }
                match receive_rings(conn) {
                    Ok(r) => rings = Some(r),
                    Err(_) => break,
                }
                peer.me.set_upgraded();
                continue;
            }
            Ok(Request::Upgrade) => (
                Err(Error::ValueError(
                    "this connection cannot be upgraded".into(),
                )),
                false,
            ),
            Ok(req) => match handle(&req, caller, peer, &embedded) {
                Some(r) => {
                    // A new object's contents are seen by no one before its creator has
                    // its id: its tokens can pass to it now.
                    if let (Ok(Answer::Id(new)), Request::Create(_)) = (&r, &req) {
                        shared.store().embed(&embedded, *new);
                    }
                    (r, false)
                }
                None => break, // the peer hung up while waiting
            },
            Err(e) => {
                ::log::warn!("manager: connection {id} sent a malformed request: {e}");
                (Err(e), false)
            }
        };
        if send(peer, rings.as_ref(), &reply, &mut out).is_err() {
            break;
        }
        if shutdown {
            shared.stop();
            break;
        }
    }
}

/// A connection's cleanup, run when its thread ends however it ends (a panic included),
/// unless the janitor ran it already: forget its socket dup, release every lock it held so
/// no other client waits for a connection that is gone, and count it out of its session.
pub(super) struct ConnCleanup<'a> {
    pub(super) id: ConnId,
    pub(super) shared: &'a Shared,
}

impl Drop for ConnCleanup<'_> {
    fn drop(&mut self) {
        self.shared.end_conn(self.id);
    }
}

/// The rings a client sends right after the server accepted its `Upgrade`.
fn receive_rings(conn: &Connection<()>) -> Result<Rings> {
    let typed =
        Connection::<Rings>::from_fd(crate::sys::fd::dup_cloexec(conn.as_fd())?, true, true);
    typed.recv_timeout(Duration::from_secs(10))
}

/// Sends one reply on the rings, or the socket.
fn send(
    peer: &Peer<'_>,
    rings: Option<&Rings>,
    reply: &wire::Reply,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    crate::codec::encode_plain_into(reply, out)?;
    let Some((_, replies)) = rings else {
        return peer.conn.send_bytes(out);
    };
    // Each attempt is bounded: the client may hold the reply ring's lock, or stop reading,
    // and die. A timed-out attempt leaves nothing of the reply but an `Abort` the client
    // skips, so the next one starts afresh.
    let mut attempt = FIRST_PUT;
    loop {
        match replies.put_timeout(Buf(out.clone()), attempt) {
            Err(Error::Full) if peer.gone() => return Err(Error::Closed),
            Err(Error::Full) => attempt = attempt.saturating_mul(2).min(LAST_PUT),
            r => return r,
        }
    }
}

/// Runs one request, waiting if it must; `None` if the peer hung up meanwhile.
fn handle(
    req: &Request<'_>,
    caller: Caller,
    peer: &Peer<'_>,
    tokens: &[wire::Token],
) -> Option<wire::Reply> {
    let Peer { conn, shared, .. } = *peer;
    // `None` is forever (or a deadline too far to represent).
    let mut deadline = req
        .wait()
        .flatten()
        .and_then(|ns| Instant::now().checked_add(Duration::from_nanos(ns)));
    let mut store = shared.store_for(peer.me)?;
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            return Some(Err(Error::Closed));
        }
        if peer.me.ended() {
            return None;
        }
        if !tokens.is_empty() {
            store.arriving = tokens.to_vec();
        }
        let reply = store.apply(req, caller);
        store.arriving.clear();
        if std::mem::take(&mut store.wake) {
            shared.cond.notify_all();
        }
        if let Some(reply) = reply {
            return Some(reply);
        }
        // It must wait: until its deadline, a wake-up, or its peer leaving.
        let now = Instant::now();
        let mut slice = PEER_CHECK;
        if let Some(d) = deadline {
            if now >= d {
                let reply = store.expire(req, caller);
                if std::mem::take(&mut store.wake) {
                    shared.cond.notify_all();
                }
                match reply {
                    Some(reply) => return Some(reply),
                    // A condition's waiter takes its lock back, however long that takes.
                    None => {
                        deadline = None;
                        continue;
                    }
                }
            }
            slice = slice.min(d - now);
        }
        let (guard, timeout) = shared
            .cond
            .wait_timeout(store, slice)
            .unwrap_or_else(PoisonError::into_inner);
        store = guard;
        if timeout.timed_out() && conn.poll(Some(Duration::ZERO)).unwrap_or(true) {
            // A client sends nothing while it waits: readable means it hung up.
            return None;
        }
    }
}
