//! Sender and receiver processes talking over a pipe.
//!
//! Python:
//! ```python
//! def sender(conn, msgs):
//!     for msg in msgs:
//!         conn.send(msg)
//!         print("Sent the message: {}".format(msg))
//!     conn.close()
//! def receiver(conn):
//!     while 1:
//!         msg = conn.recv()
//!         if msg == "END":
//!             break
//!         print("Received the message: {}".format(msg))
//! if __name__ == "__main__":
//!     msgs = ["hello", "hey", "hru?", "END"]
//!     parent_conn, child_conn = multiprocessing.Pipe()
//!     p1 = multiprocessing.Process(target=sender, args=(parent_conn, msgs))
//!     p2 = multiprocessing.Process(target=receiver, args=(child_conn,))
//!     p1.start(); p2.start(); p1.join(); p2.join()
//! ```

use mproc::{Connection, Process, pipe};

fn sender(conn: Connection<String>, msgs: Vec<String>) -> mproc::Result<()> {
    for msg in msgs {
        conn.send(&msg)?;
        println!("Sent the message: {msg}");
    }
    conn.close();
    Ok(())
}

fn receiver(conn: Connection<String>) -> mproc::Result<()> {
    loop {
        let msg = conn.recv()?;
        if msg == "END" {
            break;
        }
        println!("Received the message: {msg}");
    }
    Ok(())
}

fn main() -> mproc::Result<()> {
    let msgs: Vec<String> = ["hello", "hey", "hru?", "END"].map(String::from).to_vec();
    let (parent_conn, child_conn) = pipe::<String>()?;
    let mut p1 = Process::new(sender, (parent_conn, msgs));
    let mut p2 = Process::new(receiver, (child_conn,));
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    p1.result()??;
    p2.result()??;
    Ok(())
}
