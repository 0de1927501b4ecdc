//! A daemon consumer draining a JoinableQueue; the parent waits with `join`, then
//! terminates the consumer, which would otherwise wait for items forever.
//!
//! Python:
//! ```python
//! def consumer(q):
//!     while True:
//!         item = q.get()
//!         print(f"Processing {item}")
//!         q.task_done()
//! if __name__ == "__main__":
//!     q = multiprocessing.JoinableQueue()
//!     p = multiprocessing.Process(target=consumer, args=(q,))
//!     p.daemon = True
//!     p.start()
//!     for item in range(10):
//!         q.put(item)
//!     q.join()
//!     print("All items processed")
//!     p.terminate()
//! ```

use mproc::{JoinableQueue, Process};

fn consumer(q: JoinableQueue<u32>) -> mproc::Result<()> {
    loop {
        let item = q.get()?;
        println!("Processing {item}");
        q.task_done()?;
    }
}

fn main() -> mproc::Result<()> {
    let q = JoinableQueue::new()?;
    let mut p = Process::new(consumer, (q.clone(),));
    p.set_daemon(true);
    p.start()?;
    for item in 0..10 {
        q.put(item)?;
    }
    q.join();
    println!("All items processed");
    p.terminate()?;
    p.join()?;
    Ok(())
}
