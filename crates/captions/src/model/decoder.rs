//! Whisper's text decoder, run straight from CTranslate2's fused weights, with a
//! key/value cache: each step feeds only the new tokens, self-attention keys and values
//! of earlier positions are kept, and the cross-attention keys and values of a window's
//! audio are computed once per window and shared by every sequence decoded against it.
//!
//! Several sequences (beam search hypotheses, or samples) are decoded as one batch.

use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, Linear};
use rayon::prelude::*;

use super::ModelError;
use super::ct2::Ct2File;
use super::dense::Dense;
use super::weights::{layer_norm, linear, tensor};

/// The decoder's weights.
#[derive(Debug, Clone)]
pub struct TextDecoder {
    embeddings: Tensor,
    positions: Tensor,
    layers: Vec<DecoderLayer>,
    norm: LayerNorm,
    heads: usize,
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_norm: LayerNorm,
    /// Query, key and value projections in one (the key's bias is zero).
    self_qkv: Dense,
    self_out: Dense,
    cross_norm: LayerNorm,
    cross_query: Dense,
    /// Key and value projections of the audio in one.
    cross_kv: Linear,
    cross_out: Dense,
    ffn_norm: LayerNorm,
    ffn_in: Dense,
    ffn_out: Dense,
}

/// The decoding state of one window: the audio's cross-attention keys and values, and
/// the self-attention cache of each sequence in the batch.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    /// Per layer: keys transposed `(heads, head_dim, frames)` and values
    /// `(heads, frames, head_dim)`.
    cross: Vec<(Tensor, Tensor)>,
    /// The same keys and values as flat vectors, for single-position steps.
    cross_flat: Arc<Vec<(Vec<f32>, Vec<f32>)>>,
    /// Audio frames.
    frames: usize,
    /// Per layer: keys and values `(batch, heads, positions, head_dim)`.
    past: Vec<Option<(Tensor, Tensor)>>,
    /// Positions already fed.
    len: usize,
}

impl DecoderCache {
    /// Positions already fed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps, for each new batch row, the cache of row `rows[i]` (beam search reorders
    /// and duplicates hypotheses this way).
    pub fn select(&mut self, rows: &[u32]) -> candle_core::Result<()> {
        let Some(Some((k, _))) = self.past.first() else {
            return Ok(());
        };
        let index = Tensor::new(rows, k.device())?;
        for (k, v) in self.past.iter_mut().flatten() {
            *k = k.index_select(&index, 0)?;
            *v = v.index_select(&index, 0)?;
        }
        Ok(())
    }
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
                Ok(DecoderLayer {
                    self_norm: layer_norm(file, &format!("{p}/self_attention/layer_norm"))?,
                    self_qkv: dense("self_attention/linear_0")?,
                    self_out: dense("self_attention/linear_1")?,
                    cross_norm: layer_norm(file, &format!("{p}/attention/layer_norm"))?,
                    cross_query: dense("attention/linear_0")?,
                    cross_kv: linear(file, &format!("{p}/attention/linear_1"))?,
                    cross_out: dense("attention/linear_2")?,
                    ffn_norm: layer_norm(file, &format!("{p}/ffn/layer_norm"))?,
                    ffn_in: dense("ffn/linear_0")?,
                    ffn_out: dense("ffn/linear_1")?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Self {
            embeddings: tensor(file, "decoder/embeddings/weight")?,
            positions: tensor(file, "decoder/position_encodings/encodings")?,
            norm: layer_norm(file, "decoder/layer_norm")?,
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
            cross,
            cross_flat: Arc::new(cross_flat),
            frames,
            past: vec![None; self.layers.len()],
            len: 0,
        })
    }

    /// Feeds `tokens` (`(batch, n)`, the next `n` positions of every sequence) and
    /// returns the final hidden states `(batch, n, d_model)`. With `capture`, also the
    /// cross-attention logits (scaled, before the softmax) `(batch * n, frames)` of each listed (layer, head).
    pub fn forward(
        &self,
        tokens: &Tensor,
        cache: &mut DecoderCache,
        capture: &[(usize, usize)],
    ) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let (b, n) = tokens.dims2()?;
        let d = self.embeddings.dim(1)?;
        let (h, hd) = (self.heads, d / self.heads);
        let scale = 1.0 / (hd as f64).sqrt();
        let emb = self
            .embeddings
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((b, n, d))?;
        let mut x = emb.broadcast_add(&self.positions.narrow(0, cache.len, n)?)?;
        let mask = (n > 1)
            .then(|| causal_mask(n, cache.len, x.device()))
            .transpose()?;
        let mut captured = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            // Self-attention over the cache and the new positions.
            let qkv = layer.self_qkv.forward(&layer.self_norm.forward(&x)?)?;
            let heads = |t: Tensor| t.reshape((b, n, h, hd))?.transpose(1, 2)?.contiguous();
            let q = (heads(qkv.narrow(2, 0, d)?)? * scale)?;
            let mut k = heads(qkv.narrow(2, d, d)?)?;
            let mut v = heads(qkv.narrow(2, 2 * d, d)?)?;
            if let Some((pk, pv)) = &cache.past[i] {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            let mut scores = q.matmul(&k.t()?)?;
            if let Some(mask) = &mask {
                scores = scores.broadcast_add(mask)?;
            }
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            let attended = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
            cache.past[i] = Some((k, v));
            x = (x + layer.self_out.forward(&attended)?)?;

            // Cross-attention: every sequence's positions against the shared audio keys.
            let q = layer.cross_query.forward(&layer.cross_norm.forward(&x)?)?;
            let attended = if capture.is_empty() && b * n <= 8 {
                let (ck, cv) = &cache.cross_flat[i];
                let q = q.flatten_all()?.to_vec1::<f32>()?;
                let out = cross_attention(&q, ck, cv, h, hd, cache.frames, scale as f32);
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
                .forward(&layer.ffn_in.forward(&layer.ffn_norm.forward(&x)?)?.gelu()?)?;
            x = (x + ffn)?;
        }
        cache.len += n;
        Ok((self.norm.forward(&x)?, captured))
    }

    /// Logits `(rows, vocab)` of hidden states `(rows, d_model)`.
    pub fn logits(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        // The embeddings times the rows' transpose: for a few rows, candle's product
        // reads the (vocab x d_model) weights once this way, not once per row.
        self.embeddings.matmul(&hidden.t()?.contiguous()?)?.t()
    }

    /// Positions the decoder can attend to.
    pub fn max_positions(&self) -> usize {
        self.positions.dim(0).unwrap_or(0)
    }
}

/// Cross-attention of `q` (rows of `heads * head_dim`, already projected) over one
/// layer's audio keys `ck` (`(heads, head_dim, frames)`) and values `cv`
/// (`(heads, frames, head_dim)`): rows of `heads * head_dim`, heads side by side.
fn cross_attention(
    q: &[f32],
    ck: &[f32],
    cv: &[f32],
    heads: usize,
    head_dim: usize,
    frames: usize,
    scale: f32,
) -> Vec<f32> {
    let d = heads * head_dim;
    let rows = q.len() / d;
    let per_head: Vec<Vec<f32>> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let keys = &ck[h * head_dim * frames..(h + 1) * head_dim * frames];
            let values = &cv[h * frames * head_dim..(h + 1) * frames * head_dim];
            let mut out = vec![0.0f32; rows * head_dim];
            let mut scores = vec![0.0f32; frames];
            for r in 0..rows {
                let qh = &q[r * d + h * head_dim..r * d + (h + 1) * head_dim];
                scores.fill(0.0);
                for (&qd, key_row) in qh.iter().zip(keys.chunks_exact(frames)) {
                    let qd = qd * scale;
                    for (s, &k) in scores.iter_mut().zip(key_row) {
                        *s += qd * k;
                    }
                }
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0.0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    total += *s;
                }
                let o = &mut out[r * head_dim..(r + 1) * head_dim];
                for (&w, value) in scores.iter().zip(values.chunks_exact(head_dim)) {
                    let w = w / total;
                    for (acc, &v) in o.iter_mut().zip(value) {
                        *acc += w * v;
                    }
                }
            }
            out
        })
        .collect();
    let mut out = vec![0.0f32; rows * d];
    for (h, values) in per_head.iter().enumerate() {
        for r in 0..rows {
            out[r * d + h * head_dim..r * d + (h + 1) * head_dim]
                .copy_from_slice(&values[r * head_dim..(r + 1) * head_dim]);
        }
    }
    out
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
