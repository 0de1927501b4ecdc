//! Random bytes from the kernel, for secrets (authentication keys) and unique names.

use std::io;

/// Fills `buf` from the kernel's random source (getrandom, blocking until seeded).
pub(crate) fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::rand::getrandom(&mut buf[done..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
