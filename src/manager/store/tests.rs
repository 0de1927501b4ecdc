use proptest::prelude::*;

use super::*;
use crate::manager::wire::{self, Bytes};

const REMOTE: Caller = Caller {
    conn: 1,
    remote: true,
    session: 1,
};

/// A store with one object of every kind, ids 1 to 12.
fn populated() -> Store {
    let mut s = Store::default();
    for kind in [
        Kind::List,
        Kind::Dict,
        Kind::Namespace,
        Kind::Queue(None),
        Kind::Lock,
        Kind::Event,
        Kind::Value(Bytes(&[1, 2])),
        Kind::RLock,
        Kind::Semaphore(1, true),
        Kind::Condition,
        Kind::Barrier(2),
        Kind::Array(vec![Bytes(&[3])]),
    ] {
        s.create(&kind, REMOTE).unwrap();
    }
    s
}

#[test]
fn code_from_another_executable_is_refused_over_tcp() {
    let mut s = populated();
    let code = Code {
        offset: 0,
        fingerprint: crate::target::fingerprint() ^ 1,
    };
    let kind = Kind::Custom {
        state: Bytes(&[]),
        code,
    };
    let says_why = |m: &str| m.contains("authenticated, but runs a different executable");
    assert!(matches!(s.create(&kind, REMOTE), Err(Error::ValueError(m)) if says_why(&m)));
    s.apply(&Request::ListAppend(1, Bytes(&[0])), REMOTE);
    let r = s.apply(&Request::ListModify(1, 0, code), REMOTE);
    assert!(matches!(r, Some(Err(Error::ValueError(m))) if says_why(&m)));
    // The same executable's peer still names only real entries: offset 0 is none.
    let code = Code {
        offset: 0,
        fingerprint: crate::target::fingerprint(),
    };
    let r = s.apply(&Request::ListModify(1, 0, code), REMOTE);
    assert!(matches!(r, Some(Err(Error::BinaryMismatch))), "{r:?}");
}

#[test]
fn a_lock_is_freed_when_its_holders_connection_goes() {
    let mut s = populated();
    let a = Caller {
        conn: 10,
        remote: false,
        session: 10,
    };
    let b = Caller {
        conn: 11,
        remote: false,
        session: 11,
    };
    assert!(matches!(
        s.apply(&Request::LockAcquire(5, None), a),
        Some(Ok(Answer::Bool(true)))
    ));
    assert!(
        s.apply(&Request::LockAcquire(5, None), b).is_none(),
        "b must wait"
    );
    s.release_all(10);
    assert!(s.wake);
    assert!(matches!(
        s.apply(&Request::LockAcquire(5, None), b),
        Some(Ok(Answer::Bool(true)))
    ));
}

#[test]
fn only_the_holder_releases_a_lock() {
    let mut s = populated();
    let (a, b) = (
        Caller {
            conn: 10,
            remote: false,
            session: 10,
        },
        Caller {
            conn: 11,
            remote: false,
            session: 11,
        },
    );
    let acquire = Request::LockAcquire(5, None);
    assert!(matches!(s.apply(&acquire, a), Some(Ok(Answer::Bool(true)))));
    let r = s.apply(&Request::LockRelease(5), b);
    assert!(matches!(r, Some(Err(Error::ValueError(m))) if m.contains("another")));
    assert!(s.apply(&acquire, b).is_none(), "still held by a");
    assert!(matches!(
        s.apply(&Request::LockRelease(5), a),
        Some(Ok(Answer::Done))
    ));
}

proptest! {
    // Hostile requests: whatever bytes arrive, decoding and applying them is an answer
    // or an error for that peer, never a panic (and never code execution for a TCP peer).
    #[test]
    fn arbitrary_requests_never_panic_the_store(
        tag in 0u8..70,
        id in 0u8..14,
        rest in proptest::collection::vec(any::<u8>(), 0..48),
    ) {
        let mut bytes = vec![tag, id];
        bytes.extend_from_slice(&rest);
        let mut s = populated();
        if let Ok(req) = wire::decode::<Request<'_>>(&bytes) {
            let _ = s.apply(&req, REMOTE);
            let _ = s.apply(&req, REMOTE);
        }
        let _ = wire::decode::<wire::Reply>(&bytes);
    }
}
