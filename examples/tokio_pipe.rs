//! Awaiting messages from a child process and items of a queue under tokio: a pipe end's
//! `recv_async()` and a queue's `get_async()` are futures woken when something arrives (no
//! thread blocked per receive), and they are cancel-safe, so they can sit in `select!`.
//!
//! Python (asyncio, reading a pipe end through the event loop):
//! ```python
//! def worker(conn, q):
//!     for i in range(3):
//!         time.sleep(0.05)
//!         conn.send(f"message {i}")
//!     q.put("done")
//! async def main():
//!     a, b = multiprocessing.Pipe()
//!     q = multiprocessing.Queue()
//!     p = multiprocessing.Process(target=worker, args=(b, q)); p.start()
//!     loop = asyncio.get_running_loop()
//!     for _ in range(3):
//!         ready = asyncio.Event()
//!         loop.add_reader(a.fileno(), ready.set)
//!         await ready.wait(); loop.remove_reader(a.fileno())
//!         print("got:", a.recv())
//!     print("queue says:", await loop.run_in_executor(None, q.get))
//!     p.join()
//! asyncio.run(main())
//! ```

use std::time::Duration;

use mproc::{Connection, Queue};

fn worker(conn: Connection<String>, q: Queue<String>) -> mproc::Result<()> {
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(50));
        conn.send(&format!("message {i}"))?;
    }
    q.put("done".to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> mproc::Result<()> {
    let (mut a, b) = mproc::pipe::<String>()?;
    let q = Queue::<String>::new()?;
    let p = mproc::spawn(worker, (b, q.clone()))?;
    for _ in 0..3 {
        // The event loop stays free: a timer ticks while we wait for the child.
        tokio::select! {
            m = a.recv_async() => println!("got: {}", m?),
            () = tokio::time::sleep(Duration::from_secs(10)) => panic!("no message in 10 s"),
        }
    }
    println!("queue says: {}", q.get_async().await?);
    p.result()??;
    println!("the child is done");
    Ok(())
}
