//! Barrier across processes. Ports CPython's `_TestBarrier` (`_test_multiprocessing.py`,
//! cpython.md §4), plus a party that dies.

mod util;

use std::time::{Duration, Instant};

use mproc::{Barrier, Error, Lock, RawArray, get_context};
use util::*;

const N: usize = 5;
const LONG: Duration = Duration::from_secs(20);

/// Waits `rounds` times; records each index in `out[party * rounds + round]`.
fn party(b: Barrier, out: RawArray<u32>, who: u32, rounds: u32) -> Result<(), String> {
    for r in 0..rounds {
        let i = b.wait_timeout(LONG).map_err(|e| e.to_string())?;
        out.set((who * rounds + r) as usize, i as u32);
    }
    Ok(())
}

fn wait_expect_broken(b: Barrier) -> bool {
    matches!(b.wait_timeout(LONG), Err(Error::BrokenBarrier))
}

fn wait_short(b: Barrier) -> bool {
    matches!(
        b.wait_timeout(Duration::from_millis(200)),
        Err(Error::BrokenBarrier)
    )
}

fn ordered_rounds(b: Barrier, lock: Lock, log: RawArray<u32>, next: RawArray<u32>, rounds: u32) {
    for r in 0..rounds {
        b.wait_timeout(LONG).unwrap();
        let _g = lock.acquire();
        let at = next.get(0).unwrap();
        log.set(at as usize, r);
        next.set(0, at + 1);
    }
}

fn die(_b: Barrier) {
    std::process::abort();
}

fn run_parties(b: &Barrier, rounds: u32, m: StartMethod) -> Vec<Vec<u32>> {
    let out = RawArray::<u32>::new(N * rounds as usize).unwrap();
    let mut ps: Vec<_> = (0..N as u32 - 1)
        .map(|who| get_context(m).process(party, (b.clone(), out.clone(), who, rounds)))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    party(b.clone(), out.clone(), N as u32 - 1, rounds).unwrap();
    for p in ps {
        p.result().unwrap().unwrap();
    }
    let all = out.to_vec();
    (0..rounds as usize)
        .map(|r| {
            let mut idx: Vec<u32> = (0..N).map(|w| all[w * rounds as usize + r]).collect();
            idx.sort();
            idx
        })
        .collect()
}

// Ports _TestBarrier.test_barrier and test_barrier_10 and test_wait_return: five parties
// pass for 1 and 10 rounds, with distinct indices (exactly one 0) each round.
#[test]
fn parties_pass_in_lockstep_with_distinct_indices_under_every_method() {
    let _s = shared();
    let _w = watchdog("barrier rounds", 90);
    for (m, rounds) in [(Fork, 10), (Spawn, 1), (ForkServer, 10)] {
        let b = Barrier::new(N).unwrap();
        for idx in run_parties(&b, rounds, m) {
            assert_eq!(idx, [0, 1, 2, 3, 4], "{m:?}");
        }
        assert_eq!(b.n_waiting(), 0);
        assert!(!b.broken());
        assert_eq!(b.parties(), N);
    }
}

// Ports _TestBarrier.test_abort: abort breaks the barrier for the waiters and later calls.
#[test]
fn abort_breaks_waiters_and_reset_repairs() {
    let _s = shared();
    let _w = watchdog("barrier abort", 60);
    let b = Barrier::new(3).unwrap();
    let mut ps: Vec<_> = (0..2)
        .map(|_| get_context(Fork).process(wait_expect_broken, (b.clone(),)))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    let deadline = Instant::now() + LONG;
    while b.n_waiting() < 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    b.abort();
    assert!(b.broken());
    for p in ps {
        assert!(p.result().unwrap(), "a waiter was not broken by abort");
    }
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    // Ports test_abort_and_reset: after reset everyone passes again.
    b.reset();
    assert!(!b.broken());
    let idx = run_parties(&Barrier::new(N).unwrap(), 1, Fork);
    assert_eq!(idx[0], [0, 1, 2, 3, 4]);
}

// Ports _TestBarrier.test_reset: reset while parties wait breaks them, then the barrier is
// reusable.
#[test]
fn reset_while_waiting_breaks_the_waiters() {
    let _s = shared();
    let _w = watchdog("barrier reset", 60);
    let b = Barrier::new(3).unwrap();
    let mut p = get_context(Fork).process(wait_expect_broken, (b.clone(),));
    p.start().unwrap();
    let deadline = Instant::now() + LONG;
    while b.n_waiting() < 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    b.reset();
    assert!(p.result().unwrap());
    assert!(!b.broken());
    let b1 = Barrier::new(1).unwrap();
    assert_eq!(b1.wait().unwrap(), 0); // Barrier(1) never blocks
}

// Ports _TestBarrier.test_timeout: one late party; the waiters time out and all get
// BrokenBarrier.
#[test]
fn a_timeout_breaks_the_barrier_for_everyone() {
    let _s = shared();
    let _w = watchdog("barrier timeout", 60);
    let b = Barrier::new(3).unwrap();
    let mut ps: Vec<_> = (0..2)
        .map(|_| get_context(Fork).process(wait_short, (b.clone(),)))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in ps {
        assert!(p.result().unwrap());
    }
    assert!(b.broken());
    assert!(matches!(b.wait_timeout(LONG), Err(Error::BrokenBarrier)));
}

// A party that dies: the others get their timeout, not a hang.
#[test]
fn a_waiter_whose_peer_dies_gets_its_timeout() {
    let _s = shared();
    let _w = watchdog("barrier peer death", 30);
    let b = Barrier::new(2).unwrap();
    let mut p = mproc::Process::new(die, (b.clone(),));
    p.start().unwrap();
    p.join().unwrap();
    let t = Instant::now();
    assert!(matches!(
        b.wait_timeout(Duration::from_millis(200)),
        Err(Error::BrokenBarrier)
    ));
    assert!(t.elapsed() >= Duration::from_millis(200));
}

// Ports _TestBarrier.test_thousand (shortened): rounds across processes stay strictly
// ordered: every party logs round r before any party logs round r + 1.
#[test]
fn many_rounds_stay_ordered() {
    let _s = shared();
    let _w = watchdog("barrier ordered rounds", 90);
    let rounds = 200u32;
    let parties = 3usize;
    let b = Barrier::new(parties).unwrap();
    let lock = Lock::new().unwrap();
    let log = RawArray::<u32>::new(parties * rounds as usize).unwrap();
    let next = RawArray::<u32>::new(1).unwrap();
    let mut ps: Vec<_> = (0..parties)
        .map(|_| {
            get_context(Fork).process(
                ordered_rounds,
                (b.clone(), lock.clone(), log.clone(), next.clone(), rounds),
            )
        })
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in ps {
        p.result().unwrap();
    }
    let log = log.to_vec();
    for (i, r) in log.iter().enumerate() {
        assert_eq!(*r as usize, i / parties, "round out of order at {i}");
    }
}
