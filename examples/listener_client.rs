//! A server process and two clients on TCP loopback, authenticated with a shared key;
//! an impostor with the wrong key is turned away and the server goes on.
//!
//! Python (the docs' `multiprocessing.connection` example, with a server process):
//! ```python
//! from multiprocessing import Process, Pipe, AuthenticationError
//! from multiprocessing.connection import Listener, Client
//! def server(report, n):
//!     with Listener(('127.0.0.1', 0), authkey=b'secret password') as listener:
//!         print('server: listening on', listener.address)
//!         report.send(listener.address)
//!         served = refused = 0
//!         while served < n:
//!             try:
//!                 with listener.accept() as conn:
//!                     name, numbers = conn.recv()
//!                     print(f'server: {name} sent {numbers}')
//!                     conn.send(sum(numbers))
//!                     served += 1
//!             except AuthenticationError:
//!                 refused += 1
//!         return served, refused   # (reported back through a pipe in Python)
//! def client(address, name, numbers):
//!     with Client(address, authkey=b'secret password') as conn:
//!         conn.send((name, numbers))
//!         print(f'{name}: the sum is {conn.recv()}')
//! def impostor(address):
//!     Client(address, authkey=b'a guess')   # AuthenticationError: digest sent was rejected
//! ```

use mproc::{Address, Connection, Error, Listener, Process, connect, pipe};
use serde::{Deserialize, Serialize};

const KEY: &[u8] = b"secret password";

#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Numbers { from: String, numbers: Vec<i64> },
    Sum(i64),
}

/// Serves `clients` authenticated clients; returns (served, turned away).
fn server(report: Connection<Address>, clients: usize) -> mproc::Result<(usize, usize)> {
    let listener = Listener::<Msg>::bind("127.0.0.1:0".parse()?, Some(KEY))?;
    println!("server: listening on {}", listener.address());
    report.send(&listener.address())?;
    let (mut served, mut refused) = (0, 0);
    while served < clients {
        match listener.accept() {
            Ok(conn) => {
                if let Msg::Numbers { from, numbers } = conn.recv()? {
                    println!("server: {from} sent {numbers:?}");
                    conn.send(&Msg::Sum(numbers.iter().sum()))?;
                }
                served += 1;
            }
            // A peer with the wrong key costs only its own connection.
            Err(Error::AuthenticationError) => refused += 1,
            Err(e) => return Err(e),
        }
    }
    Ok((served, refused))
}

fn client(address: Address, name: String, numbers: Vec<i64>) -> mproc::Result<()> {
    let conn = connect::<Msg>(address, Some(KEY))?;
    conn.send(&Msg::Numbers {
        from: name.clone(),
        numbers,
    })?;
    if let Msg::Sum(sum) = conn.recv()? {
        println!("{name}: the sum is {sum}");
    }
    Ok(())
}

fn impostor(address: Address) -> mproc::Result<()> {
    connect::<Msg>(address, Some(b"a guess")).map(drop)
}

fn main() -> mproc::Result<()> {
    let (report, address_in) = pipe::<Address>()?;
    let mut srv = Process::new(server, (report, 2));
    srv.start()?;
    let address = address_in.recv()?;

    let mut first = Process::new(
        client,
        (address.clone(), "client-1".to_string(), vec![1, 2, 3]),
    );
    first.start()?;
    first.result()??;

    let mut bad = Process::new(impostor, (address.clone(),));
    bad.start()?;
    match bad.result()? {
        Err(e) => println!("impostor: {e}"),
        Ok(()) => println!("impostor: let in (this is a bug)"),
    }

    let mut second = Process::new(
        client,
        (address, "client-2".to_string(), vec![10, 20, 30, 40]),
    );
    second.start()?;
    second.result()??;

    let (served, refused) = srv.result()??;
    println!("server: served {served} clients, turned away {refused}");
    Ok(())
}
