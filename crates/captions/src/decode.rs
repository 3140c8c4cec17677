//! One decoding pass over one 30 s window, following OpenAI's reference decoder:
//! blank and non-speech tokens suppressed, timestamp tokens in pairs and never going
//! backwards, the first timestamp within 1 s, and the no-speech probability read at the
//! start-of-transcript position.

use std::io::Write;

use candle_core::{D, IndexOp, Tensor};

use crate::model::{SpecialTokens, WhisperModel};

/// Most tokens sampled per window (half the text context, as the reference does).
const SAMPLE_LEN: usize = 224;

/// The first timestamp may be at most this many 20 ms steps into the window (1 s).
const MAX_INITIAL_TIMESTAMP: u32 = 50;

/// The result of one pass.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    /// Sampled tokens, timestamps included, end-of-text excluded.
    pub(crate) tokens: Vec<u32>,
    /// Mean log-probability of the sampled tokens (end-of-text included).
    pub(crate) avg_logprob: f64,
    /// Probability of the no-speech token at the first position.
    pub(crate) no_speech_prob: f64,
    /// Sampling temperature of this pass.
    pub(crate) temperature: f64,
    /// Bytes of the text divided by bytes of its zlib compression: high means repetition.
    pub(crate) compression_ratio: f64,
}

/// Runs decoder passes against one window's encoded audio.
pub(crate) struct WindowDecoder<'a> {
    pub(crate) model: &'a mut WhisperModel,
    pub(crate) language: Option<u32>,
    pub(crate) rng: &'a mut fastrand::Rng,
}

impl WindowDecoder<'_> {
    /// One pass at `temperature` (0: greedy), conditioned on `prompt` (earlier text).
    pub(crate) fn decode(
        &mut self,
        features: &Tensor,
        prompt: &[u32],
        temperature: f64,
    ) -> candle_core::Result<Decoded> {
        let sp = self.model.vocab.special;
        let n_ctx = self.model.config.max_target_positions;
        let mut tokens = Vec::new();
        if !prompt.is_empty() {
            tokens.push(sp.sot_prev);
            let keep = prompt.len().min(n_ctx / 2 - 1);
            tokens.extend_from_slice(&prompt[prompt.len() - keep..]);
        }
        let sot_index = tokens.len();
        tokens.push(sp.sot);
        if let (Some(language), Some(transcribe)) = (self.language, sp.transcribe) {
            tokens.extend([language, transcribe]);
        }
        let sample_begin = tokens.len();
        let mut sum_logprob = 0.0;
        let mut no_speech_prob = 0.0;
        let decoder = &mut self.model.network.decoder;
        for step in 0..SAMPLE_LEN {
            if tokens.len() >= n_ctx {
                break;
            }
            let input = Tensor::new(tokens.as_slice(), features.device())?.unsqueeze(0)?;
            let hidden = decoder.forward(&input, features, step == 0)?;
            if step == 0 {
                let at_sot = hidden.i((.., sot_index..sot_index + 1))?;
                let logits = decoder.final_linear(&at_sot)?.flatten_all()?;
                let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
                no_speech_prob = probs.i(sp.no_speech as usize)?.to_scalar::<f32>()? as f64;
            }
            let last = hidden.dim(1)? - 1;
            let mut logits = decoder
                .final_linear(&hidden.i((.., last..last + 1))?)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let sampled = &tokens[sample_begin..];
            suppress(&mut logits, &self.model.config.suppress_tokens);
            if sampled.is_empty() {
                suppress(&mut logits, &self.model.suppress_begin);
            }
            apply_timestamp_rules(&mut logits, sampled, &sp);
            let logprobs = log_softmax(&logits);
            let next = if temperature > 0.0 {
                sample(&logits, temperature, self.rng)
            } else {
                argmax(&logits)
            };
            sum_logprob += logprobs[next as usize] as f64;
            if next == sp.eot {
                break;
            }
            tokens.push(next);
        }
        let sampled = tokens.split_off(sample_begin);
        let text = self.model.vocab.text(&sampled);
        Ok(Decoded {
            avg_logprob: sum_logprob / (sampled.len() + 1) as f64,
            tokens: sampled,
            no_speech_prob,
            temperature,
            compression_ratio: compression_ratio(&text),
        })
    }
}

fn suppress(logits: &mut [f32], ids: &[u32]) {
    for &id in ids {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// The reference's timestamp rules, on the logits of the next token after `sampled`.
pub(crate) fn apply_timestamp_rules(logits: &mut [f32], sampled: &[u32], sp: &SpecialTokens) {
    let ts = sp.timestamp_begin as usize;
    let eot = sp.eot as usize;
    let is_ts = |t: u32| t >= sp.timestamp_begin;
    logits[sp.no_timestamps as usize] = f32::NEG_INFINITY;
    let last_was_ts = sampled.last().is_some_and(|&t| is_ts(t));
    let penultimate_was_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
    if last_was_ts {
        if penultimate_was_ts {
            // A segment just closed (or the first timestamp opened one): text must follow.
            logits[ts..].fill(f32::NEG_INFINITY);
        } else {
            // Text was closed by a timestamp: only another timestamp or the end may follow.
            logits[..eot].fill(f32::NEG_INFINITY);
        }
    }
    if let Some(&last_ts) = sampled.iter().rev().find(|&&t| is_ts(t)) {
        // Timestamps never decrease, and a segment has a non-zero length.
        let floor = if last_was_ts && !penultimate_was_ts {
            last_ts
        } else {
            last_ts + 1
        };
        let end = (floor as usize).min(logits.len());
        logits[ts..end].fill(f32::NEG_INFINITY);
    }
    if sampled.is_empty() {
        // Start with a timestamp, and no later than 1 s into the window.
        logits[..ts].fill(f32::NEG_INFINITY);
        let last_allowed = ts + MAX_INITIAL_TIMESTAMP as usize;
        if last_allowed + 1 < logits.len() {
            logits[last_allowed + 1..].fill(f32::NEG_INFINITY);
        }
    }
    // When the timestamps together are likelier than any single text token, take one.
    let logprobs = log_softmax(logits);
    let ts_logprob = log_sum_exp(&logprobs[ts..]);
    let max_text = logprobs[..ts]
        .iter()
        .cloned()
        .fold(f32::NEG_INFINITY, f32::max);
    if ts_logprob > max_text {
        logits[..ts].fill(f32::NEG_INFINITY);
    }
}

fn log_sum_exp(values: &[f32]) -> f32 {
    let max = values.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(logits);
    logits.iter().map(|l| l - lse).collect()
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Samples from `softmax(logits / temperature)`.
fn sample(logits: &[f32], temperature: f64, rng: &mut fastrand::Rng) -> u32 {
    let scaled: Vec<f64> = logits.iter().map(|&l| l as f64 / temperature).collect();
    let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scaled.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut pick = rng.f64() * total;
    for (i, w) in weights.iter().enumerate() {
        pick -= w;
        if pick <= 0.0 && *w > 0.0 {
            return i as u32;
        }
    }
    argmax(logits)
}

/// `len(text) / len(zlib(text))`, the reference's repetition measure.
pub(crate) fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(text.as_bytes()).expect("writing to memory");
    let compressed = z.finish().expect("writing to memory");
    text.len() as f64 / compressed.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: u32 = 10;

    fn special() -> SpecialTokens {
        SpecialTokens {
            eot: 5,
            sot: 6,
            sot_prev: 7,
            no_speech: 8,
            no_timestamps: 9,
            transcribe: None,
            timestamp_begin: TS,
        }
    }

    /// Logits over 5 text tokens, 5 specials and 100 timestamps, text preferred.
    fn logits() -> Vec<f32> {
        let mut l = vec![0.0f32; 110];
        l[..5].fill(5.0);
        l
    }

    fn allowed(l: &[f32]) -> Vec<usize> {
        (0..l.len()).filter(|&i| l[i] > f32::NEG_INFINITY).collect()
    }

    #[test]
    fn the_first_token_is_a_timestamp_within_one_second() {
        let mut l = logits();
        apply_timestamp_rules(&mut l, &[], &special());
        assert_eq!(allowed(&l), (10..=60).collect::<Vec<_>>());
    }

    #[test]
    fn after_an_opening_timestamp_comes_text() {
        let mut l = logits();
        apply_timestamp_rules(&mut l, &[TS + 3], &special());
        assert!(allowed(&l).iter().all(|&i| i < TS as usize && i != 9));
    }

    #[test]
    fn text_closed_by_a_timestamp_allows_only_later_timestamps_or_the_end() {
        let mut l = logits();
        // Timestamps unlikely one by one and together, so the end stays possible.
        l[TS as usize..].fill(-10.0);
        apply_timestamp_rules(&mut l, &[TS + 3, 0, 1, TS + 20], &special());
        let ok = allowed(&l);
        assert!(ok.contains(&5), "end of text allowed");
        assert!(
            ok.iter()
                .all(|&i| i == 5 || i == 6 || i == 7 || i == 8 || i >= (TS + 20) as usize),
            "{ok:?}"
        );
        assert!(!ok.contains(&0));
    }

    #[test]
    fn timestamps_never_go_back() {
        let mut l = logits();
        // Timestamps strongly preferred: the rule forces one, not earlier than the last + 1.
        l[TS as usize..].fill(9.0);
        apply_timestamp_rules(&mut l, &[TS + 3, 0, TS + 20, TS + 20, 1], &special());
        let ok = allowed(&l);
        assert!(ok.iter().all(|&i| i >= (TS + 21) as usize), "{ok:?}");
    }

    #[test]
    fn compression_ratio_flags_repetition() {
        let plain = compression_ratio("Ever tried. Ever failed. No matter.");
        let looped = compression_ratio(&"Try again. ".repeat(30));
        assert!(plain < 1.5, "{plain}");
        assert!(looped > 2.4, "{looped}");
    }
}
