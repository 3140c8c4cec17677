//! One position per sequence on plain vectors: the decoding loop's steps, where
//! candle's cost per operation (allocation, dispatch, thread hand-off) would exceed
//! the arithmetic of a few rows; and the output projection onto the vocabulary.

use super::attention::{cross_attention, self_attention};
use super::{DecoderCache, TextDecoder};
use crate::model::gelu::gelu_slice;

impl TextDecoder {
    /// Feeds one token per sequence (`tokens`, one per batch row) and returns the
    /// final hidden states, rows of `d_model`.
    pub(super) fn step(
        &self,
        tokens: &[u32],
        cache: &mut DecoderCache,
    ) -> candle_core::Result<Vec<f32>> {
        let (b, d) = (tokens.len(), self.d_model);
        let (h, hd) = (self.heads, d / self.heads);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut x = Vec::with_capacity(b * d);
        for &id in tokens {
            x.extend(self.input_row(id, cache.len)?);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let qkv = layer.self_qkv.rows(&layer.self_norm.rows(&x));
            let (keys, values): (Vec<f32>, Vec<f32>) = qkv
                .chunks_exact(3 * d)
                .flat_map(|row| row[d..2 * d].iter().zip(&row[2 * d..]))
                .unzip();
            cache.append(i, b, &keys, &values)?;
            let mut q = qkv;
            for row in q.chunks_exact_mut(3 * d) {
                for v in &mut row[..d] {
                    *v *= scale;
                }
            }
            let attended = self_attention(&q, &cache.past[i], h, hd, 1.0);
            add(&mut x, &layer.self_out.rows(&attended));

            let q = layer.cross_query.rows(&layer.cross_norm.rows(&x));
            let (ck, cv) = &cache.cross_flat[i];
            let attended = cross_attention(&q, ck, cv, h, hd, cache.frames, scale);
            add(&mut x, &layer.cross_out.rows(&attended));

            let hidden = layer.ffn_in.rows(&layer.ffn_norm.rows(&x));
            let mut activated = vec![0f32; hidden.len()];
            gelu_slice(&hidden, &mut activated);
            add(&mut x, &layer.ffn_out.rows(&activated));
        }
        cache.len += 1;
        Ok(self.norm.rows(&x))
    }

    /// Logits of each row of `hidden` (rows of `d_model`): one vector per row. The
    /// product reads the `(vocab, d_model)` embeddings once for all rows, spread over
    /// rayon's threads (candle's product of one row runs on one thread).
    pub(super) fn logits_of(&self, hidden: &[f32]) -> candle_core::Result<Vec<Vec<f32>>> {
        let all = self.embeddings.times(hidden, None);
        let vocab = self.embeddings.outputs();
        Ok(all.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
