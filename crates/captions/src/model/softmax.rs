//! Softmax with an exponential the compiler vectorises, in place and spread over
//! rayon's threads: the encoder's attention takes 54 M exponentials per window, which
//! candle's softmax computes one at a time with the C library's `expf` into a fresh
//! buffer.

use candle_core::{CpuStorage, InplaceOp1, Layout, Tensor};
use rayon::prelude::*;

use super::simd::vectorized;

/// `log2(e)`.
const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// `ln(2)` in two parts: a high part with few mantissa bits (so `n * LN2_HIGH` is exact
/// for the `n` that occur) and the rest.
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;

/// Below this, `exp` is 0 (the true value is under `f32`'s normal range).
const LOWEST: f32 = -87.3;

/// Above this, `exp` is clamped (the true value overflows near 88.72).
const HIGHEST: f32 = 88.3;

/// Adding and subtracting `1.5 * 2^23` rounds a float below `2^22` to an integer.
const ROUNDER: f32 = 12_582_912.0;

/// `e^x` within 2 ulp of `f32::exp` for `x` in `[LOWEST, HIGHEST]`, 0 below, written
/// with plain arithmetic (no library call) so loops over it vectorise.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let clamped = x.clamp(LOWEST, HIGHEST);
    // x = n ln 2 + r with |r| <= ln(2) / 2; e^x = 2^n e^r.
    let rounded = clamped * LOG2_E + ROUNDER;
    let n = rounded - ROUNDER;
    let r = clamped - n * LN2_HIGH - n * LN2_LOW;
    // Cephes' polynomial for e^r on that interval.
    let mut p = 1.987_569_1e-4f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = p * r + c;
    }
    let e_r = p * r * r + r + 1.0;
    // 2^n from the bits of `rounded` (1.5 * 2^23 + n): its low bits hold n, and the
    // shift drops the others. An integer cast would not vectorise (it saturates).
    let two_n = f32::from_bits(rounded.to_bits().wrapping_add(127) << 23);
    if x < LOWEST { 0.0 } else { e_r * two_n }
}

/// Softmax of `row` in place.
pub(crate) fn softmax(row: &mut [f32]) {
    vectorized(
        #[inline(always)]
        || softmax_kernel(row),
    );
}

#[inline(always)]
fn softmax_kernel(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for s in row.iter_mut() {
        *s = exp(*s - max);
    }
    let total = sum(row);
    let inverse = 1.0 / total;
    for s in row.iter_mut() {
        *s *= inverse;
    }
}

/// The sum of `e^(v - shift)` over `values`, vectorised.
pub(crate) fn sum_exp(values: &[f32], shift: f32) -> f32 {
    vectorized(
        #[inline(always)]
        || sum_exp_kernel(values, shift),
    )
}

#[inline(always)]
fn sum_exp_kernel(values: &[f32], shift: f32) -> f32 {
    let mut sums = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| exp(v - shift)).sum();
    for c in chunks {
        for k in 0..8 {
            sums[k] += exp(c[k] - shift);
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// The sum of `values` with eight independent partial sums (so it vectorises).
#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let mut sums = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for k in 0..8 {
            sums[k] += c[k];
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// Replaces `x` (f32, contiguous) by the softmax over its last dimension, rows spread
/// over rayon's threads.
pub(crate) fn softmax_last_dim_in_place(x: &Tensor) -> candle_core::Result<()> {
    x.inplace_op1(&SoftmaxInPlace)
}

struct SoftmaxInPlace;

impl InplaceOp1 for SoftmaxInPlace {
    fn name(&self) -> &'static str {
        "fast-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(values) = storage else {
            return Err(candle_core::Error::Msg("fast-softmax takes f32".into()));
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(candle_core::Error::Msg(
                "fast-softmax takes contiguous tensors".into(),
            ));
        };
        let width = layout.dims().last().copied().unwrap_or(1).max(1);
        values[start..end].par_chunks_mut(width).for_each(softmax);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_library() {
        for i in -873_000..=883_000 {
            let x = i as f32 / 10_000.0;
            let (ours, want) = (exp(x), x.exp());
            let ulp = f32::from_bits(want.to_bits() + 1) - want;
            assert!(
                (ours - want).abs() <= 2.0 * ulp,
                "exp({x}) = {ours}, expected {want}"
            );
        }
        assert_eq!(exp(-90.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn sum_exp_matches_the_plain_sum() {
        let values: Vec<f32> = (0..1003).map(|i| (i % 17) as f32 - 20.0).collect();
        let want: f64 = values.iter().map(|&v| f64::from(v + 3.0).exp()).sum();
        let ours = f64::from(sum_exp(&values, -3.0));
        assert!((ours - want).abs() < 1e-6 * want, "{ours} vs {want}");
    }

    #[test]
    fn softmax_in_place_matches_candles() {
        let values: Vec<f32> = (0..3 * 37)
            .map(|i| ((i * 7919) % 101) as f32 / 9.0 - 5.0)
            .collect();
        let x = Tensor::from_vec(values, (3, 37), &candle_core::Device::Cpu).unwrap();
        let theirs = candle_nn::ops::softmax_last_dim(&x).unwrap();
        softmax_last_dim_in_place(&x).unwrap();
        let diff = crate::model::dense::tests::max_abs_diff(&x, &theirs);
        assert!(diff < 1e-6, "{diff}");
    }
}
