//! Hostile input: what a peer process, a forged environment or a crafted message can do,
//! and that each gets an error (or is ignored), never a crash, a hang or a takeover.
//!
//! Regression tests for issue 12's defects live here; the property tests over every
//! decoder are in `tests/fuzz_decoders.rs`.

mod util;

use serde::{Deserialize, Serialize};
use util::*;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Tree {
    Leaf,
    Node(Box<Tree>),
}

/// The bytes of a `Tree` nested `levels` deep: postcard writes `Node` as variant 1, then
/// the inner tree; `Leaf` as variant 0.
fn nested(levels: usize) -> Vec<u8> {
    let mut b = vec![1u8; levels];
    b.push(0);
    b
}

fn tree(levels: usize) -> Tree {
    (0..levels).fold(Tree::Leaf, |t, _| Tree::Node(Box::new(t)))
}

/// Defect 2: a million levels of nesting used to overflow the receiver's stack (SIGABRT).
#[test]
fn deep_nesting_is_a_codec_error_naming_the_limit() {
    let _g = shared();
    let _w = watchdog("deep nesting", 60);
    let (a, b) = mproc::pipe::<Tree>().unwrap();
    // More than a socket buffer holds: sent from another thread while the receiver reads.
    let sender = std::thread::spawn(move || a.send_bytes(&nested(1_000_000)));
    // Received on a thread with a small stack: the limit must hold well inside it.
    let err = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || b.recv())
        .unwrap()
        .join()
        .unwrap()
        .unwrap_err();
    sender.join().unwrap().unwrap();
    assert!(matches!(err, mproc::Error::Codec(_)), "{err:?}");
    assert!(err.to_string().contains("depth limit"), "{err}");
    // Just inside the limit still decodes; the encoder makes exactly these bytes.
    let (a, b) = mproc::pipe::<Tree>().unwrap();
    a.send(&tree(100)).unwrap();
    assert_eq!(b.recv().unwrap(), tree(100));
    a.send_bytes(&nested(100)).unwrap();
    assert_eq!(b.recv().unwrap(), tree(100));
}

/// The same limit guards a child's arguments and a process result.
#[test]
fn deep_nesting_in_a_result_fails_the_result_not_the_parent() {
    let _g = shared();
    let _w = watchdog("deep result", 60);
    fn deep() -> Tree {
        tree(1_000)
    }
    for m in METHODS {
        let mut p = mproc::get_context(m).process(deep, ());
        p.start().unwrap();
        let err = p.result().unwrap_err();
        assert!(err.to_string().contains("depth limit"), "{m:?}: {err}");
    }
}
