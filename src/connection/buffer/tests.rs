//! The frame readers against adversarial senders, over real sockets: descriptors attached
//! where no header declares them, counts that disagree with the header, batches in the
//! middle of a payload. Both readers must hand
//! every honest frame its own descriptors, refuse the first dishonest one, and hold no
//! descriptor after refusing.

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use proptest::prelude::*;

use super::*;

/// One frame as sent: payload length, descriptors declared, descriptors attached and
/// to which piece (0 is the header's first byte, where they belong), and where the
/// frame's bytes are cut into separate sends.
#[derive(Debug, Clone)]
struct Sent {
    len: usize,
    declared: usize,
    attached: usize,
    piece: usize,
    cuts: Vec<usize>,
}

impl Sent {
    /// Where the frame's bytes are cut (each a piece's end), and the piece the
    /// descriptors ride on.
    fn pieces(&self) -> (Vec<usize>, usize) {
        let total = HEADER + self.len;
        let mut cuts: Vec<usize> = self
            .cuts
            .iter()
            .map(|c| c % total)
            .filter(|&c| c > 0)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts.push(total);
        let piece = self.piece.min(cuts.len() - 1);
        (cuts, piece)
    }

    fn honest(&self) -> bool {
        self.declared == self.attached && (self.attached == 0 || self.pieces().1 == 0)
    }

    /// Declares other than it attaches: must be refused.
    fn dishonest(&self) -> bool {
        self.declared != self.attached
    }
}

const HEADER: usize = framing::HEADER_LEN;

fn frame_strategy() -> impl Strategy<Value = Sent> {
    (
        0usize..300,
        0usize..3,
        0usize..3,
        0usize..4,
        proptest::collection::vec(1usize..400, 0..3),
    )
        .prop_map(|(len, declared, attached, piece, cuts)| Sent {
            len,
            declared,
            attached,
            piece,
            cuts,
        })
}

/// An honest frame usually: a dishonest one now and then.
fn mostly_honest() -> impl Strategy<Value = Sent> {
    prop_oneof![
        4 => (0usize..300, 0usize..3, proptest::collection::vec(1usize..400, 0..3))
            .prop_map(|(len, n, cuts)| Sent { len, declared: n, attached: n, piece: 0, cuts }),
        1 => frame_strategy(),
    ]
}

/// Sends `frames` on `tx`, frame `i`'s descriptors being clones of `marks[i]`, then
/// shuts the sending side.
fn send_all(tx: &OwnedFd, frames: &[Sent], marks: &[OwnedFd]) {
    for (i, f) in frames.iter().enumerate() {
        let (h, hlen) = FrameHeader {
            nfds: f.declared,
            len: f.len,
        }
        .encode(Format::Mproc);
        let mut bytes = h[..hlen].to_vec();
        bytes.extend((0..f.len).map(|k| (k + i) as u8));
        let (cuts, piece) = f.pieces();
        let fds: Vec<OwnedFd> = (0..f.attached)
            .map(|_| marks[i].try_clone().unwrap())
            .collect();
        let mut from = 0;
        for (k, &to) in cuts.iter().enumerate() {
            let with = if k == piece {
                fd::borrowed(&fds)
            } else {
                Vec::new()
            };
            let mut sent =
                fd::send_with_fds(tx.as_fd(), &[IoSlice::new(&bytes[from..to])], &with).unwrap();
            // Only the first send of a piece carries the descriptors.
            while from + sent < to {
                sent +=
                    fd::send_with_fds(tx.as_fd(), &[IoSlice::new(&bytes[from + sent..to])], &[])
                        .unwrap();
            }
            from = to;
        }
    }
    fd::shutdown(tx.as_fd(), true).unwrap();
}

fn inode(fd: &OwnedFd) -> u64 {
    std::fs::File::from(fd.try_clone().unwrap())
        .metadata()
        .unwrap()
        .ino()
}

/// Checks one delivered frame against what was sent as frame `i`.
fn check_frame(i: usize, f: &Sent, payload: &[u8], fds: &[OwnedFd], mark: u64) {
    assert_eq!(payload.len(), f.len, "frame {i}");
    assert!(
        payload.iter().enumerate().all(|(k, &b)| b == (k + i) as u8),
        "frame {i}"
    );
    assert_eq!(fds.len(), f.declared, "frame {i}");
    assert!(
        fds.iter().all(|d| inode(d) == mark),
        "frame {i}: another frame's descriptor"
    );
}

/// Runs both readers over `frames`: frames before the first that is not honest arrive
/// whole with their own descriptors; a dishonest one is never delivered (one with its
/// own descriptors on its payload may be); a refusal holds no descriptor.
fn run(frames: &[Sent]) -> std::result::Result<(), TestCaseError> {
    let first_odd = frames
        .iter()
        .position(|f| !f.honest())
        .unwrap_or(frames.len());
    let first_bad = frames
        .iter()
        .position(Sent::dishonest)
        .unwrap_or(frames.len());
    for blocking in [false, true] {
        let (tx, rx) = fd::socketpair().unwrap();
        let marks: Vec<OwnedFd> = frames.iter().map(|_| fd::socketpair().unwrap().0).collect();
        let inodes: Vec<u64> = marks.iter().map(inode).collect();
        send_all(&tx, frames, &marks);
        let mut got = 0;
        let outcome = if blocking {
            let mut r = Reader::default();
            let res = loop {
                let mut out = Vec::new();
                let mut fds = Vec::new();
                match r.read_frame(rx.as_fd(), &mut out, &mut fds) {
                    Ok(()) => {
                        prop_assert!(got < first_bad, "dishonest frame {got} delivered");
                        check_frame(got, &frames[got], &out, &fds, inodes[got]);
                        got += 1;
                    }
                    Err(e) => break e,
                }
            };
            prop_assert_eq!(r.held_fds(), 0);
            res
        } else {
            let mut inc = Incoming::default();
            let res = loop {
                match inc.poll_frame(rx.as_fd()) {
                    Ok(Arrival::Frame(out, fds)) => {
                        prop_assert!(got < first_bad, "dishonest frame {got} delivered");
                        check_frame(got, &frames[got], &out, &fds, inodes[got]);
                        got += 1;
                    }
                    Ok(Arrival::Pending) => panic!("the sender has finished"),
                    Ok(Arrival::Closed) => break Error::Closed,
                    Err(e) => break e,
                }
            };
            prop_assert_eq!(inc.held_fds(), 0);
            res
        };
        prop_assert!(
            first_odd <= got && got <= first_bad,
            "blocking: {}",
            blocking
        );
        if got == frames.len() {
            prop_assert!(matches!(outcome, Error::Closed), "{outcome}");
        } else {
            prop_assert!(matches!(outcome, Error::Codec(_)), "{outcome}");
            prop_assert!(outcome.to_string().contains("descriptors"), "{outcome}");
        }
    }
    Ok(())
}

fn sent(len: usize, declared: usize, attached: usize, piece: usize) -> Sent {
    Sent {
        len,
        declared,
        attached,
        piece,
        cuts: vec![3, 20],
    }
}

#[test]
fn descriptors_go_only_to_the_frame_that_declares_them() {
    // Undeclared descriptors on a frame, then an honest frame that declares some: they
    // must not be handed on to it.
    run(&[sent(10, 0, 2, 0), sent(10, 2, 2, 0)]).unwrap();
    // Descriptors in the middle of a payload.
    run(&[sent(100, 0, 1, 2), sent(5, 0, 0, 0)]).unwrap();
    run(&[sent(100, 1, 1, 2)]).unwrap();
    // Fewer or more than declared.
    run(&[sent(4, 2, 1, 0), sent(4, 1, 1, 0)]).unwrap();
    run(&[sent(4, 1, 2, 0)]).unwrap();
    // Honest streams, with and without descriptors, cut anywhere.
    run(&[
        sent(0, 2, 2, 0),
        sent(7, 0, 0, 0),
        sent(300, 1, 1, 0),
        sent(1, 0, 0, 3),
    ])
    .unwrap();
}

#[test]
fn a_third_waiting_batch_is_refused_before_it_is_stored() {
    let mut rb = ReadBuf::default();
    let fds = || vec![fd::socketpair().unwrap().0];
    rb.keep(0, 10, fds()).unwrap();
    rb.keep(10, 20, fds()).unwrap();
    assert!(matches!(rb.keep(20, 30, fds()), Err(Error::Codec(_))));
    assert_eq!(rb.held_fds(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn adversarial_descriptor_placement(frames in proptest::collection::vec(mostly_honest(), 0..12)) {
        run(&frames)?;
    }
}
