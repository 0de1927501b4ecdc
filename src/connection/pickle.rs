//! `Codec::Pickle` (cargo feature `pickle`): typed messages as Python pickles, through
//! serde-pickle.
//!
//! Encoding writes protocol 3, which every Python 3 reads. Decoding accepts what Python's
//! `conn.send` writes for plain data (protocols 0–5): None, bool, int, float, str, bytes,
//! bytearray, list, tuple, dict, set, frozenset, and the memo references that let one
//! object appear twice.
//!
//! A pickle is a program for a stack machine, and a hostile one can be tiny and still ask
//! for the moon: memo references nest (`a = [x, x]; b = [a, a]; ...` doubles at every
//! step), and nesting can be deep enough to overflow the stack of whoever walks the result.
//! So before serde-pickle sees a message, [`check`] runs the program over sizes instead of
//! values and refuses it if the decoded value would weigh more than [`budget`] or nest
//! deeper than [`MAX_DEPTH`], and refuses opcodes that plain data never needs (class and
//! function references, `REDUCE`, `BUILD`, persistent ids, out-of-band buffers, and the
//! stack tricks `POP`/`DUP` that Python's pickler does not write for data).

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

mod build;

/// The deepest nesting a decoded message may have.
pub(crate) const MAX_DEPTH: u32 = 128;
/// What one value (a node of the decoded tree) weighs besides its bytes.
const NODE_WEIGHT: u64 = 32;
/// The longest decimal integer accepted in a text opcode (Python's own default limit for
/// int/str conversions is 4300 digits).
const MAX_DIGITS: usize = 4300;

/// The most a message of `len` bytes may weigh once decoded: 16 times its size, and at
/// least 256 MiB, so sharing (one string referenced many times) is fine and a memo bomb is
/// not.
pub(crate) fn budget(len: usize) -> u64 {
    (len as u64).saturating_mul(16).max(256 << 20)
}

/// Encodes `item` as a pickle into `buf`.
pub(crate) fn encode_into<T: Serialize>(item: &T, buf: &mut Vec<u8>) -> Result<()> {
    serde_pickle::to_writer(buf, item, serde_pickle::SerOptions::new())
        .map_err(|e| Error::Codec(format!("pickle: {e}")))
}

/// Decodes a pickle as `T`, after [`check`]: the program's value is built here
/// (`build.rs`, which copies shared objects where serde-pickle would refuse them), then
/// handed to serde.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    check(bytes)?;
    let value = build::value(bytes)?;
    serde_pickle::from_value(value).map_err(|e| Error::Codec(format!("pickle: {e}")))
}

/// One stack entry of the size machine: an object (index into the arena), or a MARK.
#[derive(Clone, Copy)]
enum Slot {
    Mark,
    /// `owned`: the object itself, which may still be filled; false for a memo reference.
    Obj {
        id: usize,
        owned: bool,
    },
}

/// Sizes of the objects the program builds: (weight, depth).
struct Machine {
    objs: Vec<(u64, u32)>,
    stack: Vec<Slot>,
    memo: BTreeMap<u64, usize>,
    budget: u64,
}

fn refuse(why: impl Into<String>) -> Error {
    Error::Codec(format!("pickle refused: {}", why.into()))
}

impl Machine {
    fn push_new(&mut self, weight: u64, depth: u32) {
        self.objs.push((weight, depth));
        self.stack.push(Slot::Obj {
            id: self.objs.len() - 1,
            owned: true,
        });
    }

    fn pop_obj(&mut self) -> Result<(u64, u32)> {
        match self.stack.pop() {
            Some(Slot::Obj { id, .. }) => Ok(self.objs[id]),
            _ => Err(refuse("stack underflow")),
        }
    }

    /// Pops everything down to the last MARK; returns the total weight and deepest depth.
    fn pop_to_mark(&mut self) -> Result<(u64, u32, usize)> {
        let (mut w, mut d, mut n) = (0u64, 0u32, 0usize);
        loop {
            match self.stack.pop() {
                Some(Slot::Mark) => return Ok((w, d, n)),
                Some(Slot::Obj { id, .. }) => {
                    let (ow, od) = self.objs[id];
                    w = w.saturating_add(ow);
                    d = d.max(od);
                    n += 1;
                }
                None => return Err(refuse("no MARK for a collection")),
            }
        }
    }

    /// Adds children of weight `w` and depth `d` to the container on top of the stack.
    fn fill_top(&mut self, w: u64, d: u32) -> Result<()> {
        let Some(&Slot::Obj { id, owned }) = self.stack.last() else {
            return Err(refuse("nothing to add to"));
        };
        if !owned {
            return Err(refuse("a memo reference is modified"));
        }
        let (ow, od) = self.objs[id];
        let o = (ow.saturating_add(w), od.max(d.saturating_add(1)));
        self.objs[id] = o;
        self.limit(o)
    }

    fn limit(&self, (w, d): (u64, u32)) -> Result<()> {
        if w > self.budget {
            return Err(refuse(format!(
                "it would decode to more than {} bytes",
                self.budget
            )));
        }
        if d > MAX_DEPTH {
            return Err(refuse(format!("it nests deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn collect(&mut self, w: u64, d: u32) -> Result<()> {
        let o = (NODE_WEIGHT.saturating_add(w), d.saturating_add(1));
        self.limit(o)?;
        self.push_new(o.0, o.1);
        Ok(())
    }

    fn put(&mut self, key: u64) -> Result<()> {
        match self.stack.last() {
            Some(&Slot::Obj { id, owned: true }) => {
                self.memo.insert(key, id);
                Ok(())
            }
            _ => Err(refuse("memoizing something that is not a fresh object")),
        }
    }

    fn get(&mut self, key: u64) -> Result<()> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| refuse("a memo reference to nothing"))?;
        self.stack.push(Slot::Obj { id, owned: false });
        Ok(())
    }
}

/// A cursor over the pickle's bytes (also `build.rs`'s).
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| refuse("truncated"))?;
        let end = self.at.checked_add(n).ok_or_else(|| refuse("truncated"))?;
        let s = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| refuse("truncated"))?;
        self.at = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64> {
        let b = self.take(n as u64)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    }

    fn line(&mut self) -> Result<&'a [u8]> {
        let rest = &self.bytes[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| refuse("truncated text argument"))?;
        self.at += end + 1;
        Ok(&rest[..end])
    }

    fn line_number(&mut self) -> Result<u64> {
        let l = self.line()?;
        std::str::from_utf8(l)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| refuse("bad memo key"))
    }
}

/// Runs the pickle over sizes; an error names why it is refused.
pub(crate) fn check(bytes: &[u8]) -> Result<()> {
    let mut m = Machine {
        objs: Vec::new(),
        stack: Vec::new(),
        memo: BTreeMap::new(),
        budget: budget(bytes.len()),
    };
    let mut c = Cursor { bytes, at: 0 };
    loop {
        let op = *c.take(1)?.first().expect("one byte");
        match op {
            b'.' => break,                                    // STOP
            0x80 => drop(c.take(1)?),                         // PROTO
            0x95 => drop(c.take(8)?),                         // FRAME (a length hint)
            b'(' => m.stack.push(Slot::Mark),                 // MARK
            b'N' | 0x88 | 0x89 => m.push_new(NODE_WEIGHT, 0), // None, True, False
            b'K' => scalar(&mut m, c.take(1)?.len()),         // BININT1
            b'M' => scalar(&mut m, c.take(2)?.len()),         // BININT2
            b'J' => scalar(&mut m, c.take(4)?.len()),         // BININT
            b'G' => scalar(&mut m, c.take(8)?.len()),         // BINFLOAT
            b'I' | b'L' | b'F' => {
                // INT, LONG, FLOAT as text
                let l = c.line()?;
                if l.len() > MAX_DIGITS {
                    return Err(refuse("a number with too many digits"));
                }
                scalar(&mut m, l.len());
            }
            b'S' | b'V' => {
                let n = c.line()?.len(); // STRING, UNICODE as text
                scalar(&mut m, n);
            }
            0x8a => {
                let n = c.uint(1)?; // LONG1
                scalar(&mut m, c.take(n)?.len());
            }
            0x8b => {
                let n = c.uint(4)?; // LONG4
                scalar(&mut m, c.take(n)?.len());
            }
            b'U' | b'C' | 0x8c => {
                let n = c.uint(1)?; // SHORT_BINSTRING, SHORT_BINBYTES, SHORT_BINUNICODE
                scalar(&mut m, c.take(n)?.len());
            }
            b'T' | b'X' | b'B' => {
                let n = c.uint(4)?; // BINSTRING, BINUNICODE, BINBYTES
                scalar(&mut m, c.take(n)?.len());
            }
            0x8d | 0x8e | 0x96 => {
                let n = c.uint(8)?; // BINUNICODE8, BINBYTES8, BYTEARRAY8
                scalar(&mut m, c.take(n)?.len());
            }
            b']' | b'}' | b')' | 0x8f => m.push_new(NODE_WEIGHT, 1), // empty list/dict/tuple/set
            b'a' => {
                let (w, d) = m.pop_obj()?; // APPEND
                m.fill_top(w, d)?;
            }
            b's' => {
                let (vw, vd) = m.pop_obj()?; // SETITEM
                let (kw, kd) = m.pop_obj()?;
                m.fill_top(vw.saturating_add(kw), vd.max(kd))?;
            }
            b'e' | b'u' | 0x90 => {
                let (w, d, _) = m.pop_to_mark()?; // APPENDS, SETITEMS, ADDITEMS
                m.fill_top(w, d)?;
            }
            b'l' | b'd' | b't' | 0x91 => {
                let (w, d, _) = m.pop_to_mark()?; // LIST, DICT, TUPLE, FROZENSET
                m.collect(w, d)?;
            }
            0x85..=0x87 => {
                let (mut w, mut d) = (0u64, 0u32); // TUPLE1..3
                for _ in 0..(op - 0x84) {
                    let (ow, od) = m.pop_obj()?;
                    w = w.saturating_add(ow);
                    d = d.max(od);
                }
                m.collect(w, d)?;
            }
            b'p' => {
                let k = c.line_number()?; // PUT
                m.put(k)?;
            }
            b'q' => {
                let k = c.uint(1)?; // BINPUT
                m.put(k)?;
            }
            b'r' => {
                let k = c.uint(4)?; // LONG_BINPUT
                m.put(k)?;
            }
            0x94 => {
                let k = m.memo.len() as u64; // MEMOIZE
                m.put(k)?;
            }
            b'g' => {
                let k = c.line_number()?; // GET
                m.get(k)?;
            }
            b'h' => {
                let k = c.uint(1)?; // BINGET
                m.get(k)?;
            }
            b'j' => {
                let k = c.uint(4)?; // LONG_BINGET
                m.get(k)?;
            }
            other => {
                return Err(refuse(format!(
                    "opcode 0x{other:02x} is not plain data (only None, bool, int, float, \
                     str, bytes, list, tuple, dict and set are accepted)"
                )));
            }
        }
        if let Some(&Slot::Obj { id, .. }) = m.stack.last() {
            m.limit(m.objs[id])?;
        }
    }
    Ok(())
}

fn scalar(m: &mut Machine, bytes: usize) {
    m.push_new(NODE_WEIGHT.saturating_add(bytes as u64), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memo_bomb_is_refused_before_decoding() {
        // a = []; then 40 times: a = [a, a] -- 2^40 leaves from ~300 bytes.
        let mut p = vec![0x80, 4, b']', 0x94];
        for i in 0..40u32 {
            p.extend_from_slice(&[b'h', i as u8, b'h', i as u8, 0x86, 0x94]);
        }
        p.push(b'.');
        let e = decode::<serde_pickle::Value>(&p).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut p = vec![0x80, 4];
        p.extend(std::iter::repeat_n(b']', 10_000));
        p.extend(std::iter::repeat_n(b'a', 9_999));
        p.push(b'.');
        let e = decode::<serde_pickle::Value>(&p).unwrap_err();
        assert!(e.to_string().contains("deeper"), "{e}");
    }

    #[test]
    fn code_is_refused() {
        // pickle.dumps(os.system) -- a GLOBAL reference.
        let p = b"\x80\x04\x95\x11\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94.";
        let e = decode::<serde_pickle::Value>(p).unwrap_err();
        assert!(e.to_string().contains("not plain data"), "{e}");
    }

    /// Issue 19, item 11: `b = [a, a]; [b, b]` is a DAG, not a cycle.
    #[test]
    fn a_value_shared_at_two_levels_is_accepted() {
        // python3 -c "import pickle; a=[1]; b=[a,a]; print(pickle.dumps([b,b], 4))"
        let p = b"\x80\x04\x95\x12\x00\x00\x00\x00\x00\x00\x00]\x94(]\x94(]\x94K\x01ah\x02eh\x01e.";
        let v: Vec<Vec<Vec<u8>>> = decode(p).unwrap();
        assert_eq!(v, vec![vec![vec![1], vec![1]], vec![vec![1], vec![1]]]);
        // A true cycle is still refused: a = []; a.append(a).
        let cyc = b"\x80\x04]\x94h\x00a.";
        let e = decode::<serde_pickle::Value>(cyc).unwrap_err();
        assert!(e.to_string().contains("recursive"), "{e}");
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = serde_pickle::Value> {
        use proptest::prelude::*;
        use serde_pickle::Value as V;
        let leaf = prop_oneof![
            Just(V::None),
            any::<bool>().prop_map(V::Bool),
            any::<i64>().prop_map(V::I64),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(V::F64),
            ".{0,8}".prop_map(V::String),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(V::Bytes),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(V::List),
                proptest::collection::vec(inner.clone(), 0..4).prop_map(V::Tuple),
                proptest::collection::btree_map(".{0,4}", inner, 0..4).prop_map(|m| {
                    V::Dict(
                        m.into_iter()
                            .map(|(k, v)| (serde_pickle::HashableValue::String(k), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest::proptest! {
        /// The value builder agrees with serde-pickle's own decoding (what `decode` did
        /// before it) wherever serde-pickle can decode.
        #[test]
        fn the_builder_agrees_with_serde_pickle(v in any_value()) {
            let bytes = serde_pickle::value_to_vec(&v, serde_pickle::SerOptions::new()).unwrap();
            let ours: serde_pickle::Value = decode(&bytes).unwrap();
            let theirs: serde_pickle::Value =
                serde_pickle::from_slice(&bytes, serde_pickle::DeOptions::new()).unwrap();
            proptest::prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn any_bytes_are_an_error_or_a_value(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = decode::<serde_pickle::Value>(&bytes);
        }
    }
}
