//! Transcription of one stretch of audio: the reference's seek loop over 30 s windows.
//!
//! Each pass decodes 30 s from `seek`. When the last segment of a pass is unfinished
//! (it ends on text, not on a closing timestamp pair), the next pass starts at that
//! segment's start instead of 30 s later, so no word is cut at a window boundary.
//! A pass that looks bad (repetitive, or improbable) is redone at a higher
//! temperature; a window the model judges to hold no speech is skipped.

use candle_core::{Device, Tensor};
use candle_transformers::models::whisper as w;

use crate::align::{Word, snap_to_sound, timed_words};
use crate::decode::{Decoded, Search, WindowDecoder};
use crate::mel::log_mel;
use crate::model::WhisperModel;

/// Mel frames per encoder position (the encoder's second convolution has stride 2).
const INPUT_STRIDE: usize = 2;

/// Samples drawn per fallback temperature; the likeliest is kept.
const BEST_OF: usize = 5;

/// Seconds per timestamp step.
const TIME_PRECISION: f64 = 0.02;

/// A piece of transcribed speech, timed in seconds from the start of the audio given.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// Start, in seconds.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// The words, trimmed.
    pub text: String,
    /// Each word with its own times (empty when word timing is off or unavailable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
}

/// How a transcription went, beyond its segments.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transcript {
    /// The speech found.
    pub segments: Vec<Segment>,
    /// 30 s passes run (fallback passes not counted).
    pub passes: u32,
    /// Passes redone at a higher temperature.
    pub fallbacks: u32,
    /// Passes skipped because the model heard no speech.
    pub no_speech_passes: u32,
    /// The language transcribed (ISO 639-1): detected on the first pass with
    /// `language: "auto"`, else the one asked for; `en` for English-only models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// The language value that asks for detection.
pub const AUTO_LANGUAGE: &str = "auto";

/// Decoding settings.
#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    /// Language code for multilingual models (`en`, `de`, ...), or [`AUTO_LANGUAGE`]
    /// to detect it from the first 30 s; English-only models ignore it.
    pub language: String,
    /// Give the previous pass's text as a prompt (keeps style and names consistent).
    pub condition_on_previous_text: bool,
    /// Hypotheses kept by beam search at temperature 0; 1 decodes greedily.
    pub beam_size: usize,
    /// Time every word (cross-attention alignment); segments then start and end with
    /// their words.
    pub word_timestamps: bool,
    /// Transcribe only the speech the voice activity detector finds (its segments joined
    /// end to end, times mapped back), as faster-whisper's `vad_filter`. Off by default,
    /// as there: the pipeline cuts its windows with the detector already.
    pub vad_filter: bool,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: "en".into(),
            condition_on_previous_text: true,
            beam_size: 5,
            word_timestamps: true,
            vad_filter: false,
        }
    }
}

/// Transcription failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranscribeError {
    /// The multilingual model has no token for the requested language.
    #[error("the model has no language {0:?} (use a code such as en, de, fr)")]
    UnknownLanguage(String),
    /// A tensor operation failed.
    #[error("whisper inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}

/// Transcribes `samples` (16 kHz mono in [-1, 1]) with `model` and mel `filters`.
pub fn transcribe(
    model: &mut WhisperModel,
    filters: &[f32],
    samples: &[f32],
    options: &TranscribeOptions,
) -> Result<Transcript, TranscribeError> {
    if !options.vad_filter {
        return transcribe_stretch(model, filters, samples, options);
    }
    // As faster-whisper's `vad_filter`: the speech segments (not cut at 30 s) are joined
    // into one stretch, transcribed with the seek loop, and the times mapped back.
    let vad = crate::vad::VadOptions {
        max_speech_secs: f64::INFINITY,
        ..crate::vad::VadOptions::default()
    };
    let speech = crate::vad::speech_in(samples, &vad)?;
    if speech.is_empty() {
        let language = match language_token(model, &options.language)? {
            _ if model.is_english_only() => Some("en".to_string()),
            known => known.map(|(_, code)| code),
        };
        return Ok(Transcript {
            language,
            ..Transcript::default()
        });
    }
    let joined: Vec<f32> = speech
        .iter()
        .flat_map(|&(a, b)| samples[a..b].iter().copied())
        .collect();
    let mut out = transcribe_stretch(model, filters, &joined, options)?;
    let map = SpeechMap::new(&speech);
    for s in &mut out.segments {
        s.start = map.original(s.start, false);
        s.end = map.original(s.end, true);
        for word in &mut s.words {
            word.start = map.original(word.start, false);
            word.end = map.original(word.end, true);
        }
    }
    tracing::debug!(
        kept_secs = joined.len() as f64 / w::SAMPLE_RATE as f64,
        of_secs = samples.len() as f64 / w::SAMPLE_RATE as f64,
        "transcribed the speech the detector found"
    );
    Ok(out)
}

/// Maps times in speech segments joined end to end back to times in the audio they
/// were cut from (faster-whisper's `SpeechTimestampsMap`).
struct SpeechMap {
    /// Where each segment ends in the joined audio, in samples.
    joined_ends: Vec<usize>,
    /// Seconds of audio left out before each segment.
    silence_before: Vec<f64>,
}

impl SpeechMap {
    fn new(segments: &[(usize, usize)]) -> Self {
        let (mut joined_ends, mut silence_before) = (Vec::new(), Vec::new());
        let (mut previous_end, mut silent) = (0, 0);
        for &(start, end) in segments {
            silent += start - previous_end;
            previous_end = end;
            joined_ends.push(end - silent);
            silence_before.push(silent as f64 / w::SAMPLE_RATE as f64);
        }
        Self {
            joined_ends,
            silence_before,
        }
    }

    /// The original time of `secs` in the joined audio; an `end` exactly at a segment's
    /// end stays in that segment.
    fn original(&self, secs: f64, end: bool) -> f64 {
        let sample = (secs * w::SAMPLE_RATE as f64) as usize;
        let index = match self.joined_ends.iter().position(|&e| e == sample) {
            Some(i) if end => i,
            _ => self
                .joined_ends
                .partition_point(|&e| e <= sample)
                .min(self.joined_ends.len() - 1),
        };
        secs + self.silence_before[index]
    }
}

/// The language to transcribe in: None to detect it (or for English-only models,
/// whose code is `en`), else its token and code.
fn language_token(
    model: &WhisperModel,
    language: &str,
) -> Result<Option<(u32, String)>, TranscribeError> {
    if model.is_english_only() {
        return Ok(None);
    }
    if language == AUTO_LANGUAGE {
        return Ok(None);
    }
    let known = model.languages.iter().find(|(_, c)| c == language);
    let (id, code) = known.ok_or_else(|| TranscribeError::UnknownLanguage(language.into()))?;
    Ok(Some((*id, code.clone())))
}

/// Transcribes all of `samples` (no voice activity detection).
fn transcribe_stretch(
    model: &mut WhisperModel,
    filters: &[f32],
    samples: &[f32],
    options: &TranscribeOptions,
) -> Result<Transcript, TranscribeError> {
    let mut out = Transcript::default();
    // The language token; None for English-only models, or until detected.
    let mut language = None;
    if model.is_english_only() {
        out.language = Some("en".into());
    } else if let Some((id, code)) = language_token(model, &options.language)? {
        language = Some(id);
        out.language = Some(code);
    }
    let n_mels = model.config.num_mel_bins;
    let (mel, frames) = log_mel(&model.config, filters, samples);
    let mel = Tensor::from_vec(mel, (1, n_mels, frames), &Device::Cpu)?;
    let content_frames = samples.len() / w::HOP_LENGTH;
    let sound = crate::windows::sound_of(samples);
    let ts_begin = model.vocab.special.timestamp_begin;
    let mut rng = fastrand::Rng::with_seed(0x1de3_919e);
    let mut all_tokens: Vec<u32> = Vec::new();
    let mut prompt_from = 0;
    let mut seek = 0;
    while seek < content_frames {
        let time_offset = (seek * w::HOP_LENGTH) as f64 / w::SAMPLE_RATE as f64;
        let segment_size = (content_frames - seek).min(w::N_FRAMES);
        let segment_secs = (segment_size * w::HOP_LENGTH) as f64 / w::SAMPLE_RATE as f64;
        let window = mel.narrow(2, seek, w::N_FRAMES)?;
        let features = model.encoder.forward(&window)?;
        let prompt = &all_tokens[prompt_from..];
        let mut decoder = WindowDecoder {
            model: &*model,
            audio: model.decoder.cache(&features)?,
            language,
            rng: &mut rng,
        };
        if out.language.is_none() {
            let (id, code, probability) = decoder.detect_language()?;
            tracing::debug!(language = %code, probability, "detected the language");
            decoder.language = Some(id);
            language = Some(id);
            out.language = Some(code);
        }
        let (result, fallbacks) = decode_with_fallback(&mut decoder, prompt, options.beam_size)?;
        out.passes += 1;
        out.fallbacks += fallbacks;
        tracing::debug!(
            seek_secs = time_offset,
            no_speech_prob = result.no_speech_prob,
            avg_logprob = result.avg_logprob,
            compression_ratio = result.compression_ratio,
            temperature = result.temperature,
            tokens = result.tokens.len(),
            "decoded a 30 s pass"
        );
        if result.no_speech_prob > w::NO_SPEECH_THRESHOLD
            && result.avg_logprob < w::LOGPROB_THRESHOLD
        {
            out.no_speech_passes += 1;
            seek += segment_size;
            continue;
        }
        let (segments, advance) = split_segments(&result.tokens, ts_begin, segment_size);
        let words = if options.word_timestamps {
            word_times(&decoder, &segments, segment_size, time_offset, &sound)?
        } else {
            vec![Vec::new(); segments.len()]
        };
        for ((start, end, tokens), words) in segments.into_iter().zip(words) {
            let text = model.vocab.text(tokens).trim().to_string();
            let mut start = time_offset + start.min(segment_secs);
            let mut end = time_offset + end.min(segment_secs);
            if let (Some(first), Some(last)) = (words.first(), words.last()) {
                (start, end) = (first.start, last.end.max(first.start));
            }
            if !text.is_empty() && end > start {
                out.segments.push(Segment {
                    start,
                    end,
                    text,
                    words,
                });
            }
            all_tokens.extend_from_slice(tokens);
        }
        seek += advance.max(1);
        if !options.condition_on_previous_text || result.temperature > 0.5 {
            prompt_from = all_tokens.len();
        }
    }
    Ok(out)
}

/// The words of each segment, timed from the alignment heads over the `segment_size`
/// mel frames of the pass, in seconds from the audio start (`time_offset` is the
/// pass's start), snapped to the `sound` of the audio (one flag per 20 ms).
fn word_times(
    decoder: &WindowDecoder<'_>,
    segments: &[TimedTokens<'_>],
    segment_size: usize,
    time_offset: f64,
    sound: &[bool],
) -> candle_core::Result<Vec<Vec<Word>>> {
    let eot = decoder.model.vocab.special.eot;
    let text_of =
        |tokens: &[u32]| -> Vec<u32> { tokens.iter().copied().filter(|&t| t < eot).collect() };
    let all: Vec<u32> = segments.iter().flat_map(|s| text_of(s.2)).collect();
    if all.is_empty() {
        return Ok(vec![Vec::new(); segments.len()]);
    }
    let starts = decoder.token_starts(&all, segment_size / INPUT_STRIDE)?;
    let mut from = 0;
    let per_segment: Vec<Vec<Word>> = segments
        .iter()
        .map(|s| {
            let text = text_of(s.2);
            let pieces: Vec<Vec<u8>> = text
                .iter()
                .map(|&t| decoder.model.vocab.token_bytes(t))
                .collect();
            let words = timed_words(&pieces, &starts[from..=from + text.len()], time_offset);
            from += text.len();
            words
        })
        .collect();
    // Snapped together, so a boundary between two segments moves too.
    let counts: Vec<usize> = per_segment.iter().map(Vec::len).collect();
    let mut all_words: Vec<Word> = per_segment.into_iter().flatten().collect();
    snap_to_sound(&mut all_words, sound, crate::windows::FRAME_SECS);
    let mut rest = all_words.into_iter();
    Ok(counts
        .into_iter()
        .map(|n| rest.by_ref().take(n).collect())
        .collect())
}

/// Decodes at rising temperatures until a pass is neither repetitive nor improbable
/// (or the model says there is no speech). When every temperature fails, the likeliest
/// pass that is not repetitive is kept (as faster-whisper does; the reference keeps the
/// last one). Returns the pass and how many were redone.
fn decode_with_fallback(
    decoder: &mut WindowDecoder<'_>,
    prompt: &[u32],
    beam_size: usize,
) -> candle_core::Result<(Decoded, u32)> {
    let mut tried: Vec<Decoded> = Vec::new();
    for &t in w::TEMPERATURES.iter() {
        // Beam search (or greedy) at 0; above it, the likeliest of several samples (the
        // reference's `best_of`).
        let search = match (t > 0.0, beam_size) {
            (true, _) => Search::Sample {
                temperature: t,
                best_of: BEST_OF,
            },
            (false, 0 | 1) => Search::Greedy,
            (false, beams) => Search::Beam { beams },
        };
        let result = decoder.decode(prompt, search)?;
        let repetitive = result.compression_ratio > w::COMPRESSION_RATIO_THRESHOLD;
        let improbable = result.avg_logprob < w::LOGPROB_THRESHOLD;
        let silent = result.no_speech_prob > w::NO_SPEECH_THRESHOLD;
        if !(repetitive || improbable) || silent {
            return Ok((result, tried.len() as u32));
        }
        tried.push(result);
    }
    let fallbacks = tried.len() as u32 - 1;
    let by_logprob = |a: &&Decoded, b: &&Decoded| a.avg_logprob.total_cmp(&b.avg_logprob);
    let best = tried
        .iter()
        .filter(|r| r.compression_ratio <= w::COMPRESSION_RATIO_THRESHOLD)
        .max_by(by_logprob)
        .or_else(|| tried.iter().max_by(by_logprob))
        .expect("at least one temperature")
        .clone();
    Ok((best, fallbacks))
}

/// Start and end (seconds from the pass start) and the tokens of one segment.
pub(crate) type TimedTokens<'a> = (f64, f64, &'a [u32]);

/// Cuts a pass's tokens into timed segments (start and end in seconds from the pass
/// start, and the tokens of each), and says how many mel frames the pass consumed.
///
/// Segments end where two timestamp tokens meet. If the pass ends on a lone timestamp,
/// everything was finished and the whole window is consumed; otherwise the next pass
/// resumes at the last closing timestamp, so the unfinished tail is decoded again.
pub(crate) fn split_segments(
    tokens: &[u32],
    ts_begin: u32,
    segment_size: usize,
) -> (Vec<TimedTokens<'_>>, usize) {
    let is_ts = |t: u32| t >= ts_begin;
    let time = |t: u32| (t - ts_begin) as f64 * TIME_PRECISION;
    let single_ending =
        tokens.len() >= 2 && !is_ts(tokens[tokens.len() - 2]) && is_ts(tokens[tokens.len() - 1]);
    let mut cuts: Vec<usize> = (1..tokens.len())
        .filter(|&i| is_ts(tokens[i - 1]) && is_ts(tokens[i]))
        .collect();
    let mut segments = Vec::new();
    if !cuts.is_empty() {
        if single_ending {
            cuts.push(tokens.len());
        }
        let mut from = 0;
        for &to in &cuts {
            let piece = &tokens[from..to];
            if let (Some(&first), Some(&last)) = (piece.first(), piece.last())
                && is_ts(first)
                && is_ts(last)
            {
                segments.push((time(first), time(last), piece));
            }
            from = to;
        }
        let advance = if single_ending {
            segment_size
        } else {
            (tokens[from - 1] - ts_begin) as usize * INPUT_STRIDE
        };
        return (segments, advance);
    }
    // No complete pair: one segment over the whole pass, ending at its last timestamp.
    let mut end = (segment_size * w::HOP_LENGTH) as f64 / w::SAMPLE_RATE as f64;
    if let Some(&last) = tokens.iter().rev().find(|&&t| is_ts(t))
        && last != ts_begin
    {
        end = time(last);
    }
    let start = tokens
        .first()
        .filter(|&&t| is_ts(t))
        .map_or(0.0, |&t| time(t));
    segments.push((start, end, tokens));
    (segments, segment_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: u32 = 1000;

    #[test]
    fn pairs_cut_segments_and_a_lone_final_timestamp_consumes_the_window() {
        // <0.00> a b <1.00><1.50> c <2.00>
        let tokens = [TS, 1, 2, TS + 50, TS + 75, 3, TS + 100];
        let (segs, advance) = split_segments(&tokens, TS, 3000);
        let times: Vec<(f64, f64)> = segs.iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(times, vec![(0.0, 1.0), (1.5, 2.0)]);
        assert_eq!(segs[1].2, &[TS + 75, 3, TS + 100]);
        assert_eq!(advance, 3000);
    }

    #[test]
    fn an_unfinished_last_segment_is_decoded_again_from_its_start() {
        // <0.00> a <1.00><1.50> b c   (cut off: no closing timestamp)
        let tokens = [TS, 1, TS + 50, TS + 75, 2, 3];
        let (segs, advance) = split_segments(&tokens, TS, 3000);
        assert_eq!(segs.len(), 1);
        assert_eq!((segs[0].0, segs[0].1), (0.0, 1.0));
        // Resume at 1.00 s = 50 timestamp steps = 100 mel frames.
        assert_eq!(advance, 100);
    }

    #[test]
    fn times_in_joined_speech_map_back_past_the_silences_left_out() {
        // Speech at 1-3 s and 5-6 s: joined, 0-2 s is the first, 2-3 s the second.
        let map = SpeechMap::new(&[(16_000, 48_000), (80_000, 96_000)]);
        assert!((map.original(0.5, false) - 1.5).abs() < 1e-9);
        assert!((map.original(2.0, true) - 3.0).abs() < 1e-9);
        assert!((map.original(2.0, false) - 5.0).abs() < 1e-9);
        assert!((map.original(2.5, false) - 5.5).abs() < 1e-9);
        assert!((map.original(9.0, true) - 12.0).abs() < 1e-9);
    }

    #[test]
    fn without_pairs_the_pass_is_one_segment() {
        let tokens = [TS + 10, 1, 2, TS + 120];
        let (segs, advance) = split_segments(&tokens, TS, 800);
        assert_eq!((segs[0].0, segs[0].1), (0.2, 2.4));
        assert_eq!(advance, 800);
    }
}
