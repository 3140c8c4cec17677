//! Decoding passes over one 30 s window, following OpenAI's reference decoder: blank
//! and non-speech tokens suppressed, timestamp tokens in pairs and never going
//! backwards, the first timestamp within 1 s, and the no-speech probability read at the
//! start-of-transcript position.
//!
//! Greedy decoding, sampling (several samples decoded as one batch) and beam search all
//! run on the decoder's key/value cache: the prompt is fed once, then one token per
//! sequence per step.

use std::io::Write;

use candle_core::{IndexOp, Tensor};

use crate::model::softmax::sum_exp;
use crate::model::{DecoderCache, SpecialTokens, WhisperModel};

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

/// How the next tokens are chosen.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Search {
    /// The likeliest token at every step.
    Greedy,
    /// `best_of` independent samples at `temperature`; the likeliest is kept.
    Sample { temperature: f64, best_of: usize },
    /// Beam search keeping `beams` hypotheses, done when as many have ended.
    Beam { beams: usize },
}

/// Runs decoder passes against one window's encoded audio.
pub(crate) struct WindowDecoder<'a> {
    pub(crate) model: &'a WhisperModel,
    /// The window's cross-attention keys and values, nothing fed yet.
    pub(crate) audio: DecoderCache,
    pub(crate) language: Option<u32>,
    pub(crate) rng: &'a mut fastrand::Rng,
}

/// One sequence being decoded.
#[derive(Debug, Clone)]
struct Hypothesis {
    tokens: Vec<u32>,
    sum_logprob: f64,
    done: bool,
}

impl WindowDecoder<'_> {
    /// The start sequence: the prompt (earlier text) if any, start of transcript,
    /// language and task; and the index of the start-of-transcript token.
    fn start_sequence(&self, prompt: &[u32]) -> (Vec<u32>, usize) {
        let sp = self.model.vocab.special;
        let n_ctx = self.model.decoder.max_positions();
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
        (tokens, sot_index)
    }

    /// The logits of the next token of every row, `rows` x vocabulary.
    fn next_logits(&self, hidden: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
        let (b, n, d) = hidden.dims3()?;
        let last = hidden.i((.., n - 1, ..))?.reshape((b, d))?;
        self.model.decoder.logits(&last)
    }

    /// The logits of a row after the suppression and timestamp rules.
    fn filtered(&self, mut logits: Vec<f32>, sampled: &[u32]) -> Vec<f32> {
        suppress(&mut logits, &self.model.config.suppress_tokens);
        if sampled.is_empty() {
            suppress(&mut logits, &self.model.suppress_begin);
        }
        apply_timestamp_rules(&mut logits, sampled, &self.model.vocab.special);
        logits
    }

    /// One pass with `search`, conditioned on `prompt` (earlier text).
    pub(crate) fn decode(
        &mut self,
        prompt: &[u32],
        search: Search,
    ) -> candle_core::Result<Decoded> {
        let sp = self.model.vocab.special;
        let decoder = &self.model.decoder;
        let (start, sot_index) = self.start_sequence(prompt);
        let mut cache = self.audio.clone();
        let input = Tensor::new(start.as_slice(), &candle_core::Device::Cpu)?.unsqueeze(0)?;
        let (hidden, _) = decoder.forward(&input, &mut cache, &[])?;
        let at_sot = hidden.i((.., sot_index, ..))?;
        let sot_logits = decoder.logits(&at_sot)?.concat();
        let no_speech_prob = f64::from(log_softmax(&sot_logits)[sp.no_speech as usize]).exp();
        let mut logits = self.next_logits(&hidden)?;
        let width = match search {
            Search::Greedy => 1,
            Search::Sample { best_of, .. } => best_of.max(1),
            Search::Beam { beams } => beams.max(1),
        };
        let mut rows = vec![
            Hypothesis {
                tokens: Vec::new(),
                sum_logprob: 0.0,
                done: false,
            };
            width
        ];
        logits.resize(width, logits[0].clone());
        cache.select(&vec![0; width])?;
        let max_steps = SAMPLE_LEN.min(decoder.max_positions().saturating_sub(start.len()));
        let mut finished: Vec<Hypothesis> = Vec::new();
        for step in 0..max_steps {
            let next = match search {
                Search::Beam { beams } => {
                    let (next, order) =
                        self.beam_step(&mut rows, &logits, step == 0, beams, &mut finished);
                    if finished.len() >= beams || next.is_empty() {
                        break;
                    }
                    cache.select(&order)?;
                    next
                }
                _ => {
                    let temperature = match search {
                        Search::Sample { temperature, .. } => temperature,
                        _ => 0.0,
                    };
                    let next = self.independent_step(&mut rows, &logits, temperature);
                    if rows.iter().all(|r| r.done) {
                        break;
                    }
                    next
                }
            };
            let input = Tensor::new(next.as_slice(), &candle_core::Device::Cpu)?.unsqueeze(1)?;
            let (hidden, _) = decoder.forward(&input, &mut cache, &[])?;
            logits = self.next_logits(&hidden)?;
        }
        // Unfinished hypotheses compete too when too few ended (or the length ran out).
        if let Search::Beam { beams } = search {
            if finished.len() < beams {
                finished.extend(rows.into_iter().take(beams - finished.len()));
            }
        } else {
            finished = rows;
        }
        // The reference ranks by log-probability divided by length.
        let score = |h: &Hypothesis| h.sum_logprob / h.tokens.len().max(1) as f64;
        let best = finished
            .into_iter()
            .max_by(|a, b| score(a).total_cmp(&score(b)))
            .expect("at least one hypothesis");
        let text = self.model.vocab.text(&best.tokens);
        Ok(Decoded {
            avg_logprob: best.sum_logprob / (best.tokens.len() + 1) as f64,
            tokens: best.tokens,
            no_speech_prob,
            temperature: match search {
                Search::Sample { temperature, .. } => temperature,
                _ => 0.0,
            },
            compression_ratio: compression_ratio(&text),
        })
    }

    /// The likeliest language of the window: its token, code and probability (among
    /// the languages), from the token the model expects after start of transcript.
    pub(crate) fn detect_language(&self) -> candle_core::Result<(u32, String, f64)> {
        let sp = self.model.vocab.special;
        let mut cache = self.audio.clone();
        let input = Tensor::new(&[sp.sot], &candle_core::Device::Cpu)?.unsqueeze(0)?;
        let (hidden, _) = self.model.decoder.forward(&input, &mut cache, &[])?;
        let logits = &self.next_logits(&hidden)?[0];
        let languages = &self.model.languages;
        let scores: Vec<f32> = languages
            .iter()
            .map(|(id, _)| logits[*id as usize])
            .collect();
        let probs = log_softmax(&scores);
        let best = argmax(&scores) as usize;
        let (id, code) = languages[best].clone();
        Ok((id, code, f64::from(probs[best]).exp()))
    }

    /// When each of `text` (text tokens, no timestamps) and then the end of text starts,
    /// in encoder positions, from the alignment heads' attention over the first `used`
    /// positions (the audio actually in the window).
    pub(crate) fn token_starts(
        &self,
        text: &[u32],
        used: usize,
    ) -> candle_core::Result<Vec<usize>> {
        let sp = self.model.vocab.special;
        let (mut sequence, _) = self.start_sequence(&[]);
        sequence.push(sp.no_timestamps);
        // The position of <|notimestamps|> predicts the first text token.
        let first = sequence.len() - 1;
        sequence.extend_from_slice(text);
        sequence.push(sp.eot);
        let mut cache = self.audio.clone();
        let input = Tensor::new(sequence.as_slice(), &candle_core::Device::Cpu)?.unsqueeze(0)?;
        let heads = &self.model.alignment_heads;
        let (_, captured) = self.model.decoder.forward(&input, &mut cache, heads)?;
        let rows = text.len() + 1;
        let mut frames = 0;
        let scores = captured
            .iter()
            .map(|c| {
                frames = c.dim(1)?;
                c.narrow(0, first, rows)?.flatten_all()?.to_vec1::<f32>()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(crate::align::row_starts(&scores, rows, frames, used))
    }

    /// Greedy or sampling: each row picks its own next token. Returns the tokens fed
    /// next (a finished row keeps feeding end-of-text; its output is ignored).
    fn independent_step(
        &mut self,
        rows: &mut [Hypothesis],
        logits: &[Vec<f32>],
        temperature: f64,
    ) -> Vec<u32> {
        let eot = self.model.vocab.special.eot;
        let mut next = Vec::with_capacity(rows.len());
        for (row, logits) in rows.iter_mut().zip(logits) {
            if row.done {
                next.push(eot);
                continue;
            }
            let filtered = self.filtered(logits.clone(), &row.tokens);
            let token = if temperature > 0.0 {
                sample(&filtered, temperature, self.rng)
            } else {
                argmax(&filtered)
            };
            row.sum_logprob += f64::from(log_softmax(&filtered)[token as usize]);
            if token == eot {
                row.done = true;
            } else {
                row.tokens.push(token);
            }
            next.push(token);
        }
        next
    }

    /// One beam search step, as the reference does it: each hypothesis proposes its
    /// `beams + 1` likeliest continuations; going down them best first, the ones that
    /// end join `finished` and the others become the new hypotheses until there are
    /// `beams`. Returns the tokens fed next and,
    /// for each new hypothesis, the row it continues.
    fn beam_step(
        &self,
        rows: &mut Vec<Hypothesis>,
        logits: &[Vec<f32>],
        first: bool,
        beams: usize,
        finished: &mut Vec<Hypothesis>,
    ) -> (Vec<u32>, Vec<u32>) {
        let eot = self.model.vocab.special.eot;
        // At the first step every row is the same start: expand one.
        let live = if first { 1 } else { rows.len() };
        let mut candidates: Vec<(f64, usize, u32)> = Vec::new();
        for (i, (row, logits)) in rows.iter().zip(logits).take(live).enumerate() {
            let logprobs = log_softmax(&self.filtered(logits.clone(), &row.tokens));
            for token in top_k(&logprobs, beams + 1) {
                let lp = f64::from(logprobs[token as usize]);
                if lp.is_finite() {
                    candidates.push((row.sum_logprob + lp, i, token));
                }
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut next_rows = Vec::with_capacity(beams);
        let (mut next, mut order) = (Vec::new(), Vec::new());
        for (score, i, token) in candidates {
            let mut tokens = rows[i].tokens.clone();
            if token == eot {
                if finished.len() < beams {
                    finished.push(Hypothesis {
                        tokens,
                        sum_logprob: score,
                        done: true,
                    });
                }
                continue;
            }
            tokens.push(token);
            next_rows.push(Hypothesis {
                tokens,
                sum_logprob: score,
                done: false,
            });
            next.push(token);
            order.push(i as u32);
            if next_rows.len() == beams {
                break;
            }
        }
        *rows = next_rows;
        (next, order)
    }
}

/// Indices of the `k` largest values.
fn top_k(values: &[f32], k: usize) -> Vec<u32> {
    let mut best: Vec<u32> = Vec::with_capacity(k + 1);
    for (i, &v) in values.iter().enumerate() {
        if best.len() == k && v <= values[best[k - 1] as usize] {
            continue;
        }
        let at = best.partition_point(|&b| values[b as usize] >= v);
        best.insert(at, i as u32);
        best.truncate(k);
    }
    best
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
    max + sum_exp(values, max).ln()
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
