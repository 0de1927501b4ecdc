//! Managers: shared lists, dicts, namespaces, queues, locks, events, values and custom
//! objects in a server process, used from children under every start method; `modify`;
//! remote use over TCP; and what happens when a holder, the server or the owner dies.
//! Ports CPython's manager tests (cpython.md §4: 76–77 `_TestManagerRestart`,
//! `_TestRemoteManager`; 107 the server survives SIGINT; 129 `TestSyncManagerTypes`).

mod util;

use std::time::{Duration, Instant};

use mproc::{
    Address, DictProxy, Error, EventProxy, ListProxy, LockProxy, Managed, Manager, Namespace,
    Process, Proxy, QueueProxy, ValueProxy,
};
use serde::{Deserialize, Serialize};
use util::*;

const LONG: Duration = Duration::from_secs(20);

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig} {pid} failed");
}

/// The pid of this process's manager server child.
fn server_pid() -> u32 {
    let servers: Vec<_> = mproc::active_children()
        .into_iter()
        .filter(|p| p.name().starts_with("SyncManager-"))
        .collect();
    servers.last().expect("a manager server child").pid()
}

fn adder(l: ListProxy<u32>) -> mproc::Result<()> {
    for i in 0..5 {
        l.append(&i)?;
    }
    Ok(())
}

fn doubler(l: ListProxy<u32>) -> mproc::Result<()> {
    for i in 0..l.len()? {
        l.modify(i, |x: u32| x * 2)?;
    }
    Ok(())
}

// The seed's lesson: a list shared by two processes, under every start method (the server
// and the children started by each).
#[test]
fn list_shared_by_two_children_under_every_start_method() {
    let _s = shared();
    let _w = watchdog("list_shared_by_two_children", 120);
    for m in METHODS {
        let manager = Manager::builder().start_method(m).start().unwrap();
        let l = manager.list().unwrap();
        let mut a = Process::new(adder, (l.clone(),));
        a.set_start_method(m);
        a.start().unwrap();
        a.result().unwrap().unwrap();
        let mut b = Process::new(doubler, (l.clone(),));
        b.set_start_method(m);
        b.start().unwrap();
        b.result().unwrap().unwrap();
        assert_eq!(l.to_vec().unwrap(), [0, 2, 4, 6, 8], "{m:?}");
        manager.shutdown().unwrap();
    }
}

#[allow(clippy::too_many_arguments)]
fn use_every_type(
    l: ListProxy<String>,
    d: DictProxy<u32, String>,
    ns: Namespace,
    q: QueueProxy<(u32, String)>,
    lock: LockProxy,
    ev: EventProxy,
    v: ValueProxy<f64>,
    go: EventProxy,
) -> mproc::Result<()> {
    l.append(&"child".to_string())?;
    d.insert(2, "two".into())?;
    ns.set("x", &42i64)?;
    q.put((7, "seven".into()))?;
    v.set(&2.5)?;
    ev.set()?;
    // The lock is held by the parent until `go`: the child waits for it.
    go.wait()?;
    let g = lock.acquire()?;
    g.release()
}

// Ports TestSyncManagerTypes (129): every manager type shared with a child.
#[test]
fn every_type_is_shared_with_a_child() {
    let _s = shared();
    let _w = watchdog("every_type_is_shared_with_a_child", 60);
    let m = Manager::start().unwrap();
    let l = m.list().unwrap();
    let d = m.dict().unwrap();
    let ns = m.namespace().unwrap();
    let q = m.queue().unwrap();
    let lock = m.lock().unwrap();
    let ev = m.event().unwrap();
    let v = m.value(1.0f64).unwrap();
    let go = m.event().unwrap();
    l.append(&"parent".to_string()).unwrap();
    d.insert(1, "one".into()).unwrap();
    let held = lock.acquire().unwrap();
    let p = mproc::spawn(
        use_every_type,
        (
            l.clone(),
            d.clone(),
            ns.clone(),
            q.clone(),
            lock.clone(),
            ev.clone(),
            v.clone(),
            go.clone(),
        ),
    )
    .unwrap();
    assert!(ev.wait_timeout(LONG).unwrap());
    go.set().unwrap();
    drop(held);
    p.result().unwrap().unwrap();

    assert_eq!(l.to_vec().unwrap(), ["parent", "child"]);
    assert_eq!(d.items().unwrap(), [(1, "one".into()), (2, "two".into())]);
    assert_eq!(d.keys().unwrap(), [1, 2]);
    assert_eq!(d.values().unwrap(), ["one", "two"]);
    assert_eq!(ns.get::<i64>("x").unwrap(), Some(42));
    assert_eq!(ns.get::<i64>("y").unwrap(), None);
    assert_eq!(q.qsize().unwrap(), 1);
    assert_eq!(q.get().unwrap(), (7, "seven".to_string()));
    assert!(q.is_empty().unwrap());
    assert_eq!(v.get().unwrap(), 2.5);
    assert!(ev.is_set().unwrap());
    ev.clear().unwrap();
    assert!(!ev.is_set().unwrap());
    assert!(!ev.wait_timeout(Duration::from_millis(20)).unwrap());
    assert!(
        lock.try_acquire().unwrap().is_some(),
        "the child released it"
    );
}

// List and dict operations (129's list and dict ops, in Rust's names).
#[test]
fn list_and_dict_operations() {
    let _s = shared();
    let _w = watchdog("list_and_dict_operations", 60);
    let m = Manager::start().unwrap();
    let l: ListProxy<i32> = m.list().unwrap();
    assert!(l.is_empty().unwrap());
    l.extend([1, 2, 3]).unwrap();
    l.insert(0, &0).unwrap();
    l.insert(100, &4).unwrap(); // past the end appends, as Python's insert
    assert_eq!(l.to_vec().unwrap(), [0, 1, 2, 3, 4]);
    assert_eq!(l.get(1).unwrap(), Some(1));
    assert_eq!(l.get(5).unwrap(), None);
    l.set(1, &10).unwrap();
    assert!(matches!(l.set(9, &1), Err(Error::ValueError(_))));
    assert_eq!(l.remove(1).unwrap(), 10);
    assert!(matches!(l.remove(9), Err(Error::ValueError(_))));
    assert_eq!(l.pop().unwrap(), Some(4));
    assert_eq!(l.len().unwrap(), 3);
    assert_eq!(l.modify(2, |x: i32| x * 100).unwrap(), 300);
    assert!(matches!(l.modify(7, |x: i32| x), Err(Error::ValueError(_))));
    l.clear().unwrap();
    assert_eq!(l.pop().unwrap(), None);

    let d: DictProxy<String, u64> = m.dict().unwrap();
    assert_eq!(d.insert("b".into(), 1).unwrap(), None);
    assert_eq!(d.insert("a".into(), 2).unwrap(), None);
    assert_eq!(d.insert("b".into(), 3).unwrap(), Some(1)); // keeps its place
    assert_eq!(d.keys().unwrap(), ["b", "a"]);
    assert!(d.contains_key(&"a".into()).unwrap());
    assert_eq!(d.remove(&"a".into()).unwrap(), Some(2));
    assert_eq!(d.remove(&"a".into()).unwrap(), None);
    assert_eq!(
        d.modify("c".into(), |v: Option<u64>| v.unwrap_or(10) + 1)
            .unwrap(),
        11
    );
    assert_eq!(d.len().unwrap(), 2);
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
}

fn increment(counts: DictProxy<String, u64>, n: u32) -> mproc::Result<()> {
    for _ in 0..n {
        counts.modify("hits".into(), |c: Option<u64>| c.unwrap_or(0) + 1)?;
    }
    Ok(())
}

// The race: Python's `d[k] += 1` from four processes loses updates; modify does not.
#[test]
fn modify_from_four_processes_loses_nothing() {
    let _s = shared();
    let _w = watchdog("modify_from_four_processes", 120);
    let m = Manager::start().unwrap();
    let counts = m.dict().unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| mproc::spawn(increment, (counts.clone(), 250)).unwrap())
        .collect();
    for p in ps {
        p.result().unwrap().unwrap();
    }
    assert_eq!(counts.get(&"hits".to_string()).unwrap(), Some(1000));
}

// A panic inside modify is that caller's error; the item stays as it was.
#[test]
fn modify_that_panics_is_an_error_and_changes_nothing() {
    let _s = shared();
    let _w = watchdog("modify_that_panics", 60);
    let m = Manager::start().unwrap();
    let l = m.list().unwrap();
    l.append(&5u8).unwrap();
    match l.modify(0, |_: u8| -> u8 { panic!("no thanks") }) {
        Err(Error::TaskPanicked { message, .. }) => assert_eq!(message, "no thanks"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(l.to_vec().unwrap(), [5]);
}

#[derive(Serialize, Deserialize)]
struct Bank {
    balance: i64,
    log: Vec<String>,
}

#[derive(Serialize, Deserialize)]
enum BankOp {
    Deposit(i64, String),
    Balance,
    Log,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum BankReply {
    Balance(i64),
    Log(Vec<String>),
}

impl Managed for Bank {
    type Request = BankOp;
    type Response = BankReply;
    fn handle(&mut self, op: BankOp) -> BankReply {
        match op {
            BankOp::Deposit(n, who) => {
                self.balance += n;
                self.log.push(who);
                BankReply::Balance(self.balance)
            }
            BankOp::Balance => BankReply::Balance(self.balance),
            BankOp::Log => BankReply::Log(self.log.clone()),
        }
    }
}

fn depositor(bank: Proxy<Bank>, who: String) -> mproc::Result<()> {
    for _ in 0..50 {
        bank.call(BankOp::Deposit(2, who.clone()))?;
    }
    Ok(())
}

// BaseManager.register, typed: a custom object used from two processes (75's registered
// type, with Rust's types instead of exposed method names).
#[test]
fn custom_type_from_two_processes() {
    let _s = shared();
    let _w = watchdog("custom_type_from_two_processes", 60);
    let m = Manager::start().unwrap();
    let bank = m
        .create(Bank {
            balance: 100,
            log: Vec::new(),
        })
        .unwrap();
    let a = mproc::spawn(depositor, (bank.clone(), "a".to_string())).unwrap();
    let b = mproc::spawn(depositor, (bank.clone(), "b".to_string())).unwrap();
    a.result().unwrap().unwrap();
    b.result().unwrap().unwrap();
    assert_eq!(bank.call(BankOp::Balance).unwrap(), BankReply::Balance(300));
    let BankReply::Log(log) = bank.call(BankOp::Log).unwrap() else {
        panic!("a log")
    };
    assert_eq!(log.iter().filter(|w| *w == "a").count(), 50);
    assert_eq!(log.len(), 100);
}

fn hold_forever(lock: LockProxy, held: EventProxy) -> mproc::Result<()> {
    let _g = lock.acquire()?;
    held.set()?;
    std::thread::sleep(LONG);
    Ok(())
}

// A lock whose holder is SIGKILLed is freed (CPython's manager lock deadlocks here).
#[test]
fn lock_of_a_killed_holder_is_freed() {
    let _s = shared();
    let _w = watchdog("lock_of_a_killed_holder_is_freed", 60);
    let m = Manager::start().unwrap();
    let lock = m.lock().unwrap();
    let held = m.event().unwrap();
    let p = mproc::spawn(hold_forever, (lock.clone(), held.clone())).unwrap();
    assert!(held.wait_timeout(LONG).unwrap());
    assert!(lock.try_acquire().unwrap().is_none(), "the child holds it");
    let t = Instant::now();
    let waiter = std::thread::spawn({
        let lock = lock.clone();
        move || lock.acquire_timeout(LONG).map(|g| g.is_some())
    });
    std::thread::sleep(Duration::from_millis(50));
    p.kill().unwrap();
    assert!(waiter.join().unwrap().unwrap(), "the waiter got the lock");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Acquiring again from the holding thread is refused, not a deadlock.
    let g = lock.acquire().unwrap();
    assert!(matches!(lock.acquire(), Err(Error::ValueError(_))));
    drop(g);
}

fn block_on_get(q: QueueProxy<u32>, ready: EventProxy) -> mproc::Result<u32> {
    ready.set()?;
    q.get()
}

// After shutdown every call, including a get blocked in another process and in another
// thread, answers Err(Closed) promptly (76: the server process exits 0).
#[test]
fn calls_after_shutdown_are_closed_and_blocked_gets_wake() {
    let _s = shared();
    let _w = watchdog("calls_after_shutdown", 60);
    let m = Manager::start().unwrap();
    let pid = server_pid();
    let q: QueueProxy<u32> = m.queue().unwrap();
    let l: ListProxy<u32> = m.list().unwrap();
    let ready = m.event().unwrap();
    let child = mproc::spawn(block_on_get, (q.clone(), ready.clone())).unwrap();
    assert!(ready.wait_timeout(LONG).unwrap());
    let q2 = q.clone();
    let thread = std::thread::spawn(move || q2.get());
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    m.shutdown().unwrap();
    assert!(matches!(thread.join().unwrap(), Err(Error::Closed)));
    assert!(matches!(child.result().unwrap(), Err(Error::Closed)));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(matches!(l.append(&1), Err(Error::Closed)));
    assert!(matches!(q.put(1), Err(Error::Closed)));
    assert!(matches!(m.list::<u8>(), Err(Error::Closed)));
    m.shutdown().unwrap(); // again: fine
    assert!(wait_dead(pid, 5), "the server exited");
}

fn call_later(l: ListProxy<u32>) -> mproc::Result<usize> {
    std::thread::sleep(Duration::from_millis(300));
    l.len()
}

// The server SIGKILLed: every call answers Err(Closed), a blocked get too, never hangs.
#[test]
fn calls_after_the_server_is_killed_are_closed() {
    let _s = shared();
    let _w = watchdog("calls_after_the_server_is_killed", 60);
    let m = Manager::start().unwrap();
    let pid = server_pid();
    let q: QueueProxy<u32> = m.queue().unwrap();
    let l: ListProxy<u32> = m.list().unwrap();
    l.append(&1).unwrap();
    let later = mproc::spawn(call_later, (l.clone(),)).unwrap();
    let q2 = q.clone();
    let blocked = std::thread::spawn(move || q2.get());
    std::thread::sleep(Duration::from_millis(100));
    signal(pid, "-KILL");
    let t = Instant::now();
    assert!(matches!(blocked.join().unwrap(), Err(Error::Closed)));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(matches!(l.len(), Err(Error::Closed)));
    assert!(matches!(later.result().unwrap(), Err(Error::Closed)));
    assert!(matches!(q.try_get(), Err(Error::Closed)));
}

fn own_a_manager(report: mproc::Connection<u32>) -> mproc::Result<()> {
    let m = Manager::start()?;
    let l: ListProxy<u32> = m.list()?;
    l.append(&1)?;
    report.send(&server_pid())?;
    std::thread::sleep(LONG);
    Ok(())
}

// The owner SIGKILLed: its server does not outlive it.
#[test]
fn server_dies_with_its_owner() {
    let _s = shared();
    let _w = watchdog("server_dies_with_its_owner", 60);
    let (here, there) = mproc::pipe().unwrap();
    let owner = mproc::spawn(own_a_manager, (there,)).unwrap();
    let server = here.recv().unwrap();
    assert!(!is_dead(server));
    owner.kill().unwrap();
    assert!(wait_dead(server, 10), "the server outlived its owner");
}

// Ports 107's "the server survives SIGINT": Ctrl-C is for the owner.
#[test]
fn server_ignores_sigint() {
    let _s = shared();
    let _w = watchdog("server_ignores_sigint", 60);
    let m = Manager::start().unwrap();
    let l = m.list().unwrap();
    signal(server_pid(), "-INT");
    std::thread::sleep(Duration::from_millis(100));
    l.append(&1u8).unwrap();
    assert_eq!(l.len().unwrap(), 1);
}

fn remote_worker(address: Address, key: Vec<u8>) -> mproc::Result<()> {
    let m = Manager::connect(address, &key)?;
    let q: QueueProxy<(u32, String, Vec<u8>)> = m.lookup("jobs")?;
    q.put((1, "from a second process".into(), vec![1, 2]))?;
    // Code is accepted from a network peer that authenticated and runs the server's
    // executable (this one does: it is the test binary).
    let l: ListProxy<u32> = m.list()?;
    l.append(&5)?;
    assert_eq!(l.modify(0, |x: u32| x + 1)?, 6);
    assert_eq!(l.modify_with(0, 10u32, |x: u32, n: u32| x * n)?, 60);
    Ok(())
}

// Ports _TestRemoteManager (77): a TCP manager with a 32-byte key, used by a second
// process that connects; and _TestManagerRestart: the address can be bound again after
// shutdown.
#[test]
fn remote_tcp_manager_and_rebinding_after_shutdown() {
    let _s = shared();
    let _w = watchdog("remote_tcp_manager", 60);
    let key = [7u8; 32];
    let m = Manager::builder()
        .address(Address::Tcp("127.0.0.1:0".parse().unwrap()))
        .authkey(&key)
        .start()
        .unwrap();
    let address = m.address();
    assert!(matches!(address, Address::Tcp(a) if a.port() != 0));
    let q: QueueProxy<(u32, String, Vec<u8>)> = m.queue().unwrap();
    m.publish("jobs", &q).unwrap();
    assert!(matches!(
        m.lookup::<QueueProxy<u32>>("nothing"),
        Err(Error::ValueError(_))
    ));
    mproc::spawn(remote_worker, (address.clone(), key.to_vec()))
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_eq!(
        q.get_timeout(LONG).unwrap(),
        (1, "from a second process".to_string(), vec![1, 2])
    );
    m.shutdown().unwrap();
    let again = Manager::builder()
        .address(address.clone())
        .authkey(&key)
        .start()
        .unwrap();
    assert_eq!(again.address(), address);
    assert_eq!(again.list::<u8>().unwrap().len().unwrap(), 0);
}

fn through_a_queue(q: QueueProxy<ListProxy<u32>>) -> mproc::Result<()> {
    let l = q.get()?;
    l.append(&99)
}

// Proxies travel in messages too: inside another proxy's items.
#[test]
fn proxies_travel_inside_messages() {
    let _s = shared();
    let _w = watchdog("proxies_travel_inside_messages", 60);
    let m = Manager::start().unwrap();
    let q = m.queue().unwrap();
    let l = m.list().unwrap();
    q.put(l.clone()).unwrap();
    mproc::spawn(through_a_queue, (q,))
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_eq!(l.to_vec().unwrap(), [99]);
}

// Proxy creation reuses the thread's connection: no new handshake per proxy.
#[test]
fn many_proxies_share_one_connection() {
    let _s = exclusive();
    let _w = watchdog("many_proxies_share_one_connection", 60);
    let m = Manager::start().unwrap();
    let _warm = m.list::<u8>().unwrap();
    let before = fd_count();
    let proxies: Vec<ListProxy<u8>> = (0..200).map(|_| m.list().unwrap()).collect();
    for p in &proxies {
        p.append(&1).unwrap();
    }
    assert_eq!(fd_count(), before);
}

fn append_forever(l: ListProxy<u64>) -> mproc::Result<()> {
    for i in 0.. {
        l.append(&i)?;
    }
    Ok(())
}

// A client killed in the middle of its calls disturbs no one else.
#[test]
fn a_client_killed_mid_call_disturbs_no_one() {
    let _s = shared();
    let _w = watchdog("a_client_killed_mid_call", 60);
    let m = Manager::start().unwrap();
    let l = m.list().unwrap();
    let other = m.dict().unwrap();
    let p = mproc::spawn(append_forever, (l.clone(),)).unwrap();
    let t = Instant::now();
    while l.len().unwrap() < 200 {
        assert!(t.elapsed() < LONG, "the child never appended");
        std::thread::sleep(Duration::from_millis(5));
    }
    p.kill().unwrap();
    assert!(matches!(
        p.result(),
        Err(Error::ChildFailed { exitcode: -9 })
    ));
    let n = l.len().unwrap();
    let items = l.to_vec().unwrap();
    assert_eq!(items.len(), n);
    assert!(
        items.iter().enumerate().all(|(i, v)| *v == i as u64),
        "no torn or lost item"
    );
    other.insert(1u8, 1u8).unwrap();
    assert_eq!(other.get(&1).unwrap(), Some(1));
}

// A wrong key is refused (the handshake is CPython's), and a peer that sends garbage gets an
// error for itself alone: the manager goes on serving everyone else.
#[test]
fn wrong_keys_and_malformed_requests_hurt_only_their_peer() {
    let _s = shared();
    let _w = watchdog("wrong_keys_and_malformed_requests", 60);
    let m = Manager::start().unwrap();
    let l = m.list().unwrap();
    l.append(&1u32).unwrap();
    assert!(matches!(
        Manager::connect(m.address(), b"not the key"),
        Err(Error::AuthenticationError)
    ));
    let same = Manager::connect(m.address(), m.authkey()).unwrap();
    assert_eq!(same.list::<u8>().unwrap().len().unwrap(), 0);

    let raw = mproc::connect::<()>(m.address(), Some(m.authkey())).unwrap();
    for garbage in [
        &b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"[..],
        b"",
        b"\x05\x01",
    ] {
        raw.send_bytes(garbage).unwrap();
        let reply = raw.recv_bytes().unwrap();
        assert!(!reply.is_empty(), "an error answer");
    }
    drop(raw);
    l.append(&2).unwrap();
    assert_eq!(l.to_vec().unwrap(), [1, 2]);
}

// Peers that connect and say nothing (knowing no key) must not lock honest clients out: the
// handshake runs on each peer's own thread, not on the accepting one (as CPython's
// `Server.accepter` does), so an honest client is served at once, not after the 20 s
// handshake timeout.
#[test]
fn silent_peers_do_not_block_honest_clients() {
    let _s = shared();
    let _w = watchdog("silent_peers_do_not_block_honest_clients", 60);
    let m = Manager::builder()
        .address(Address::Tcp("127.0.0.1:0".parse().unwrap()))
        .start()
        .unwrap();
    let Address::Tcp(at) = m.address() else {
        panic!("a TCP manager has a TCP address")
    };
    let silent: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(at).unwrap())
        .collect();
    // Let the manager accept them before the honest client comes.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let honest = Manager::connect(m.address(), m.authkey()).unwrap();
    assert_eq!(honest.list::<u8>().unwrap().len().unwrap(), 0);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "an honest client waited {took:?} behind silent peers"
    );
    drop(silent);
    m.shutdown().unwrap();
}

// A manager started and shut down leaves no descriptor and no child behind.
#[test]
fn start_and_shutdown_leak_nothing() {
    let _s = exclusive();
    let _w = watchdog("start_and_shutdown_leak_nothing", 60);
    // Warm-up: the fork server and other lazily made things exist before the count.
    Manager::start().unwrap().shutdown().unwrap();
    let before = fd_count();
    for _ in 0..3 {
        let m = Manager::start().unwrap();
        let l = m.list().unwrap();
        l.append(&1u8).unwrap();
        m.shutdown().unwrap();
        drop(l);
    }
    assert_eq!(fd_count(), before, "descriptors leaked");
    assert!(zombie_children().is_empty());
    assert!(
        !mproc::active_children()
            .iter()
            .any(|p| p.name().starts_with("SyncManager-"))
    );
}
