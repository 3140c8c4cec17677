//! The decoding state of one window: the audio's cross-attention keys and values, and
//! the self-attention keys and values of every sequence in the batch, kept as plain
//! vectors that each step extends (no copy of the earlier positions).

use std::sync::Arc;

use candle_core::Tensor;

/// Keys and values of one sequence in one layer, position after position
/// (`heads * head_dim` values each).
pub(super) type Past = (Vec<f32>, Vec<f32>);

/// The decoding state of one window.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    /// Per layer: keys transposed `(heads, head_dim, frames)` and values
    /// `(heads, frames, head_dim)`.
    pub(super) cross: Arc<Vec<(Tensor, Tensor)>>,
    /// The same keys and values as flat vectors, for single-position steps.
    pub(super) cross_flat: Arc<Vec<(Vec<f32>, Vec<f32>)>>,
    /// Audio frames.
    pub(super) frames: usize,
    /// Per layer, per sequence of the batch: its keys and values so far.
    pub(super) past: Vec<Vec<Past>>,
    /// Positions already fed.
    pub(super) len: usize,
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
    /// and duplicates hypotheses this way). A row's last use takes its cache; only the
    /// earlier uses of a row kept more than once copy it.
    pub fn select(&mut self, rows: &[u32]) -> candle_core::Result<()> {
        for layer in self.past.iter_mut().filter(|l| !l.is_empty()) {
            let mut uses = vec![0usize; layer.len()];
            for &r in rows {
                let slot = uses.get_mut(r as usize).ok_or_else(|| {
                    candle_core::Error::Msg(format!("no sequence {r} in the decoder cache"))
                })?;
                *slot += 1;
            }
            let next = rows
                .iter()
                .map(|&r| {
                    let r = r as usize;
                    uses[r] -= 1;
                    if uses[r] == 0 {
                        std::mem::take(&mut layer[r])
                    } else {
                        layer[r].clone()
                    }
                })
                .collect();
            *layer = next;
        }
        Ok(())
    }

    /// Appends, in `layer`, `keys` and `values` (`batch` rows, each the same number of
    /// new positions) to the sequences' caches.
    pub(super) fn append(
        &mut self,
        layer: usize,
        batch: usize,
        keys: &[f32],
        values: &[f32],
    ) -> candle_core::Result<()> {
        let past = &mut self.past[layer];
        if past.is_empty() {
            *past = vec![(Vec::new(), Vec::new()); batch];
        }
        if past.len() != batch {
            return Err(candle_core::Error::Msg(format!(
                "the decoder cache holds {} sequences, the batch {batch}",
                past.len()
            )));
        }
        let per_row = keys.len() / batch;
        for (r, (k, v)) in past.iter_mut().enumerate() {
            k.extend_from_slice(&keys[r * per_row..(r + 1) * per_row]);
            v.extend_from_slice(&values[r * per_row..(r + 1) * per_row]);
        }
        Ok(())
    }

    /// `layer`'s keys and values of every sequence as tensors
    /// `(batch, heads, positions, head_dim)`.
    pub(super) fn past_tensors(
        &self,
        layer: usize,
        heads: usize,
        d: usize,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let past = &self.past[layer];
        let positions = past.first().map_or(0, |(k, _)| k.len() / d);
        let device = &candle_core::Device::Cpu;
        let stack = |pick: fn(&Past) -> &Vec<f32>| -> candle_core::Result<Tensor> {
            let all: Vec<f32> = past.iter().flat_map(|p| pick(p).iter().copied()).collect();
            Tensor::from_vec(all, (past.len(), positions, heads, d / heads), device)?
                .transpose(1, 2)?
                .contiguous()
        };
        Ok((stack(|p| &p.0)?, stack(|p| &p.1)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(rows: usize) -> DecoderCache {
        let row = |r: usize| (vec![r as f32; 4], vec![-(r as f32); 4]);
        DecoderCache {
            cross: Arc::new(Vec::new()),
            cross_flat: Arc::new(Vec::new()),
            frames: 0,
            past: vec![(0..rows).map(row).collect(), Vec::new()],
            len: 1,
        }
    }

    #[test]
    fn select_reorders_and_duplicates_rows() {
        let mut c = cache(3);
        c.select(&[2, 0, 0, 1]).unwrap();
        let firsts: Vec<f32> = c.past[0].iter().map(|(k, _)| k[0]).collect();
        assert_eq!(firsts, [2.0, 0.0, 0.0, 1.0]);
        for (k, v) in &c.past[0] {
            assert_eq!(k.len(), 4);
            assert_eq!(v, &vec![-k[0]; 4]);
        }
        assert!(c.past[1].is_empty(), "a layer not fed yet stays empty");
    }

    #[test]
    fn select_of_a_missing_row_is_an_error() {
        let mut c = cache(2);
        assert!(c.select(&[0, 2]).is_err());
    }
}
