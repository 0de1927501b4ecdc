//! The fault matrix (issue 12): what survives a process that dies at the worst moment.
//!
//! - A pool worker that is SIGKILLed, aborts, segfaults, panics, exits or hangs, under each
//!   entry point (`map`, `imap`, `imap_unordered`, `apply_async`, `starmap`) and each start
//!   method: only its item fails, with the error that names the fault; the other items come
//!   back right; afterwards no zombie and no descriptor is left behind.
//! - A lock holder SIGKILLed, for every primitive with an owner: the next acquirer gets
//!   the lock (told the owner died). A semaphore has no owner: a dead holder's permit is
//!   lost, as in Python (the README's Guarantees).
//! - A queue producer SIGKILLed in the middle of an item too large for the ring: the
//!   queue goes on with the next items.
//! - A parent SIGKILLed: every descendant (children, the fork server, its children) dies.
//!
//! By default the worker matrix runs reduced: every fault and every entry point, with the
//! start method rotating (30 cases). `MPROC_FULL_MATRIX=1` (or `--ignored`) runs all 90.

mod util;

use std::time::{Duration, Instant};

use mproc::{Connection, Error, Pool, StartMethod};
use util::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Fault {
    Kill,
    Abort,
    Segfault,
    Panic,
    Exit,
    Hang,
}

const FAULTS: [Fault; 6] = [
    Fault::Kill,
    Fault::Abort,
    Fault::Segfault,
    Fault::Panic,
    Fault::Exit,
    Fault::Hang,
];

#[derive(Clone, Copy, Debug)]
enum Entry {
    Map,
    Imap,
    ImapUnordered,
    ApplyAsync,
    Starmap,
}

const ENTRIES: [Entry; 5] = [
    Entry::Map,
    Entry::Imap,
    Entry::ImapUnordered,
    Entry::ApplyAsync,
    Entry::Starmap,
];

/// The item that faults.
const BAD: i64 = 3;
const ITEMS: i64 = 8;
const TASK_TIMEOUT: Duration = Duration::from_millis(1500);

fn signal_self(sig: rustix::process::Signal) {
    let me = rustix::process::getpid();
    // A SIGSEGV sent (not caused) is caught once by Rust's stack-overflow handler, which
    // restores the default action; the next one kills, as a real fault would.
    for _ in 0..3 {
        let _ = rustix::process::kill_process(me, sig);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn faulty(x: i64, fault: Fault) -> i64 {
    if x == BAD {
        match fault {
            Fault::Kill => signal_self(rustix::process::Signal::KILL),
            Fault::Abort => std::process::abort(),
            Fault::Segfault => signal_self(rustix::process::Signal::SEGV),
            Fault::Panic => panic!("fault on {x}"),
            Fault::Exit => std::process::exit(7),
            Fault::Hang => std::thread::sleep(Duration::from_secs(3600)),
        }
    }
    x * 10
}

/// Whether `e` is the error `fault` must produce.
fn names_the_fault(fault: Fault, e: &Error) -> bool {
    match (fault, e) {
        (Fault::Kill, Error::WorkerDied { exitcode, .. }) => *exitcode == -9,
        (Fault::Abort, Error::WorkerDied { exitcode, .. }) => *exitcode == -6,
        (Fault::Segfault, Error::WorkerDied { exitcode, .. }) => *exitcode == -11,
        (Fault::Exit, Error::WorkerDied { exitcode, .. }) => *exitcode == 7,
        (Fault::Panic, Error::TaskPanicked { message, .. }) => message.contains("fault on 3"),
        (Fault::Hang, Error::TaskTimedOut { .. }) => true,
        _ => false,
    }
}

/// Runs one case; panics with what went wrong.
fn run_case(method: StartMethod, entry: Entry, fault: Fault) {
    let case = format!("{method:?} × {entry:?} × {fault:?}");
    let mut builder = Pool::builder().processes(2).start_method(method);
    if fault == Fault::Hang {
        // Only here: a panicking worker may take seconds to print its backtrace
        // (RUST_BACKTRACE on a busy machine), which must not count as a hang.
        builder = builder.task_timeout(TASK_TIMEOUT);
    }
    let pool = builder
        .build()
        .unwrap_or_else(|e| panic!("{case}: pool: {e}"));
    let items = || (0..ITEMS).map(move |x| (x, fault));
    let check_items = |got: Vec<(i64, mproc::Result<i64>)>| {
        assert_eq!(got.len(), ITEMS as usize, "{case}: {got:?}");
        for (x, r) in got {
            match r {
                Ok(v) => assert!(x != BAD && v == x * 10, "{case}: item {x} gave {v}"),
                Err(e) => assert!(
                    x == BAD && names_the_fault(fault, &e),
                    "{case}: item {x} failed with {e:?}"
                ),
            }
        }
    };
    match entry {
        // `map` fails as a whole (Python raises); the pool serves the next call in full.
        Entry::Map => {
            let e = pool
                .map(|(x, f): (i64, Fault)| faulty(x, f), items())
                .unwrap_err();
            assert!(names_the_fault(fault, &e), "{case}: {e:?}");
        }
        Entry::Starmap => {
            let e = pool.starmap(faulty, items()).unwrap_err();
            assert!(names_the_fault(fault, &e), "{case}: {e:?}");
        }
        Entry::Imap => {
            let got: Vec<_> = pool
                .imap(|(x, f): (i64, Fault)| faulty(x, f), items())
                .enumerate()
                .map(|(i, r)| (i as i64, r))
                .collect();
            check_items(got);
        }
        Entry::ImapUnordered => {
            // Results come in any order: tell them apart by value.
            let got: Vec<mproc::Result<i64>> = pool
                .imap_unordered(|(x, f): (i64, Fault)| faulty(x, f), items())
                .collect();
            let mut ok: Vec<i64> = got
                .iter()
                .filter_map(|r| r.as_ref().ok().copied())
                .collect();
            ok.sort();
            let want: Vec<i64> = (0..ITEMS).filter(|&x| x != BAD).map(|x| x * 10).collect();
            assert_eq!(ok, want, "{case}");
            let errs: Vec<&Error> = got.iter().filter_map(|r| r.as_ref().err()).collect();
            assert!(
                errs.len() == 1 && names_the_fault(fault, errs[0]),
                "{case}: {errs:?}"
            );
        }
        Entry::ApplyAsync => {
            let handles: Vec<_> = (0..ITEMS)
                .map(|x| pool.apply_async(faulty, (x, fault)))
                .collect();
            check_items(
                handles
                    .into_iter()
                    .enumerate()
                    .map(|(i, h)| (i as i64, h.get()))
                    .collect(),
            );
        }
    }
    // The pool lives on: a replacement worker serves a full map.
    let again = pool
        .map(|x: i64| x + 1, 0..6)
        .unwrap_or_else(|e| panic!("{case}: after: {e}"));
    assert_eq!(again, vec![1, 2, 3, 4, 5, 6], "{case}");
    pool.close();
    assert!(
        pool.join_timeout(Duration::from_secs(20)),
        "{case}: join hangs"
    );
}

fn run_matrix(full: bool) {
    let _x = exclusive();
    let _w = watchdog("fault matrix", if full { 900 } else { 300 });
    // Start what lives for the whole process first (the fork server and its client), so
    // descriptors are counted from a steady state.
    for m in METHODS {
        run_case(m, Entry::Imap, Fault::Panic);
    }
    let fds = fd_count();
    let mut n = 0;
    for (i, fault) in FAULTS.into_iter().enumerate() {
        for (j, entry) in ENTRIES.into_iter().enumerate() {
            if full {
                for m in METHODS {
                    run_case(m, entry, fault);
                    n += 1;
                }
            } else {
                run_case(METHODS[(i + j) % METHODS.len()], entry, fault);
                n += 1;
            }
        }
    }
    assert_eq!(n, if full { 90 } else { 30 });
    let zombies = zombie_children();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
    assert_eq!(fd_count(), fds, "descriptors grew over the matrix");
}

#[test]
fn worker_faults_cost_only_their_item() {
    run_matrix(std::env::var_os("MPROC_FULL_MATRIX").is_some());
}

#[test]
#[ignore = "the full 90-case matrix; runs in about a minute"]
fn worker_faults_full_matrix() {
    run_matrix(true);
}

// ---------------------------------------------------------------------------------------
// Lock holders SIGKILLed.

/// What a child takes and holds until it is killed.
#[derive(serde::Serialize, serde::Deserialize)]
enum Held {
    Lock(mproc::Lock),
    RLock(mproc::RLock),
    Condition(mproc::Condition),
    Value(mproc::Value<u64>),
    Array(mproc::Array<u8>),
    Semaphore(mproc::Semaphore),
}

fn hold_forever(what: Held, ready: Connection<u8>) {
    // Each guard is leaked on purpose: the process dies holding it.
    match &what {
        Held::Lock(l) => std::mem::forget(l.acquire()),
        Held::RLock(l) => std::mem::forget(l.acquire()),
        Held::Condition(c) => std::mem::forget(c.acquire()),
        Held::Value(v) => std::mem::forget(v.lock()),
        Held::Array(a) => std::mem::forget(a.lock()),
        Held::Semaphore(s) => s.acquire(),
    }
    ready.send(&1).unwrap();
    std::thread::sleep(Duration::from_secs(3600));
}

#[test]
fn a_lock_holder_killed_is_recovered_for_every_primitive() {
    let _s = shared();
    let _w = watchdog("lock holders killed", 120);
    let d = Duration::from_secs(10);
    for m in METHODS {
        let lock = mproc::Lock::new().unwrap();
        let rlock = mproc::RLock::new().unwrap();
        let cond = mproc::Condition::new().unwrap();
        let value = mproc::Value::new(5u64).unwrap();
        let array = mproc::Array::from_slice(&[1u8, 2]).unwrap();
        let sem = mproc::Semaphore::new(1).unwrap();
        let cases = [
            Held::Lock(lock.clone()),
            Held::RLock(rlock.clone()),
            Held::Condition(cond.clone()),
            Held::Value(value.clone()),
            Held::Array(array.clone()),
            Held::Semaphore(sem.clone()),
        ];
        for held in cases {
            let (here, there) = mproc::pipe::<u8>().unwrap();
            let mut p = mproc::get_context(m).process(hold_forever, (held, there));
            p.start().unwrap();
            assert_eq!(here.recv_timeout(d).unwrap(), 1, "{m:?}");
            p.kill().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(-9));
        }
        let g = lock.acquire_timeout(d).expect("Lock recovered");
        assert!(g.owner_died(), "{m:?}: the next holder is told");
        drop(g);
        assert!(rlock.acquire_timeout(d).is_some(), "{m:?}: RLock recovered");
        drop(
            cond.get_lock()
                .acquire_timeout(d)
                .expect("Condition recovered"),
        );
        assert_eq!(*value.lock_timeout(d).expect("Value recovered"), 5);
        assert_eq!(
            array.lock_timeout(d).expect("Array recovered").to_vec(),
            [1, 2]
        );
        // No owner, no recovery: the permit died with its holder, as in Python.
        assert!(!sem.acquire_timeout(Duration::from_millis(100)), "{m:?}");
    }
}

// ---------------------------------------------------------------------------------------
// A producer killed mid-item.

fn put_huge_then_hang(q: mproc::Queue<Vec<u8>>, ready: Connection<u8>) {
    ready.send(&1).unwrap();
    // Larger than the ring: streams in pieces while nobody reads, so it blocks mid-item.
    q.put(vec![7u8; 1 << 20]).unwrap();
    std::thread::sleep(Duration::from_secs(3600));
}

#[test]
fn a_producer_killed_mid_item_leaves_the_queue_working() {
    let _s = shared();
    let _w = watchdog("producer killed mid-item", 120);
    for m in METHODS {
        let q = mproc::Queue::<Vec<u8>>::with_ring_size(0, 64 * 1024).unwrap();
        let (here, there) = mproc::pipe::<u8>().unwrap();
        let mut p = mproc::get_context(m).process(put_huge_then_hang, (q.clone(), there));
        p.start().unwrap();
        here.recv_timeout(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(200)); // well into the item
        p.kill().unwrap();
        p.join().unwrap();
        // The ring is full of the dead item's pieces: a consumer drains them while the
        // next producer waits for room, then the half-sent item is dropped whole and the
        // next one arrives intact.
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || q.get_timeout(Duration::from_secs(20)))
        };
        q.put_timeout(vec![1, 2, 3], Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{m:?}: put after the producer died: {e}"));
        let got = consumer.join().unwrap();
        assert_eq!(got.unwrap(), vec![1, 2, 3], "{m:?}");
        assert!(q.try_get().is_err(), "{m:?}");
    }
}

// ---------------------------------------------------------------------------------------
// A parent killed.

fn sleep_long() {
    std::thread::sleep(Duration::from_secs(3600));
}

/// A middle process: starts two children under `m`, reports, then waits to be killed.
fn middle(m: StartMethod, ready: Connection<u8>) {
    let kids: Vec<_> = (0..2)
        .map(|_| {
            let mut p = mproc::get_context(m).process(sleep_long, ());
            p.start().unwrap();
            p
        })
        .collect();
    ready.send(&1).unwrap();
    std::thread::sleep(Duration::from_secs(3600));
    drop(kids);
}

/// Every process below `pid`, read from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                for c in s.split_whitespace().filter_map(|c| c.parse().ok()) {
                    out.push(c);
                    todo.push(c);
                }
            }
        }
    }
    out
}

#[test]
fn a_parent_killed_takes_every_descendant() {
    let _s = shared();
    let _w = watchdog("parent killed", 120);
    for outer in METHODS {
        for inner in METHODS {
            let (here, there) = mproc::pipe::<u8>().unwrap();
            let mut p = mproc::get_context(outer).process(middle, (inner, there));
            p.start().unwrap();
            here.recv_timeout(Duration::from_secs(20)).unwrap();
            let below = descendants(p.pid().unwrap());
            // Two children, and under ForkServer the middle's fork server too.
            assert!(below.len() >= 2, "{outer:?}/{inner:?}: {below:?}");
            p.kill().unwrap();
            p.join().unwrap();
            let t = Instant::now();
            for pid in &below {
                assert!(
                    wait_dead(*pid, 10),
                    "{outer:?}/{inner:?}: {pid} outlived its parent"
                );
            }
            assert!(t.elapsed() < Duration::from_secs(10));
        }
    }
}
