//! A depth limit for decoding: a `Deserializer` adapter that counts nesting.
//!
//! postcard recurses once per nested value (a `Box<Tree>` inside a `Tree`, a `Vec` inside
//! a `Vec`) and has no limit of its own, so a hostile message of a million one-byte levels
//! would overflow the receiver's stack (an abort, not an error). [`Depth`] wraps the
//! deserializer and every access object it hands out; each step into a nested value
//! (sequence, tuple, struct, map, enum variant, `Some`, newtype) counts one level, and the
//! step past [`MAX_DEPTH`] is a decoding error instead of a deeper call.
//!
//! The count lives in a [`Budget`] owned by the caller's stack frame; each wrapper holds a
//! reference to it and gives the level back when the nested value is done. The budget also
//! clamps the length a sequence or map announces (which serde uses to preallocate) to the
//! input's length: a 10-byte message cannot make the receiver reserve memory for 2^60
//! elements, nor 1 MiB (serde's own cap) at each of 128 levels.
//!
//! **Empty elements.** That clamp rests on every element taking input, which elements of a
//! type that encodes as nothing (`()`, a unit struct, `PhantomData`) do not: a 10-byte
//! `Vec<()>` may claim 2^63 of them, and the decoder would loop for centuries building it.
//! The input is read through [`Counted`], which tells the budget how much is left; an
//! element (or map entry) that consumed none of it is charged to a per-message allowance of
//! [`MAX_EMPTY`], and the one past it is a decoding error naming the limit.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// How deep a decoded value may nest. A level costs a few hundred bytes of stack in an
/// optimized build and a few KiB in a debug build: 128 levels stay far inside the 2 MiB of
/// a default thread either way (serde_json uses the same limit).
pub(crate) const MAX_DEPTH: u32 = 128;

/// The message of the error past the limit (postcard keeps no custom text, so the codec
/// reports this one by name).
pub(crate) const TOO_DEEP: &str =
    "the message nests deeper than 128 levels, the codec's depth limit";

/// How many elements that encode as zero bytes one message may hold, over all its
/// sequences and maps. Decoding one costs a loop turn and no memory, so a million of them
/// take milliseconds; no honest message needs more.
pub(crate) const MAX_EMPTY: usize = 1 << 20;

/// The message of the error past [`MAX_EMPTY`].
pub(crate) const TOO_MANY_EMPTY: &str =
    "the message claims more than 1048576 elements that encode as zero bytes, the codec's limit";

/// postcard's input, a byte slice, read through a cursor that keeps the budget told how
/// many bytes are left (so an access can see whether an element consumed any).
pub(crate) struct Counted<'a> {
    rest: &'a [u8],
    left: &'a Cell<usize>,
}

impl<'a> Counted<'a> {
    /// Reads `bytes`, reporting what is left to `budget`.
    pub(crate) fn new(bytes: &'a [u8], budget: &'a Budget) -> Counted<'a> {
        budget.left.set(bytes.len());
        Counted {
            rest: bytes,
            left: &budget.left,
        }
    }
}

impl<'a> postcard::de_flavors::Flavor<'a> for Counted<'a> {
    type Remainder = &'a [u8];
    type Source = &'a [u8];

    fn pop(&mut self) -> postcard::Result<u8> {
        let (&b, rest) = self
            .rest
            .split_first()
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.rest = rest;
        self.left.set(rest.len());
        Ok(b)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.rest.len())
    }

    fn try_take_n(&mut self, ct: usize) -> postcard::Result<&'a [u8]> {
        if ct > self.rest.len() {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let (taken, rest) = self.rest.split_at(ct);
        self.rest = rest;
        self.left.set(rest.len());
        Ok(taken)
    }

    fn finalize(self) -> postcard::Result<&'a [u8]> {
        Ok(self.rest)
    }
}

/// A deserializer that counts nesting in `depth`.
pub(crate) struct Depth<'a, D> {
    pub(crate) de: D,
    pub(crate) depth: &'a Budget,
}

/// Enters one level, or fails past the limit.
fn enter<E: de::Error>(depth: &Budget) -> Result<(), E> {
    let d = depth.level.get();
    if d >= MAX_DEPTH {
        return Err(E::custom(super::handle_error(TOO_DEEP)));
    }
    depth.level.set(d + 1);
    Ok(())
}

fn leave(depth: &Budget) {
    depth.level.set(depth.level.get().saturating_sub(1));
}

/// What one decoding may spend: nesting levels, and the input's length, which bounds the
/// element count a sequence may claim for preallocation (every element of a type that
/// allocates takes at least one byte of input; a claim beyond that is a lie).
#[derive(Debug)]
pub(crate) struct Budget {
    level: Cell<u32>,
    input: usize,
    /// Input bytes not yet read (kept by [`Counted`]).
    left: Cell<usize>,
    /// Elements so far that consumed no input.
    empty: Cell<usize>,
}

impl Budget {
    /// The budget for decoding `input_len` bytes.
    pub(crate) fn new(input_len: usize) -> Budget {
        Budget {
            level: Cell::new(0),
            input: input_len,
            left: Cell::new(input_len),
            empty: Cell::new(0),
        }
    }

    /// Charges an element that began with `left_before` bytes unread, if it read none.
    fn charge<E: de::Error>(&self, left_before: usize) -> Result<(), E> {
        if self.left.get() != left_before {
            return Ok(());
        }
        let n = self.empty.get() + 1;
        if n > MAX_EMPTY {
            return Err(E::custom(super::handle_error(TOO_MANY_EMPTY)));
        }
        self.empty.set(n);
        Ok(())
    }
}

/// A visitor that wraps the accesses it is given.
struct Wrap<'a, V> {
    v: V,
    depth: &'a Budget,
    /// Whether the sequence or map it may visit has a length the message claims (a `Vec`,
    /// a map), rather than one its type fixes (a tuple, a struct's fields).
    claimed: bool,
}

/// A seed that deserializes through [`Depth`].
struct Seed<'a, S> {
    s: S,
    depth: &'a Budget,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.s.deserialize(Depth {
            de: d,
            depth: self.depth,
        })
    }
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* v: V) -> Result<V::Value, D::Error> {
            self.de.$method($($arg,)* Wrap { v, depth: self.depth, claimed: false })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Depth<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_seq(Wrap {
            v,
            depth: self.depth,
            claimed: true,
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_map(Wrap {
            v,
            depth: self.depth,
            claimed: true,
        })
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, x: $ty) -> Result<V::Value, E> {
            self.v.$method(x)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.v.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let depth = self.depth;
        nested(depth, || self.v.visit_some(Depth { de: d, depth }))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let depth = self.depth;
        nested(depth, || {
            self.v.visit_newtype_struct(Depth { de: d, depth })
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        let depth = self.depth;
        let claimed = self.claimed;
        nested(depth, || self.v.visit_seq(Access::new(a, depth, claimed)))
    }

    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        let depth = self.depth;
        let claimed = self.claimed;
        nested(depth, || self.v.visit_map(Access::new(a, depth, claimed)))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        let depth = self.depth;
        nested(depth, || self.v.visit_enum(Access::new(a, depth, false)))
    }
}

/// Decodes one nested value with `visit`, one level deeper (or fails past the limit).
fn nested<T, E: de::Error>(depth: &Budget, visit: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    enter::<E>(depth)?;
    let r = visit();
    leave(depth);
    r
}

/// A sequence, map, enum or variant access whose elements deserialize through [`Depth`].
struct Access<'a, A> {
    a: A,
    depth: &'a Budget,
    /// Input left when the current map entry's key began (for [`Budget::charge`]).
    mark: usize,
    /// Whether the message claims the length (only then can empty elements be charged:
    /// a tuple's or struct's fields are as many as its type says).
    claimed: bool,
}

impl<'a, A> Access<'a, A> {
    fn new(a: A, depth: &'a Budget, claimed: bool) -> Self {
        Access {
            a,
            depth,
            mark: 0,
            claimed,
        }
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<'_, A> {
    type Error = A::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        s: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let before = self.depth.left.get();
        let r = self.a.next_element_seed(Seed {
            s,
            depth: self.depth,
        })?;
        if self.claimed && r.is_some() {
            self.depth.charge(before)?;
        }
        Ok(r)
    }
    fn size_hint(&self) -> Option<usize> {
        self.a.size_hint().map(|n| n.min(self.depth.input))
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<'_, A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        s: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.mark = self.depth.left.get();
        self.a.next_key_seed(Seed {
            s,
            depth: self.depth,
        })
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, s: T) -> Result<T::Value, A::Error> {
        let v = self.a.next_value_seed(Seed {
            s,
            depth: self.depth,
        })?;
        if self.claimed {
            self.depth.charge(self.mark)?;
        }
        Ok(v)
    }
    fn size_hint(&self) -> Option<usize> {
        self.a.size_hint().map(|n| n.min(self.depth.input))
    }
}

impl<'a, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Access<'a, A> {
    type Error = A::Error;
    type Variant = Access<'a, A::Variant>;
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        s: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let depth = self.depth;
        let (value, variant) = self.a.variant_seed(Seed { s, depth })?;
        Ok((value, Access::new(variant, depth, false)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<'_, A> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.a.unit_variant()
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, s: T) -> Result<T::Value, A::Error> {
        self.a.newtype_variant_seed(Seed {
            s,
            depth: self.depth,
        })
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, A::Error> {
        self.a.tuple_variant(
            len,
            Wrap {
                v,
                depth: self.depth,
                claimed: false,
            },
        )
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, A::Error> {
        self.a.struct_variant(
            fields,
            Wrap {
                v,
                depth: self.depth,
                claimed: false,
            },
        )
    }
}
