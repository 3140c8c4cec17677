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
                        audio_scores(qh, keys, scale, &mut scores);
                        softmax(&mut scores);
                        weighted_values(
                            &scores,
                            values,
                            &mut out[r * head_dim..(r + 1) * head_dim],
                        );
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

/// The scores of one head's query `q` (`head_dim` values, times `scale`) against the
/// audio's keys `keys` (`(head_dim, frames)`), into `scores` (`frames`). Four key rows
/// per pass over the scores, so the scores are read and written a quarter as often.
#[inline(always)]
fn audio_scores(q: &[f32], keys: &[f32], scale: f32, scores: &mut [f32]) {
    let frames = scores.len();
    scores.fill(0.0);
    let mut rows = keys.chunks_exact(frames);
    let mut dims = q.chunks_exact(4);
    for qs in dims.by_ref() {
        let (q0, q1, q2, q3) = (qs[0] * scale, qs[1] * scale, qs[2] * scale, qs[3] * scale);
        let (Some(k0), Some(k1), Some(k2), Some(k3)) =
            (rows.next(), rows.next(), rows.next(), rows.next())
        else {
            break;
        };
        for ((((s, &a), &b), &c), &e) in scores.iter_mut().zip(k0).zip(k1).zip(k2).zip(k3) {
            *s += q0 * a + q1 * b + q2 * c + q3 * e;
        }
    }
    for (&qd, key_row) in dims.remainder().iter().zip(rows) {
        let qd = qd * scale;
        for (s, &k) in scores.iter_mut().zip(key_row) {
            *s += qd * k;
        }
    }
}

/// `out` (`head_dim`) = the sum of the audio's values (`(frames, head_dim)`) weighted
/// by `weights` (`frames`). Sixteen output values at a time stay in registers over all
/// frames.
#[inline(always)]
fn weighted_values(weights: &[f32], values: &[f32], out: &mut [f32]) {
    const WIDTH: usize = 16;
    let head_dim = out.len();
    if !head_dim.is_multiple_of(WIDTH) {
        out.fill(0.0);
        for (&w, value) in weights.iter().zip(values.chunks_exact(head_dim)) {
            for (acc, &v) in out.iter_mut().zip(value) {
                *acc += w * v;
            }
        }
        return;
    }
    for (c, o) in out.chunks_exact_mut(WIDTH).enumerate() {
        let mut acc = [0.0f32; WIDTH];
        for (&w, value) in weights.iter().zip(values.chunks_exact(head_dim)) {
            let v = &value[c * WIDTH..(c + 1) * WIDTH];
            for k in 0..WIDTH {
                acc[k] += w * v[k];
            }
        }
        o.copy_from_slice(&acc);
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cross-attention in f64, one row and head at a time.
    fn reference(
        q: &[f32],
        ck: &[f32],
        cv: &[f32],
        heads: usize,
        hd: usize,
        frames: usize,
    ) -> Vec<f64> {
        let d = heads * hd;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut out = Vec::new();
        for row in q.chunks_exact(d) {
            for h in 0..heads {
                let scores: Vec<f64> = (0..frames)
                    .map(|f| {
                        (0..hd)
                            .map(|i| {
                                f64::from(row[h * hd + i])
                                    * f64::from(ck[(h * hd + i) * frames + f])
                            })
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                out.extend((0..hd).map(|i| {
                    (0..frames)
                        .map(|f| weights[f] / total * f64::from(cv[(h * frames + f) * hd + i]))
                        .sum::<f64>()
                }));
            }
        }
        out
    }

    #[test]
    fn cross_attention_matches_a_plain_computation() {
        let value = |i: usize, seed: usize| ((i * 7919 + seed) % 97) as f32 / 48.0 - 1.0;
        // Head sizes with and without the 16-wide and 4-row paths' remainders.
        for (heads, hd, frames, rows) in [(3, 32, 50, 2), (2, 6, 17, 1)] {
            let d = heads * hd;
            let q: Vec<f32> = (0..rows * d).map(|i| value(i, 1)).collect();
            let ck: Vec<f32> = (0..heads * hd * frames).map(|i| value(i, 2)).collect();
            let cv: Vec<f32> = (0..heads * frames * hd).map(|i| value(i, 3)).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let ours = cross_attention(&q, &ck, &cv, heads, hd, frames, scale);
            let want = reference(&q, &ck, &cv, heads, hd, frames);
            assert_eq!(ours.len(), want.len());
            for (a, b) in ours.iter().zip(&want) {
                assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }
}
