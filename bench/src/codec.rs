//! The `codec` workload: encode + decode time per message for the candidate codecs of
//! mproc's messages (postcard 1.1, bitcode 0.6 through serde, wincode 0.6), on the message
//! shapes mproc carries, and whether each keeps the text of a custom serde error.
//!
//! Each codec writes into a reused buffer where its API allows it (postcard `to_extend`,
//! wincode `serialize_into`); bitcode's serde entry point allocates a fresh `Vec` per call.
//! wincode has no serde support (its own `SchemaWrite`/`SchemaRead` derives), so it is
//! measured through its derives: a reference for speed, not a drop-in for mproc, whose
//! contract is "any serde type".

use std::hint::black_box;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::measure::{median, min_max};

/// The small struct: `{u32, String of 16 chars, Vec<u64> of 8}`.
#[derive(
    Serialize, Deserialize, wincode::SchemaWrite, wincode::SchemaRead, PartialEq, Debug, Clone,
)]
pub struct Small {
    id: u32,
    name: String,
    values: Vec<u64>,
}

/// One codec's figures for one payload.
#[derive(Debug, Clone, Serialize)]
pub struct CodecCell {
    /// Median nanoseconds for one encode + decode.
    pub ns_median: f64,
    /// Fastest and slowest repetition.
    pub ns_min: f64,
    /// Slowest repetition.
    pub ns_max: f64,
    /// Encoded size in bytes.
    pub bytes: usize,
}

/// One payload row: postcard, bitcode, wincode.
#[derive(Debug, Clone, Serialize)]
pub struct CodecRow {
    /// What was encoded.
    pub payload: &'static str,
    /// Figures per codec, in `CODECS` order.
    pub cells: Vec<CodecCell>,
}

/// The codecs, in column order.
pub const CODECS: [&str; 3] = [
    "postcard 1.1",
    "bitcode 0.6 (serde)",
    "wincode 0.6 (derive)",
];

/// Which of `CODECS` take any serde type (what mproc's messages are).
pub const SERDE: [bool; 3] = [true, true, false];

/// Whether a codec keeps the text of a custom serde error (bitcode keeps it only when
/// bitcode itself is built with debug assertions; this harness runs in release) (`serde::ser::Error::custom`,
/// `serde::de::Error::custom`).
#[derive(Debug, Clone, Serialize)]
pub struct ErrorText {
    /// Codec name.
    pub codec: &'static str,
    /// The encode error's text, as the codec reports it.
    pub encode: String,
    /// The decode error's text, as the codec reports it.
    pub decode: String,
    /// Both texts contain the custom message.
    pub kept: Option<bool>,
}

/// Everything the `codec` workload found.
#[derive(Debug, Clone, Serialize)]
pub struct CodecReport {
    /// One row per payload.
    pub rows: Vec<CodecRow>,
    /// Custom error text, per codec.
    pub errors: Vec<ErrorText>,
}

/// Times `round` (one encode + decode) over repetitions of about `budget` seconds each.
fn time_round(reps: usize, budget: f64, mut round: impl FnMut()) -> (f64, f64, f64) {
    // Calibrate: how many rounds fit in the budget.
    round();
    let mut n: u64 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            round();
        }
        let dt = t.elapsed().as_secs_f64();
        if dt > budget / 4.0 || n >= 1 << 30 {
            n = ((n as f64) * budget / dt.max(1e-9)).max(1.0) as u64;
            break;
        }
        n *= 4;
    }
    let samples: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                round();
            }
            t.elapsed().as_secs_f64() / n as f64 * 1e9
        })
        .collect();
    let (lo, hi) = min_max(&samples);
    (median(&samples), lo, hi)
}

fn cell((ns_median, ns_min, ns_max): (f64, f64, f64), bytes: usize) -> CodecCell {
    CodecCell {
        ns_median,
        ns_min,
        ns_max,
        bytes,
    }
}

/// postcard, bitcode and wincode on one payload. `W` is wincode's representation of the
/// same value (equal to `T` except for bytes, which wincode takes as a plain `Vec<u8>`).
fn row<T, W>(payload: &'static str, value: &T, wvalue: &W, reps: usize, budget: f64) -> CodecRow
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    W: wincode::SchemaWrite<wincode::config::DefaultConfig, Src = W>
        + for<'de> wincode::SchemaRead<'de, wincode::config::DefaultConfig, Dst = W>
        + PartialEq
        + std::fmt::Debug,
{
    // Each codec must give the value back before it is timed.
    let pc = postcard::to_allocvec(value).expect("postcard encodes the payload");
    assert_eq!(
        &postcard::from_bytes::<T>(&pc).expect("postcard decodes"),
        value
    );
    let bc = bitcode::serialize(value).expect("bitcode encodes the payload");
    assert_eq!(
        &bitcode::deserialize::<T>(&bc).expect("bitcode decodes"),
        value
    );
    let wc = wincode::serialize(wvalue).expect("wincode encodes the payload");
    assert_eq!(
        &wincode::deserialize::<W>(&wc).expect("wincode decodes"),
        wvalue
    );

    let mut buf = Vec::with_capacity(pc.len());
    let postcard_t = time_round(reps, budget, || {
        buf.clear();
        buf = postcard::to_extend(black_box(value), std::mem::take(&mut buf)).expect("encode");
        black_box(postcard::from_bytes::<T>(black_box(&buf)).expect("decode"));
    });
    let bitcode_t = time_round(reps, budget, || {
        let bytes = bitcode::serialize(black_box(value)).expect("encode");
        black_box(bitcode::deserialize::<T>(black_box(&bytes)).expect("decode"));
    });
    let mut wbuf: Vec<u8> = Vec::with_capacity(wc.len());
    let wincode_t = time_round(reps, budget, || {
        wbuf.clear();
        wincode::serialize_into(&mut wbuf, black_box(wvalue)).expect("encode");
        black_box(wincode::deserialize::<W>(black_box(&wbuf)).expect("decode"));
    });
    CodecRow {
        payload,
        cells: vec![
            cell(postcard_t, pc.len()),
            cell(bitcode_t, bc.len()),
            cell(wincode_t, wc.len()),
        ],
    }
}

const CUSTOM: &str = "custom text from the user's serde impl";

/// A type whose Serialize and Deserialize both fail with a custom message.
#[derive(Debug)]
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(CUSTOM))
    }
}

impl<'de> Deserialize<'de> for Refuses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let _ = u32::deserialize(d)?;
        Err(serde::de::Error::custom(CUSTOM))
    }
}

fn error_texts() -> Vec<ErrorText> {
    let text = |r: Result<String, String>| match r {
        Ok(_) => "(no error)".to_string(),
        Err(e) => e,
    };
    let postcard_e = text(
        postcard::to_allocvec(&Refuses)
            .map(|_| String::new())
            .map_err(|e| e.to_string()),
    );
    let pbytes = postcard::to_allocvec(&7u32).expect("postcard encodes a u32");
    let postcard_d = text(
        postcard::from_bytes::<Refuses>(&pbytes)
            .map(|_| String::new())
            .map_err(|e| e.to_string()),
    );
    let bitcode_e = text(
        bitcode::serialize(&Refuses)
            .map(|_| String::new())
            .map_err(|e| e.to_string()),
    );
    let bbytes = bitcode::serialize(&7u32).expect("bitcode encodes a u32");
    let bitcode_d = text(
        bitcode::deserialize::<Refuses>(&bbytes)
            .map(|_| String::new())
            .map_err(|e| e.to_string()),
    );
    let kept = |e: &str, d: &str| Some(e.contains(CUSTOM) && d.contains(CUSTOM));
    vec![
        ErrorText {
            codec: CODECS[0],
            kept: kept(&postcard_e, &postcard_d),
            encode: postcard_e,
            decode: postcard_d,
        },
        ErrorText {
            codec: CODECS[1],
            kept: kept(&bitcode_e, &bitcode_d),
            encode: bitcode_e,
            decode: bitcode_d,
        },
        ErrorText {
            codec: CODECS[2],
            kept: None,
            encode: "n/a: no serde support (own derive traits)".into(),
            decode: "n/a".into(),
        },
    ]
}

/// Runs the workload; `quick` shortens every repetition.
pub fn run(quick: bool) -> CodecReport {
    let (reps, budget) = if quick { (3, 0.03) } else { (7, 0.15) };
    let small = Small {
        id: 7,
        name: "sixteen chars!!!".into(),
        values: (0..8).map(|i| i * 1_000_003).collect(),
    };
    assert_eq!(small.name.len(), 16);
    let v1000: Vec<u64> = (0..1000u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20)
        .collect();
    let s1k: String = "abcdefghijklmnop".repeat(64);
    let mib: Vec<u8> = (0..1usize << 20).map(|i| (i * 31) as u8).collect();
    let mib_serde = ByteBuf::from(mib.clone());
    let rows = vec![
        row(
            "u64",
            &0x1234_5678_9abc_u64,
            &0x1234_5678_9abc_u64,
            reps,
            budget,
        ),
        row(
            "struct {u32, String(16), Vec<u64>(8)}",
            &small,
            &small,
            reps,
            budget,
        ),
        row("Vec<u64> (1000)", &v1000, &v1000, reps, budget),
        row("String (1 KiB)", &s1k, &s1k, reps, budget),
        row(
            "Vec<u8> (1 MiB, serde_bytes)",
            &mib_serde,
            &mib,
            reps,
            budget,
        ),
    ];
    CodecReport {
        rows,
        errors: error_texts(),
    }
}
