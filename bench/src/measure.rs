//! Timing and statistics shared by every implementation of every workload.
//!
//! A sample is always **seconds per operation** (one round trip, one process start, one
//! 1 MiB message...), whatever unit the table later shows; ratios are ratios of times.

use std::time::Instant;

/// Runs `warmup` once, then `once` `reps` times; each call returns seconds per operation.
pub fn reps<W>(reps: usize, warmup: impl FnOnce() -> W, mut once: impl FnMut() -> f64) -> Vec<f64> {
    let _ = warmup();
    (0..reps).map(|_| once()).collect()
}

/// The common shape: `round(k)` does k operations. Warms up with `warm` operations, then
/// times `reps` rounds of `n`.
pub fn rounds(reps: usize, warm: u64, n: u64, mut round: impl FnMut(u64)) -> Vec<f64> {
    round(warm);
    (0..reps).map(|_| per_op(n, || round(n))).collect()
}

/// Seconds per operation for `n` operations done by `body`.
pub fn per_op(n: u64, body: impl FnOnce()) -> f64 {
    let t = Instant::now();
    body();
    t.elapsed().as_secs_f64() / n.max(1) as f64
}

/// The median of `v` (the mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Smallest and largest sample.
pub fn min_max(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn min_max_and_rounds() {
        assert_eq!(min_max(&[2.0, -1.0, 5.0]), (-1.0, 5.0));
        let mut ops = Vec::new();
        let v = rounds(3, 7, 11, |k| ops.push(k));
        assert_eq!(v.len(), 3);
        assert_eq!(ops, vec![7, 11, 11, 11]);
        assert!(v.iter().all(|&s| s >= 0.0));
    }
}
