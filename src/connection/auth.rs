//! CPython's connection handshake: mutual HMAC challenge/response.
//!
//! The side that delivers a challenge sends `#CHALLENGE#{sha256}` and 40 random bytes; the
//! other answers `{sha256}` and the HMAC-SHA256, keyed with the shared authkey, of
//! everything after `#CHALLENGE#` (prefix included, so no one can strip it to force a weaker
//! digest). The challenger compares in constant time and replies `#WELCOME#` or
//! `#FAILURE#`. Then the roles swap: `Listener::accept` delivers then answers, `connect`
//! answers then delivers, exactly as Python's `Listener.accept` and `Client` do, so either
//! side can be a Python program.
//!
//! Python 3.11 and older speak only the legacy form: a 20-byte challenge without prefix,
//! answered with a bare 16-byte HMAC-MD5; such a peer also answers a prefixed challenge
//! with a bare HMAC-MD5 of the whole of it. Like CPython 3.12, mproc answers an unprefixed
//! challenge with HMAC-MD5 and accepts a 16-byte HMAC-MD5 answer to its own challenge.
//! Two mproc programs always use SHA-256: each sends prefixed challenges and answers in
//! kind.
//!
//! Every handshake message is at most 256 bytes (a longer one is refused from its header,
//! before its body is read), and nothing the peer sends is decoded beyond comparing bytes.

use hmac::{Hmac, Mac};

use crate::error::{Error, Result};

/// The longest handshake message either side accepts (CPython's `recv_bytes(256)`).
pub(crate) const MAX_MESSAGE: usize = 256;
const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a challenge (CPython 3.12's `MESSAGE_LENGTH`).
const NONCE_LEN: usize = 40;
/// A legacy challenge's length, and a legacy HMAC-MD5 answer's.
const LEGACY_LENGTHS: [usize; 2] = [20, 16];
/// The longest digest name CPython allows (`sha3_256`).
const MAX_DIGEST_NAME: usize = 8;

/// How a handshake moves messages: CPython frames over the connection being set up.
pub(crate) trait Framed {
    /// Sends one message.
    fn send(&mut self, message: &[u8]) -> Result<()>;
    /// Receives one message of at most [`MAX_MESSAGE`] bytes.
    fn recv(&mut self) -> Result<Vec<u8>>;
}

/// The HMAC digests mproc computes (CPython also allows `sha3_256` and `sha3_384`, which
/// no Python `Listener` or `Client` picks on its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
    Sha384,
}

impl Digest {
    fn from_name(name: &[u8]) -> Option<Digest> {
        match name {
            b"md5" => Some(Digest::Md5),
            b"sha256" => Some(Digest::Sha256),
            b"sha384" => Some(Digest::Sha384),
            _ => None,
        }
    }

    fn name(self) -> &'static [u8] {
        match self {
            Digest::Md5 => b"md5",
            Digest::Sha256 => b"sha256",
            Digest::Sha384 => b"sha384",
        }
    }

    fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            let mut m = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
        }
    }

    /// Whether `tag` is the MAC of `message`, compared in constant time.
    fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
            let mut m = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
            m.update(message);
            m.verify_slice(tag).is_ok()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message, tag),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message, tag),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message, tag),
        }
    }
}

/// Splits a challenge or an answer into its digest (`None`: the legacy, unprefixed MD5
/// form) and its payload, as CPython's `_get_digest_name_and_payload` does.
fn digest_and_payload(message: &[u8]) -> Result<(Option<Digest>, &[u8])> {
    if LEGACY_LENGTHS.contains(&message.len()) {
        return Ok((None, message));
    }
    if message.first() == Some(&b'{') {
        let window = &message[1..message.len().min(MAX_DIGEST_NAME + 2)];
        if let Some(close) = window.iter().position(|&b| b == b'}') {
            let name = &window[..close];
            if let Some(d) = Digest::from_name(name) {
                return Ok((Some(d), &message[close + 2..]));
            }
        }
    }
    Err(Error::AuthenticationError)
}

/// Challenges the peer to prove it knows `key` (CPython's `deliver_challenge`).
pub(crate) fn deliver_challenge(io: &mut impl Framed, key: &[u8]) -> Result<()> {
    let mut nonce = [0u8; NONCE_LEN];
    crate::sys::net::random_bytes(&mut nonce)?;
    let mut message = Vec::with_capacity(CHALLENGE.len() + 8 + NONCE_LEN);
    message.extend_from_slice(CHALLENGE);
    message.extend_from_slice(b"{sha256}");
    message.extend_from_slice(&nonce);
    io.send(&message)?;
    let challenge = &message[CHALLENGE.len()..];
    let answer = io.recv()?;
    let good = match digest_and_payload(&answer) {
        Ok((digest, tag)) => digest.unwrap_or(Digest::Md5).verify(key, challenge, tag),
        Err(_) => false,
    };
    if good {
        io.send(WELCOME)
    } else {
        // The peer learns it failed; what we send cannot fail the caller further.
        let _ = io.send(FAILURE);
        Err(Error::AuthenticationError)
    }
}

/// Proves to the peer that we know `key` (CPython's `answer_challenge`).
pub(crate) fn answer_challenge(io: &mut impl Framed, key: &[u8]) -> Result<()> {
    let message = io.recv()?;
    let Some(challenge) = message.strip_prefix(CHALLENGE) else {
        return Err(Error::AuthenticationError);
    };
    if challenge.len() < LEGACY_LENGTHS[0] {
        return Err(Error::AuthenticationError);
    }
    let answer = match digest_and_payload(challenge)?.0 {
        None => Digest::Md5.mac(key, challenge),
        Some(d) => {
            let mut a = Vec::with_capacity(2 + MAX_DIGEST_NAME + 48);
            a.push(b'{');
            a.extend_from_slice(d.name());
            a.push(b'}');
            a.extend_from_slice(&d.mac(key, challenge));
            a
        }
    };
    io.send(&answer)?;
    if io.recv()? == WELCOME {
        Ok(())
    } else {
        Err(Error::AuthenticationError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// One side of an in-memory handshake: what it will receive, and what it sent.
    struct Script {
        incoming: VecDeque<Vec<u8>>,
        sent: Vec<Vec<u8>>,
    }

    impl Framed for Script {
        fn send(&mut self, m: &[u8]) -> Result<()> {
            self.sent.push(m.to_vec());
            Ok(())
        }
        fn recv(&mut self) -> Result<Vec<u8>> {
            self.incoming.pop_front().ok_or(Error::Closed)
        }
    }

    fn script(incoming: Vec<Vec<u8>>) -> Script {
        Script {
            incoming: incoming.into(),
            sent: Vec::new(),
        }
    }

    #[test]
    fn answers_a_legacy_challenge_with_bare_hmac_md5() {
        // What Python 3.11's deliver_challenge sends: 20 random bytes, no prefix.
        let nonce = [7u8; 20];
        let mut challenge = CHALLENGE.to_vec();
        challenge.extend_from_slice(&nonce);
        let mut s = script(vec![challenge, WELCOME.to_vec()]);
        answer_challenge(&mut s, b"secret").unwrap();
        // hmac.new(b"secret", bytes([7]*20), "md5").digest()
        assert_eq!(s.sent[0], Digest::Md5.mac(b"secret", &nonce));
        assert_eq!(s.sent[0].len(), 16);
    }

    #[test]
    fn answers_a_prefixed_challenge_in_kind() {
        let mut challenge = CHALLENGE.to_vec();
        challenge.extend_from_slice(b"{sha256}");
        challenge.extend_from_slice(&[1u8; 40]);
        let mut s = script(vec![challenge.clone(), WELCOME.to_vec()]);
        answer_challenge(&mut s, b"k").unwrap();
        let answer = &s.sent[0];
        assert!(answer.starts_with(b"{sha256}"));
        assert_eq!(
            &answer[8..],
            &Digest::Sha256.mac(b"k", &challenge[CHALLENGE.len()..])[..]
        );
    }

    #[test]
    fn accepts_a_legacy_md5_answer_and_rejects_a_wrong_one() {
        // Python 3.11's answer to our prefixed challenge: bare HMAC-MD5 of all of it.
        let mut first = script(vec![]);
        let _ = deliver_challenge(&mut first, b"key");
        let challenge = first.sent[0][CHALLENGE.len()..].to_vec();
        let good = Digest::Md5.mac(b"key", &challenge);
        // Replay the same challenge: a fresh run makes a new nonce, so drive verify directly.
        let (d, tag) = digest_and_payload(&good).unwrap();
        assert!(d.unwrap_or(Digest::Md5).verify(b"key", &challenge, tag));
        assert!(!Digest::Md5.verify(b"other", &challenge, tag));
        let mut wrong = script(vec![Digest::Md5.mac(b"other", b"whatever")]);
        assert!(matches!(
            deliver_challenge(&mut wrong, b"key"),
            Err(Error::AuthenticationError)
        ));
        assert_eq!(wrong.sent[1], FAILURE);
    }

    #[test]
    fn refuses_malformed_challenges() {
        for bad in [
            b"#CHALLENGE#short".to_vec(),
            b"hello".to_vec(),
            [
                CHALLENGE,
                b"{sha3_256}0123456789012345678901234567890123456789",
            ]
            .concat(),
            [CHALLENGE, b"{nope}0123456789012345678901234567890123456789"].concat(),
        ] {
            let mut s = script(vec![bad]);
            assert!(matches!(
                answer_challenge(&mut s, b"k"),
                Err(Error::AuthenticationError)
            ));
            assert!(
                s.sent.is_empty(),
                "nothing is answered to a malformed challenge"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_fail_cleanly(a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                                  b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut s = script(vec![a.clone(), b.clone()]);
            let r = answer_challenge(&mut s, b"k");
            proptest::prop_assert!(r.is_err() || b == WELCOME);
            let mut s = script(vec![a, b]);
            proptest::prop_assert!(deliver_challenge(&mut s, b"k").is_err());
        }
    }
}
