use super::*;
use crate::manager::wire::{Bytes, Kind};

fn caller(conn: ConnId) -> Caller {
    Caller {
        conn,
        remote: false,
        session: conn,
    }
}

fn new(s: &mut Store, kind: Kind<'_>) -> ObjectId {
    s.create(&kind, caller(0)).expect("a valid kind")
}

fn yes(r: Option<Reply>) -> bool {
    matches!(r, Some(Ok(Answer::Bool(true))))
}

#[test]
fn a_condition_waiter_lets_go_then_takes_the_lock_back_when_notified() {
    let mut s = Store::default();
    let c = new(&mut s, Kind::Condition);
    let (a, b) = (caller(1), caller(2));
    assert!(yes(s.apply(&Request::CondAcquire(c, None), a)));
    let wait = Request::CondWait(c, None);
    assert!(s.apply(&wait, a).is_none(), "a sleeps");
    assert!(yes(s.apply(&Request::CondAcquire(c, None), b)), "a let go");
    assert!(matches!(
        s.apply(&Request::CondNotify(c, 5), b),
        Some(Ok(Answer::Len(1)))
    ));
    assert!(
        s.apply(&wait, a).is_none(),
        "notified, but b holds the lock"
    );
    assert!(matches!(
        s.apply(&Request::CondRelease(c), b),
        Some(Ok(Answer::Done))
    ));
    assert!(yes(s.apply(&wait, a)), "a woke, notified, holding the lock");
    assert!(s.apply(&Request::CondAcquire(c, Some(0)), b).is_none());
    // Waiting without the lock is refused.
    assert!(matches!(s.apply(&wait, b), Some(Err(Error::ValueError(_)))));
}

#[test]
fn a_timed_out_condition_waiter_still_takes_the_lock_back() {
    let mut s = Store::default();
    let c = new(&mut s, Kind::Condition);
    let (a, b) = (caller(1), caller(2));
    assert!(yes(s.apply(&Request::CondAcquire(c, None), a)));
    let wait = Request::CondWait(c, Some(0));
    assert!(s.apply(&wait, a).is_none());
    assert!(yes(s.apply(&Request::CondAcquire(c, None), b)));
    assert!(s.expire(&wait, a).is_none(), "it must wait for the lock");
    // A later notify does not count for a waiter that timed out.
    assert!(matches!(
        s.apply(&Request::CondNotify(c, 1), b),
        Some(Ok(Answer::Len(0)))
    ));
    s.apply(&Request::CondRelease(c), b);
    assert!(matches!(s.apply(&wait, a), Some(Ok(Answer::Bool(false)))));
}

#[test]
fn barrier_rounds_and_a_reset_that_breaks_the_waiters() {
    let mut s = Store::default();
    let bar = new(&mut s, Kind::Barrier(2));
    let (a, b) = (caller(1), caller(2));
    let wait = Request::BarrierWait(bar, None);
    assert!(s.apply(&wait, a).is_none());
    assert!(matches!(s.apply(&wait, b), Some(Ok(Answer::Len(1)))));
    assert!(
        matches!(s.apply(&wait, a), Some(Ok(Answer::Len(0)))),
        "the round passed"
    );
    assert!(s.apply(&wait, a).is_none(), "a new round");
    s.apply(&Request::BarrierReset(bar), b);
    assert!(matches!(s.apply(&wait, a), Some(Err(Error::BrokenBarrier))));
    assert!(s.apply(&wait, a).is_none(), "usable again after the reset");
    s.release_all(1);
    assert!(
        matches!(s.apply(&wait, b), Some(Err(Error::BrokenBarrier))),
        "a left"
    );
}

#[test]
fn a_bounded_queue_makes_putters_wait_and_gets_wake_them() {
    let mut s = Store::default();
    let q = new(&mut s, Kind::Queue(Some(1)));
    let a = caller(1);
    let put = |v: &'static [u8]| Request::QueuePut(q, Bytes(v), None);
    assert!(matches!(s.apply(&put(&[1]), a), Some(Ok(Answer::Done))));
    assert!(s.apply(&put(&[2]), a).is_none(), "full");
    assert!(matches!(s.expire(&put(&[2]), a), Some(Err(Error::Full))));
    s.wake = false;
    assert!(matches!(
        s.apply(&Request::QueueGet(q, None), a),
        Some(Ok(Answer::One(_)))
    ));
    assert!(s.wake, "a get wakes the putters of a bounded queue");
    assert!(matches!(
        s.apply(&Request::QueueTaskDone(q), a),
        Some(Ok(Answer::Done))
    ));
    assert!(yes(s.apply(&Request::QueueJoin(q, None), a)));
    assert!(matches!(
        s.apply(&Request::QueueTaskDone(q), a),
        Some(Err(Error::ValueError(_)))
    ));
}
