//! Whisper's audio encoder, run straight from CTranslate2's fused weights.
//!
//! Two convolutions (GELU after each), sinusoidal position encodings, then
//! pre-norm transformer layers. Each layer's query, key and value come from one fused
//! product (the query rows pre-scaled by `1 / sqrt(head_dim)` at load), and attention
//! runs over blocks of query rows, so the scores of a block (all heads) stay a few MB
//! instead of one `(heads, frames, frames)` matrix of 54 MB per layer. Biases, GELU and
//! the residual sums are done in place on the products' outputs ([`super::inplace`]).

use candle_core::{Module, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, LayerNorm, Linear};

use super::ModelError;
use super::ct2::Ct2File;
use super::inplace::{add_bias, add_residual};
use super::softmax::softmax_last_dim_in_place;
use super::weights::{layer_norm, linear};

/// Query rows per attention block: the scores of a block of tiny.en (6 heads, 1500
/// frames) are 9 MB, under the allocator's reuse limit (32 MB), so no block pays fresh
/// page faults.
const QUERY_BLOCK: usize = 256;

/// The encoder's weights.
#[derive(Debug, Clone)]
pub struct AudioEncoder {
    /// The convolutions without their biases (added in place).
    conv1: Conv1d,
    conv1_bias: Vec<f32>,
    conv2: Conv1d,
    conv2_bias: Vec<f32>,
    positions: Tensor,
    layers: Vec<EncoderLayer>,
    norm: LayerNorm,
    heads: usize,
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    attention_norm: LayerNorm,
    /// Query (pre-scaled), key and value projections in one.
    qkv: Projection,
    out: Projection,
    ffn_norm: LayerNorm,
    ffn_in: Projection,
    ffn_out: Projection,
}

/// A linear layer whose bias is added by the caller, in place.
#[derive(Debug, Clone)]
struct Projection {
    /// `(outputs, inputs)`.
    weight: Tensor,
    /// One value per output (zeros when the file has none).
    bias: Vec<f32>,
}

impl Projection {
    fn new(linear: Linear) -> candle_core::Result<Self> {
        let outputs = linear.weight().dim(0)?;
        let bias = match linear.bias() {
            Some(b) => b.to_vec1::<f32>()?,
            None => vec![0.0; outputs],
        };
        Ok(Self {
            weight: linear.weight().clone(),
            bias,
        })
    }

    /// `x W^T` of `x` `(1, rows, inputs)`, without the bias.
    fn product(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, rows, inputs) = x.dims3()?;
        x.reshape((b * rows, inputs))?
            .matmul(&self.weight.t()?)?
            .reshape((b, rows, ()))
    }
}

impl AudioEncoder {
    /// Loads the encoder of a CTranslate2 Whisper spec with `heads` attention heads.
    pub(crate) fn load(file: &Ct2File, layers: usize, heads: usize) -> Result<Self, ModelError> {
        let conv = |name: &str, stride: usize| -> Result<(Conv1d, Vec<f32>), ModelError> {
            let config = Conv1dConfig {
                padding: 1,
                stride,
                ..Conv1dConfig::default()
            };
            let l = linear(file, &format!("encoder/{name}"))?;
            let channels = l.weight().dim(0)?;
            let bias = match l.bias() {
                Some(b) => b.to_vec1::<f32>()?,
                None => vec![0.0; channels],
            };
            Ok((Conv1d::new(l.weight().clone(), None, config), bias))
        };
        let project = |name: &str| -> Result<Projection, ModelError> {
            Ok(Projection::new(linear(file, name)?)?)
        };
        let layers = (0..layers)
            .map(|i| {
                let p = format!("encoder/layer_{i}");
                let qkv = linear(file, &format!("{p}/self_attention/linear_0"))?;
                Ok(EncoderLayer {
                    attention_norm: layer_norm(file, &format!("{p}/self_attention/layer_norm"))?,
                    qkv: Projection::new(scale_queries(qkv, heads)?)?,
                    out: project(&format!("{p}/self_attention/linear_1"))?,
                    ffn_norm: layer_norm(file, &format!("{p}/ffn/layer_norm"))?,
                    ffn_in: project(&format!("{p}/ffn/linear_0"))?,
                    ffn_out: project(&format!("{p}/ffn/linear_1"))?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let ((conv1, conv1_bias), (conv2, conv2_bias)) = (conv("conv1", 1)?, conv("conv2", 2)?);
        let encoder = Self {
            conv1,
            conv1_bias,
            conv2,
            conv2_bias,
            positions: sinusoids(&file.get("encoder/position_encodings/encodings")?.shape)?,
            norm: layer_norm(file, "encoder/layer_norm")?,
            layers,
            heads,
        };
        encoder.check_shapes()?;
        Ok(encoder)
    }

    /// Refuses weights whose shapes do not chain (a damaged file would otherwise fail
    /// at the first window, not at load).
    fn check_shapes(&self) -> Result<(), ModelError> {
        let d = self.positions.dim(1)?;
        let mels = self.conv1.weight().dims().get(1).copied().unwrap_or(0);
        let mut expected: Vec<(&str, &Tensor, Vec<usize>)> = vec![
            (
                "encoder/conv1/weight",
                self.conv1.weight(),
                vec![d, mels, 3],
            ),
            ("encoder/conv2/weight", self.conv2.weight(), vec![d, d, 3]),
            ("encoder/layer_norm/gamma", self.norm.weight(), vec![d]),
        ];
        for l in &self.layers {
            let ffn = l.ffn_in.weight.dim(0)?;
            expected.extend([
                (
                    "an encoder attention layer_norm",
                    l.attention_norm.weight(),
                    vec![d],
                ),
                ("an encoder ffn layer_norm", l.ffn_norm.weight(), vec![d]),
                (
                    "an encoder attention linear_0",
                    &l.qkv.weight,
                    vec![3 * d, d],
                ),
                ("an encoder attention linear_1", &l.out.weight, vec![d, d]),
                ("an encoder ffn linear_0", &l.ffn_in.weight, vec![ffn, d]),
                ("an encoder ffn linear_1", &l.ffn_out.weight, vec![d, ffn]),
            ]);
        }
        for (name, t, dims) in expected {
            if t.dims() != dims.as_slice() {
                return Err(ModelError::Format(format!(
                    "{name} has shape {:?}, expected {dims:?}",
                    t.dims()
                )));
            }
        }
        Ok(())
    }

    /// Encodes a log-mel window `(1, mels, frames)` into `(1, frames / 2, d_model)`.
    pub fn forward(&self, mel: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.conv1.forward(mel)?;
        add_bias(&x, &self.conv1_bias, true, true)?;
        let x = self.conv2.forward(&x)?;
        add_bias(&x, &self.conv2_bias, true, true)?;
        let (_, _, frames) = x.dims3()?;
        // A fresh tensor, so the in-place sums below change nothing else.
        let x = x
            .transpose(1, 2)?
            .broadcast_add(&self.positions.narrow(0, 0, frames)?)?;
        for layer in &self.layers {
            let attended = self.attention(layer, &layer.attention_norm.forward(&x)?)?;
            add_residual(&x, &layer.out.product(&attended)?, &layer.out.bias)?;
            let hidden = layer.ffn_in.product(&layer.ffn_norm.forward(&x)?)?;
            add_bias(&hidden, &layer.ffn_in.bias, false, true)?;
            add_residual(&x, &layer.ffn_out.product(&hidden)?, &layer.ffn_out.bias)?;
        }
        self.norm.forward(&x)
    }

    /// Self-attention of normalised `x` (`(1, frames, d_model)`), before the output
    /// projection.
    fn attention(&self, layer: &EncoderLayer, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, frames, d) = x.dims3()?;
        let (h, hd) = (self.heads, d / self.heads);
        // (3, heads, frames, head_dim): queries, keys, values, each head contiguous.
        let qkv = layer.qkv.product(x)?;
        add_bias(&qkv, &layer.qkv.bias, false, false)?;
        let qkv = qkv
            .reshape((frames, 3, h, hd))?
            .permute((1, 2, 0, 3))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let keys = k.t()?;
        let blocks = (0..frames)
            .step_by(QUERY_BLOCK)
            .map(|start| {
                let rows = QUERY_BLOCK.min(frames - start);
                let scores = q.narrow(1, start, rows)?.matmul(&keys)?;
                softmax_last_dim_in_place(&scores)?;
                scores.matmul(&v)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        // (heads, frames, head_dim) to (1, frames, heads * head_dim).
        Tensor::cat(&blocks, 1)?
            .transpose(0, 1)?
            .reshape((1, frames, d))
    }
}

/// `qkv` (query, key and value rows stacked) with the query rows and bias scaled by
/// `1 / sqrt(head_dim)`: the attention's scaling, done once at load.
fn scale_queries(qkv: Linear, heads: usize) -> Result<Linear, ModelError> {
    let (rows, d) = qkv.weight().dims2()?;
    if rows != 3 * d || !d.is_multiple_of(heads) {
        return Err(ModelError::Format(format!(
            "an encoder attention projection has shape [{rows}, {d}], expected [{}, {d}]",
            3 * d
        )));
    }
    let scale = 1.0 / ((d / heads) as f64).sqrt();
    let factors = Tensor::cat(
        &[
            Tensor::full(scale as f32, d, qkv.weight().device())?,
            Tensor::ones(2 * d, candle_core::DType::F32, qkv.weight().device())?,
        ],
        0,
    )?;
    let weight = qkv.weight().broadcast_mul(&factors.unsqueeze(1)?)?;
    let bias = qkv.bias().map(|b| b.mul(&factors)).transpose()?;
    Ok(Linear::new(weight, bias))
}

/// The sinusoidal position encodings of a stored table's `shape` (`[positions,
/// d_model]`), computed in f32 (the file stores them as float16).
fn sinusoids(shape: &[usize]) -> Result<Tensor, ModelError> {
    let &[length, channels] = shape else {
        return Err(ModelError::Format(format!(
            "encoder/position_encodings/encodings has shape {shape:?}, expected rank 2"
        )));
    };
    let half = channels / 2;
    let increment = 10000f32.ln() / (half.max(2) - 1) as f32;
    let inverse: Vec<f32> = (0..half).map(|i| (i as f32 * -increment).exp()).collect();
    let values: Vec<f32> = (0..length)
        .flat_map(|t| {
            let scaled: Vec<f32> = inverse.iter().map(|&inv| t as f32 * inv).collect();
            let sines: Vec<f32> = scaled.iter().map(|s| s.sin()).collect();
            sines
                .into_iter()
                .chain(scaled.into_iter().map(f32::cos))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Tensor::from_vec(
        values,
        (length, 2 * half),
        &candle_core::Device::Cpu,
    )?)
}
