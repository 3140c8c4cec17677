//! The encoder's element-wise steps done in place, spread over rayon's threads: a bias
//! (then GELU) on a product's output, and the residual sum.
//!
//! candle adds a bias (`Linear`, `Conv1d`) and sums tensors into fresh buffers, on its
//! own pool of spinning threads beside rayon's: on two cores the two pools contend (its
//! barrier's spin was 8% of a greedy run's samples), and every window pays fresh
//! buffers. The order of the arithmetic is candle's (bias added to the product, then
//! the sum), so the values are the same.

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout, Tensor};
use rayon::prelude::*;

use super::gelu::gelu_in_place;
use super::simd::vectorized;

/// Values per parallel task.
const CHUNK: usize = 16 * 1024;

/// Adds `bias` to `x` (f32, contiguous) in place, then applies GELU if `gelu`. The bias
/// is one value per last-dimension column (`per_row` false: a linear layer's output
/// `(.., features)`) or one per row of the last dimension (`per_row` true: a
/// convolution's output `(1, channels, time)`).
pub(crate) fn add_bias(
    x: &Tensor,
    bias: &[f32],
    per_row: bool,
    gelu: bool,
) -> candle_core::Result<()> {
    x.inplace_op1(&AddBias {
        bias,
        per_row,
        gelu,
    })
}

/// `x += y + bias` in place (`x` and `y` f32, contiguous, one shape; `bias` one value
/// per column of the last dimension): the residual sum after a projection.
pub(crate) fn add_residual(x: &Tensor, y: &Tensor, bias: &[f32]) -> candle_core::Result<()> {
    if x.dims() != y.dims() {
        return Err(candle_core::Error::Msg(format!(
            "residual of shape {:?} added to {:?}",
            y.dims(),
            x.dims()
        )));
    }
    x.inplace_op2(y, &AddResidual { bias })
}

struct AddBias<'a> {
    bias: &'a [f32],
    per_row: bool,
    gelu: bool,
}

impl InplaceOp1 for AddBias<'_> {
    fn name(&self) -> &'static str {
        "add-bias"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let values = contiguous_f32(storage, layout, self.name())?;
        let width = layout.dims().last().copied().unwrap_or(1).max(1);
        let (bias, per_row, gelu) = (self.bias, self.per_row, self.gelu);
        if (!per_row && bias.len() != width) || (per_row && values.len() / width != bias.len()) {
            return Err(candle_core::Error::Msg(format!(
                "a bias of {} values for a tensor of shape {:?}",
                bias.len(),
                layout.dims()
            )));
        }
        // Whole rows per task, about CHUNK values each.
        let rows_per_task = (CHUNK / width).max(1);
        values
            .par_chunks_mut(rows_per_task * width)
            .enumerate()
            .for_each(|(task, chunk)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (i, row) in chunk.chunks_exact_mut(width).enumerate() {
                            if per_row {
                                let b = bias[task * rows_per_task + i];
                                for v in row.iter_mut() {
                                    *v += b;
                                }
                            } else {
                                for (v, &b) in row.iter_mut().zip(bias) {
                                    *v += b;
                                }
                            }
                        }
                        if gelu {
                            gelu_in_place(chunk);
                        }
                    },
                )
            });
        Ok(())
    }
}

struct AddResidual<'a> {
    bias: &'a [f32],
}

impl InplaceOp2 for AddResidual<'_> {
    fn name(&self) -> &'static str {
        "add-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let CpuStorage::F32(y) = s2 else {
            return Err(candle_core::Error::Msg("add-residual takes f32".into()));
        };
        let Some((start, end)) = l2.contiguous_offsets() else {
            return Err(candle_core::Error::Msg(
                "add-residual takes contiguous tensors".into(),
            ));
        };
        let y = &y[start..end];
        let width = self.bias.len();
        if width == 0 || y.len() != x.len() || !x.len().is_multiple_of(width) {
            return Err(candle_core::Error::Msg(format!(
                "a bias of {width} values for a residual of {} values",
                x.len()
            )));
        }
        let rows_per_task = (CHUNK / width).max(1);
        x.par_chunks_mut(rows_per_task * width)
            .zip(y.par_chunks(rows_per_task * width))
            .for_each(|(x, y)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (x, y) in x.chunks_exact_mut(width).zip(y.chunks_exact(width)) {
                            for ((x, &y), &b) in x.iter_mut().zip(y).zip(self.bias) {
                                *x += y + b;
                            }
                        }
                    },
                )
            });
        Ok(())
    }
}

/// The f32 values of a contiguous tensor's storage.
fn contiguous_f32<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let CpuStorage::F32(values) = storage else {
        return Err(candle_core::Error::Msg(format!("{op} takes f32")));
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(candle_core::Error::Msg(format!(
            "{op} takes contiguous tensors"
        )));
    };
    Ok(&mut values[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};
    use candle_nn::{Conv1d, Conv1dConfig, Linear};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed) % 101) as f32 / 25.0 - 2.0)
            .collect()
    }

    #[test]
    fn bias_gelu_and_residual_match_candles_layers_bit_for_bit() {
        let (rows, inputs, outputs) = (37, 24, 40);
        let dev = &Device::Cpu;
        let w = Tensor::from_vec(values(outputs * inputs, 1), (outputs, inputs), dev).unwrap();
        let b = values(outputs, 2);
        let linear = Linear::new(w.clone(), Some(Tensor::new(b.as_slice(), dev).unwrap()));
        let x = Tensor::from_vec(values(rows * inputs, 3), (1, rows, inputs), dev).unwrap();
        let want = linear.forward(&x).unwrap().gelu().unwrap();
        let ours = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        add_bias(&ours, &b, false, true).unwrap();
        let diff = crate::model::dense::tests::max_abs_diff(&ours, &want);
        assert!(diff < 1e-5, "{diff}");

        let residual =
            Tensor::from_vec(values(rows * outputs, 4), (1, rows, outputs), dev).unwrap();
        let product = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        let want = (&residual + linear.forward(&x).unwrap()).unwrap();
        let ours = residual.copy().unwrap();
        add_residual(&ours, &product, &b).unwrap();
        assert_eq!(
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(add_residual(&ours, &x, &b).is_err(), "shapes differ");
    }

    #[test]
    fn a_bias_per_channel_matches_candles_convolution() {
        let (channels, mels, frames) = (6, 4, 50);
        let dev = &Device::Cpu;
        let w = Tensor::from_vec(values(channels * mels * 3, 5), (channels, mels, 3), dev).unwrap();
        let b = values(channels, 6);
        let config = Conv1dConfig {
            padding: 1,
            ..Conv1dConfig::default()
        };
        let conv = Conv1d::new(
            w.clone(),
            Some(Tensor::new(b.as_slice(), dev).unwrap()),
            config,
        );
        let x = Tensor::from_vec(values(mels * frames, 7), (1, mels, frames), dev).unwrap();
        let want = conv.forward(&x).unwrap();
        let ours = Conv1d::new(w, None, config).forward(&x).unwrap();
        add_bias(&ours, &b, true, false).unwrap();
        assert_eq!(
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(add_bias(&ours, &b[1..], true, false).is_err());
    }
}
