//! A layer norm usable on candle tensors and on plain rows (the decoder's
//! single-position steps run without candle).

use candle_core::{Module, Tensor};
use candle_nn::LayerNorm;

/// Whisper's layer norm epsilon.
const EPSILON: f32 = 1e-5;

/// A layer norm with its weights also kept as plain vectors.
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    norm: LayerNorm,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Norm {
    /// Wraps `norm` (which must have a bias).
    pub(crate) fn new(norm: LayerNorm) -> candle_core::Result<Self> {
        let gamma = norm.weight().to_vec1::<f32>()?;
        let beta = match norm.bias() {
            Some(b) => b.to_vec1::<f32>()?,
            None => vec![0.0; gamma.len()],
        };
        Ok(Self { norm, gamma, beta })
    }

    /// The norm over the last dimension of `x`.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.norm.forward(x)
    }

    /// The norm of each row of `x` (rows as long as the weights).
    pub(crate) fn rows(&self, x: &[f32]) -> Vec<f32> {
        let d = self.gamma.len();
        let mut out = vec![0f32; x.len()];
        for (o, row) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + EPSILON).sqrt();
            for (((o, &v), &g), &b) in o.iter_mut().zip(row).zip(&self.gamma).zip(&self.beta) {
                *o = (v - mean) * inv * g + b;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rows_match_candles_layer_norm() {
        let d = 24;
        let gamma: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 / 10.0).collect();
        let beta: Vec<f32> = (0..d).map(|i| i as f32 / 7.0 - 1.0).collect();
        let norm = Norm::new(LayerNorm::new(
            Tensor::new(gamma.as_slice(), &Device::Cpu).unwrap(),
            Tensor::new(beta.as_slice(), &Device::Cpu).unwrap(),
            1e-5,
        ))
        .unwrap();
        let x: Vec<f32> = (0..3 * d).map(|i| ((i * 37) % 23) as f32 - 9.0).collect();
        let theirs = norm
            .forward(&Tensor::from_vec(x.clone(), (3, d), &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in norm.rows(&x).iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
