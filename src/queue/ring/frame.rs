//! Frames: what the data area holds, and the one decoder of a frame header.
//!
//! A frame starts on an 8-byte unit boundary with an 8-byte header, `len: u32` (payload
//! bytes) then `kind: u32`, both little-endian, followed by `len` payload bytes, padded to
//! the next unit. The producer-lock holder writes a frame's header and payload past the tail
//! before it moves the tail past them; so a consumer reads only whole frames, but the bytes
//! are still shared memory another process may have scribbled on: [`FrameHeader::parse`]
//! checks a header against what is published before anyone trusts its length.

/// Frames start on 8-byte boundaries; positions count these units.
pub(crate) const UNIT: usize = 8;
/// Bytes of a frame header.
pub(crate) const HEADER: usize = 8;

/// What a frame carries. An item is one `Whole` frame, or a streamed `First`, `More`...,
/// `Last`; an `Abort` ends a streamed item that will never be finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A middle piece of a streamed item.
    More = 0,
    /// The first piece of a streamed item.
    First = 1,
    /// The final piece; the item counts as published once this frame is.
    Last = 2,
    /// A whole item in one frame.
    Whole = 3,
    /// The streamed item in progress is abandoned: drop what was received of it.
    Abort = 4,
}

impl Kind {
    /// Whether the frame completes an item (it moves the item counts).
    #[inline]
    pub(crate) fn ends_item(self) -> bool {
        matches!(self, Kind::Last | Kind::Whole)
    }

    /// The kind of a streamed item's piece.
    pub(crate) fn of_piece(first: bool, last: bool) -> Kind {
        match (first, last) {
            (true, true) => Kind::Whole,
            (true, false) => Kind::First,
            (false, false) => Kind::More,
            (false, true) => Kind::Last,
        }
    }

    fn from_word(w: u32) -> Option<Kind> {
        Some(match w {
            0 => Kind::More,
            1 => Kind::First,
            2 => Kind::Last,
            3 => Kind::Whole,
            4 => Kind::Abort,
            _ => return None,
        })
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Payload bytes.
    pub(crate) len: u32,
    pub(crate) kind: Kind,
}

/// Why a header was refused: the ring is corrupt (another process wrote over it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadFrame {
    /// The kind word names no kind.
    Kind(u32),
    /// The frame claims more units than are published.
    TooLong { units: u64, published: u32 },
}

impl FrameHeader {
    /// The header's 8 bytes.
    #[inline]
    pub(crate) fn encode(self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(&self.len.to_le_bytes());
        h[4..].copy_from_slice(&(self.kind as u32).to_le_bytes());
        h
    }

    /// Decodes a header read at a position behind which `published` units are published.
    /// Accepts it only if its kind is known and the whole frame (header, payload, padding)
    /// lies within those units.
    #[inline]
    pub(crate) fn parse(bytes: [u8; HEADER], published: u32) -> Result<FrameHeader, BadFrame> {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let word = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let kind = Kind::from_word(word).ok_or(BadFrame::Kind(word))?;
        // In u64: a hostile `len` near u32::MAX must not wrap into a small frame.
        let units = (HEADER as u64 + u64::from(len)).div_ceil(UNIT as u64);
        if units > u64::from(published) {
            return Err(BadFrame::TooLong { units, published });
        }
        Ok(FrameHeader { len, kind })
    }

    /// Units the whole frame occupies.
    #[inline]
    pub(crate) fn units(self) -> u32 {
        units(HEADER + self.len as usize)
    }
}

/// Units `bytes` bytes (header included) occupy. Callers keep `bytes` within the ring's
/// capacity (at most 2^34), so the result fits.
#[inline]
pub(crate) fn units(bytes: usize) -> u32 {
    bytes.div_ceil(UNIT) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_published() {
        for kind in [
            Kind::More,
            Kind::First,
            Kind::Last,
            Kind::Whole,
            Kind::Abort,
        ] {
            let h = FrameHeader { len: 13, kind };
            assert_eq!(FrameHeader::parse(h.encode(), 3), Ok(h));
            assert_eq!(h.units(), 3);
            assert!(FrameHeader::parse(h.encode(), 2).is_err());
        }
        let mut bad = FrameHeader {
            len: 0,
            kind: Kind::Whole,
        }
        .encode();
        bad[4] = 5;
        assert_eq!(FrameHeader::parse(bad, 100), Err(BadFrame::Kind(5)));
        let huge = FrameHeader {
            len: u32::MAX,
            kind: Kind::Whole,
        }
        .encode();
        assert!(matches!(
            FrameHeader::parse(huge, 1 << 20),
            Err(BadFrame::TooLong { .. })
        ));
    }

    /// Every 8 bytes decode to a frame inside the published units, or to an error.
    #[test]
    fn arbitrary_bytes_never_yield_a_frame_past_the_published_units() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let published = (x >> 40) as u32 % 5000;
            if let Ok(h) = FrameHeader::parse(x.to_le_bytes(), published) {
                assert!(h.units() <= published && h.units() >= 1);
            }
        }
    }
}
