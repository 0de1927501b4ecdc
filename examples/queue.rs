//! A producer and a consumer process sharing a queue, with a `None` sentinel.
//!
//! Python:
//! ```python
//! def producer(q):
//!     for item in ["sudh", "kumar", "pwskills", "krish", "naik"]:
//!         q.put(item)
//! def consume(q):
//!     while True:
//!         item = q.get()
//!         if item is None:
//!             break
//!         print(item)
//! if __name__ == "__main__":
//!     queue = multiprocessing.Queue()
//!     m1 = multiprocessing.Process(target=producer, args=(queue,))
//!     m2 = multiprocessing.Process(target=consume, args=(queue,))
//!     m1.start(); m2.start()
//!     m1.join()
//!     queue.put("xyz")
//!     queue.put(None)
//!     m2.join()
//! ```
//!
//! Prints sudh, kumar, pwskills, krish, naik, xyz, one per line. The queue's items live in
//! shared memory, so the producer can be joined before anyone reads them.

use mproc::{Process, Queue};

fn producer(q: Queue<Option<String>>) -> mproc::Result<()> {
    for item in ["sudh", "kumar", "pwskills", "krish", "naik"] {
        q.put(Some(item.to_string()))?;
    }
    Ok(())
}

fn consume(q: Queue<Option<String>>) -> mproc::Result<()> {
    while let Some(item) = q.get()? {
        println!("{item}");
    }
    Ok(())
}

fn main() -> mproc::Result<()> {
    let queue = Queue::new()?;
    let mut m1 = Process::new(producer, (queue.clone(),));
    let mut m2 = Process::new(consume, (queue.clone(),));
    m1.start()?;
    m2.start()?;
    m1.join()?;
    queue.put(Some("xyz".to_string()))?;
    queue.put(None)?;
    m2.join()?;
    m2.result()??;
    Ok(())
}
