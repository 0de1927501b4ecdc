//! The Popen lesson: a child *program* fed through piped stdin and read from its stdout.
//!
//! Python:
//! ```python
//! p = subprocess.Popen(['sort'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
//! out, _ = p.communicate('pear\napple\nfig\n')
//! print(out)
//! ```
//!
//! Running another program is `std::process::Command`'s job, and it already does it well;
//! mproc is for running *your Rust functions* in other processes.

use std::io::Write;
use std::process::{Command, Stdio};

fn main() -> std::io::Result<()> {
    let mut child = Command::new("sort")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(b"pear\napple\nfig\n")?;
    let out = child.wait_with_output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!("{}", out.status);
    Ok(())
}
