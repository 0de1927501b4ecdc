//! The accounting's checks of what a worker reports (issue 19 items 5 and 6), one case
//! each; the loom model (`model.rs`) runs them in every interleaving.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::*;

type Words = Arc<[AtomicU64]>;

fn account() -> Account<&'static str, Words> {
    let words: Words = (0..WORDS).map(|_| AtomicU64::new(0)).collect();
    let mut a = Account::new(Gate::over(words));
    a.on_ready();
    a
}

#[test]
fn an_answer_must_name_the_running_task() {
    let mut a = account();
    let first = a.number();
    a.assign("first", first);
    let next = a.arm();
    a.queued("next", next);
    assert_eq!(
        a.on_answer(next, 0, false),
        None,
        "the queued task is not running yet"
    );
    assert_eq!(a.on_answer(first + 100, 0, false), None, "never sent");
    assert!(a.holds(first), "a refused answer changes nothing");
    assert_eq!(a.on_answer(first, 0, false), Some("first"));
    assert_eq!(a.on_answer(first, 0, false), None, "answered already");
    assert_eq!(a.on_answer(next, 0, false), Some("next"));
    assert!(a.is_idle());
}

#[test]
fn a_refusal_at_the_gate_is_honest_only_for_a_task_taken_back() {
    let mut a = account();
    let first = a.number();
    a.assign("first", first);
    let b = a.arm();
    a.queued("b", b);
    let c = a.arm();
    a.queued("c", c);
    // Taken back (an idle worker took it): the worker's refusal of it is expected.
    assert_eq!(a.revoke(), Some("b"));
    assert_eq!(a.on_dropped(b), None);
    assert_eq!(a.on_dropped(first + 100), None, "never sent: nothing to do");
    // Still held: a scribbled word. The task comes out, to fail.
    assert_eq!(a.on_dropped(c), Some("c"));
    assert_eq!(a.on_answer(first, 0, false), Some("first"));
    assert!(a.is_idle(), "nothing left queued");
    // The running task, sent ahead: it comes out and the worker holds nothing.
    let d = a.number();
    a.assign("d", d);
    let e = a.arm();
    a.queued("e", e);
    assert_eq!(a.on_answer(d, 0, false), Some("d"));
    assert!(a.holds(e));
    assert_eq!(a.on_dropped(e), Some("e"));
    assert!(a.is_idle());
}

#[test]
fn an_initializer_failure_counts_only_before_ready() {
    let mut a = account();
    let t = a.number();
    a.assign("t", t);
    assert!(!a.on_init_failed("late".into()), "past its initializer");
    assert!(a.holds(t), "the running task stays accounted for");
    let words: Words = (0..WORDS).map(|_| AtomicU64::new(0)).collect();
    let mut starting: Account<&str, Words> = Account::new(Gate::over(words));
    assert!(starting.on_init_failed("bad init".into()));
    assert!(matches!(starting.exit().outcome, Outcome::InitFailed(m) if m == "bad init"));
}
