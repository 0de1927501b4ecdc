//! A child running a different executable is refused with `Error::BinaryMismatch`, never
//! handed a function address that means something else there. Its own test binary:
//! `set_executable` changes process-wide state.

mod util;

use mproc::{Error, get_context};
use util::*;

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_different_executable_is_refused() {
    let _w = watchdog("binary_mismatch", 60);
    // Another mproc program: `cargo test` builds the examples beside the test binaries.
    let exe = std::env::current_exe().unwrap();
    let other = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("globals");
    assert!(
        other.exists(),
        "{} is missing: run the whole `cargo test`, which builds the examples",
        other.display()
    );
    // Before: fine. (ForkServer starts its server now, with the right executable.)
    let mut p = get_context(Spawn).process(square, (3,));
    p.start().unwrap();
    assert_eq!(p.result().unwrap(), 9);

    mproc::set_executable(&other);
    let mut p = get_context(Spawn).process(square, (3,));
    assert!(matches!(p.start(), Err(Error::BinaryMismatch)), "spawn");
    let mut p = get_context(ForkServer).process(square, (3,));
    assert!(
        matches!(p.start(), Err(Error::BinaryMismatch)),
        "forkserver"
    );
    // Fork needs no executable: unaffected.
    let mut p = get_context(Fork).process(square, (4,));
    p.start().unwrap();
    assert_eq!(p.result().unwrap(), 16);
    assert!(
        zombie_children().is_empty(),
        "a refused child was left unreaped"
    );
}
