//! A real python3 on the other end: Python's `multiprocessing.connection.Client` against an
//! mproc `Listener`, and mproc's `connect` against a Python `Listener`, with authentication
//! (Python 3.11 speaks the legacy HMAC-MD5 form; 3.12+ the `{sha256}` one) and 1 MiB
//! messages, over TCP, Unix paths and abstract names.

mod util;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use mproc::{Address, Error, Listener, connect};
use util::*;

const KEY: &[u8] = b"shared secret";

/// A python3 process, killed and reaped if the test fails before it ends.
struct Py(Child);

impl Drop for Py {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `python3 -c script args...` with stdout piped.
fn python(script: &str, args: &[&str]) -> Py {
    Py(Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 is needed for these tests"))
}

fn finish(mut child: Py) -> String {
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "python failed: {status}; said: {out}");
    out
}

/// Python's address syntax for an mproc address.
fn py_address(a: &Address) -> String {
    match a {
        Address::Tcp(s) => format!("('{}', {})", s.ip(), s.port()),
        Address::Unix(p) => format!("{:?}", p.display().to_string()),
        Address::Abstract(n) => format!("'\\0{n}'"),
    }
}

const PY_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
from multiprocessing import AuthenticationError
address = eval(sys.argv[1])
try:
    Client(address, authkey=b"wrong key")
    print("wrong key accepted")
except AuthenticationError as e:
    print("wrong key refused")
c = Client(address, authkey=sys.argv[2].encode())
big = bytes(range(256)) * 4096
c.send_bytes(big)
back = c.recv_bytes()
print("echo ok" if back == big[::-1] else "echo WRONG")
c.send_bytes(b"bye")
c.close()
"#;

// A Python Client, first with a wrong key and then the right one, against an mproc
// Listener; a 1 MiB message each way.
#[test]
fn python_client_against_an_mproc_listener() {
    let _s = shared();
    let _w = watchdog("python_client", 60);
    let dir = std::env::temp_dir();
    for at in [
        "127.0.0.1:0".parse().unwrap(),
        Address::Unix(dir.join(format!("mproc-py-{}.sock", std::process::id()))),
        Address::unique().unwrap(),
    ] {
        let l = Listener::<()>::bind(at, Some(KEY)).unwrap();
        let py = python(
            PY_CLIENT,
            &[&py_address(&l.address()), std::str::from_utf8(KEY).unwrap()],
        );
        assert!(matches!(l.accept(), Err(Error::AuthenticationError)));
        let conn = l.accept().unwrap();
        let mut big = conn.recv_bytes().unwrap();
        assert_eq!(big.len(), 1 << 20);
        assert!(
            big.chunks(256)
                .all(|c| c.iter().enumerate().all(|(i, &b)| b == i as u8))
        );
        big.reverse();
        conn.send_bytes(&big).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"bye");
        assert!(matches!(conn.recv_bytes(), Err(Error::Closed)));
        let said = finish(py);
        assert_eq!(said, "wrong key refused\necho ok\n", "{}", l.address());
    }
}

const PY_LISTENER: &str = r#"
import sys
from multiprocessing.connection import Listener
address = eval(sys.argv[1])
with Listener(address, authkey=sys.argv[2].encode()) as l:
    print(repr(l.address), flush=True)
    try:
        l.accept()
        print("wrong key accepted", flush=True)
    except Exception as e:
        print("wrong key refused:", type(e).__name__, flush=True)
    c = l.accept()
    data = c.recv_bytes()
    c.send_bytes(data[::-1])
    c.send_bytes(b"x" * 5)
    print("served", len(data), flush=True)
"#;

// mproc's connect against a Python Listener: wrong key refused on both sides, then a 1 MiB
// round trip.
#[test]
fn mproc_client_against_a_python_listener() {
    let _s = shared();
    let _w = watchdog("python_listener", 60);
    for py_at in [
        "('127.0.0.1', 0)".to_string(),
        format!("'\\0mproc-pyl-{}'", std::process::id()),
    ] {
        let mut py = python(PY_LISTENER, &[&py_at, std::str::from_utf8(KEY).unwrap()]);
        let mut out = BufReader::new(py.0.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let first = first.trim();
        let at: Address = if let Some(port) = first.strip_prefix("('127.0.0.1', ") {
            format!("127.0.0.1:{}", port.trim_end_matches(')'))
                .parse()
                .unwrap()
        } else {
            // b'\x00name' as Python's repr writes it.
            let name = first.trim_start_matches('b').trim_matches('\'');
            let name = name.trim_start_matches("\\x00");
            Address::Abstract(name.to_string())
        };
        let wrong = connect::<()>(at.clone(), Some(b"wrong"));
        assert!(
            matches!(wrong, Err(Error::AuthenticationError)),
            "{wrong:?}"
        );
        let conn = connect::<()>(at, Some(KEY)).unwrap();
        let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        conn.send_bytes(&big).unwrap();
        let back = conn.recv_bytes().unwrap();
        assert!(back.iter().rev().eq(big.iter()));
        assert_eq!(conn.recv_bytes().unwrap(), b"xxxxx");
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert!(py.0.wait().unwrap().success());
        assert_eq!(
            rest, "wrong key refused: AuthenticationError\nserved 1048576\n",
            "{py_at}"
        );
    }
}

#[cfg(feature = "pickle")]
mod pickle {
    use super::*;
    use mproc::Codec;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Record {
        name: String,
        values: Vec<i64>,
        ratio: f64,
        missing: Option<i32>,
    }

    const PY_PICKLER: &str = r#"
import sys
from multiprocessing.connection import Client
c = Client(eval(sys.argv[1]), authkey=sys.argv[2].encode())
c.send({'name': 'héllo', 'values': [1, -2, 3 * 10**12], 'ratio': 0.25, 'missing': None})
r = c.recv()
print(type(r).__name__, sorted(r.items()))
c.send([None, 1, 2.5, 'three', [4], {'five': 5}])
print(repr(c.recv()))
"#;

    // With `Codec::Pickle`, Python's dict arrives as a Rust struct and a Rust struct
    // arrives as a dict; None, int, float, str and lists cross both ways.
    #[test]
    fn pickled_values_cross_both_ways() {
        let _s = shared();
        let _w = watchdog("pickle_round_trip", 60);
        let l =
            Listener::<Record>::bind_with("127.0.0.1:0".parse().unwrap(), Some(KEY), Codec::Pickle)
                .unwrap();
        let py = python(
            PY_PICKLER,
            &[&py_address(&l.address()), std::str::from_utf8(KEY).unwrap()],
        );
        let conn = l.accept().unwrap();
        let got = conn.recv().unwrap();
        assert_eq!(
            got,
            Record {
                name: "héllo".into(),
                values: vec![1, -2, 3_000_000_000_000],
                ratio: 0.25,
                missing: None
            }
        );
        conn.send(&Record {
            name: "from rust".into(),
            values: vec![],
            ratio: -1.5,
            missing: Some(7),
        })
        .unwrap();
        // The same connection read as loose Python values.
        let mut raw = Vec::new();
        conn.recv_bytes_into(&mut raw).unwrap();
        let loose = serde_pickle::value_from_slice(&raw, serde_pickle::DeOptions::new()).unwrap();
        let back = serde_pickle::value_to_vec(&loose, serde_pickle::SerOptions::new()).unwrap();
        conn.send_bytes(&back).unwrap();
        let said = finish(py);
        assert_eq!(
            said,
            "dict [('missing', 7), ('name', 'from rust'), ('ratio', -1.5), ('values', [])]\n\
             [None, 1, 2.5, 'three', [4], {'five': 5}]\n"
        );
    }
}
