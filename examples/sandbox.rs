//! Untrusted input through a misbehaving parser, in sandboxed workers.
//!
//! The parser reads `key=value` records. On some inputs it misbehaves the way real parsers
//! do: a length field it trusts makes it allocate gigabytes, a "remote include" makes it
//! open a network connection, a "cache" directive makes it write a file, a malformed
//! record sends it into a loop. The pool's workers have a memory cap, a CPU-time cap per
//! input, no network and a read-only filesystem: each input ends as `ok`, as
//! `LimitExceeded` (the worker was stopped and replaced), or as a refused syscall (an
//! error the parser saw), and the pool goes on with the next.
//!
//! Run: `cargo run --release --example sandbox`

use std::io::Write;
use std::time::Duration;

use mproc::{Error, Limits, Pool, Sandbox};

/// The parser: the number of records, or what it failed with.
fn parse(input: String) -> Result<usize, String> {
    let mut records = 0;
    for field in input.split(';') {
        let (key, value) = field.split_once('=').ok_or("not a record")?;
        match key {
            // Trusts the declared length: preallocates it.
            "len" => {
                let n: usize = value.parse().map_err(|_| "bad length")?;
                let buf = vec![0x20u8; n];
                std::hint::black_box(&buf);
            }
            // A "remote include": fetches more input from the network.
            "include" => {
                std::net::TcpStream::connect(value)
                    .map_err(|e| format!("refused syscall: connect {value}: {e}"))?;
            }
            // Writes a parse cache beside the input.
            "cache" => {
                std::fs::File::create(value)
                    .and_then(|mut f| f.write_all(b"cached"))
                    .map_err(|e| format!("refused syscall: write {value}: {e}"))?;
            }
            // A malformed escape it never gets out of.
            "escape" if value.ends_with('\\') => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            _ => {}
        }
        records += 1;
    }
    Ok(records)
}

fn main() -> mproc::Result<()> {
    let cache = std::env::temp_dir().join("mproc-sandbox-example.cache");
    let inputs = vec![
        "name=report;pages=3".to_string(),
        "name=big;len=4000000000".to_string(),
        "name=remote;include=127.0.0.1:80".to_string(),
        format!("name=cached;cache={}", cache.display()),
        "name=spin;escape=abc\\".to_string(),
        "name=small;len=1000;pages=1".to_string(),
    ];
    let pool = Pool::builder()
        .processes(2)
        .limits(
            Limits::new()
                .memory(64 << 20)
                .cpu_time(Duration::from_secs(1)),
        )
        .sandbox(Sandbox::new().no_network().read_only())
        .build()?;
    for (input, outcome) in inputs.iter().zip(pool.imap(parse, inputs.clone())) {
        match outcome {
            Ok(Ok(n)) => println!("{input:<40} ok: {n} records"),
            Ok(Err(why)) => println!("{input:<40} {why}"),
            Err(Error::LimitExceeded { limit }) => println!("{input:<40} LimitExceeded: {limit}"),
            Err(e) => println!("{input:<40} failed: {e}"),
        }
    }
    Ok(())
}
