//! Attention of a few query rows, on plain vectors: the decoder's single-position
//! steps (one row per sequence), where candle's per-operation cost would exceed the
//! arithmetic.

use rayon::prelude::*;

use super::cache::Past;
use crate::model::simd::vectorized;
use crate::model::softmax::softmax;

/// Self-attention of each sequence's new query (rows of `3 * d` in `qkv`: query, key,
/// value) over its cached keys and values (`past[row]`, the new position included).
/// Returns rows of `d`, heads side by side.
pub(super) fn self_attention(
    qkv: &[f32],
    past: &[Past],
    heads: usize,
    head_dim: usize,
    scale: f32,
) -> Vec<f32> {
    let d = heads * head_dim;
    let per_head: Vec<Vec<f32>> = (0..past.len() * heads)
        .into_par_iter()
        .map(|task| {
            vectorized(
                #[inline(always)]
                || {
                    let (r, h) = (task / heads, task % heads);
                    let q = &qkv[r * 3 * d + h * head_dim..r * 3 * d + (h + 1) * head_dim];
                    let (keys, values) = &past[r];
                    let mut scores: Vec<f32> = keys
                        .chunks_exact(d)
                        .map(|k| dot(q, &k[h * head_dim..(h + 1) * head_dim]) * scale)
                        .collect();
                    softmax(&mut scores);
                    let mut out = vec![0f32; head_dim];
                    for (&w, v) in scores.iter().zip(values.chunks_exact(d)) {
                        for (o, &x) in out.iter_mut().zip(&v[h * head_dim..(h + 1) * head_dim]) {
                            *o += w * x;
                        }
                    }
                    out
                },
            )
        })
        .collect();
    per_head.concat()
}

/// Cross-attention of `q` (rows of `heads * head_dim`, already projected) over one
/// layer's audio keys `ck` (`(heads, head_dim, frames)`) and values `cv`
/// (`(heads, frames, head_dim)`): rows of `heads * head_dim`, heads side by side.
pub(super) fn cross_attention(
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
            vectorized(
                #[inline(always)]
                || {
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
                        softmax(&mut scores);
                        let o = &mut out[r * head_dim..(r + 1) * head_dim];
                        for (&w, value) in scores.iter().zip(values.chunks_exact(head_dim)) {
                            for (acc, &v) in o.iter_mut().zip(value) {
                                *acc += w * v;
                            }
                        }
                    }
                    out
                },
            )
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

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
