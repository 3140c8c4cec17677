//! Whisper's text decoder, run straight from CTranslate2's fused weights, with a
//! key/value cache: each step feeds only the new tokens, self-attention keys and values
//! of earlier positions are kept, and the cross-attention keys and values of a window's
//! audio are computed once per window and shared by every sequence decoded against it.
//!
//! Several sequences (beam search hypotheses, or samples) are decoded as one batch.
//! Single-position steps (one token per sequence) run on plain vectors (`step`);
//! prompts and alignment passes, with many positions, on candle.

mod attention;
mod cache;
mod step;

use std::sync::Arc;

use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;

use super::ModelError;
use super::ct2::Ct2File;
use super::dense::Dense;
use super::gelu::gelu;
use super::matrix::Matrix;
use super::norm::Norm;
use super::weights::{layer_norm, linear, tensor};
pub use cache::DecoderCache;

/// The decoder's weights.
#[derive(Debug, Clone)]
pub struct TextDecoder {
    /// Token embeddings, `vocab` rows of `d_model` (also the output projection).
    embeddings: Arc<Matrix>,
    /// Position embeddings, `max_positions` rows of `d_model`.
    positions: Arc<Vec<f32>>,
    d_model: usize,
    layers: Vec<DecoderLayer>,
    norm: Norm,
    heads: usize,
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_norm: Norm,
    /// Query, key and value projections in one (the key's bias is zero).
    self_qkv: Dense,
    self_out: Dense,
    cross_norm: Norm,
    cross_query: Dense,
    /// Key and value projections of the audio in one.
    cross_kv: Linear,
    cross_out: Dense,
    ffn_norm: Norm,
    ffn_in: Dense,
    ffn_out: Dense,
}

impl TextDecoder {
    /// Loads the decoder of a CTranslate2 Whisper spec.
    pub(crate) fn load(file: &Ct2File, layers: usize, heads: usize) -> Result<Self, ModelError> {
        let layers = (0..layers)
            .map(|i| {
                let p = format!("decoder/layer_{i}");
                let dense = |name: &str| -> Result<Dense, ModelError> {
                    Ok(Dense::new(linear(file, &format!("{p}/{name}"))?)?)
                };
                let norm = |name: &str| -> Result<Norm, ModelError> {
                    Ok(Norm::new(layer_norm(file, &format!("{p}/{name}"))?)?)
                };
                Ok(DecoderLayer {
                    self_norm: norm("self_attention/layer_norm")?,
                    self_qkv: dense("self_attention/linear_0")?,
                    self_out: dense("self_attention/linear_1")?,
                    cross_norm: norm("attention/layer_norm")?,
                    cross_query: dense("attention/linear_0")?,
                    cross_kv: linear(file, &format!("{p}/attention/linear_1"))?,
                    cross_out: dense("attention/linear_2")?,
                    ffn_norm: norm("ffn/layer_norm")?,
                    ffn_in: dense("ffn/linear_0")?,
                    ffn_out: dense("ffn/linear_1")?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let embeddings = tensor(file, "decoder/embeddings/weight")?;
        let positions = tensor(file, "decoder/position_encodings/encodings")?;
        let (_, d_model) = embeddings.dims2()?;
        if d_model == 0 || !d_model.is_multiple_of(heads) || positions.dims2()?.1 != d_model {
            return Err(ModelError::Format(format!(
                "decoder/position_encodings/encodings has shape {:?}, expected [_, {d_model}]",
                positions.dims()
            )));
        }
        Ok(Self {
            embeddings: Arc::new(Matrix::new(embeddings.flatten_all()?.to_vec1()?, d_model)),
            positions: Arc::new(positions.flatten_all()?.to_vec1()?),
            d_model,
            norm: Norm::new(layer_norm(file, "decoder/layer_norm")?)?,
            layers,
            heads,
        })
    }

    /// A fresh cache for the encoded audio `features` (`(1, frames, d_model)`).
    pub fn cache(&self, features: &Tensor) -> candle_core::Result<DecoderCache> {
        let (_, frames, d) = features.dims3()?;
        let (h, hd) = (self.heads, d / self.heads);
        let cross = self
            .layers
            .iter()
            .map(|l| {
                let kv = l.cross_kv.forward(features)?;
                let k = kv.narrow(2, 0, d)?.reshape((frames, h, hd))?;
                let v = kv.narrow(2, d, d)?.reshape((frames, h, hd))?;
                Ok((
                    k.permute((1, 2, 0))?.contiguous()?,
                    v.transpose(0, 1)?.contiguous()?,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let cross_flat = cross
            .iter()
            .map(|(k, v)| Ok((k.flatten_all()?.to_vec1()?, v.flatten_all()?.to_vec1()?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(DecoderCache {
            cross: Arc::new(cross),
            cross_flat: Arc::new(cross_flat),
            frames,
            past: vec![Vec::new(); self.layers.len()],
            len: 0,
        })
    }

    /// Feeds `tokens` (`(batch, n)`, the next `n` positions of every sequence) and
    /// returns the final hidden states `(batch, n, d_model)`. With `capture`, also the
    /// cross-attention logits (scaled, before the softmax) `(batch * n, frames)` of each
    /// listed (layer, head).
    pub fn forward(
        &self,
        tokens: &Tensor,
        cache: &mut DecoderCache,
        capture: &[(usize, usize)],
    ) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let (b, n) = tokens.dims2()?;
        let ids = tokens.flatten_all()?.to_vec1::<u32>()?;
        if cache.len + n > self.max_positions() {
            return Err(candle_core::Error::Msg(format!(
                "{} positions exceed the decoder's {}",
                cache.len + n,
                self.max_positions()
            )));
        }
        if n == 1 && capture.is_empty() {
            let hidden = self.step(&ids, cache)?;
            return Ok((
                Tensor::from_vec(hidden, (b, 1, self.d_model), &Device::Cpu)?,
                Vec::new(),
            ));
        }
        let d = self.d_model;
        let (h, hd) = (self.heads, d / self.heads);
        let scale = 1.0 / (hd as f64).sqrt();
        let mut x = Vec::with_capacity(b * n * d);
        for (i, &id) in ids.iter().enumerate() {
            x.extend(self.input_row(id, cache.len + i % n)?);
        }
        let mut x = Tensor::from_vec(x, (b, n, d), &Device::Cpu)?;
        let mask = (n > 1)
            .then(|| causal_mask(n, cache.len, x.device()))
            .transpose()?;
        let mut captured = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            // Self-attention over the cache and the new positions.
            let qkv = layer.self_qkv.forward(&layer.self_norm.forward(&x)?)?;
            let heads = |t: Tensor| t.reshape((b, n, h, hd))?.transpose(1, 2)?.contiguous();
            let q = (heads(qkv.narrow(2, 0, d)?)? * scale)?;
            let flat = |t: Tensor| t.contiguous()?.flatten_all()?.to_vec1::<f32>();
            let (new_k, new_v) = (flat(qkv.narrow(2, d, d)?)?, flat(qkv.narrow(2, 2 * d, d)?)?);
            cache.append(i, b, &new_k, &new_v)?;
            let (k, v) = cache.past_tensors(i, h, d)?;
            let mut scores = q.matmul(&k.t()?)?;
            if let Some(mask) = &mask {
                scores = scores.broadcast_add(mask)?;
            }
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            let attended = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
            x = (x + layer.self_out.forward(&attended)?)?;

            // Cross-attention: every sequence's positions against the shared audio keys.
            let q = layer.cross_query.forward(&layer.cross_norm.forward(&x)?)?;
            let attended = if capture.is_empty() && b * n <= 8 {
                let (ck, cv) = &cache.cross_flat[i];
                let q = q.flatten_all()?.to_vec1::<f32>()?;
                let out = attention::cross_attention(&q, ck, cv, h, hd, cache.frames, scale as f32);
                Tensor::from_vec(out, (b, n, d), x.device())?
            } else {
                let q = (q.reshape((b * n, h, hd))?.transpose(0, 1)?.contiguous()? * scale)?;
                let (ck, cv) = &cache.cross[i];
                let scores = q.matmul(ck)?;
                for &(_, head) in capture.iter().filter(|(l, _)| *l == i) {
                    captured.push(scores.get(head)?);
                }
                let weights = candle_nn::ops::softmax_last_dim(&scores)?;
                weights.matmul(cv)?.transpose(0, 1)?.reshape((b, n, d))?
            };
            x = (x + layer.cross_out.forward(&attended)?)?;

            let ffn = layer
                .ffn_out
                .forward(&gelu(&layer.ffn_in.forward(&layer.ffn_norm.forward(&x)?)?)?)?;
            x = (x + ffn)?;
        }
        cache.len += n;
        Ok((self.norm.forward(&x)?, captured))
    }

    /// The input of token `id` at `position`: its embedding plus the position's.
    fn input_row(&self, id: u32, position: usize) -> candle_core::Result<Vec<f32>> {
        let d = self.d_model;
        let id = id as usize;
        let Some(token) = self.embeddings.row(id) else {
            return Err(candle_core::Error::Msg(format!(
                "token {id} is not in the vocabulary"
            )));
        };
        let at = &self.positions[position * d..(position + 1) * d];
        Ok(token.iter().zip(at).map(|(t, p)| t + p).collect())
    }

    /// Logits, one vector per row of `hidden` (`(rows, d_model)`, or any shape whose
    /// last dimension is `d_model`): the hidden states times the token embeddings.
    pub fn logits(&self, hidden: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows = hidden.flatten_all()?.to_vec1::<f32>()?;
        self.logits_of(&rows)
    }

    /// Positions the decoder can attend to.
    pub fn max_positions(&self) -> usize {
        self.positions.len() / self.d_model
    }
}

/// `(n, past + n)`: zero where new position `i` may see position `j`, minus infinity
/// where `j` is after it.
fn causal_mask(n: usize, past: usize, device: &candle_core::Device) -> candle_core::Result<Tensor> {
    let values: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..past + n).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
        })
        .collect();
    Tensor::from_vec(values, (n, past + n), device)
}
