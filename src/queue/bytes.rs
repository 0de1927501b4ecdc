//! The byte fast path: items that are one byte string (`serde_bytes`' `ByteBuf`, a
//! `#[serde(with = "serde_bytes")]` field in a newtype, a `String`) arrive without a copy
//! into a second buffer.
//!
//! Such an item is encoded as `varint(n)` then its `n` bytes. When it is streamed (larger
//! than a quarter of the ring), the consumer reads the varint from the first piece, gathers
//! the `n` bytes into a fresh buffer reserved at that size (with huge pages asked for, so a
//! 64 MiB buffer faults in 32 times rather than 16 384), and hands that buffer to the item's
//! `Deserialize` as owned bytes (`visit_byte_buf` / `visit_string`), which keeps it. Which
//! items qualify is asked of the type itself: [`is_byte_string`] runs its `Deserialize`
//! against a probe that only records the first request.
//!
//! **Into the caller's buffer** (`Queue::get_into`, `into.rs`): the same gathering, into a
//! buffer the caller hands back each time, for a byte string or a sequence of `u8` (a
//! `Vec<u8>`, which postcard writes the same way: `varint(n)` then one byte per element;
//! [`is_bytes`] asks the probe for either).

use std::cell::Cell;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::forward_to_deserialize_any;

use crate::error::{Error, Result};

/// What the probe saw first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Unknown,
    ByteString,
    /// A sequence whose first element asks for a `u8`.
    ByteSeq,
    Other,
}

struct Probe<'a>(&'a Cell<Shape>);

/// A sequence's elements, for the probe: it asks the first one what it wants, then stops.
struct Elements<'a>(&'a Cell<Shape>);

/// A sequence's element: `ByteSeq` if it asks for a `u8`, `Other` for anything else.
struct Element<'a>(&'a Cell<Shape>);

fn stop() -> de::value::Error {
    de::Error::custom("probe")
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Self::Error> {
        self.0.set(Shape::Other);
        Err(stop())
    }

    fn deserialize_bytes<V: Visitor<'de>>(
        self,
        _: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        self.0.set(Shape::ByteString);
        Err(stop())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(
        self,
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        self.deserialize_bytes(v)
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, Self::Error> {
        self.deserialize_bytes(v)
    }

    fn deserialize_string<V: Visitor<'de>>(
        self,
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        self.deserialize_bytes(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, Self::Error> {
        self.0.set(Shape::Other);
        v.visit_seq(Elements(self.0))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char option unit unit_struct
        tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> de::SeqAccess<'de> for Elements<'_> {
    type Error = de::value::Error;

    fn next_element_seed<S: de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> std::result::Result<Option<S::Value>, Self::Error> {
        seed.deserialize(Element(self.0)).map(Some)
    }
}

impl<'de> Deserializer<'de> for Element<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Self::Error> {
        self.0.set(Shape::Other);
        Err(stop())
    }

    fn deserialize_u8<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Self::Error> {
        self.0.set(Shape::ByteSeq);
        Err(stop())
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

fn shape<T: DeserializeOwned>() -> Shape {
    let seen = Cell::new(Shape::Unknown);
    let _ = T::deserialize(Probe(&seen));
    seen.get()
}

/// Whether `T` is encoded as one byte string (possibly inside newtypes).
pub(super) fn is_byte_string<T: DeserializeOwned>() -> bool {
    shape::<T>() == Shape::ByteString
}

/// Whether `T` is encoded as `varint(n)` then `n` bytes that are its value: a byte string
/// (possibly inside newtypes) or a sequence of `u8`.
pub(super) fn is_bytes<T: DeserializeOwned>() -> bool {
    matches!(shape::<T>(), Shape::ByteString | Shape::ByteSeq)
}

/// Owned bytes, offered to a `Deserialize` as one byte string (or string).
struct Owned(Vec<u8>);

impl<'de> Deserializer<'de> for Owned {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, Self::Error> {
        v.visit_byte_buf(self.0)
    }

    fn deserialize_string<V: Visitor<'de>>(
        self,
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        match String::from_utf8(self.0) {
            Ok(s) => v.visit_string(s),
            Err(_) => Err(de::Error::custom("invalid UTF-8 in a string")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, Self::Error> {
        self.deserialize_string(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        v.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf option unit
        unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// Decodes a byte-string item from its `n` announced and `body` received bytes.
pub(super) fn decode_owned<T: DeserializeOwned>(n: u64, body: Vec<u8>) -> Result<T> {
    if body.len() as u64 != n {
        return Err(Error::Codec(format!(
            "could not decode a `{}`: {} bytes announced, {} received",
            std::any::type_name::<T>(),
            n,
            body.len()
        )));
    }
    T::deserialize(Owned(body)).map_err(|e| {
        Error::Codec(format!(
            "could not decode a `{}`: {e}",
            std::any::type_name::<T>()
        ))
    })
}

/// The varint (LEB128, as postcard writes lengths) at the start of `b`: `(value, its
/// length)`, or `None` if `b` does not start with a complete one of at most 10 bytes.
pub(crate) fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().take(10).enumerate() {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Wrapped(#[serde(with = "serde_bytes_like")] Vec<u8>);

    mod serde_bytes_like {
        use serde::{Deserializer, Serialize, Serializer};

        /// Bytes serialized as one byte string.
        pub(super) struct Ser<'a>(pub(super) &'a [u8]);

        impl Serialize for Ser<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }

        pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
        pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, b: &[u8]) -> Result<Vec<u8>, E> {
                    Ok(b.to_vec())
                }
                fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<Vec<u8>, E> {
                    Ok(b)
                }
            }
            d.deserialize_byte_buf(V)
        }
    }

    #[test]
    fn the_probe_tells_byte_strings_from_the_rest() {
        assert!(is_byte_string::<String>());
        assert!(is_byte_string::<Wrapped>());
        assert!(!is_byte_string::<Vec<u8>>());
        assert!(!is_byte_string::<u64>());
        assert!(!is_byte_string::<(String, u8)>());
        assert!(!is_byte_string::<Option<String>>());
    }

    #[test]
    fn the_probe_tells_byte_sequences_from_other_sequences() {
        assert!(is_bytes::<Vec<u8>>());
        assert!(is_bytes::<std::collections::VecDeque<u8>>());
        assert!(is_bytes::<Box<[u8]>>());
        assert!(is_bytes::<String>());
        assert!(is_bytes::<Wrapped>());
        assert!(!is_bytes::<Vec<u16>>());
        assert!(!is_bytes::<Vec<i8>>());
        assert!(!is_bytes::<Vec<(u8, u8)>>());
        assert!(!is_bytes::<Vec<Vec<u8>>>());
        assert!(!is_bytes::<[u8; 4]>());
        assert!(!is_bytes::<u8>());
        assert!(!is_bytes::<Option<Vec<u8>>>());
        // The fast path of `get` still takes only what a byte visitor accepts.
        assert!(!is_byte_string::<Vec<u8>>());
        // Postcard writes a `Vec<u8>` as a byte string: what `get_into` relies on.
        let v: Vec<u8> = (0..=255).collect();
        assert_eq!(
            postcard::to_allocvec(&v).unwrap(),
            postcard::to_allocvec(&serde_bytes_like::Ser(&v)).unwrap()
        );
    }

    #[test]
    fn owned_bytes_decode_and_lengths_are_checked() {
        let w: Wrapped = decode_owned(3, vec![1, 2, 3]).unwrap();
        assert_eq!(w, Wrapped(vec![1, 2, 3]));
        let s: String = decode_owned(2, b"hi".to_vec()).unwrap();
        assert_eq!(s, "hi");
        assert!(decode_owned::<String>(2, vec![0xff, 0xfe]).is_err());
        assert!(decode_owned::<Wrapped>(4, vec![1, 2, 3]).is_err());
    }

    #[test]
    fn varints_match_postcard_and_hostile_ones_are_refused() {
        for n in [0u64, 1, 127, 128, 300, 1 << 20, 64 << 20, u64::MAX] {
            let enc = postcard::to_allocvec(&n).unwrap();
            assert_eq!(varint(&enc), Some((n, enc.len())), "{n}");
        }
        assert_eq!(varint(&[0x80; 11]), None);
        assert_eq!(varint(&[0x80, 0x80]), None);
        assert_eq!(
            varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            None
        );
    }
}
