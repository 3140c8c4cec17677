//! Whisper's text decoder, run straight from CTranslate2's fused weights, with a
//! key/value cache: each step feeds only the new tokens, self-attention keys and values
//! of earlier positions are kept, and the cross-attention keys and values of a window's
//! audio are computed once per window and shared by every sequence decoded against it.
//!
//! Several sequences (beam search hypotheses, or samples) are decoded as one batch.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::ModelError;
use super::ct2::Ct2File;
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
    self_qkv: Linear,
    self_out: Linear,
    cross_norm: LayerNorm,
    cross_query: Linear,
    /// Key and value projections of the audio in one.
    cross_kv: Linear,
    cross_out: Linear,
    ffn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
}

/// The decoding state of one window: the audio's cross-attention keys and values, and
/// the self-attention cache of each sequence in the batch.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    /// Per layer: keys transposed `(heads, head_dim, frames)` and values
    /// `(heads, frames, head_dim)`.
    cross: Vec<(Tensor, Tensor)>,
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
                Ok(DecoderLayer {
                    self_norm: layer_norm(file, &format!("{p}/self_attention/layer_norm"))?,
                    self_qkv: linear(file, &format!("{p}/self_attention/linear_0"))?,
                    self_out: linear(file, &format!("{p}/self_attention/linear_1"))?,
                    cross_norm: layer_norm(file, &format!("{p}/attention/layer_norm"))?,
                    cross_query: linear(file, &format!("{p}/attention/linear_0"))?,
                    cross_kv: linear(file, &format!("{p}/attention/linear_1"))?,
                    cross_out: linear(file, &format!("{p}/attention/linear_2"))?,
                    ffn_norm: layer_norm(file, &format!("{p}/ffn/layer_norm"))?,
                    ffn_in: linear(file, &format!("{p}/ffn/linear_0"))?,
                    ffn_out: linear(file, &format!("{p}/ffn/linear_1"))?,
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
        Ok(DecoderCache {
            cross,
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
            let q = (q.reshape((b * n, h, hd))?.transpose(0, 1)?.contiguous()? * scale)?;
            let (ck, cv) = &cache.cross[i];
            let scores = q.matmul(ck)?;
            for &(_, head) in capture.iter().filter(|(l, _)| *l == i) {
                captured.push(scores.get(head)?);
            }
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            let attended = weights.matmul(cv)?.transpose(0, 1)?.reshape((b, n, d))?;
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
        hidden.matmul(&self.embeddings.t()?)
    }

    /// Positions the decoder can attend to.
    pub fn max_positions(&self) -> usize {
        self.positions.dim(0).unwrap_or(0)
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
