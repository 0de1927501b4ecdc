//! The crate-internal half of the adversarial suite: property tests over every decoder
//! that reads bytes another process wrote, where the decoder is not public. The invariant
//! everywhere: an error (or a value), never a panic, an abort, a hang, or an allocation
//! beyond the stated bound. Case counts are bounded so the whole module runs in seconds.
//!
//! Covered elsewhere: frame headers and the protocol readers (`connection/framing.rs`),
//! the Listener handshake (`connection/auth.rs`), the Python wire and pickle decoders
//! (`connection/wire.rs`, `connection/pickle.rs`), addresses (`connection/address.rs`).
//! Here: the codec with its handle side table, the start-up messages (bootstrap, fork
//! server replies), entry offsets, and the queue ring's frames and control block.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::codec::{self, HandleFd};
use crate::queue::ring::Ring;
use crate::queue::ring::frame::{FrameHeader, HEADER, UNIT};
use crate::shared::cell;
use crate::start::Bootstrap;

/// A message shape with every kind of nesting and a handle inside.
#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Unit,
    Num(u64, i32, f64),
    Text(String, Vec<u8>),
    Many(Vec<Msg>),
    Maybe(Option<Box<Msg>>),
    Handle(HandleFd),
    Map(std::collections::BTreeMap<String, Msg>),
}

/// What `/proc/self/fd/N` says for each descriptor (`socket:[inode]`): if the same text is
/// there later, the descriptor is still open (a socket's inode is unique while it lives).
fn identities(fds: &[OwnedFd]) -> Vec<(i32, std::path::PathBuf)> {
    use std::os::fd::AsRawFd;
    fds.iter()
        .map(|f| {
            let n = f.as_raw_fd();
            (n, std::fs::read_link(format!("/proc/self/fd/{n}")).unwrap())
        })
        .collect()
}

fn still_open(ids: &[(i32, std::path::PathBuf)]) -> Vec<i32> {
    ids.iter()
        .filter(|(n, link)| {
            std::fs::read_link(format!("/proc/self/fd/{n}"))
                .ok()
                .as_ref()
                == Some(link)
        })
        .map(|(n, _)| *n)
        .collect()
}

fn sockets(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| crate::sys::fd::socketpair().unwrap().0)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// The codec over arbitrary bytes with 0-3 descriptors in its side table: a value or
    /// an `Error::Codec`; descriptors no handle claimed are closed, none is claimed twice.
    #[test]
    fn codec_with_handles_survives_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        nfds in 0usize..4,
    ) {
        let fds = sockets(nfds);
        let ids = identities(&fds);
        match codec::decode::<Msg>(&bytes, fds) {
            Ok(m) => drop(m),
            Err(e) => prop_assert!(matches!(e, crate::Error::Codec(_)), "{e:?}"),
        }
        prop_assert_eq!(still_open(&ids), Vec::<i32>::new(), "descriptors leaked");
    }

    /// Honest messages with deep-but-legal nesting and handles round-trip; the same bytes
    /// with one byte changed do not panic. (Each `Msg` level is two codec levels: the
    /// variant, then its sequence or option; 60 of them stay inside the limit of 128.)
    #[test]
    fn codec_round_trips_and_survives_a_flipped_byte(
        depth in 0usize..60,
        flip in any::<(usize, u8)>(),
    ) {
        let mut m = Msg::Handle(HandleFd::new(sockets(1).pop().unwrap()));
        for i in 0..depth {
            m = if i % 2 == 0 { Msg::Maybe(Some(Box::new(m))) } else { Msg::Many(vec![Msg::Unit, m]) };
        }
        let mut buf = Vec::new();
        let mut fds = Vec::new();
        codec::encode_into(&m, &mut buf, &mut fds).unwrap();
        let owned: Vec<OwnedFd> = fds.into_iter().map(|h| h.into_owned().unwrap()).collect();
        prop_assert!(codec::decode::<Msg>(&buf, owned).is_ok());
        if !buf.is_empty() {
            let i = flip.0 % buf.len();
            buf[i] ^= flip.1 | 1;
            let _ = codec::decode::<Msg>(&buf, sockets(1));
        }
    }

    /// Length prefixes that claim far more than the message holds allocate by what
    /// arrived, not by the claim: one element per input byte at most, per open level.
    #[test]
    fn claimed_lengths_do_not_drive_allocation(claim in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = Vec::new();
        let mut c = claim;
        loop {
            let b = (c & 0x7f) as u8;
            c >>= 7;
            if c == 0 { bytes.push(b); break; }
            bytes.push(b | 0x80);
        }
        bytes.extend_from_slice(&tail);
        // A vector of 256-byte elements: a claim of 2^60 elements must not reserve 2^68
        // bytes (serde's own cap is 1 MiB; the codec's is one element per input byte).
        let r = codec::decode_plain::<Vec<[u64; 32]>>(&bytes);
        prop_assert!(r.is_err() || claim <= tail.len() as u64);
    }

    /// The start-up message a spawned child or the fork server reads first.
    #[test]
    fn bootstrap_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode_plain::<Bootstrap>(&bytes);
    }

    /// Entry offsets from a start-up message or a pool task: only real records resolve.
    #[test]
    fn arbitrary_entry_offsets_are_refused(offset in any::<i64>()) {
        // A random offset naming a real record is a 1-in-2^50 event at worst.
        prop_assert!(!crate::target::resolves(offset), "{offset:#x}");
    }

    /// The queue ring's frame header against any published count: accepted only if its
    /// kind is known and the whole frame lies within what is published.
    #[test]
    fn ring_frame_headers_are_checked(bytes in any::<[u8; HEADER]>(), published in any::<u32>()) {
        if let Ok(h) = FrameHeader::parse(bytes, published) {
            prop_assert!(u64::from(h.units()) <= u64::from(published));
            prop_assert!(h.units() as usize * UNIT >= HEADER + h.len as usize);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// A ring in shared memory that another process scribbled on (control block, frame
    /// headers, payloads): attaching and receiving are errors or values, never a panic, a
    /// wild read or a hang past the deadline.
    #[test]
    fn a_scribbled_ring_is_an_error_not_a_crash(
        scribbles in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 1..16)), 1..8),
    ) {
        let ring = Ring::create(4096, 0).unwrap();
        for i in 0..5u32 {
            let mut item = Vec::new();
            codec::encode_plain_into(&vec![format!("item {i}"); i as usize], &mut item).unwrap();
            ring.send(&item, None).unwrap();
        }
        let region = Arc::clone(ring.region().unwrap());
        for (at, bytes) in &scribbles {
            let at = *at as usize % region.len().saturating_sub(bytes.len()).max(1);
            cell::write_bytes(&region, at, bytes);
        }
        let start = Instant::now();
        if let Ok(other) = Ring::attach(region) {
            for _ in 0..6 {
                let deadline = Some(Instant::now() + Duration::from_millis(5));
                let _ = other.recv(deadline, codec::decode_plain::<Vec<String>>);
            }
        }
        prop_assert!(start.elapsed() < Duration::from_secs(5), "a scribbled ring hung");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Elements that encode as zero bytes consume no input, so the clamp above does not
    /// bound them: any claimed count of them (in a vector, a set, a map, nested inside
    /// another sequence or behind an option) decodes quickly or is an `Error::Codec`
    /// naming the limit, never a loop of 2^63 turns.
    #[test]
    fn claimed_counts_of_empty_elements_are_bounded(
        claim in prop_oneof![0u64..2000, (codec::MAX_EMPTY as u64 - 2)..(codec::MAX_EMPTY as u64 + 2), any::<u64>()],
        shape in 0usize..7,
    ) {
        #[derive(Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        struct Nothing;
        let mut bytes = Vec::new();
        if shape == 4 {
            bytes.extend_from_slice(&[1, 1]); // Some, then a vector of one vector of:
        }
        varint(claim, &mut bytes);
        let start = Instant::now();
        let (r, kind) = match shape {
            0 => (codec::decode_plain::<Vec<()>>(&bytes).map(|v| v.len()), "Vec<()>"),
            1 => (codec::decode_plain::<Vec<Nothing>>(&bytes).map(|v| v.len()), "Vec<Nothing>"),
            2 => (codec::decode_plain::<Vec<std::marker::PhantomData<u64>>>(&bytes).map(|v| v.len()), "Vec<PhantomData>"),
            3 => (codec::decode_plain::<Vec<((), [u8; 0])>>(&bytes).map(|v| v.len()), "Vec<((), [u8; 0])>"),
            4 => (codec::decode_plain::<Option<Vec<Vec<()>>>>(&bytes).map(|v| v.map_or(0, |v| v[0].len())), "Option<Vec<Vec<()>>>"),
            5 => (codec::decode_plain::<std::collections::HashSet<()>>(&bytes).map(|_| claim as usize), "HashSet<()>"),
            _ => (codec::decode_plain::<std::collections::BTreeMap<Nothing, ()>>(&bytes).map(|_| claim as usize), "BTreeMap<Nothing, ()>"),
        };
        // Generous: a case takes milliseconds; only an unbounded loop (which the limit
        // prevents) is caught here, never a slow machine (two CPU hogs, a parallel build).
        prop_assert!(start.elapsed() < Duration::from_secs(60), "{kind} of {claim} took {:?}", start.elapsed());
        match r {
            Ok(n) => prop_assert!(claim <= codec::MAX_EMPTY as u64 && n as u64 == claim, "{kind} of {claim}: {n}"),
            Err(crate::Error::Codec(m)) => prop_assert!(
                claim > codec::MAX_EMPTY as u64 && m.contains("zero bytes"),
                "{kind} of {claim}: {m}"
            ),
            Err(e) => prop_assert!(false, "{kind}: {e:?}"),
        }
    }
}

fn varint(mut c: u64, out: &mut Vec<u8>) {
    loop {
        let b = (c & 0x7f) as u8;
        c >>= 7;
        if c == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Empty fields of tuples and structs are as many as their type says: only elements of
/// sequences and maps whose length the message claims are charged to the allowance, so an
/// honest vector of two million `(u8, PhantomData)` (one byte each) decodes.
#[test]
fn empty_fields_of_non_empty_elements_are_not_charged() {
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Tagged(u8, std::marker::PhantomData<u64>, ());
    let n = 2 * codec::MAX_EMPTY;
    let v: Vec<Tagged> = (0..n)
        .map(|i| Tagged(i as u8, std::marker::PhantomData, ()))
        .collect();
    let mut bytes = Vec::new();
    codec::encode_plain_into(&v, &mut bytes).unwrap();
    let back = codec::decode_plain::<Vec<Tagged>>(&bytes).unwrap();
    assert_eq!(back.len(), n);
}

/// A `Vec<()>` claiming 2^64 - 1 elements: an `Error::Codec` naming the limit, at once.
/// (Before the allowance, this decode looped for centuries: the watchdog turns that into a
/// failure.)
#[test]
fn a_vec_of_units_claiming_u64_max_is_refused_promptly() {
    let mut bytes = Vec::new();
    varint(u64::MAX, &mut bytes);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(codec::decode_plain::<Vec<()>>(&bytes).map(|v| v.len()));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Err(crate::Error::Codec(m))) => {
            assert!(m.contains("zero bytes"), "{m}");
            assert!(m.starts_with("could not decode"), "{m}");
        }
        Ok(other) => panic!("expected Error::Codec, got {other:?}"),
        Err(_) => panic!("decoding a Vec<()> of claimed length u64::MAX did not finish in 10 s"),
    }
}

/// The fork server's replies as the client reads them: a pid is exactly 4 bytes (not 0); a
/// failed fork is a pid of 0 and the OS error, reported as the I/O error it is (with the
/// OS error as its source), not as a codec error; anything else is a malformed reply.
#[test]
fn fork_server_replies_are_checked() {
    use crate::start::forkserver::parse_pid_reply;
    for reply in [
        &[][..],
        &[1, 2, 3],
        &[1, 2, 3, 4, 5],
        &[0; 64],
        &[0; 4],
        &[1; 8],
    ] {
        match parse_pid_reply(reply) {
            Err(crate::Error::Codec(m)) => {
                assert!(m.starts_with("malformed reply from the fork server"), "{m}")
            }
            other => panic!("{reply:?}: {other:?}"),
        }
    }
    assert_eq!(parse_pid_reply(&42u32.to_le_bytes()).unwrap(), 42);
    // A fork that failed with EAGAIN (11).
    let e = parse_pid_reply(&[0, 0, 0, 0, 11, 0, 0, 0]).unwrap_err();
    let crate::Error::Io(io) = &e else {
        panic!("a failed fork is not an I/O error: {e:?}")
    };
    assert_eq!(io.kind(), std::io::ErrorKind::WouldBlock);
    let text = e.to_string();
    assert!(
        text.starts_with("i/o error: fork server could not fork the child: "),
        "{text}"
    );
    let source = std::error::Error::source(&e).expect("the io::Error is the source");
    let os = std::error::Error::source(source).expect("the OS error is the io::Error's source");
    assert_eq!(
        os.downcast_ref::<std::io::Error>()
            .and_then(|o| o.raw_os_error()),
        Some(11)
    );
}
