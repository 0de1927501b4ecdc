//! The rest of Python's list and dict proxy methods, `modify_with`, arrays, and code-running
//! calls (`modify`, `modify_with`, `sort`, `create`, `call`) over TCP, used from real
//! processes. Ports CPython's `_TestContainers` (cpython.md §4, 56: list slicing, `extend`,
//! iteration; 57: dict `keys`/`values`/`items`, and the `update`/`setdefault`/`pop`/
//! `popitem` of `MutableMapping`), the manager side of `_TestArray` (55: `len`, indexing,
//! a prefix sum computed in a child is visible), and `_TestRemoteManager` (77: a second
//! process on TCP), now including the calls that run code.

mod util;

use mproc::{Address, ArrayProxy, DictProxy, Error, ListProxy, Managed, Manager, Proxy};
use serde::{Deserialize, Serialize};
use util::*;

fn sort_in_child(l: ListProxy<String>) -> mproc::Result<()> {
    l.sort()?;
    l.reverse()
}

#[test]
fn list_methods() {
    let _s = shared();
    let _w = watchdog("list_methods", 60);
    let m = Manager::start().unwrap();
    let l: ListProxy<String> = m.list().unwrap();
    let words = ["pear", "apple", "fig", "apple", "kiwi"];
    l.extend(words.iter().map(|w| w.to_string())).unwrap();
    assert_eq!(l.index(&"apple".into()).unwrap(), 1);
    assert_eq!(l.count(&"apple".into()).unwrap(), 2);
    assert_eq!(l.count(&"plum".into()).unwrap(), 0);
    assert!(matches!(l.index(&"plum".into()), Err(Error::ValueError(_))));
    assert_eq!(l.slice(1..3).unwrap(), ["apple", "fig"]);
    assert_eq!(l.slice(3..).unwrap(), ["apple", "kiwi"]);
    assert_eq!(l.slice(..=0).unwrap(), ["pear"]);
    assert_eq!(
        l.slice(2..100).unwrap(),
        ["fig", "apple", "kiwi"],
        "clamped"
    );
    assert!(l.slice(10..20).unwrap().is_empty());
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = l.slice(4..2).unwrap();
    assert!(backwards.is_empty());
    assert_eq!(l.iter().unwrap().collect::<Vec<_>>(), words);
    mproc::spawn(sort_in_child, (l.clone(),))
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_eq!(
        l.to_vec().unwrap(),
        ["pear", "kiwi", "fig", "apple", "apple"]
    );
    // Sorting numbers by their order, not their encoding (300 encodes as [172, 2]).
    let n: ListProxy<u32> = m.list().unwrap();
    n.extend([300, 2, 1000, 7]).unwrap();
    n.sort().unwrap();
    assert_eq!(n.to_vec().unwrap(), [2, 7, 300, 1000]);
}

fn add_words(d: DictProxy<String, u64>, weight: u64) -> mproc::Result<()> {
    for w in ["a", "b", "a", "c"] {
        d.modify_with(w.to_string(), weight, |c: Option<u64>, n: u64| {
            c.unwrap_or(0) + n
        })?;
    }
    Ok(())
}

fn scale(l: ListProxy<u64>, by: u64) -> mproc::Result<()> {
    for i in 0..l.len()? {
        l.modify_with(i, by, |x: u64, k: u64| x * k)?;
    }
    Ok(())
}

#[test]
fn dict_methods_and_modify_with_from_four_processes() {
    let _s = shared();
    let _w = watchdog("dict_methods", 60);
    let m = Manager::start().unwrap();
    let d: DictProxy<String, u64> = m.dict().unwrap();
    let ps: Vec<_> = (1..=4)
        .map(|w| mproc::spawn(add_words, (d.clone(), w)).unwrap())
        .collect();
    for p in ps {
        p.result().unwrap().unwrap();
    }
    // d[w] += n from four processes: nothing lost.
    assert_eq!(d.get(&"a".into()).unwrap(), Some(20));
    assert_eq!(d.get(&"b".into()).unwrap(), Some(10));
    d.update([("b".to_string(), 1), ("z".to_string(), 26)])
        .unwrap();
    assert_eq!(d.setdefault("z".into(), 0).unwrap(), 26, "kept");
    assert_eq!(d.setdefault("y".into(), 25).unwrap(), 25, "set");
    assert_eq!(d.pop(&"b".into()).unwrap(), Some(1));
    assert_eq!(d.pop(&"b".into()).unwrap(), None);
    assert_eq!(
        d.popitem().unwrap(),
        Some(("y".to_string(), 25)),
        "last inserted"
    );
    assert_eq!(d.keys().unwrap(), ["a", "c", "z"]);
    d.clear().unwrap();
    assert_eq!(d.popitem().unwrap(), None);
    let l: ListProxy<u64> = m.list().unwrap();
    l.extend([1, 2, 3]).unwrap();
    mproc::spawn(scale, (l.clone(), 10))
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_eq!(l.to_vec().unwrap(), [10, 20, 30]);
    assert!(matches!(
        l.modify_with(3, 1u64, |x: u64, k: u64| x + k),
        Err(Error::ValueError(_))
    ));
}

fn prefix_sums(a: ArrayProxy<i64>) -> mproc::Result<()> {
    let mut sum = 0;
    for i in 0..a.len()? {
        sum += a.get(i)?.unwrap_or(0);
        a.set(i, &sum)?;
    }
    Ok(())
}

#[test]
fn array_shared_with_a_child() {
    let _s = shared();
    let _w = watchdog("array_shared_with_a_child", 60);
    let m = Manager::start().unwrap();
    let a = m.array((0..10i64).collect()).unwrap();
    mproc::spawn(prefix_sums, (a.clone(),))
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_eq!(a.to_vec().unwrap(), [0, 1, 3, 6, 10, 15, 21, 28, 36, 45]);
    assert_eq!(a.len().unwrap(), 10);
    assert_eq!(a.get(10).unwrap(), None);
    assert!(matches!(a.set(10, &0), Err(Error::ValueError(_))));
    assert!(m.array::<u8>(vec![]).unwrap().is_empty().unwrap());
}

#[derive(Serialize, Deserialize)]
struct Counter {
    n: u64,
}

impl Managed for Counter {
    type Request = u64;
    type Response = u64;
    fn handle(&mut self, add: u64) -> u64 {
        self.n += add;
        self.n
    }
}

/// Everything that runs code in the server, from a process that connected over TCP.
fn remote_code(address: Address, key: Vec<u8>) -> mproc::Result<u64> {
    let m = Manager::connect(address, &key)?;
    let d: DictProxy<String, u64> = m.dict()?;
    d.modify("k".into(), |c: Option<u64>| c.unwrap_or(1) * 2)?;
    d.modify_with("k".into(), 5u64, |c: Option<u64>, n: u64| {
        c.unwrap_or(0) + n
    })?;
    let l: ListProxy<u64> = m.list()?;
    l.extend([3, 1, 2])?;
    l.sort()?;
    assert_eq!(l.to_vec()?, [1, 2, 3]);
    let c: Proxy<Counter> = m.create(Counter {
        n: d.get(&"k".into())?.unwrap_or(0),
    })?;
    c.call(100)
}

#[test]
fn code_runs_over_tcp_for_the_same_executable() {
    let _s = shared();
    let _w = watchdog("code_runs_over_tcp", 60);
    let m = Manager::builder()
        .address(Address::Tcp("127.0.0.1:0".parse().unwrap()))
        .start()
        .unwrap();
    let got = mproc::spawn(remote_code, (m.address(), m.authkey().to_vec()))
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_eq!(got, 107);
}

/// Run by `code_from_another_executable_over_tcp_says_why` in a copy of this test binary
/// (a different executable file): tries code-running calls on the manager named by the
/// environment and prints what each answered.
#[test]
#[ignore = "a helper, run by code_from_another_executable_over_tcp_says_why"]
fn helper_remote_peer_of_another_executable() {
    let address: Address = std::env::var("MPROC_TEST_MANAGER")
        .expect("run by its test")
        .parse()
        .expect("an address");
    let key = std::env::var("MPROC_TEST_KEY").expect("run by its test");
    let m = Manager::connect(address, key.as_bytes()).expect("connect");
    let l: ListProxy<u64> = m.list().expect("plain calls work");
    l.append(&1).expect("plain calls work");
    match l.modify(0, |x: u64| x + 1) {
        Err(Error::ValueError(e)) => println!("modify: {e}"),
        other => println!("modify: unexpected {other:?}"),
    }
    match m.create(Counter { n: 0 }) {
        Err(Error::ValueError(e)) => println!("create: {e}"),
        other => println!("create: unexpected {other:?}"),
    }
}

#[test]
fn code_from_another_executable_over_tcp_says_why() {
    let _s = shared();
    let _w = watchdog("code_from_another_executable", 120);
    let key = "a key for this test";
    let m = Manager::builder()
        .address(Address::Tcp("127.0.0.1:0".parse().unwrap()))
        .authkey(key.as_bytes())
        .start()
        .unwrap();
    // A copy of this very binary is another executable file: another fingerprint.
    let copy = std::env::temp_dir().join(format!("mproc-peer-{}", std::process::id()));
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    let out = std::process::Command::new(&copy)
        .args([
            "--ignored",
            "--exact",
            "helper_remote_peer_of_another_executable",
            "--nocapture",
        ])
        .env("MPROC_TEST_MANAGER", m.address().to_string())
        .env("MPROC_TEST_KEY", key)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&copy);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let says_why = "authenticated, but runs a different executable";
    for call in ["modify", "create"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{call}: ")) && l.contains(says_why)),
            "{call}: {stdout}"
        );
    }
}
