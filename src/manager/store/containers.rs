//! What the store does for the list and dict methods beyond the basic ones (Python's
//! `index`, `count`, `sort`, `reverse`, slices, `update`, `setdefault`, `popitem`) and for
//! `modify_with`.
//!
//! `modify_with` and `sort` run the client's code in the server (`managed.rs`). They hand
//! it one encoded value built by concatenation, which is how postcard encodes a tuple or a
//! sequence: the element then the argument is the encoding of `(T, A)`; a dict's `0` or
//! `1 ++ value` then the argument is that of `(Option<V>, A)`; the length then the items
//! is that of `Vec<T>`. So the server still never decodes a user's type itself.

use super::super::object::Object;
use super::{Caller, Store, one, out_of_range, run_modify, wrong_kind};
use crate::error::Error;
use crate::manager::wire::{Answer, Buf, Code, Request};

type Step = Result<Option<Answer>, Error>;

impl Store {
    /// A list's items, or an array's (which has no operation that changes its length).
    pub(super) fn items(&mut self, id: u64) -> Result<&mut Vec<Vec<u8>>, Error> {
        match self.get(id)? {
            Object::List(l) | Object::Array(l) => Ok(l),
            o => Err(wrong_kind(id, o, "list or array")),
        }
    }

    pub(super) fn apply_containers(&mut self, req: &Request<'_>, caller: Caller) -> Step {
        use Request as R;
        let answer = match req {
            R::ListModifyWith(id, i, arg, code) => {
                let l = self.list(*id)?;
                let len = l.len();
                let slot = usize::try_from(*i).ok().and_then(|i| l.get_mut(i));
                let slot = slot.ok_or_else(|| out_of_range(*i, len))?;
                let mut input = slot.clone();
                input.extend_from_slice(arg.0);
                let new = run_modify(*code, caller, Some(&input))?;
                slot.clone_from(&new);
                Answer::One(Buf(new))
            }
            R::ListIndex(id, v) => match self.list(*id)?.iter().position(|x| x == v.0) {
                Some(i) => Answer::Len(i as u64),
                None => return Err(Error::ValueError("the item is not in the list".into())),
            },
            R::ListCount(id, v) => {
                Answer::Len(self.list(*id)?.iter().filter(|x| *x == v.0).count() as u64)
            }
            R::ListReverse(id) => {
                self.list(*id)?.reverse();
                Answer::Done
            }
            R::ListSort(id, code) => {
                sort(self.list(*id)?, *code, caller)?;
                Answer::Done
            }
            R::ListSlice(id, start, end) => {
                let l = self.list(*id)?;
                let clamp = |i: u64| usize::try_from(i).unwrap_or(usize::MAX).min(l.len());
                let (start, end) = (clamp(*start), end.map_or(l.len(), clamp));
                let items = l.get(start..end.max(start)).unwrap_or_default();
                Answer::Many(items.iter().map(|v| Buf(v.clone())).collect())
            }
            R::DictModifyWith(id, k, arg, code) => {
                let d = self.dict(*id)?;
                let mut input = match d.get(k.0) {
                    Some(v) => [&[1u8][..], v].concat(),
                    None => vec![0],
                };
                input.extend_from_slice(arg.0);
                let new = run_modify(*code, caller, Some(&input))?;
                d.insert(k.0, new.clone());
                Answer::One(Buf(new))
            }
            R::DictUpdate(id, items) => {
                let d = self.dict(*id)?;
                for (k, v) in items {
                    d.insert(k.0, v.0.to_vec());
                }
                Answer::Done
            }
            R::DictSetDefault(id, k, v) => {
                let d = self.dict(*id)?;
                if d.get(k.0).is_none() {
                    d.insert(k.0, v.0.to_vec());
                }
                return one(d.get(k.0).map_or(&[][..], Vec::as_slice)).map(Some);
            }
            R::DictPopItem(id) => Answer::Pairs(
                self.dict(*id)?
                    .pop_last()
                    .map(|(k, v)| (Buf(k), Buf(v)))
                    .into_iter()
                    .collect(),
            ),
            _ => return Err(Error::ValueError("not a container request".into())),
        };
        Ok(Some(answer))
    }
}

/// Sorts `l` by the order of its element type: the client's entry decodes the items and
/// answers the permutation that sorts them (stably); the server applies it.
fn sort(l: &mut Vec<Vec<u8>>, code: Code, caller: Caller) -> Result<(), Error> {
    let mut all = Vec::new();
    crate::codec::encode_plain_into(&l.len(), &mut all)?;
    for v in l.iter() {
        all.extend_from_slice(v);
    }
    let order: Vec<u64> = crate::codec::decode_plain(&run_modify(code, caller, Some(&all))?)?;
    let mut seen = vec![false; l.len()];
    let valid = order.len() == l.len()
        && order.iter().all(|&i| {
            usize::try_from(i)
                .ok()
                .and_then(|i| seen.get_mut(i))
                .is_some_and(|s| !std::mem::replace(s, true))
        });
    if !valid {
        return Err(Error::ValueError("sort answered no permutation".into()));
    }
    let mut old: Vec<Option<Vec<u8>>> = l.drain(..).map(Some).collect();
    l.extend(order.iter().filter_map(|&i| old[i as usize].take()));
    Ok(())
}
