//! A linear layer that multiplies a few rows (one decoding step: one row per sequence)
//! with its own matrix-vector products instead of candle's matrix product.
//!
//! For one row, a product is bound by reading the weights, and candle's CPU matrix
//! product costs about 90 µs of overhead per call on Linux when `RAYON_NUM_THREADS` is
//! unset (it counts the physical cores from `/proc/cpuinfo` on every call): more than
//! the product itself for the decoder's 384 x 384 layers, and about 3.6 ms of every
//! decoding step of tiny.en. Many rows (a prompt, the audio's keys and values) still go
//! through candle.

use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

/// At most this many rows take the matrix-vector path.
const FEW_ROWS: usize = 8;

/// Output features per parallel task.
const BLOCK: usize = 64;

/// A linear layer (`x W^T + b`) with a fast path for a few rows.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    linear: Linear,
    /// The weights, `outputs` rows of `inputs`.
    weight: Arc<Vec<f32>>,
    bias: Option<Arc<Vec<f32>>>,
    inputs: usize,
    outputs: usize,
}

impl Dense {
    /// Wraps `linear` (its weight `(outputs, inputs)`).
    pub(crate) fn new(linear: Linear) -> candle_core::Result<Self> {
        let (outputs, inputs) = linear.weight().dims2()?;
        let weight = Arc::new(linear.weight().flatten_all()?.to_vec1::<f32>()?);
        let bias = linear
            .bias()
            .map(|b| b.to_vec1::<f32>().map(Arc::new))
            .transpose()?;
        Ok(Self {
            linear,
            weight,
            bias,
            inputs,
            outputs,
        })
    }

    /// `x W^T + b` over the last dimension of `x`.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let rows = x.elem_count() / self.inputs;
        if rows > FEW_ROWS {
            return self.linear.forward(x);
        }
        let out = self.rows(&x.flatten_all()?.to_vec1::<f32>()?);
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("x has dimensions") = self.outputs;
        Tensor::from_vec(out, shape, x.device())
    }

    /// `x W^T + b` of each row of `x` (rows of `inputs`).
    pub(crate) fn rows(&self, x: &[f32]) -> Vec<f32> {
        rows_times(
            x,
            x.len() / self.inputs,
            &self.weight,
            self.inputs,
            self.bias.as_deref().map(Vec::as_slice),
        )
    }
}

/// `rows` rows of `x` (each `inputs` long) times the transpose of `weight` (rows of
/// `inputs`), plus `bias`: `rows` rows of `weight.len() / inputs` outputs.
pub(crate) fn rows_times(
    x: &[f32],
    rows: usize,
    weight: &[f32],
    inputs: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let outputs = weight.len() / inputs;
    // Computed feature-major (each task owns whole features), then transposed.
    let mut by_feature = vec![0.0f32; outputs * rows];
    by_feature
        .par_chunks_mut(BLOCK * rows)
        .zip(weight.par_chunks(BLOCK * inputs))
        .for_each(|(out, w)| {
            for (feature, w_row) in w.chunks_exact(inputs).enumerate() {
                for r in 0..rows {
                    out[feature * rows + r] = dot(w_row, &x[r * inputs..(r + 1) * inputs]);
                }
            }
        });
    let mut out = vec![0.0f32; rows * outputs];
    for (f, values) in by_feature.chunks_exact(rows).enumerate() {
        let b = bias.map_or(0.0, |b| b[f]);
        for (r, &v) in values.iter().enumerate() {
            out[r * outputs + f] = v + b;
        }
    }
    out
}

/// Dot product with eight independent sums (so the compiler can vectorise it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for k in 0..8 {
            sums[k] += x[k] * y[k];
        }
    }
    sums.iter().sum::<f32>() + tail
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    /// The largest absolute difference between two tensors of one shape (test comparisons
    /// of our kernels with candle's).
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn few_rows_match_candles_product() {
        let (outputs, inputs) = (130, 37);
        let w: Vec<f32> = (0..outputs * inputs)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..outputs).map(|i| i as f32 / 10.0).collect();
        let linear = Linear::new(
            Tensor::from_vec(w, (outputs, inputs), &Device::Cpu).unwrap(),
            Some(Tensor::from_vec(b, outputs, &Device::Cpu).unwrap()),
        );
        let dense = Dense::new(linear.clone()).unwrap();
        for rows in [1, 3, 8, 9] {
            let x: Vec<f32> = (0..rows * inputs)
                .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
                .collect();
            let x = Tensor::from_vec(x, (1, rows, inputs), &Device::Cpu).unwrap();
            let ours = dense.forward(&x).unwrap();
            assert_eq!(ours.dims(), &[1, rows, outputs]);
            let theirs = linear.forward(&x).unwrap();
            let diff = max_abs_diff(&ours, &theirs);
            assert!(diff < 1e-4, "{rows} rows: {diff}");
        }
    }
}
