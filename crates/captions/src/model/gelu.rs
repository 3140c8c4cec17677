//! GELU (tanh form, as candle's `gelu`) with a rational tanh that the compiler
//! vectorises, spread over rayon's threads.
//!
//! candle computes it one element at a time with the C library's `tanhf` on one
//! thread: about a tenth of a tiny.en window's encoding (11 M values per window).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::simd::vectorized;

/// Values per parallel task.
const CHUNK: usize = 16 * 1024;

/// `sqrt(2 / pi)`.
const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;

/// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))` of every element of `x` (f32).
pub(crate) fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Gelu)
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fast-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(values) = storage else {
            return Err(candle_core::Error::Msg("fast-gelu takes f32".into()));
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(candle_core::Error::Msg(
                "fast-gelu takes contiguous tensors".into(),
            ));
        };
        let input = &values[start..end];
        let mut out = vec![0f32; input.len()];
        out.par_chunks_mut(CHUNK)
            .zip(input.par_chunks(CHUNK))
            .for_each(|(o, i)| gelu_slice(i, o));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// GELU of `input` into `out` (same lengths).
pub(crate) fn gelu_slice(input: &[f32], out: &mut [f32]) {
    vectorized(
        #[inline(always)]
        || gelu_kernel(input, out),
    );
}

#[inline(always)]
fn gelu_kernel(input: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(input) {
        *o = gelu_of(x);
    }
}

/// GELU of every value in place (inlined into the caller's vectorised kernel).
#[inline(always)]
pub(crate) fn gelu_in_place(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = gelu_of(*v);
    }
}

#[inline(always)]
fn gelu_of(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(SQRT_TWO_OVER_PI * x * (1.0 + 0.044715 * x * x)))
}

/// tanh as a ratio of odd and even polynomials on [-7.9, 7.9] (beyond, within 3e-7
/// of ±1), within a few ulp of `f32::tanh` (Eigen's float approximation).
#[inline(always)]
fn tanh(x: f32) -> f32 {
    // Plain products and sums: `mul_add` is a library call without FMA enabled.
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16f32;
    for c in [
        2.000_188e-13,
        -8.604_672e-11,
        5.122_297e-8,
        1.485_722_4e-5,
        6.372_619_3e-4,
        4.893_524_6e-3,
    ] {
        p = p * x2 + c;
    }
    let mut q = 1.198_258_4e-6f32;
    for c in [1.185_347e-4, 2.268_434_6e-3, 4.893_525e-3] {
        q = q * x2 + c;
    }
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: f32) -> f32 {
        0.5 * x * (1.0 + (SQRT_TWO_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
    }

    #[test]
    fn matches_candles_gelu_within_float_error() {
        let xs: Vec<f32> = (-200_000..200_000).map(|i| i as f32 / 10_000.0).collect();
        let mut ours = vec![0f32; xs.len()];
        gelu_slice(&xs, &mut ours);
        for (&x, &y) in xs.iter().zip(&ours) {
            let want = reference(x);
            assert!(
                (y - want).abs() <= 2e-6 * x.abs().max(1.0),
                "gelu({x}) = {y}, expected {want}"
            );
        }
        let t = Tensor::new(&[[-3.0f32, -0.5], [0.0, 2.5]], &candle_core::Device::Cpu).unwrap();
        let diff = crate::model::dense::tests::max_abs_diff(&gelu(&t).unwrap(), &t.gelu().unwrap());
        assert!(diff < 1e-6, "{diff}");
    }
}
