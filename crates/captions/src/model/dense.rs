//! A linear layer that multiplies a few rows (one decoding step: one row per sequence)
//! with its own matrix-vector products instead of candle's matrix product.
//!
//! For one row, a product is bound by reading the weights, and candle's CPU matrix
//! product costs about 90 µs of overhead per call on Linux when `RAYON_NUM_THREADS` is
//! unset (it counts the physical cores from `/proc/cpuinfo` on every call): more than
//! the product itself for the decoder's 384 x 384 layers, and about 3.6 ms of every
//! decoding step of tiny.en. Many rows (a prompt, the audio's keys and values) still go
//! through candle. The few-row path reads the weights as float16 when they are
//! ([`Matrix`]).

use candle_core::{Module, Tensor};
use candle_nn::Linear;

use super::matrix::Matrix;

/// At most this many rows take the matrix-vector path.
const FEW_ROWS: usize = 8;

/// A linear layer (`x W^T + b`) with a fast path for a few rows.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    linear: Linear,
    /// The weights, `outputs` rows of `inputs` (float16 when exact).
    weight: Matrix,
    bias: Option<Vec<f32>>,
}

impl Dense {
    /// Wraps `linear` (its weight `(outputs, inputs)`).
    pub(crate) fn new(linear: Linear) -> candle_core::Result<Self> {
        let (_, inputs) = linear.weight().dims2()?;
        let weight = Matrix::new(linear.weight().flatten_all()?.to_vec1::<f32>()?, inputs);
        let bias = linear.bias().map(|b| b.to_vec1::<f32>()).transpose()?;
        Ok(Self {
            linear,
            weight,
            bias,
        })
    }

    /// `x W^T + b` over the last dimension of `x`.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let rows = x.elem_count() / self.weight.inputs();
        if rows > FEW_ROWS {
            return self.linear.forward(x);
        }
        let out = self.rows(&x.flatten_all()?.to_vec1::<f32>()?);
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("x has dimensions") = self.weight.outputs();
        Tensor::from_vec(out, shape, x.device())
    }

    /// `x W^T + b` of each row of `x` (rows of `inputs`).
    pub(crate) fn rows(&self, x: &[f32]) -> Vec<f32> {
        self.weight.times(x, self.bias.as_deref())
    }
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
