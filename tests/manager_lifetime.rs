//! Manager objects are reference counted: an object is freed when the last proxy to it, in
//! any process, is gone (dropped, or held by a process that died, or inside an object that
//! was freed), and not before: the server's memory stays flat under create/drop loops, and
//! an object whose proxy left the process (to a child, in a message, into another object)
//! lives on after its creator drops it. Ports the manager side of CPython's reference
//! counting (`BaseProxy._incref`/`_decref`; cpython.md §2.9) as `_TestContainers` (58, 59)
//! sees it: nested proxies, and a queue proxy stored in a list, stay live after the local
//! proxy is deleted.

mod util;

use std::time::Duration;

use std::time::Instant;

use mproc::{EventProxy, ListProxy, Manager, QueueProxy};
use util::*;

/// The resident memory of `pid`, in kB.
fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server runs");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

fn server_pid() -> u32 {
    mproc::active_children()
        .into_iter()
        .filter(|p| p.name().starts_with("SyncManager-"))
        .map(|p| p.pid())
        .next_back()
        .expect("a manager server child")
}

fn churn(m: &Manager, rounds: usize) {
    for _ in 0..rounds {
        let l: ListProxy<u64> = m.list().unwrap();
        l.extend(0..100).unwrap();
        let twin = l.clone(); // clones share the claim: no message, no early free
        drop(l);
        assert_eq!(twin.len().unwrap(), 100);
    }
}

#[test]
fn server_memory_stays_flat_under_create_and_drop() {
    // Alone: the only manager server child is this test's.
    let _s = exclusive();
    let _w = watchdog("server_memory_stays_flat", 300);
    let m = Manager::start().unwrap();
    let pid = server_pid();
    churn(&m, 2_000);
    let before = rss_kb(pid);
    churn(&m, 20_000);
    let after = rss_kb(pid);
    // Kept, 20 000 lists of 100 items would take over 100 MB.
    assert!(
        after < before + 8 * 1024,
        "the server grew from {before} kB to {after} kB"
    );
}

fn append_later(q: QueueProxy<ListProxy<u32>>, go: QueueProxy<()>) -> mproc::Result<Vec<u32>> {
    let l = q.get()?;
    go.get()?;
    l.append(&7)?;
    l.to_vec()
}

fn append_arg(l: ListProxy<u32>, go: QueueProxy<()>) -> mproc::Result<Vec<u32>> {
    go.get()?;
    l.append(&8)?;
    l.to_vec()
}

#[test]
fn a_proxy_that_left_the_process_outlives_its_creators_drop() {
    let _s = shared();
    let _w = watchdog("a_proxy_that_left_the_process", 60);
    let m = Manager::start().unwrap();
    let (q, go) = (m.queue().unwrap(), m.queue().unwrap());
    // In a message.
    let p = mproc::spawn(append_later, (q.clone(), go.clone())).unwrap();
    let l: ListProxy<u32> = m.list().unwrap();
    l.append(&1).unwrap();
    q.put(l.clone()).unwrap();
    drop(l);
    go.put(()).unwrap(); // a request after the drop: a release would have gone with it
    assert_eq!(p.result().unwrap().unwrap(), [1, 7]);
    // In a child's arguments.
    let l: ListProxy<u32> = m.list().unwrap();
    let p = mproc::spawn(append_arg, (l.clone(), go.clone())).unwrap();
    drop(l);
    std::thread::sleep(Duration::from_millis(50));
    go.put(()).unwrap();
    assert_eq!(p.result().unwrap().unwrap(), [8]);
    // Inside another object.
    let outer: ListProxy<ListProxy<u32>> = m.list().unwrap();
    let inner: ListProxy<u32> = m.list().unwrap();
    outer.append(&inner).unwrap();
    drop(inner);
    let back = outer.get(0).unwrap().unwrap();
    back.append(&9).unwrap();
    assert_eq!(back.to_vec().unwrap(), [9]);
}

/// Waits until the server holds `n` objects; fails after a while.
fn settles_at(m: &Manager, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = m.object_count().unwrap();
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {now} objects, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn take_one(q: QueueProxy<ListProxy<u32>>, go: EventProxy) -> mproc::Result<usize> {
    let l = q.get()?;
    l.append(&5)?;
    go.set()?;
    l.len()
}

fn use_and_keep(l: ListProxy<u32>, go: EventProxy) -> mproc::Result<()> {
    l.append(&1)?;
    go.wait()
}

fn hold(l: ListProxy<u32>, held: EventProxy) -> mproc::Result<()> {
    l.append(&2)?;
    held.set()?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

#[test]
fn an_object_is_freed_with_the_last_proxy_in_any_process() {
    let _s = exclusive();
    let _w = watchdog("freed_with_the_last_proxy", 120);
    let m = Manager::start().unwrap();
    let (go, held) = (m.event().unwrap(), m.event().unwrap());
    let base = m.object_count().unwrap();
    // A child that ends normally.
    let l: ListProxy<u32> = m.list().unwrap();
    let p = mproc::spawn(use_and_keep, (l.clone(), go.clone())).unwrap();
    drop(l);
    settles_at(&m, base + 1, "the child still holds it");
    go.set().unwrap();
    p.result().unwrap().unwrap();
    settles_at(&m, base, "freed once the child is gone");
    // A child killed while it holds the only proxy.
    let l: ListProxy<u32> = m.list().unwrap();
    let mut p = mproc::Process::new(hold, (l.clone(), held.clone()));
    p.start().unwrap();
    assert!(held.wait_timeout(Duration::from_secs(20)).unwrap());
    drop(l);
    settles_at(&m, base + 1, "the child still holds it");
    p.kill().unwrap();
    let _ = p.join();
    settles_at(&m, base, "freed once its holder was killed");
    // Proxies inside other objects: held by them, freed with them.
    let outer: ListProxy<ListProxy<u32>> = m.list().unwrap();
    let inner: ListProxy<u32> = m.list().unwrap();
    outer.append(&inner).unwrap();
    drop(inner);
    settles_at(&m, base + 2, "the outer list holds the inner one");
    let back = outer.get(0).unwrap().unwrap();
    back.append(&3).unwrap();
    drop(back);
    settles_at(&m, base + 2, "still held by the outer list");
    drop(outer);
    settles_at(&m, base, "freed with the outer list");
    // Through a queue, taken by a child: the queue lets go of it with the item.
    let q: QueueProxy<ListProxy<u32>> = m.queue().unwrap();
    let l: ListProxy<u32> = m.list().unwrap();
    q.put(l.clone()).unwrap();
    drop(l);
    settles_at(&m, base + 2, "in the queue");
    let (q2, go2) = (m.queue::<ListProxy<u32>>().unwrap(), m.event().unwrap());
    let p = mproc::spawn(take_one, (q.clone(), go2.clone())).unwrap();
    assert_eq!(p.result().unwrap().unwrap(), 1);
    settles_at(
        &m,
        base + 3,
        "taken and dropped: only the queues and the event are left",
    );
    drop((q, q2, go2));
    settles_at(&m, base, "the queues and the event are gone");
    // Published proxies stay.
    let q: QueueProxy<ListProxy<u32>> = m.queue().unwrap();
    let l: ListProxy<u32> = m.list().unwrap();
    m.publish("kept", &l).unwrap();
    q.put(l.clone()).unwrap();
    drop(l);
    let got = q.get().unwrap();
    drop(got);
    drop(q);
    settles_at(&m, base + 1, "a published proxy stays");
}
