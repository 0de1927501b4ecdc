//! An mproc worker serving a Python client on CPython's own wire: Python's
//! `multiprocessing.connection.Client` connects to an mproc `Listener`, both prove they
//! know the key, and raw messages go back and forth. (With the `pickle` feature,
//! `Codec::Pickle` also makes Python's `send`/`recv` objects arrive as Rust values.)
//!
//! `cargo run --release --example python_peer` (needs `python3` on the PATH)

use std::process::Command;

use mproc::{Address, Connection, Error, Listener, Process, pipe};

const KEY: &str = "a key both sides know";

/// The Python side: a plain multiprocessing client.
const CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
with Client(('127.0.0.1', int(sys.argv[1])), authkey=sys.argv[2].encode()) as conn:
    for text in ["hello from Python", "1 2 3 4"]:
        print("python: sending", repr(text), flush=True)
        conn.send_bytes(text.encode())
        print("python: got", repr(conn.recv_bytes().decode()), flush=True)
"#;

/// The mproc side: answers each message until the client hangs up.
fn worker(report: Connection<Address>) -> mproc::Result<usize> {
    let listener = Listener::<()>::bind("127.0.0.1:0".parse()?, Some(KEY.as_bytes()))?;
    report.send(&listener.address())?;
    let conn = listener.accept()?;
    let mut answered = 0;
    loop {
        let text = match conn.recv_bytes() {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(Error::Closed) => break,
            Err(e) => return Err(e),
        };
        println!("worker: got {text:?}");
        let numbers: Result<Vec<i64>, _> = text.split_whitespace().map(str::parse).collect();
        let reply = match numbers {
            Ok(n) => format!("the sum is {}", n.iter().sum::<i64>()),
            Err(_) => text.to_uppercase(),
        };
        conn.send_bytes(reply.as_bytes())?;
        answered += 1;
    }
    println!("worker: python hung up");
    Ok(answered)
}

fn main() -> mproc::Result<()> {
    let (report, address_in) = pipe::<Address>()?;
    let mut w = Process::new(worker, (report,));
    w.start()?;
    let Address::Tcp(at) = address_in.recv()? else {
        unreachable!("the worker listens on TCP")
    };
    let status = Command::new("python3")
        .args(["-c", CLIENT, &at.port().to_string(), KEY])
        .status()
        .map_err(|e| Error::ValueError(format!("cannot run python3: {e}")))?;
    let answered = w.result()??;
    println!("main: python exited with {status}; the worker answered {answered} messages");
    Ok(())
}
