//! Who may do what with a shared manager: `lookup` hands out a published proxy only as the
//! type it was published as, and only the process that started a server (or serves it)
//! can shut it down. Ports CPython's `_TestRemoteManager` (cpython.md §4, 77: a second
//! process connects by address and key and uses a registered queue) and the owner side of
//! `_TestManagerRestart` (76: the owner's shutdown stops the server); a connected
//! `BaseManager` has no `shutdown` in Python, and here its `shutdown()` is an error.

mod util;

use std::time::Duration;

use mproc::{Address, DictProxy, Error, ListProxy, Manager, QueueProxy};
use util::*;

const LONG: Duration = Duration::from_secs(20);

/// Looks the published queue up as the wrong types, then the right one; returns the
/// errors' messages.
fn look_up(address: Address, key: Vec<u8>) -> mproc::Result<Vec<String>> {
    let m = Manager::connect(address, &key)?;
    let mut errors = Vec::new();
    match m.lookup::<DictProxy<String, u32>>("jobs") {
        Err(Error::ValueError(e)) => errors.push(e),
        other => panic!("a queue looked up as a dict: {other:?}"),
    }
    match m.lookup::<QueueProxy<String>>("jobs") {
        Err(Error::ValueError(e)) => errors.push(e),
        other => panic!("a queue of u32 looked up as a queue of String: {other:?}"),
    }
    let q: QueueProxy<u32> = m.lookup("jobs")?;
    q.put(7)?;
    Ok(errors)
}

#[test]
fn lookup_checks_the_kind_and_element_types() {
    let _s = shared();
    let _w = watchdog("lookup_checks_the_kind_and_element_types", 60);
    let m = Manager::builder()
        .address(Address::Tcp("127.0.0.1:0".parse().unwrap()))
        .start()
        .unwrap();
    let q: QueueProxy<u32> = m.queue().unwrap();
    m.publish("jobs", &q).unwrap();
    let errors = mproc::spawn(look_up, (m.address(), m.authkey().to_vec()))
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert!(
        errors[0].contains("QueueProxy<u32>") && errors[0].contains("DictProxy<"),
        "the error names both types: {}",
        errors[0]
    );
    assert!(
        errors[1].contains("QueueProxy<u32>")
            && errors[1].contains("QueueProxy<alloc::string::String>"),
        "{}",
        errors[1]
    );
    assert_eq!(q.get_timeout(LONG).unwrap(), 7);
}

/// A connected client tries to stop the server; returns the error's message.
fn try_shutdown(address: Address, key: Vec<u8>, l: ListProxy<u32>) -> mproc::Result<String> {
    let m = Manager::connect(address, &key)?;
    let e = match m.shutdown() {
        Err(Error::ValueError(e)) => e,
        other => panic!("a client's shutdown: {other:?}"),
    };
    drop(m);
    l.append(&1)?; // the server goes on
    Ok(e)
}

#[test]
fn only_the_owner_shuts_a_manager_down() {
    let _s = shared();
    let _w = watchdog("only_the_owner_shuts_a_manager_down", 60);
    for address in [None, Some(Address::Tcp("127.0.0.1:0".parse().unwrap()))] {
        let mut b = Manager::builder();
        if let Some(a) = address {
            b = b.address(a);
        }
        let m = b.start().unwrap();
        let l = m.list().unwrap();
        let e = mproc::spawn(try_shutdown, (m.address(), m.authkey().to_vec(), l.clone()))
            .unwrap()
            .result()
            .unwrap()
            .unwrap();
        assert!(e.contains("only the manager that started"), "{e}");
        // A second manager object in the owner's process is a client too.
        let c = Manager::connect(m.address(), m.authkey()).unwrap();
        assert!(matches!(c.shutdown(), Err(Error::ValueError(_))));
        assert_eq!(l.to_vec().unwrap(), [1]);
        m.shutdown().unwrap();
        assert!(matches!(l.len(), Err(Error::Closed)));
    }
}

fn serve(address: Address, key: Vec<u8>) -> mproc::Result<()> {
    let b = Manager::builder().address(address.clone()).authkey(&key);
    let server = std::thread::spawn(move || b.serve_forever());
    // The serving process connects to itself: it may stop what it serves.
    let deadline = std::time::Instant::now() + LONG;
    let m = loop {
        match Manager::connect(address.clone(), &key) {
            Ok(m) => break m,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(e),
        }
    };
    let q: QueueProxy<u32> = m.queue()?;
    m.publish("stop", &q)?;
    q.get()?; // the test says when
    m.shutdown()?;
    server.join().expect("the serving thread")
}

#[test]
fn serve_forever_is_stopped_by_its_own_process_only() {
    let _s = shared();
    let _w = watchdog("serve_forever_is_stopped_by_its_own_process_only", 60);
    let address = Address::unique().unwrap();
    let key = b"a key of our own".to_vec();
    let p = mproc::spawn(serve, (address.clone(), key.clone())).unwrap();
    let deadline = std::time::Instant::now() + LONG;
    let (m, q) = loop {
        let found = Manager::connect(address.clone(), &key)
            .and_then(|m| m.lookup::<QueueProxy<u32>>("stop").map(|q| (m, q)));
        match found {
            Ok(found) => break found,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("the server never published: {e:?}"),
        }
    };
    assert!(matches!(m.shutdown(), Err(Error::ValueError(_))));
    q.put(0).unwrap();
    p.result().unwrap().unwrap();
    assert!(matches!(q.qsize(), Err(Error::Closed)));
}
