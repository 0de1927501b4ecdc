//! A loom model of the gate over the production accounting: the pool's side is
//! [`Account`] and [`dispatch`] themselves, with a gate of a few [`MWord64`]s; the worker's
//! side is `gate::take_in` (win the word, then run), in a worker that can die at each step
//! (`shim::model::victim`) or have an answer refused (then the pool stops reading it and
//! kills it, as `driver.rs` does). The sockets are queues under a loom mutex, as ordered
//! as a stream; a worker's exit is seen after its last answer, as a pidfd is.
//!
//! Every frame is numbered and every answer names its task, as in production: the pool
//! takes an answer only through `Account::on_answer(seq)`, and a worker that loses its
//! word reports the refusal, which the pool judges with `Account::on_dropped`.
//!
//! What it checks, for every interleaving within the preemption bound:
//! - every task runs at most once, and ends either answered (it ran) or failed, and fails
//!   only if the dead worker started it (won its word, or was handed it while idle);
//! - after each dispatch, no worker is idle while a task is pending or queued untaken
//!   behind another worker;
//! - no hang: the pool waits only for an answer or an exit that will come (a skipped
//!   task would leave it waiting, and loom reports the deadlock);
//! - a cancel (`Account::cancel`, as `State::cancel` calls it) that takes a task back,
//!   from the pool's queue, from a worker's queue or as the worker's next task, means it
//!   never runs; one that loses the word leaves it to run once;
//! - every answer names the task the pool holds as the worker's running one, and an
//!   honest refusal at the gate never names a task the pool still holds (so the pool's
//!   verdict "impossible state: fail and replace" never fires without a scribbler);
//! - with a hostile task (worker 0 scribbles every word of its gate while it runs task
//!   0, with a value no honest party writes or with a plausible one) the pool still never
//!   hangs, every task ends once, and no answer is taken for a task it does not name.
//!
//! Sizes: CI runs one task ahead and two gate words, at the default bound (2): five tasks
//! without deaths, three with a death at each step of worker 0 and with each of its first
//! two answers refused; three tasks with task 1 or 2 cancelled after round 0, 1 or 2,
//! and with task 2 cancelled while worker 0 dies at every other step; three tasks with
//! each of three scribbled values. `MPROC_MODEL_DEEP=1` adds bound 3 at five tasks, two
//! ahead with four words and seven tasks, and bound 4 at four tasks.

use std::collections::VecDeque;
use std::sync::Arc as StdArc;
use std::sync::Mutex as StdMutex;

use loom::sync::{Arc, Condvar, Mutex};

use super::{Account, Outcome, Post, dispatch};
use crate::pool::gate::{self, Gate};
use crate::shim::model::{self, Fate, MWord, MWord64, victim};
use crate::shim::{Word, Word64};

type Words = StdArc<[MWord64]>;

/// What the model's "sockets" and "pidfds" carry, and the callers' submissions.
#[derive(Default)]
struct Wires {
    /// Per worker: frames to it (task, sequence number, whether sent ahead).
    to: Vec<VecDeque<(usize, u64, bool)>>,
    /// Per worker: its answers and refusals.
    from: Vec<VecDeque<Reply>>,
    exited: Vec<bool>,
    /// Per worker: the pool killed it (it dies when it next looks for a frame; its death
    /// at every other step is `victim`'s).
    killed: Vec<bool>,
    /// The pool is done: workers stop.
    closed: bool,
    /// Threads asleep on `moved` (no one to notify, and no model step, when none).
    sleepers: usize,
}

struct Net {
    wires: Mutex<Wires>,
    moved: Condvar,
}

impl Net {
    /// Changes the wires and wakes whoever sleeps on them.
    fn tell(&self, f: impl FnOnce(&mut Wires)) {
        let mut w = self.wires.lock().unwrap();
        f(&mut w);
        if w.sleepers > 0 {
            self.moved.notify_all();
        }
    }

    /// Waits until `ready` gives something.
    fn wait<R>(&self, mut ready: impl FnMut(&mut Wires) -> Option<R>) -> R {
        let mut w = self.wires.lock().unwrap();
        loop {
            if let Some(r) = ready(&mut w) {
                return r;
            }
            w.sleepers += 1;
            w = self.moved.wait(w).unwrap();
            w.sleepers -= 1;
        }
    }
}

/// What a worker sends back.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// It ran `task`, numbered `seq`; `refused`: the pool refuses the frame (corrupt).
    Answer {
        task: usize,
        seq: u64,
        refused: bool,
    },
    /// It lost task `seq`'s gate word and dropped it (`worker::DROPPED`).
    Dropped { seq: u64 },
}

/// What happened to the tasks, for the verdict (plain bookkeeping, no model steps).
#[derive(Default)]
struct Record {
    runs: Vec<u32>,
    /// Who started each task: won its gate word, or was handed it while idle.
    started_by: Vec<Option<usize>>,
}

/// One worker as the model's pool sees it.
struct Worker<const A: usize, const N: usize> {
    id: usize,
    tasks: Account<usize, Words, A, N>,
    /// Frames to send once dispatch is done (its link's outgoing queue).
    outgoing: Vec<(usize, u64, bool)>,
    record: StdArc<StdMutex<Record>>,
    /// Its link is closed (refused frame): nothing more is sent or read.
    broken: bool,
    gone: bool,
}

impl<const A: usize, const N: usize> Post<usize, Words, A, N> for Worker<A, N> {
    fn account(&self) -> &Account<usize, Words, A, N> {
        &self.tasks
    }
    fn account_mut(&mut self) -> &mut Account<usize, Words, A, N> {
        &mut self.tasks
    }
    fn open(&self) -> bool {
        !self.broken && !self.gone
    }
    fn post(&mut self, task: &usize, seq: u64, ahead: bool) {
        if !ahead {
            // Handed over while idle: the worker answers for it from now on.
            self.record.lock().unwrap().started_by[*task] = Some(self.id);
        }
        self.outgoing.push((*task, seq, ahead));
    }
    fn flush(&mut self) -> bool {
        false
    }
}

/// A model run's shape.
#[derive(Clone, Copy, Debug)]
struct Case {
    tasks: usize,
    /// Tasks submitted ahead of the first unconsumed result (an `imap`'s window).
    window: usize,
    /// Worker 0 dies at its k-th step.
    die_at: Option<u32>,
    /// The pool refuses worker 0's n-th answer.
    refuse: Option<usize>,
    /// The caller cancels task `.0` (`AsyncResult::cancel`) after the driver's round `.1`,
    /// once the frames of that round are on their way.
    cancel: Option<(usize, usize)>,
    /// Worker 0's run of task 0 (the first it is given: its next is sent ahead behind it)
    /// stores this in every word of its gate (a hostile task).
    scribble: Option<u64>,
}

const WORKERS: usize = 2;

/// The worker's loop: read a frame, win its word if it came ahead, run it, answer. Each
/// step may be its last (`victim`), and a kill stops it when it next looks for a frame.
fn work<const N: usize>(
    id: usize,
    net: &Net,
    words: &Words,
    record: &StdMutex<Record>,
    case: Case,
) {
    let mut answered = 0;
    loop {
        MWord::die_point();
        let frame = net.wait(|w| {
            if w.closed || w.killed[id] {
                Some(None)
            } else {
                w.to[id].pop_front().map(Some)
            }
        });
        let Some((task, seq, ahead)) = frame else {
            return;
        };
        if ahead {
            if !gate::take_in::<_, N>(words, seq) {
                // Dropped unrun, and said so: the pool judges.
                net.tell(|w| w.from[id].push_back(Reply::Dropped { seq }));
                continue;
            }
            record.lock().unwrap().started_by[task] = Some(id);
        }
        MWord::die_point();
        {
            let mut r = record.lock().unwrap();
            r.runs[task] += 1;
            // Under a scribbler the gate decides nothing: a task may run twice (its
            // second answer is refused, as no worker holds it twice).
            if case.scribble.is_none() {
                assert_eq!(r.runs[task], 1, "task {task} ran twice ({case:?})");
            }
        }
        if let (0, 0, Some(v)) = (id, task, case.scribble) {
            for i in 0..N {
                words[i].store(v, std::sync::atomic::Ordering::SeqCst);
            }
        }
        MWord::die_point();
        let refused = id == 0 && case.refuse == Some(answered);
        answered += 1;
        let reply = Reply::Answer { task, seq, refused };
        net.tell(|w| w.from[id].push_back(reply));
    }
}

/// How a task ended, as the pool saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Answered,
    Failed,
    /// Taken back by a cancel before it started.
    Cancelled,
    /// Its worker broke the protocol (a scribbled gate): failed, the worker replaced.
    Refused,
}

/// What the pool's wait brings: answers and exits.
struct Events {
    answers: Vec<Vec<Reply>>,
    exits: Vec<bool>,
}

/// The production dispatch, and the check that no worker is idle while a task waits.
fn dispatched<const A: usize, const N: usize>(
    workers: &mut [Worker<A, N>],
    pending: &mut VecDeque<usize>,
    case: Case,
) {
    dispatch(workers, pending, |_| true);
    if workers.iter().any(|w| w.open() && w.tasks.is_idle()) {
        assert!(
            pending.is_empty(),
            "a worker idle, tasks pending ({case:?})"
        );
        // A scribbled gate can refuse the revoke: that task then waits for its worker
        // to refuse it in turn (and be replaced), which is bounded, not a hang.
        for w in workers
            .iter()
            .filter(|w| case.scribble.is_none() || w.id != 0)
        {
            let untaken = w.tasks.untaken();
            assert_eq!(
                untaken, 0,
                "a worker idle, a task queued behind {} ({case:?})",
                w.id
            );
        }
    }
}

/// The pool: the production dispatch and accounting, driven by the model's wires, with
/// an `imap_unordered` caller's submissions: one more task each time a result comes,
/// `window` at first. The caller submits after the driver's round, each task with its own
/// dispatch, as callers do under the pool's lock between the driver's rounds (without a
/// thread of its own, which would multiply the interleavings).
fn pool<const A: usize, const N: usize>(
    workers: &mut [Worker<A, N>],
    net: &Net,
    record: &StdMutex<Record>,
    case: Case,
) -> Vec<Option<End>> {
    let mut pending: VecDeque<usize> = VecDeque::new();
    let mut ends = vec![None; case.tasks];
    let mut submitted = 0;
    let mut kill = Vec::new();
    for w in workers.iter_mut() {
        w.tasks.on_ready();
    }
    let mut round = 0;
    loop {
        // The driver's dispatch after what it read, then the caller's, one per task it
        // submits: a worker left idle by the first may take a task back before the next.
        dispatched(workers, &mut pending, case);
        let ended = ends.iter().filter(|e| e.is_some()).count();
        while submitted < case.tasks.min(ended + case.window) {
            pending.push_back(submitted);
            submitted += 1;
            dispatched(workers, &mut pending, case);
        }
        send(workers, net, &mut kill);
        if let Some((k, at)) = case.cancel {
            if round == at && k < submitted && ends[k].is_none() {
                // `State::cancel`: out of the queue, or revoked at the gate by whoever
                // holds it; then the dispatch that gives a worker left idle more work.
                let mut stopped: Vec<usize> = pending.iter().copied().filter(|&t| t == k).collect();
                pending.retain(|&t| t != k);
                for w in workers.iter_mut() {
                    stopped.extend(w.tasks.cancel(|&t| t == k));
                }
                let any = !stopped.is_empty();
                for t in stopped {
                    assert_eq!(ends[t], None, "task {t} cancelled twice ({case:?})");
                    ends[t] = Some(End::Cancelled);
                }
                round += 1;
                if any {
                    // A result the caller counts on: it may submit more (its window).
                    continue;
                }
            }
        }
        round += 1;
        let ended = ends.iter().filter(|e| e.is_some()).count();
        if ended == case.tasks {
            return ends;
        }
        // Wait for an answer or an exit, as the driver polls.
        let ev = net.wait(|wires| {
            let readable = workers
                .iter()
                .any(|w| !w.gone && !w.broken && !wires.from[w.id].is_empty());
            let exited = workers.iter().any(|w| !w.gone && wires.exited[w.id]);
            (readable || exited).then(|| Events {
                answers: workers
                    .iter()
                    .map(|w| wires.from[w.id].drain(..).collect())
                    .collect(),
                exits: workers.iter().map(|w| wires.exited[w.id]).collect(),
            })
        });
        for (w, answers) in workers.iter_mut().zip(ev.answers) {
            for reply in answers {
                if w.broken || w.gone {
                    break; // unread: the stream was refused
                }
                // `driver.rs`: a refused frame ends the reading; the worker is killed.
                let mut refuse = |w: &mut Worker<A, N>| {
                    w.broken = true;
                    w.tasks.close();
                    kill.push(w.id);
                };
                match reply {
                    Reply::Answer { refused: true, .. } => refuse(w),
                    Reply::Answer { task, seq, .. } => match w.tasks.on_answer(seq, 0, false) {
                        Some(t) => {
                            assert_eq!(t, task, "an answer taken for another task ({case:?})");
                            assert_eq!(ends[t], None, "task {t} ended twice ({case:?})");
                            ends[t] = Some(End::Answered);
                        }
                        None => {
                            assert!(case.scribble.is_some(), "an answer to nothing ({case:?})");
                            refuse(w);
                        }
                    },
                    Reply::Dropped { seq } => {
                        if let Some(t) = w.tasks.on_dropped(seq) {
                            assert!(
                                case.scribble.is_some(),
                                "an honest refusal of task {t}, which the pool holds ({case:?})"
                            );
                            assert_eq!(ends[t], None, "task {t} ended twice ({case:?})");
                            ends[t] = Some(End::Refused);
                            refuse(w);
                        }
                    }
                }
            }
        }
        for (w, exited) in workers.iter_mut().zip(ev.exits) {
            if !exited || w.gone {
                continue;
            }
            w.gone = true;
            // The process is gone: its gate words are final.
            let exit = w.tasks.exit();
            for t in exit.unstarted.into_iter().rev() {
                pending.push_front(t);
            }
            if let Outcome::Lost { started, .. } = exit.outcome {
                let r = record.lock().unwrap();
                for t in started {
                    // A scribbled gate may say "taken" of a task never started: it fails,
                    // bounded, rather than hangs.
                    if case.scribble.is_none() {
                        assert_eq!(
                            r.started_by[t],
                            Some(w.id),
                            "task {t} failed with worker {}, which never started it ({case:?})",
                            w.id
                        );
                    }
                    assert_eq!(ends[t], None, "task {t} ended twice ({case:?})");
                    ends[t] = Some(End::Failed);
                }
            }
        }
    }
}

/// Sends the frames dispatch queued, and the kills decided, to the workers.
fn send<const A: usize, const N: usize>(
    workers: &mut [Worker<A, N>],
    net: &Net,
    kill: &mut Vec<usize>,
) {
    let frames: Vec<_> = workers
        .iter_mut()
        .map(|w| std::mem::take(&mut w.outgoing))
        .collect();
    if frames.iter().any(|f| !f.is_empty()) || !kill.is_empty() {
        net.tell(|wires| {
            for (i, f) in frames.into_iter().enumerate() {
                wires.to[i].extend(f);
            }
            for i in kill.drain(..) {
                wires.killed[i] = true;
            }
        });
    }
}

/// One model run of `case` with `A` ahead and `N` gate words.
fn run<const A: usize, const N: usize>(case: Case) {
    let net = Arc::new(Net {
        wires: Mutex::new(Wires {
            to: vec![VecDeque::new(); WORKERS],
            from: vec![VecDeque::new(); WORKERS],
            exited: vec![false; WORKERS],
            killed: vec![false; WORKERS],
            ..Wires::default()
        }),
        moved: Condvar::new(),
    });
    let record = StdArc::new(StdMutex::new(Record {
        runs: vec![0; case.tasks],
        started_by: vec![None; case.tasks],
    }));
    let mut workers = Vec::new();
    let mut threads = Vec::new();
    for id in 0..WORKERS {
        let words: Words = (0..N).map(|_| MWord64::new(0)).collect();
        workers.push(Worker::<A, N> {
            id,
            tasks: Account::new(Gate::over(words.clone())),
            outgoing: Vec::new(),
            record: record.clone(),
            broken: false,
            gone: false,
        });
        let (net, record) = (net.clone(), record.clone());
        threads.push(loom::thread::spawn(move || {
            let die_at = if id == 0 { case.die_at } else { None };
            let _: Fate<()> = victim(die_at, || work::<N>(id, &net, &words, &record, case));
            net.tell(|w| w.exited[id] = true);
        }));
    }
    let ends = pool(&mut workers, &net, &record, case);
    net.tell(|w| w.closed = true);
    for t in threads {
        t.join().unwrap();
    }
    let r = record.lock().unwrap();
    for (t, end) in ends.iter().enumerate() {
        match end {
            Some(End::Answered) if case.scribble.is_some() => assert!(r.runs[t] >= 1),
            Some(End::Answered) => assert_eq!(r.runs[t], 1, "task {t} answered unrun"),
            Some(End::Failed | End::Refused) if case.scribble.is_some() => {}
            Some(End::Failed) => assert!(r.started_by[t].is_some()),
            Some(End::Refused) => unreachable!("refused without a scribbler ({case:?})"),
            Some(End::Cancelled) => {
                assert_eq!(r.runs[t], 0, "task {t} ran after its cancel won ({case:?})");
                assert_eq!(r.started_by[t], None, "task {t} cancelled after it started");
            }
            None => unreachable!("the pool ends once every task has"),
        }
    }
}

/// Runs `case` under loom at `bound` (the CI default if `None`).
fn check<const A: usize, const N: usize>(bound: Option<usize>, case: Case) {
    model::check_with(bound, move || run::<A, N>(case));
}

/// A run with the tasks submitted three ahead of their results.
fn case(tasks: usize) -> Case {
    Case {
        tasks,
        window: 3,
        die_at: None,
        refuse: None,
        cancel: None,
        scribble: None,
    }
}

// Finds the 7c85725 hang (arming a word still tracked) at bound 2 in ~8 s.
#[test]
fn gate_without_deaths() {
    check::<1, 2>(None, case(5));
    if model::deep() {
        check::<1, 2>(Some(3), case(5));
        check::<2, 4>(Some(3), case(7));
        check::<1, 2>(Some(4), case(4));
    }
}

/// `c` at the CI bound and sizes; deep, at bound 3 with 5 tasks, and with 2 ahead, 4
/// words and 7 tasks.
fn check_sizes(c: Case) {
    check::<1, 2>(None, c);
    if model::deep() {
        check::<1, 2>(Some(3), Case { tasks: 5, ..c });
        check::<2, 4>(Some(3), Case { tasks: 7, ..c });
    }
}

#[test]
fn gate_with_a_worker_dying_at_each_step() {
    // Worker 0 takes at most three steps per task, and one before it reads the first.
    for k in 0..10 {
        let c = Case {
            die_at: Some(k),
            ..case(3)
        };
        check_sizes(c);
    }
}

// Finds the `was_taken` bug (a task taken after a refused frame run again) at bound 1.
// The caller cancels task 1 or 2 after each of the first rounds: queued in the pool,
// queued ahead behind a busy worker, or the worker's next task (sent ahead, `Busy` and
// tentative): a won revoke never runs, a lost one runs once, and a worker whose next task
// was taken back goes on with the one after it or is given another (no hang).
#[test]
fn gate_with_a_cancel() {
    for (k, at) in [(1, 0), (2, 1), (2, 2)] {
        {
            let c = Case {
                cancel: Some((k, at)),
                ..case(3)
            };
            check::<1, 2>(None, c);
            if model::deep() {
                check::<1, 2>(Some(3), Case { tasks: 5, ..c });
                check::<2, 4>(Some(3), Case { tasks: 6, ..c });
            }
        }
    }
}

// A cancel and a death: worker 0 dies at every other step (every step when deep) while
// task 2 is cancelled after round 1: its gate word is won by exactly one of the worker
// and the cancel, and the exit's reading of it agrees.
#[test]
fn gate_with_a_cancel_and_a_death() {
    let step = if model::deep() { 1 } else { 2 };
    for die in (0..10).step_by(step) {
        let c = Case {
            die_at: Some(die),
            cancel: Some((2, 1)),
            ..case(3)
        };
        check::<1, 2>(None, c);
        if model::deep() {
            check::<1, 2>(Some(3), Case { tasks: 5, ..c });
        }
    }
}

#[test]
fn gate_with_a_refused_answer() {
    for n in 0..2 {
        let c = Case {
            refuse: Some(n),
            ..case(3)
        };
        check_sizes(c);
    }
}

// Issue 19 item 5: a task that scribbles its worker's gate. The old worker dropped a task
// whose take failed in silence while the pool held it as the worker's next: loom reports
// the pool's wait as a deadlock. Now the refusal is reported and judged: the task fails
// and the worker is replaced, for a value no honest party writes (all ones), a closed
// word (0), and a plausible one (its next task, number 2, revoked: what an honest
// revoke leaves).
#[test]
fn gate_scribbled_by_a_task() {
    for v in [u64::MAX, 0, 2 << 2 | 3] {
        let c = Case {
            scribble: Some(v),
            ..case(3)
        };
        check::<1, 2>(None, c);
        if model::deep() {
            check::<1, 2>(Some(3), Case { tasks: 5, ..c });
            check::<2, 4>(Some(3), Case { tasks: 6, ..c });
        }
    }
}
