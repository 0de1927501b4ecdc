//! Pipes through shared memory (`connection/shm.rs`): what the rings must keep of the socket
//! path's guarantees — descriptors in order beside the data, messages larger than the ring,
//! end of stream on close and on death, a clear error for a sender killed mid-message, no
//! CPU while idle, nothing leaked — with real processes. (Exactly-once delivery from an end
//! shared under a `Lock` or handed on after some reads is in `connection.rs`, under every
//! start method.)

mod util;

use std::time::{Duration, Instant};

use mproc::{
    Connection, Error, RawValue, Receiver, Sender, Waitable, get_context, pipe, pipe_simplex, wait,
};
use serde::{Deserialize, Serialize};
use util::*;

#[derive(Serialize, Deserialize, Debug)]
enum Item {
    Plain {
        from: u32,
        i: u32,
    },
    /// A handle (a memfd descriptor) whose value says which item it belongs to.
    Tagged {
        from: u32,
        i: u32,
        v: RawValue<u64>,
    },
}

const PER_PRODUCER: u32 = 150;

fn produce(tx: Sender<Item>, from: u32) -> mproc::Result<()> {
    for i in 0..PER_PRODUCER {
        if i % 3 == 0 {
            let v = RawValue::new(u64::from(from) * 1_000_000 + u64::from(i))?;
            tx.send(&Item::Tagged { from, i, v })?;
        } else {
            tx.send(&Item::Plain { from, i })?;
        }
    }
    Ok(())
}

// Two producer processes share one sending end; a third of their messages carry a
// descriptor. Each producer's messages arrive in order, and every descriptor arrives with
// its own message (its value names the message), under every start method.
#[test]
fn descriptors_arrive_with_their_messages_in_order() {
    let _s = shared();
    let _w = watchdog("ring_fds_in_order", 120);
    for m in METHODS {
        let (rx, tx) = pipe_simplex::<Item>().unwrap();
        let mut procs = Vec::new();
        for from in 0..2u32 {
            let mut p = get_context(m).process(produce, (tx_clone(&tx), from));
            p.start().unwrap();
            procs.push(p);
        }
        drop(tx);
        let mut next = [0u32; 2];
        for _ in 0..2 * PER_PRODUCER {
            match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
                Item::Plain { from, i } => {
                    assert_eq!(next[from as usize], i, "{m:?}");
                    assert_ne!(i % 3, 0, "{m:?}");
                    next[from as usize] += 1;
                }
                Item::Tagged { from, i, v } => {
                    assert_eq!(next[from as usize], i, "{m:?}");
                    assert_eq!(v.get(), u64::from(from) * 1_000_000 + u64::from(i), "{m:?}");
                    next[from as usize] += 1;
                }
            }
        }
        for p in procs {
            p.result().unwrap().unwrap();
        }
        assert!(matches!(rx.recv(), Err(Error::Closed)), "{m:?}");
    }
}

/// A second handle to the same sending end (the way a child would get one: through a
/// message), so two producers can share it.
fn tx_clone(tx: &Sender<Item>) -> Sender<Item> {
    let (a, b) = pipe::<Sender<Item>>().unwrap();
    a.send(tx).unwrap();
    b.recv().unwrap()
}

fn send_big(conn: Connection<Vec<u8>>, len: usize) -> mproc::Result<()> {
    conn.send(&vec![1, 2, 3])?;
    let big: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    conn.send_bytes(&big)?;
    conn.send(&big)?;
    conn.send(&vec![4, 5, 6])
}

// Messages many times the ring's size stream through it, raw and typed, in order with the
// small ones around them.
#[test]
fn messages_larger_than_the_ring_stream_through_in_order() {
    let _s = shared();
    let _w = watchdog("ring_large", 120);
    let len = 5 << 20;
    let (a, b) = pipe::<Vec<u8>>().unwrap();
    let mut p = get_context(Fork).process(send_big, (b, len));
    p.start().unwrap();
    assert_eq!(a.recv().unwrap(), vec![1, 2, 3]);
    let raw = a.recv_bytes().unwrap();
    assert_eq!(raw.len(), len);
    assert!(raw.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
    let typed = a.recv().unwrap();
    assert_eq!(typed, raw);
    assert_eq!(a.recv().unwrap(), vec![4, 5, 6]);
    p.result().unwrap().unwrap();
    assert!(matches!(a.recv(), Err(Error::Closed)));
}

fn send_then_linger(conn: Connection<u32>, linger: bool) {
    conn.send(&7).expect("send");
    if linger {
        std::thread::sleep(Duration::from_secs(60));
    }
}

// End of stream after the last message, when the peer exits and when it is SIGKILLed.
#[test]
fn end_of_stream_when_the_peer_exits_or_is_killed() {
    let _s = shared();
    let _w = watchdog("ring_eof", 60);
    for kill in [false, true] {
        let (a, b) = pipe::<u32>().unwrap();
        let mut p = get_context(Fork).process(send_then_linger, (b, kill));
        p.start().unwrap();
        assert_eq!(a.recv().unwrap(), 7);
        if kill {
            p.kill().unwrap();
        }
        let err = a.recv_timeout(Duration::from_secs(20)).unwrap_err();
        assert!(matches!(err, Error::Closed), "kill {kill}: {err}");
        assert!(
            a.poll(Some(Duration::ZERO)).unwrap(),
            "EOF counts as readable"
        );
        p.join().unwrap();
    }
}

fn stream_forever(conn: Connection<u32>, ready: Sender<u32>) {
    let big = vec![9u8; 64 << 20];
    ready.send(&1).expect("ready");
    // Blocks once the ring is full, holding the producer lock, until killed.
    let _ = conn.send_bytes(&big);
}

// A sender SIGKILLed while its message is half-way through the ring: the receiver gets the
// socket path's "in the middle of a message" error (never a hang, never a short message),
// then end of stream.
#[test]
fn a_sender_killed_mid_message_is_an_error() {
    let _s = shared();
    let _w = watchdog("ring_killed_mid_message", 60);
    for m in METHODS {
        let (a, b) = pipe::<u32>().unwrap();
        let (ready_rx, ready_tx) = pipe_simplex::<u32>().unwrap();
        let mut p = get_context(m).process(stream_forever, (b, ready_tx));
        p.start().unwrap();
        ready_rx.recv().unwrap();
        // Let it fill the ring and block.
        std::thread::sleep(Duration::from_millis(200));
        p.kill().unwrap();
        p.join().unwrap();
        let err = a.recv_bytes().unwrap_err();
        assert!(
            err.to_string().contains("in the middle of a message"),
            "{m:?}: {err}"
        );
        assert!(matches!(a.recv_bytes(), Err(Error::Closed)), "{m:?}");
    }
}

fn recv_once(conn: Receiver<u64>) -> u64 {
    conn.recv().expect("release")
}

fn wait_once(conn: Receiver<u64>) -> u64 {
    wait(&[&conn as &dyn Waitable], None).expect("wait");
    conn.recv().expect("release")
}

/// Run time of `pid` so far (`/proc/<pid>/schedstat`).
fn cpu(pid: u32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).expect("schedstat");
    Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
}

// Issue 14: a receiver blocked for a second, in `recv` or in `wait`, uses at most 2% of a
// CPU; and the message that ends the wait still arrives.
#[test]
fn an_idle_receiver_uses_no_cpu() {
    let _s = shared();
    let _w = watchdog("ring_idle_cpu", 60);
    for waiting in [false, true] {
        let (rx, tx) = pipe_simplex::<u64>().unwrap();
        let mut p = if waiting {
            get_context(Fork).process(wait_once, (rx,))
        } else {
            get_context(Fork).process(recv_once, (rx,))
        };
        p.start().unwrap();
        // Past start-up and the receiver's spin.
        std::thread::sleep(Duration::from_millis(200));
        let pid = p.pid().unwrap();
        let c0 = cpu(pid);
        std::thread::sleep(Duration::from_secs(1));
        let used = cpu(pid) - c0;
        tx.send(&5).unwrap();
        assert_eq!(p.result().unwrap(), 5);
        assert!(
            used <= Duration::from_millis(20),
            "waiting {waiting}: {used:?} of CPU in an idle second"
        );
    }
}

fn send_spaced(tx: Sender<u32>, n: u32) -> mproc::Result<()> {
    for i in 0..n {
        if i % 7 == 0 {
            std::thread::sleep(Duration::from_micros(300));
        }
        tx.send(&i)?;
    }
    Ok(())
}

// `wait` never misses a message that lands while it goes to sleep: a sender with irregular
// gaps, a receiver that only ever receives after `wait` said so.
#[test]
fn wait_misses_no_message() {
    let _s = shared();
    let _w = watchdog("ring_wait_races", 60);
    let (rx, tx) = pipe_simplex::<u32>().unwrap();
    let n = 2000;
    let mut p = get_context(Fork).process(send_spaced, (tx, n));
    p.start().unwrap();
    for i in 0..n {
        let ready = wait(&[&rx as &dyn Waitable], Some(Duration::from_secs(10))).unwrap();
        assert_eq!(ready, vec![0], "message {i} never woke wait");
        assert_eq!(rx.recv().unwrap(), i);
    }
    p.result().unwrap().unwrap();
}

fn shm_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("mproc-queue"))
        .count()
}

// Making, using and dropping pipes leaves no descriptor and no shared mapping behind.
#[test]
fn pipes_leak_neither_descriptors_nor_memory() {
    let _x = exclusive();
    let _w = watchdog("ring_leaks", 60);
    let (fds, maps) = (fd_count(), shm_mappings());
    for _ in 0..20 {
        let (a, b) = pipe::<Vec<u8>>().unwrap();
        let (rx, tx) = pipe_simplex::<Connection<Vec<u8>>>().unwrap();
        a.send(&vec![1; 100_000]).unwrap();
        tx.send(&b).unwrap();
        drop(b);
        let b = rx.recv().unwrap();
        assert_eq!(b.recv().unwrap().len(), 100_000);
    }
    assert_eq!(fd_count(), fds, "descriptors leaked");
    assert_eq!(shm_mappings(), maps, "ring mappings leaked");
}

// A send to a peer that stopped reading and then closed, while the ring is full, fails
// with `Closed` rather than waiting for room for ever.
#[test]
fn a_full_ring_with_a_closed_peer_fails_the_send() {
    let _w = watchdog("ring_full_closed", 30);
    let (a, b) = pipe::<()>().unwrap();
    let t = Instant::now();
    let sender = std::thread::spawn(move || a.send_bytes(&vec![0u8; 16 << 20]));
    std::thread::sleep(Duration::from_millis(100));
    drop(b);
    let r = sender.join().unwrap();
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

fn take_all(rx: Receiver<u32>) -> Vec<u32> {
    let mut got = Vec::new();
    while let Ok(v) = rx.recv_timeout(Duration::from_secs(30)) {
        got.push(v);
    }
    got
}

fn rx_clone(rx: &Receiver<u32>) -> Receiver<u32> {
    let (a, b) = pipe::<Receiver<u32>>().unwrap();
    a.send(rx).unwrap();
    b.recv().unwrap()
}

// Two processes receive from one end at once, with no lock around `recv`: every message
// reaches exactly one of them, and both see the end of the stream.
#[test]
fn concurrent_receivers_without_a_lock_share_the_messages_exactly_once() {
    let _s = shared();
    let _w = watchdog("ring_unlocked_receivers", 90);
    let (rx, tx) = pipe_simplex::<u32>().unwrap();
    let mut procs = Vec::new();
    for _ in 0..2 {
        let mut p = get_context(Fork).process(take_all, (rx_clone(&rx),));
        p.start().unwrap();
        procs.push(p);
    }
    drop(rx);
    let n = 3000;
    for i in 0..n {
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        tx.send(&i).unwrap();
    }
    drop(tx);
    let mut all: Vec<u32> = procs
        .into_iter()
        .flat_map(|p| p.result().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
}

/// A message whose handle holds its own number.
#[derive(Serialize, Deserialize)]
struct Numbered {
    i: u32,
    v: RawValue<u64>,
}

/// What a receiver saw, in order.
#[derive(Serialize, Deserialize, Debug)]
enum Seen {
    /// Receiver `r` got message `i` with its own handle.
    Got { r: u32, i: u32 },
    /// Receiver `r` got message `i` with another message's handle.
    Wrong { r: u32, i: u32, v: u64 },
    /// Receiver `r` got an error.
    Failed { r: u32, why: String },
}

const FLOOD: u32 = 1_000_000;

fn flood(tx: Sender<Numbered>) -> mproc::Result<()> {
    for i in 0..FLOOD {
        tx.send(&Numbered {
            i,
            v: RawValue::new(u64::from(i))?,
        })?;
    }
    Ok(())
}

/// Receives and reports until nothing comes for `idle`.
fn take_and_report(rx: Receiver<Numbered>, report: Sender<Seen>, r: u32, idle: Duration) {
    loop {
        let seen = match rx.recv_timeout(idle) {
            Ok(m) if m.v.get() == u64::from(m.i) => Seen::Got { r, i: m.i },
            Ok(m) => Seen::Wrong {
                r,
                i: m.i,
                v: m.v.get(),
            },
            Err(Error::Timeout | Error::Closed) => return,
            Err(e) => Seen::Failed {
                r,
                why: e.to_string(),
            },
        };
        report.send(&seen).expect("report");
    }
}

fn numbered_rx_clone(rx: &Receiver<Numbered>) -> Receiver<Numbered> {
    let (a, b) = pipe::<Receiver<Numbered>>().unwrap();
    a.send(rx).unwrap();
    b.recv().unwrap()
}

fn seen_tx_clone(tx: &Sender<Seen>) -> Sender<Seen> {
    let (a, b) = pipe::<Sender<Seen>>().unwrap();
    a.send(tx).unwrap();
    b.recv().unwrap()
}

/// The receivers' reports, tallied as they come.
struct Tally {
    /// Per receiver: its failures, and how many messages it got.
    failed: Vec<u32>,
    got: Vec<u32>,
    /// The next message expected.
    next: u32,
    /// Messages never reported as got: failed ones, and any a receiver took before it died.
    skipped: u32,
    whys: Vec<String>,
}

impl Tally {
    fn new(receivers: usize) -> Tally {
        Tally {
            failed: vec![0; receivers],
            got: vec![0; receivers],
            next: 0,
            skipped: 0,
            whys: Vec::new(),
        }
    }

    fn note(&mut self, seen: Seen) {
        match seen {
            Seen::Got { r, i } => {
                assert!(
                    i >= self.next,
                    "message {i} after {}: out of order",
                    self.next
                );
                self.skipped += i - self.next;
                self.next = i + 1;
                self.got[r as usize] += 1;
            }
            Seen::Wrong { r, i, v } => panic!("receiver {r}: message {i} with the handle of {v}"),
            Seen::Failed { r, why } => {
                // The one message a receiver may fail is the first it meets.
                assert_eq!(
                    self.got[r as usize], 0,
                    "receiver {r} failed after it got messages: {why}"
                );
                self.failed[r as usize] += 1;
                self.whys.push(why);
            }
        }
    }
}

// Issue 18: receivers SIGKILLed at random points of their `recv` while a sender floods
// the pipe with messages that carry a handle. A receiver killed after it took a message's
// descriptor record but before it moved the ring's head leaves that message to the next
// receiver without its record: that one message fails, and every later one still arrives
// with its own handle (the old matching closed every queued record instead, and each of
// their messages failed after it: 30 to 300 per kill).
#[test]
fn a_receiver_killed_mid_take_costs_at_most_its_message() {
    let _s = shared();
    let _w = watchdog("ring_receiver_killed_mid_take", 120);
    const KILLS: u32 = 40;
    let (rx, tx) = pipe_simplex::<Numbered>().unwrap();
    let (seen_rx, seen_tx) = pipe_simplex::<Seen>().unwrap();
    let mut sender = get_context(Fork).process(flood, (tx,));
    sender.start().unwrap();
    let mut tally = Tally::new(KILLS as usize + 1);
    let idle = Duration::from_secs(30);
    for r in 0..KILLS {
        let mut p = get_context(Fork).process(
            take_and_report,
            (numbered_rx_clone(&rx), seen_tx_clone(&seen_tx), r, idle),
        );
        p.start().unwrap();
        // Messages arrive after each kill; and once this receiver gets them (however
        // slow the machine), it is killed at a spread of moments into its stream.
        while tally.got[r as usize] == 0 {
            let seen = seen_rx.recv_timeout(Duration::from_secs(30));
            tally.note(seen.expect("a receiver's first message"));
        }
        std::thread::sleep(Duration::from_micros(u64::from(r * 7919 % 10_000)));
        p.kill().unwrap();
        p.join().unwrap();
    }
    // The last receiver must get messages after the last kill; then it drains what the
    // sender left, and stops once nothing more comes.
    let mut last = get_context(Fork).process(
        take_and_report,
        (
            numbered_rx_clone(&rx),
            seen_tx_clone(&seen_tx),
            KILLS,
            Duration::from_secs(1),
        ),
    );
    last.start().unwrap();
    while tally.got[KILLS as usize] == 0 {
        let seen = seen_rx.recv_timeout(Duration::from_secs(30));
        tally.note(seen.expect("the last receiver's reports"));
    }
    sender.kill().unwrap();
    sender.join().unwrap();
    last.join().unwrap();
    assert_eq!(last.exitcode(), Some(0), "the last receiver");
    drop(seen_tx);
    loop {
        match seen_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(seen) => tally.note(seen),
            Err(Error::Timeout | Error::Closed) => break,
            Err(e) => panic!("reading the reports: {e}"),
        }
    }
    let Tally {
        failed,
        next,
        skipped,
        whys,
        ..
    } = tally;
    let total: u32 = failed.iter().sum();
    eprintln!(
        "{KILLS} receivers killed: {next} messages through, {total} failed, {skipped} skipped; \
         failures per receiver: {failed:?}"
    );
    assert!(
        failed.iter().all(|&f| f <= 1) && skipped <= KILLS,
        "more than the message in flight lost per kill: {total} failed, {skipped} skipped; \
         failures per receiver: {failed:?}"
    );
    for why in whys {
        assert!(why.contains("descriptors were lost"), "{why}");
    }
}

/// The size `send_huge` streams: many times the ring, so it stalls with the ring full.
const HUGE: usize = 8 << 20;

fn send_huge(conn: Connection<u32>) -> mproc::Result<()> {
    conn.send_bytes(&vec![3u8; HUGE])
}

fn receive_one(conn: Connection<u32>) -> mproc::Result<usize> {
    conn.recv_bytes().map(|b| b.len())
}

/// Receives untimed (`recv_bytes_into`): what a contender blocked on the lock costs.
fn receive_into(conn: Connection<u32>) -> mproc::Result<usize> {
    let mut buf = Vec::new();
    match conn.recv_bytes_into(&mut buf) {
        Err(Error::Closed) => Ok(0),
        r => r,
    }
}

fn conn_clone(c: &Connection<u32>) -> Connection<u32> {
    let (a, b) = pipe::<Connection<u32>>().unwrap();
    a.send(c).unwrap();
    b.recv().unwrap()
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, sig).expect("kill");
}

/// This thread's CPU time so far (`/proc/thread-self/schedstat`).
fn my_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
}

/// Waits (under the test's watchdog) until `a`'s ring is empty (`false`) or not.
fn until_pending(a: &Connection<u32>, pending: bool) {
    while a.poll(Some(Duration::ZERO)).unwrap() != pending {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILLs the processes of a failed test (a stopped one would outlive it), or always.
struct KillOnPanic(Vec<u32>, bool);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() || self.1 {
            for &pid in &self.0 {
                let _ = rustix::process::Pid::from_raw(pid as i32)
                    .map(|p| rustix::process::kill_process(p, rustix::process::Signal::KILL));
            }
        }
    }
}

// Issue 19, item 2: another process shares the receiving end and holds its receive lock
// (it is SIGSTOPped half-way through a message larger than the ring, whose sender has
// refilled the ring). A `recv_timeout(200 ms)` here returns `Timeout` in about 200 ms and
// sleeps meanwhile; an untimed receive in a third process sleeps too; and once the holder
// runs again it gets its whole message, and the end sees end of stream after it.
#[test]
fn a_receive_lock_held_elsewhere_is_waited_for_asleep_and_within_the_timeout() {
    use rustix::process::Signal;
    let _s = shared();
    let _w = watchdog("ring_receive_lock_held", 60);
    let (a, b) = pipe::<u32>().unwrap();
    let mut sender = get_context(Fork).process(send_huge, (b,));
    sender.start().unwrap();
    let mut pids = KillOnPanic(vec![sender.pid().unwrap()], false);
    // The ring fills, the sender waits for room; stop it there.
    until_pending(&a, true);
    std::thread::sleep(Duration::from_millis(200));
    signal(sender.pid().unwrap(), Signal::STOP);
    // The holder takes the consumer lock and all the ring holds, and waits for the rest.
    let mut holder = get_context(Fork).process(receive_one, (conn_clone(&a),));
    holder.start().unwrap();
    pids.0.push(holder.pid().unwrap());
    until_pending(&a, false);
    signal(holder.pid().unwrap(), Signal::STOP);
    // The sender refills the ring and stalls again: the ring is not empty, its lock held.
    signal(sender.pid().unwrap(), Signal::CONT);
    until_pending(&a, true);
    std::thread::sleep(Duration::from_millis(100));

    let mut untimed = get_context(Fork).process(receive_into, (conn_clone(&a),));
    untimed.start().unwrap();
    pids.0.push(untimed.pid().unwrap());
    // A receive that never returns (it did, spinning) would keep the watchdog's exit
    // waiting for the stopped children: kill them after a while, so it returns and fails.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rescue = {
        let (done, pids) = (done.clone(), pids.0.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if t.elapsed() > Duration::from_secs(10) {
                    eprintln!("receive-lock test: still waiting after 10 s; killing the children");
                    drop(KillOnPanic(pids, true));
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    for round in 0..3 {
        let cpu0 = my_cpu();
        let t = Instant::now();
        let r = a.recv_timeout(Duration::from_millis(200));
        let (took, used) = (t.elapsed(), my_cpu() - cpu0);
        assert!(matches!(r, Err(Error::Timeout)), "round {round}: {r:?}");
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(600),
            "round {round}: recv_timeout(200 ms) took {took:?}"
        );
        assert!(
            used < Duration::from_millis(20),
            "round {round}: recv_timeout(200 ms) used {used:?} of CPU in {took:?}"
        );
    }
    // The untimed contender, past its start-up: at most 2% of a CPU, as an idle receiver.
    let pid = untimed.pid().unwrap();
    let c0 = cpu(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu(pid) - c0;
    assert!(
        used <= Duration::from_millis(20),
        "an untimed receive blocked on the lock used {used:?} of CPU in a second"
    );

    done.store(true, std::sync::atomic::Ordering::Relaxed);
    rescue.join().unwrap();
    signal(holder.pid().unwrap(), Signal::CONT);
    assert_eq!(holder.result().unwrap().unwrap(), HUGE);
    sender.result().unwrap().unwrap();
    assert_eq!(untimed.result().unwrap().unwrap(), 0, "end of stream");
    assert!(matches!(a.recv(), Err(Error::Closed)));
}
