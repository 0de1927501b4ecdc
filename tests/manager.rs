//! Managers: shared lists, dicts, namespaces, queues, locks, events, values and custom
//! objects in a server process, used from children under every start method; `modify`;
//! remote use over TCP; and what happens when a holder, the server or the owner dies.
//! Ports CPython's manager tests (cpython.md §4: items 75–78, 107, 129).

mod util;

use std::time::{Duration, Instant};

use mproc::{
    Address, DictProxy, Error, EventProxy, ListProxy, LockProxy, Managed, Manager, Namespace,
    Process, Proxy, QueueProxy, ValueProxy,
};
use serde::{Deserialize, Serialize};
use util::*;

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

// The seed's lesson: a list shared by two processes, under every start method.
#[test]
fn list_shared_by_two_children_under_every_start_method() {
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
