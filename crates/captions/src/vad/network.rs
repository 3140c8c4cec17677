//! Silero VAD v6 on candle: the network of `silero_vad_v6.onnx` (16 kHz), with its
//! weights read from the ONNX file.
//!
//! Each 512-sample chunk (32 ms), preceded by the last 64 samples of the chunk before,
//! goes through a short-time Fourier transform (a convolution with a fixed basis, 256
//! samples, hop 128, reflection padding of 128), four convolutions with ReLU, and a
//! one-layer LSTM of 128 units that runs across chunks; a 1x1 convolution and a sigmoid
//! give the chunk's speech probability. The convolutions run for many chunks at once;
//! only the LSTM's recurrence is sequential.

use candle_core::{Device, Tensor};

use super::onnx::{Initializer, float_initializers};

/// Samples per chunk (16 kHz).
pub const CHUNK: usize = 512;

/// Samples of the previous chunk put in front of each chunk.
const CONTEXT: usize = 64;

/// Reflection padding on each side before the Fourier transform.
const REFLECT: usize = 128;

/// LSTM units.
const HIDDEN: usize = 128;

/// Chunks whose convolutions run in one batch (about 33 s of audio).
const BATCH: usize = 1024;

/// The weights of Silero VAD v6.
#[derive(Debug, Clone)]
pub struct SileroVad {
    /// Fourier basis, (258, 1, 256): 129 real rows then 129 imaginary rows.
    basis: Tensor,
    /// The four convolutions: weight, bias as (1, C, 1), stride.
    convs: Vec<(Tensor, Tensor, usize)>,
    /// LSTM input weights transposed, (128, 512), gates in ONNX order (i, o, f, c).
    input_weights: Tensor,
    /// LSTM input and recurrent biases summed, (1, 512).
    lstm_bias: Tensor,
    /// LSTM recurrent weights, 512 rows of 128.
    recurrent: Vec<f32>,
    /// Output projection (128) and bias.
    out_weights: Vec<f32>,
    out_bias: f32,
}

/// The state carried from one chunk to the next.
#[derive(Debug, Clone)]
pub struct VadState {
    h: Vec<f32>,
    c: Vec<f32>,
    /// The last samples of the previous chunk (zeros before the first).
    context: Vec<f32>,
}

impl Default for VadState {
    fn default() -> Self {
        Self {
            h: vec![0.0; HIDDEN],
            c: vec![0.0; HIDDEN],
            context: vec![0.0; CONTEXT],
        }
    }
}

impl SileroVad {
    /// Builds the network from the bytes of `silero_vad_v6.onnx`; an error names what is
    /// missing or misshapen.
    pub fn from_onnx(bytes: &[u8]) -> Result<Self, String> {
        let mut inits = float_initializers(bytes)?;
        let mut take = |name: &str, dims: &[usize]| -> Result<Initializer, String> {
            let init = inits
                .remove(name)
                .ok_or_else(|| format!("the VAD model has no tensor {name:?}"))?;
            if init.dims != dims {
                return Err(format!(
                    "the VAD model's {name:?} is {:?}, expected {dims:?}",
                    init.dims
                ));
            }
            Ok(init)
        };
        let tensor = |init: Initializer, shape: &[usize]| {
            Tensor::from_vec(init.values, shape, &Device::Cpu).map_err(|e| e.to_string())
        };
        let basis = take(
            "encoder.feature_extractor.forward_basis_buffer",
            &[258, 1, 256],
        )?;
        let basis = tensor(basis, &[258, 1, 256])?;
        let mut convs = Vec::new();
        for (i, (out, inp, stride)) in [(128, 129, 1), (64, 128, 2), (64, 64, 2), (128, 64, 1)]
            .into_iter()
            .enumerate()
        {
            let w = take(&format!("encoder.conv_layers.{i}.weight"), &[out, inp, 3])?;
            let b = take(&format!("encoder.conv_layers.{i}.bias"), &[out])?;
            convs.push((tensor(w, &[out, inp, 3])?, tensor(b, &[1, out, 1])?, stride));
        }
        let w = take("onnx::LSTM_209", &[1, 4 * HIDDEN, HIDDEN])?;
        let r = take("onnx::LSTM_210", &[1, 4 * HIDDEN, HIDDEN])?;
        let b = take("onnx::LSTM_211", &[1, 8 * HIDDEN])?;
        let input_weights = tensor(w, &[4 * HIDDEN, HIDDEN])?
            .t()
            .and_then(|t| t.contiguous())
            .map_err(|e| e.to_string())?;
        let bias: Vec<f32> = (0..4 * HIDDEN)
            .map(|k| b.values[k] + b.values[4 * HIDDEN + k])
            .collect();
        let lstm_bias =
            Tensor::from_vec(bias, (1, 4 * HIDDEN), &Device::Cpu).map_err(|e| e.to_string())?;
        let out_w = take("decoder.conv1d.weight", &[1, HIDDEN, 1])?;
        let out_b = take("decoder.conv1d.bias", &[1])?;
        Ok(Self {
            basis,
            convs,
            input_weights,
            lstm_bias,
            recurrent: r.values,
            out_weights: out_w.values,
            out_bias: out_b.values[0],
        })
    }

    /// The speech probability of each whole 512-sample chunk of `samples`, continuing
    /// from `state` (which is updated); a partial chunk at the end is left out.
    pub fn probabilities(
        &self,
        state: &mut VadState,
        samples: &[f32],
    ) -> candle_core::Result<Vec<f32>> {
        let mut out = Vec::with_capacity(samples.len() / CHUNK);
        for batch in samples.chunks(CHUNK * BATCH) {
            let n = batch.len() / CHUNK;
            if n == 0 {
                break;
            }
            let features = self.features(state, &batch[..n * CHUNK])?;
            out.extend(self.recur(state, &features));
        }
        Ok(out)
    }

    /// The LSTM's input projection (plus biases) for `n` whole chunks: (n, 512), and
    /// the context of `state` moved on past them.
    fn features(&self, state: &mut VadState, samples: &[f32]) -> candle_core::Result<Vec<f32>> {
        let n = samples.len() / CHUNK;
        let width = CONTEXT + CHUNK;
        let padded = width + 2 * REFLECT;
        let mut input = Vec::with_capacity(n * padded);
        let mut piece = vec![0.0f32; width];
        for k in 0..n {
            piece[..CONTEXT].copy_from_slice(&state.context);
            piece[CONTEXT..].copy_from_slice(&samples[k * CHUNK..(k + 1) * CHUNK]);
            state.context.copy_from_slice(&piece[width - CONTEXT..]);
            // Reflection: index -j is j, index width-1+j is width-1-j.
            input.extend((1..=REFLECT).rev().map(|j| piece[j]));
            input.extend_from_slice(&piece);
            input.extend((1..=REFLECT).map(|j| piece[width - 1 - j]));
        }
        let x = Tensor::from_vec(input, (n, 1, padded), &Device::Cpu)?;
        let spectrum = x.conv1d(&self.basis, 0, CHUNK / 4, 1, 1)?;
        // The first frame is dropped (as the model does).
        let frames = spectrum.dim(2)? - 1;
        let re = spectrum.narrow(1, 0, 129)?.narrow(2, 1, frames)?;
        let im = spectrum.narrow(1, 129, 129)?.narrow(2, 1, frames)?;
        let mut x = (re.sqr()? + im.sqr()?)?.sqrt()?;
        for (w, b, stride) in &self.convs {
            x = x.conv1d(w, 1, *stride, 1, 1)?.broadcast_add(b)?.relu()?;
        }
        // One frame is left per chunk: (n, 128, 1).
        let x = x.reshape((n, HIDDEN))?;
        x.matmul(&self.input_weights)?
            .broadcast_add(&self.lstm_bias)?
            .flatten_all()?
            .to_vec1()
    }

    /// Runs the LSTM over the chunks' input projections and gives each chunk's
    /// probability.
    fn recur(&self, state: &mut VadState, projected: &[f32]) -> Vec<f32> {
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        let mut gates = vec![0.0f32; 4 * HIDDEN];
        projected
            .chunks_exact(4 * HIDDEN)
            .map(|x| {
                for (g, (row, &xi)) in gates
                    .iter_mut()
                    .zip(self.recurrent.chunks_exact(HIDDEN).zip(x))
                {
                    *g = xi + row.iter().zip(&state.h).map(|(a, b)| a * b).sum::<f32>();
                }
                let mut logit = self.out_bias;
                for k in 0..HIDDEN {
                    let i = sigmoid(gates[k]);
                    let o = sigmoid(gates[HIDDEN + k]);
                    let f = sigmoid(gates[2 * HIDDEN + k]);
                    let c = (gates[3 * HIDDEN + k]).tanh();
                    state.c[k] = f * state.c[k] + i * c;
                    state.h[k] = o * state.c[k].tanh();
                    logit += self.out_weights[k] * state.h[k].max(0.0);
                }
                sigmoid(logit)
            })
            .collect()
    }
}
