//! A task runs inside its worker and can write what it likes on the worker's link and
//! gate: the pool bounds what that can do to everyone else (issue 19, items 5 and 6). A
//! scribbled gate fails the tasks it touched and replaces the worker, never a hang; a
//! forged answer marks the worker broken, never shifts a result onto another task.
//!
//! Ports: none — mproc-specific hostile-peer tests (CPython's workers trust their pipes).

mod util;

use std::time::Duration;

use mproc::{Error, get_context};
use util::*;

fn double(x: i64) -> i64 {
    x * 2
}

/// Every word of this worker's gate (and of any other it maps) — the memfd `mproc-pool-gate` among its mappings —
/// set to `value`, through `/proc/self/mem` as any code in the process could (no unsafe
/// code, no knowledge of mproc's types: only the mapping's name).
fn scribble_gate(value: u64) {
    let found = scribble_mappings("mproc-pool-gate", |len| {
        std::iter::repeat_n(value.to_le_bytes(), len / 8)
            .flatten()
            .collect()
    });
    // A forked worker also maps its siblings' gates (inherited): they are scribbled too.
    assert!(found >= 1, "the worker's gate mapping");
}

/// Item 0 waits while the pool sends its worker the next tasks ahead (arming their gate
/// words), then scribbles the gate with `value`; item 1 keeps the other worker busy
/// meanwhile, so that nothing takes those tasks back first.
fn gate_scribbler((x, value): (i64, u64)) -> i64 {
    match x {
        0 => {
            std::thread::sleep(Duration::from_millis(150));
            scribble_gate(value);
        }
        1 => std::thread::sleep(Duration::from_millis(400)),
        _ => {}
    }
    x * 2
}

/// Whether `e` is the error of a task whose worker broke the protocol and was killed.
fn refused(e: &Error) -> bool {
    matches!(e, Error::Codec(m) if m.contains("refused") && m.contains("killed"))
}

/// Checks that `results` holds one result per item `0..n`, each the item doubled or an
/// error `expected` accepts; the items that failed.
fn doubled_or(
    results: &[mproc::Result<i64>],
    n: i64,
    m: StartMethod,
    expected: impl Fn(&Error) -> bool,
) -> Vec<i64> {
    assert_eq!(results.len(), n as usize, "{m:?}: one result per item");
    let mut failed = Vec::new();
    for (x, r) in (0..n).zip(results) {
        match r {
            Ok(v) => assert_eq!(*v, x * 2, "{m:?}: item {x}"),
            Err(e) if expected(e) => {
                eprintln!("{m:?}: item {x}: {e}");
                failed.push(x)
            }
            Err(e) => panic!("{m:?}: item {x}: {e}"),
        }
    }
    failed
}

// Issue 19 item 5: a task that scribbles its worker's gate. The worker used to drop the
// next task, sent ahead, in silence when it lost its word, while the pool held that task
// as the worker's running one and waited for its answer for ever (`imap` blocked > 40 s).
// Now the worker reports the refusal; the pool, which never took that task back, fails
// it saying why and replaces the worker; the tasks the worker never started go to another.
#[test]
fn a_task_scribbling_its_gate_fails_what_it_touched_and_the_pool_goes_on() {
    // Alone: a forked worker maps (and so scribbles) every gate its parent holds, the
    // pools of tests running beside it included.
    let _s = exclusive();
    let _w = watchdog("gate_scribble", 120);
    // All ones (no honest party writes it), a closed word, and a plausible value: task
    // 2's word as an honest revoke leaves it (`seq << 2 | 3`).
    for (m, value) in METHODS.into_iter().zip([u64::MAX, 0, 2 << 2 | 3]) {
        let pool = get_context(m).pool(2).unwrap();
        let n = 24i64;
        let results: Vec<mproc::Result<i64>> = pool
            .imap(gate_scribbler, (0..n).map(|x| (x, value)))
            .collect();
        let failed = doubled_or(&results, n, m, refused);
        assert!(
            !failed.is_empty(),
            "{m:?}: the scribble touched the worker's next task, which must fail"
        );
        let gate_error = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .any(|e| matches!(e, Error::Codec(m) if m.contains("gate") && m.contains("honest")));
        assert!(gate_error, "{m:?}: the error says why: {results:?}");
        eprintln!("{m:?}: items failed with the scribbling worker: {failed:?}");
        for _ in 0..4 {
            assert_eq!(
                pool.apply(double, (21,)).unwrap(),
                42,
                "{m:?}: the pool goes on"
            );
        }
        pool.close();
        pool.join();
    }
}

/// `v` as a LEB128 varint (postcard's integers and lengths).
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A well-formed encoded `Vec<ItemOutcome<i64>>` of `n` results, each `value`.
fn outcomes(n: u64, value: i64) -> Vec<u8> {
    let mut body = Vec::new();
    varint(n, &mut body);
    for _ in 0..n {
        body.push(0); // `Returned`
        varint(((value << 1) ^ (value >> 63)) as u64, &mut body); // zigzag
    }
    body
}

/// Writes `payloads` as frames (`MPRF`, no descriptors, the length) on every socket this
/// worker holds, its link to the pool among them, as a hostile task could.
fn write_frames(payloads: &[Vec<u8>]) {
    let mut frames = Vec::new();
    for p in payloads {
        frames.extend_from_slice(b"MPRF");
        frames.extend_from_slice(&0u32.to_le_bytes());
        frames.extend_from_slice(&(p.len() as u64).to_le_bytes());
        frames.extend_from_slice(p);
    }
    write_on_every_socket(&frames);
}

/// Item 13 writes one extra, well-formed answer onto its worker's link before it returns:
/// `how` 0 in the form answers had before they named their task (`[CHUNK_OK]` and one
/// result, 999), 1 in today's form (`worker.rs`: `[CHUNK_OK][seq][count]`) for every
/// sequence number a young worker can be at, each carrying four results as its chunk does.
fn answer_forger((x, how): (i64, u8)) -> i64 {
    if x == 13 {
        let forged = match how {
            0 => vec![[vec![0u8], outcomes(1, 999)].concat()],
            _ => (1..=32u64)
                .map(|seq| {
                    let mut a = vec![0u8];
                    a.extend_from_slice(&seq.to_le_bytes());
                    a.extend_from_slice(&4u64.to_le_bytes());
                    a.extend_from_slice(&outcomes(4, 999));
                    a
                })
                .collect(),
        };
        write_frames(&forged);
    }
    x * 2
}

// Issue 19 item 6: one forged answer used to shift every later result of its worker:
// `map_chunked` returned 57 or 63 results for 60 items, and a later unrelated
// `apply(x*2, 21)` returned 58. Answers now name their task and count their results; one
// that does not match what the worker runs marks it broken (killed, replaced, its tasks
// failed saying why), so every other item is right and every call gets its own result.
#[test]
fn a_forged_answer_never_shifts_a_result() {
    let _s = shared();
    let _w = watchdog("forged_answer", 180);
    for m in METHODS {
        for how in [0u8, 1] {
            let pool = get_context(m).pool(2).unwrap();
            let n = 60i64;
            let input = || (0..n).map(move |x| (x, how));
            match pool.map_chunked(answer_forger, input(), 4) {
                Ok(v) => {
                    assert_eq!(
                        v.len(),
                        n as usize,
                        "{m:?} {how}: exactly one result per item"
                    );
                    for (x, r) in (0..n).zip(&v) {
                        assert_eq!(*r, x * 2, "{m:?} {how}: item {x}");
                    }
                }
                Err(e) => assert!(refused(&e), "{m:?} {how}: {e}"),
            }
            let results: Vec<mproc::Result<i64>> =
                pool.imap_chunked(answer_forger, input(), 4, true).collect();
            assert_eq!(
                results.len(),
                n as usize,
                "{m:?} {how}: one result per item"
            );
            for (x, r) in (0..n).zip(&results) {
                match r {
                    Ok(v) => assert_eq!(*v, x * 2, "{m:?} {how}: item {x}"),
                    Err(e) => assert!(refused(e), "{m:?} {how}: item {x}: {e}"),
                }
            }
            for _ in 0..6 {
                assert_eq!(
                    pool.apply(double, (21,)).unwrap(),
                    42,
                    "{m:?} {how}: a later call gets its own result"
                );
            }
            pool.close();
            pool.join();
        }
    }
}

/// Writes the header of a frame that claims `len` bytes (within every limit) and sends
/// none of them, on every socket this worker holds; then returns: its worker's own
/// answer goes in as the first bytes of that frame, which never completes.
fn half_frame(len: u64) -> i64 {
    let mut frame = b"MPRF".to_vec();
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(&len.to_le_bytes());
    write_on_every_socket(&frame);
    1
}

// A frame begun and never finished (a header within the limits, its bytes never sent)
// must not leave the pool waiting for the rest while its worker, idle, sends nothing:
// the worker is refused once its frame stalls, its task fails, and the pool goes on.
#[test]
fn a_frame_begun_and_never_finished_is_refused_in_bounded_time() {
    let _s = shared();
    let _w = watchdog("half_frame", 90);
    for m in METHODS {
        let pool = get_context(m).pool(1).unwrap();
        let t = std::time::Instant::now();
        // Its answer goes on the worker's ring, beside the half frame (then it comes
        // back), or is refused with the worker.
        match pool.apply(half_frame, (4096,)) {
            Ok(v) => assert_eq!(v, 1, "{m:?}"),
            Err(e) => assert!(refused(&e), "{m:?}: {e}"),
        }
        eprintln!("{m:?}: refused after {:?}", t.elapsed());
        assert_eq!(
            pool.apply(double, (21,)).unwrap(),
            42,
            "{m:?}: the pool goes on"
        );
        pool.close();
        pool.join();
    }
}

fn big(n: usize) -> Vec<u8> {
    vec![7; n]
}

// The stall bound is on a frame's progress, not its size: a large answer, read while it
// streams in, is never taken for a stalled one.
#[test]
fn a_large_answer_is_no_stall() {
    let _s = shared();
    let _w = watchdog("large_answer", 120);
    let pool = mproc::Pool::new(2).unwrap();
    let n = 64 << 20;
    for r in [pool.apply_async(big, (n,)), pool.apply_async(big, (n,))] {
        let v = r.get().unwrap();
        assert!(v.len() == n && v.iter().all(|&b| b == 7));
    }
    pool.close();
    pool.join();
}

/// Writes `value` over every byte of every queue/pipe ring this process maps (the memfds
/// named `mproc-queue`: its links to the pool among them), through `/proc/self/mem`.
fn scribble_rings(value: u8) -> usize {
    scribble_mappings("mproc-queue", |len| vec![value; len])
}

/// Item 5 scribbles every ring its worker maps with `value` while its next tasks wait
/// there; item 6 keeps the other worker busy meanwhile.
fn ring_scribbler((x, value): (i64, u8)) -> i64 {
    match x {
        5 => {
            std::thread::sleep(Duration::from_millis(100));
            assert!(scribble_rings(value) >= 1, "the worker's rings");
        }
        6 => std::thread::sleep(Duration::from_millis(300)),
        _ => {}
    }
    x * 2
}

// The Pool's tasks and answers go through shared-memory rings the worker maps: a task
// that writes over them (every byte, with three values) makes the pool refuse the
// worker — its tasks fail saying so, never a hang, a panic or a shifted result — and
// the pool goes on with a new worker.
#[test]
fn a_task_scribbling_its_rings_is_refused_and_the_pool_goes_on() {
    // Alone: a forked worker maps (and so scribbles) every ring its parent holds, those
    // of tests running beside it included.
    let _s = exclusive();
    let _w = watchdog("ring_scribble", 120);
    for (m, value) in METHODS.into_iter().zip([0xffu8, 0, 0x41]) {
        let pool = get_context(m).pool(2).unwrap();
        let n = 24i64;
        let results: Vec<mproc::Result<i64>> = pool
            .imap(ring_scribbler, (0..n).map(|x| (x, value)))
            .collect();
        let failed = doubled_or(&results, n, m, |e| {
            refused(e) || matches!(e, Error::WorkerDied { .. })
        });
        eprintln!("{m:?} {value:#x}: items failed with the scribbling worker: {failed:?}");
        for _ in 0..4 {
            assert_eq!(
                pool.apply(double, (21,)).unwrap(),
                42,
                "{m:?}: the pool goes on"
            );
        }
        pool.close();
        pool.join();
    }
}
