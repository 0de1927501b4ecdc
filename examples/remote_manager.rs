//! A job queue served on TCP with an authkey; two worker processes connect to it by
//! address and key, as they would from other hosts.
//!
//! Python (`BaseManager.register` with a callable returning the queue):
//! ```python
//! class QueueManager(BaseManager): pass
//! jobs, results = queue.Queue(), queue.Queue()
//! QueueManager.register('get_jobs', callable=lambda: jobs)
//! QueueManager.register('get_results', callable=lambda: results)
//! m = QueueManager(address=('127.0.0.1', 50000), authkey=b'abracadabra'); m.start()
//! # each worker, possibly on another machine:
//! m = QueueManager(address=('127.0.0.1', 50000), authkey=b'abracadabra'); m.connect()
//! jobs, results = m.get_jobs(), m.get_results()
//! while (n := jobs.get()) is not None:
//!     results.put((n, n * n))
//! ```
//!
//! Prints the address, then `n squared is n*n` for n = 1..=8, in order.

use mproc::{Address, Manager, QueueProxy};

const KEY: &[u8] = b"abracadabra";

fn worker(address: Address, key: Vec<u8>) -> mproc::Result<u32> {
    // A fresh connection by address and key: what another host would do.
    let manager = Manager::connect(address, &key)?;
    let jobs: QueueProxy<Option<u64>> = manager.lookup("jobs")?;
    let results: QueueProxy<(u64, u64)> = manager.lookup("results")?;
    let mut done = 0;
    while let Some(n) = jobs.get()? {
        results.put((n, n * n))?;
        done += 1;
    }
    Ok(done)
}

fn main() -> mproc::Result<()> {
    // Port 0: the system picks a free port; `address()` says which.
    let manager = Manager::builder()
        .address(Address::Tcp(
            "127.0.0.1:0".parse().expect("a socket address"),
        ))
        .authkey(KEY)
        .start()?;
    let address = manager.address();
    println!("serving on {address}");
    let jobs = manager.queue::<Option<u64>>()?;
    let results = manager.queue::<(u64, u64)>()?;
    manager.publish("jobs", &jobs)?;
    manager.publish("results", &results)?;

    let workers: Vec<_> = (0..2)
        .map(|_| mproc::spawn(worker, (address.clone(), KEY.to_vec())))
        .collect::<mproc::Result<_>>()?;
    for n in 1..=8 {
        jobs.put(Some(n))?;
    }
    for _ in &workers {
        jobs.put(None)?;
    }
    let mut squares: Vec<(u64, u64)> = (0..8)
        .map(|_| results.get())
        .collect::<mproc::Result<_>>()?;
    let mut handled = 0;
    for w in workers {
        handled += w.result()??;
    }
    assert_eq!(handled, 8);
    squares.sort();
    for (n, sq) in squares {
        println!("{n} squared is {sq}");
    }
    manager.shutdown()
}
