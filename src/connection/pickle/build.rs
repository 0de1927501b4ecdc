//! The pickle's value, built after [`check`](super::check) accepted the program.
//!
//! serde-pickle resolves a memo reference by *moving* the memoized value out of its memo as
//! often as the pickle says `GET`, so a value shared by a value that is itself shared
//! (`a = [1]; b = [a, a]; [b, b]`, a DAG and no cycle) runs out of references and is refused
//! as a "recursive structure". Here the program builds a graph of objects instead (the memo
//! maps to objects, and containers hold object ids), and the graph is expanded into a
//! [`Value`] tree once at the end: a shared object is copied wherever it appears, and only a
//! true cycle (a container that holds itself) is refused. The copies cannot blow up:
//! `check` already bounded the expanded weight and depth.
//!
//! Binary scalars are read here; the text forms of protocol 0 (and the arbitrary-length
//! `LONG1`/`LONG4`) are handed to serde-pickle one opcode at a time, as a pickle of their
//! own, so their parsing (Python's escapes, big integers) stays serde-pickle's.

use std::collections::{BTreeMap, BTreeSet};

use serde_pickle::{DeOptions, HashableValue, Value};

use super::Cursor;
use crate::error::{Error, Result};

fn refuse(why: &str) -> Error {
    Error::Codec(format!("pickle refused: {why}"))
}

/// One object the program made.
enum Node {
    Scalar(Value),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
    FrozenSet(Vec<usize>),
}

#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Obj(usize),
}

struct Graph {
    nodes: Vec<Node>,
    stack: Vec<Slot>,
    memo: BTreeMap<u64, usize>,
}

impl Graph {
    fn push(&mut self, n: Node) {
        self.nodes.push(n);
        self.stack.push(Slot::Obj(self.nodes.len() - 1));
    }

    fn pop(&mut self) -> Result<usize> {
        match self.stack.pop() {
            Some(Slot::Obj(id)) => Ok(id),
            _ => Err(refuse("stack underflow")),
        }
    }

    fn pop_to_mark(&mut self) -> Result<Vec<usize>> {
        let mut items = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Slot::Mark) => {
                    items.reverse();
                    return Ok(items);
                }
                Some(Slot::Obj(id)) => items.push(id),
                None => return Err(refuse("no MARK for a collection")),
            }
        }
    }

    fn top(&mut self) -> Result<&mut Node> {
        match self.stack.last() {
            Some(&Slot::Obj(id)) => Ok(&mut self.nodes[id]),
            _ => Err(refuse("nothing to add to")),
        }
    }

    /// Adds `items` to the container on top of the stack.
    fn extend(&mut self, items: Vec<usize>) -> Result<()> {
        match self.top()? {
            Node::List(v) | Node::Set(v) => v.extend(items),
            Node::Dict(v) => {
                if items.len() % 2 != 0 {
                    return Err(refuse("a dict item without its value"));
                }
                v.extend(items.chunks(2).map(|p| (p[0], p[1])));
            }
            _ => return Err(refuse("adding to something that is not a container")),
        }
        Ok(())
    }
}

/// One scalar opcode (`bytes[start..end]`) decoded by serde-pickle as a pickle of its own.
fn by_serde_pickle(op: &[u8]) -> Result<Value> {
    let mut p = Vec::with_capacity(op.len() + 3);
    p.extend_from_slice(&[0x80, 2]);
    p.extend_from_slice(op);
    p.push(b'.');
    serde_pickle::value_from_slice(&p, DeOptions::new())
        .map_err(|e| Error::Codec(format!("pickle: {e}")))
}

fn text(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| refuse("a string that is not UTF-8"))
}

/// The value the pickle `bytes` (already accepted by `check`) describes.
pub(crate) fn value(bytes: &[u8]) -> Result<Value> {
    let mut g = Graph {
        nodes: Vec::new(),
        stack: Vec::new(),
        memo: BTreeMap::new(),
    };
    let mut c = Cursor { bytes, at: 0 };
    loop {
        let start = c.at;
        let op = c.take(1)?[0];
        match op {
            b'.' => break,
            0x80 => drop(c.take(1)?),
            0x95 => drop(c.take(8)?),
            b'(' => g.stack.push(Slot::Mark),
            b'N' => g.push(Node::Scalar(Value::None)),
            0x88 => g.push(Node::Scalar(Value::Bool(true))),
            0x89 => g.push(Node::Scalar(Value::Bool(false))),
            b'K' => g.push(Node::Scalar(Value::I64(c.uint(1)? as i64))),
            b'M' => g.push(Node::Scalar(Value::I64(c.uint(2)? as i64))),
            b'J' => g.push(Node::Scalar(Value::I64(
                i64::from(c.uint(4)? as u32 as i32),
            ))),
            b'G' => {
                let b: [u8; 8] = c.take(8)?.try_into().expect("eight bytes");
                g.push(Node::Scalar(Value::F64(f64::from_be_bytes(b))));
            }
            b'I' | b'L' | b'F' | b'S' | b'V' => {
                c.line()?;
                let v = by_serde_pickle(&bytes[start..c.at])?;
                g.push(Node::Scalar(v));
            }
            0x8a | 0x8b => {
                let n = c.uint(if op == 0x8a { 1 } else { 4 })?;
                c.take(n)?;
                let v = by_serde_pickle(&bytes[start..c.at])?;
                g.push(Node::Scalar(v));
            }
            b'U' | b'T' => {
                // SHORT_BINSTRING, BINSTRING: Python 2 strings, as serde-pickle reads them.
                let n = c.uint(if op == b'U' { 1 } else { 4 })?;
                c.take(n)?;
                let v = by_serde_pickle(&bytes[start..c.at])?;
                g.push(Node::Scalar(v));
            }
            0x8c | b'X' | 0x8d => {
                let n = c.uint(match op {
                    0x8c => 1,
                    b'X' => 4,
                    _ => 8,
                })?;
                let s = text(c.take(n)?)?;
                g.push(Node::Scalar(Value::String(s)));
            }
            b'C' | b'B' | 0x8e | 0x96 => {
                let n = c.uint(match op {
                    b'C' => 1,
                    b'B' => 4,
                    _ => 8,
                })?;
                g.push(Node::Scalar(Value::Bytes(c.take(n)?.to_vec())));
            }
            b']' => g.push(Node::List(Vec::new())),
            b'}' => g.push(Node::Dict(Vec::new())),
            b')' => g.push(Node::Tuple(Vec::new())),
            0x8f => g.push(Node::Set(Vec::new())),
            b'a' => {
                let v = g.pop()?;
                g.extend(vec![v])?;
            }
            b's' => {
                let v = g.pop()?;
                let k = g.pop()?;
                g.extend(vec![k, v])?;
            }
            b'e' | b'u' | 0x90 => {
                let items = g.pop_to_mark()?;
                g.extend(items)?;
            }
            b'l' => {
                let items = g.pop_to_mark()?;
                g.push(Node::List(items));
            }
            b't' => {
                let items = g.pop_to_mark()?;
                g.push(Node::Tuple(items));
            }
            0x91 => {
                let items = g.pop_to_mark()?;
                g.push(Node::FrozenSet(items));
            }
            b'd' => {
                let items = g.pop_to_mark()?;
                g.push(Node::Dict(Vec::new()));
                g.extend(items)?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = (0..n).map(|_| g.pop()).collect::<Result<Vec<_>>>()?;
                items.reverse();
                g.push(Node::Tuple(items));
            }
            b'p' | b'q' | b'r' | 0x94 => {
                let k = match op {
                    b'p' => c.line_number()?,
                    b'q' => c.uint(1)?,
                    b'r' => c.uint(4)?,
                    _ => g.memo.len() as u64,
                };
                let Some(&Slot::Obj(id)) = g.stack.last() else {
                    return Err(refuse("memoizing nothing"));
                };
                g.memo.insert(k, id);
            }
            b'g' | b'h' | b'j' => {
                let k = match op {
                    b'g' => c.line_number()?,
                    b'h' => c.uint(1)?,
                    _ => c.uint(4)?,
                };
                let id = *g
                    .memo
                    .get(&k)
                    .ok_or_else(|| refuse("a memo reference to nothing"))?;
                g.stack.push(Slot::Obj(id));
            }
            _ => return Err(refuse("an opcode that is not plain data")),
        }
    }
    let root = g.pop()?;
    let mut on_path = vec![false; g.nodes.len()];
    expand(&g.nodes, root, &mut on_path)
}

/// The tree under object `id`: shared objects copied, a cycle refused. The depth is bounded
/// by `check`, so the recursion is too.
fn expand(nodes: &[Node], id: usize, on_path: &mut [bool]) -> Result<Value> {
    if on_path[id] {
        return Err(refuse(
            "a recursive structure (a container that holds itself)",
        ));
    }
    on_path[id] = true;
    let all = |ids: &[usize], on_path: &mut [bool]| -> Result<Vec<Value>> {
        ids.iter().map(|&i| expand(nodes, i, on_path)).collect()
    };
    let hashable = |ids: &[usize], on_path: &mut [bool]| -> Result<BTreeSet<HashableValue>> {
        ids.iter()
            .map(|&i| expand(nodes, i, on_path)?.into_hashable().map_err(codec))
            .collect()
    };
    let v = match &nodes[id] {
        Node::Scalar(v) => v.clone(),
        Node::List(ids) => Value::List(all(ids, on_path)?),
        Node::Tuple(ids) => Value::Tuple(all(ids, on_path)?),
        Node::Set(ids) => Value::Set(hashable(ids, on_path)?),
        Node::FrozenSet(ids) => Value::FrozenSet(hashable(ids, on_path)?),
        Node::Dict(pairs) => {
            let mut m = BTreeMap::new();
            for &(k, v) in pairs {
                let k = expand(nodes, k, on_path)?.into_hashable().map_err(codec)?;
                m.insert(k, expand(nodes, v, on_path)?);
            }
            Value::Dict(m)
        }
    };
    on_path[id] = false;
    Ok(v)
}

fn codec(e: serde_pickle::Error) -> Error {
    Error::Codec(format!("pickle: {e}"))
}
