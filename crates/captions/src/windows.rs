//! Cutting audio into transcription windows around its speech.
//!
//! Silero VAD ([`crate::vad`]) finds the speech; its segments (each at most 30 s with
//! its padding) are joined into windows of at most 30 s, one Whisper pass each. Each
//! window becomes one unit of work (retried alone if it fails). Audio without speech
//! (silence, noise, music) gives no windows at all, so Whisper never hears it.

use serde::{Deserialize, Serialize};

use crate::vad::{self, CHUNK, VadOptions, VadState};

/// Samples per second of the audio windows are cut from.
pub const SAMPLE_RATE: usize = 16_000;

/// Loudness is measured over 20 ms frames.
const FRAME: usize = SAMPLE_RATE / 50;

/// Frames quieter than this (dBFS) are silent whatever the recording's level.
const SILENCE_FLOOR_DB: f64 = -50.0;

/// A stretch of audio to transcribe, in samples from the start of the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// First sample.
    pub start: usize,
    /// One past the last sample.
    pub end: usize,
}

impl Window {
    /// Start in seconds.
    pub fn start_secs(&self) -> f64 {
        self.start as f64 / SAMPLE_RATE as f64
    }

    /// Length in seconds.
    pub fn secs(&self) -> f64 {
        (self.end - self.start) as f64 / SAMPLE_RATE as f64
    }
}

/// How windows are cut.
#[derive(Debug, Clone)]
pub struct WindowOptions {
    /// Longest window, in seconds (Whisper hears 30 s at a time).
    pub max_secs: f64,
    /// How the voice activity detector finds speech (its longest segment is capped at
    /// `max_secs`).
    pub vad: VadOptions,
}

impl Default for WindowOptions {
    fn default() -> Self {
        Self {
            max_secs: 30.0,
            vad: VadOptions::default(),
        }
    }
}

/// Loudness of each 20 ms frame, in dBFS.
fn frame_levels(samples: &[f32]) -> Vec<f64> {
    samples.chunks(FRAME).map(level).collect()
}

/// Loudness of one frame, in dBFS.
fn level(frame: &[f32]) -> f64 {
    let power = frame.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / frame.len() as f64;
    10.0 * (power + 1e-12).log10()
}

/// Which frames are sound: louder than the silence floor and above the recording's own
/// noise floor (its 10th percentile) by 10 dB, so steady background noise under louder
/// speech does not count as sound. The noise margin never exceeds 20 dB below the
/// loudest frame. Used to snap word times to the sound of the words.
fn sound_frames(levels: &[f64]) -> Vec<bool> {
    let mut sorted = levels.to_vec();
    sorted.sort_by(f64::total_cmp);
    let noise = sorted.get(sorted.len() / 10).copied().unwrap_or(-120.0);
    let peak = sorted.last().copied().unwrap_or(-120.0);
    let threshold = SILENCE_FLOOR_DB.max((noise + 10.0).min(peak - 20.0));
    levels.iter().map(|&l| l > threshold).collect()
}

/// Seconds per loudness frame.
pub(crate) const FRAME_SECS: f64 = FRAME as f64 / SAMPLE_RATE as f64;

/// For each 20 ms frame of `samples`, whether it is sound (louder than the noise).
pub(crate) fn sound_of(samples: &[f32]) -> Vec<bool> {
    sound_frames(&frame_levels(samples))
}

/// A window-building failure: the file could not be read, or the detector failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WindowError {
    /// Reading the audio failed.
    #[error("cannot read the audio: {0}")]
    Io(#[from] std::io::Error),
    /// The voice activity detector failed.
    #[error("voice activity detection failed: {0}")]
    Vad(#[from] candle_core::Error),
}

/// The windows of a raw 16 kHz mono signed 16-bit PCM file, read in pieces (an hour of
/// audio needs a few hundred kilobytes here, not the whole file in memory). The same
/// windows as [`speech_windows`] on the file's samples.
pub fn speech_windows_in_pcm(
    path: &std::path::Path,
    options: &WindowOptions,
) -> Result<Vec<Window>, WindowError> {
    use std::io::Read;
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let model = vad::model();
    let mut state = VadState::default();
    let mut probs = Vec::new();
    let mut bytes = vec![0u8; CHUNK * 1024 * 2];
    // Samples read but not yet a whole chunk.
    let mut pending: Vec<f32> = Vec::new();
    let mut total = 0;
    loop {
        let mut filled = 0;
        while filled < bytes.len() {
            match file.read(&mut bytes[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        let samples = crate::audio::pcm_to_samples(&bytes[..filled]);
        if samples.is_empty() {
            break;
        }
        total += samples.len();
        pending.extend_from_slice(&samples);
        let whole = pending.len() / CHUNK * CHUNK;
        probs.extend(model.probabilities(&mut state, &pending[..whole])?);
        pending.drain(..whole);
    }
    // The tail is padded with zeros to a whole chunk (a whole zero chunk if none is
    // left), as for samples in memory.
    pending.resize(CHUNK, 0.0);
    probs.extend(model.probabilities(&mut state, &pending)?);
    Ok(windows_of(&probs, total, options))
}

/// The windows of `samples` (16 kHz mono).
pub fn speech_windows(
    samples: &[f32],
    options: &WindowOptions,
) -> candle_core::Result<Vec<Window>> {
    Ok(windows_of(
        &vad::speech_probabilities(samples)?,
        samples.len(),
        options,
    ))
}

/// The windows of `total` samples whose 32 ms chunks have speech probabilities `probs`.
fn windows_of(probs: &[f32], total: usize, options: &WindowOptions) -> Vec<Window> {
    let vad = VadOptions {
        max_speech_secs: options.vad.max_speech_secs.min(options.max_secs),
        ..options.vad.clone()
    };
    let segments = vad::speech_segments(probs, total, &vad);
    join_segments(&segments, (options.max_secs * SAMPLE_RATE as f64) as usize)
}

/// Joins consecutive speech segments (start, end in samples) into windows spanning at
/// most `max_len` samples (the silence between two segments of a window included).
fn join_segments(segments: &[(usize, usize)], max_len: usize) -> Vec<Window> {
    let mut windows: Vec<Window> = Vec::new();
    for &(start, end) in segments {
        match windows.last_mut() {
            Some(w) if end - w.start <= max_len => w.end = end,
            _ => windows.push(Window { start, end }),
        }
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_joined_while_the_window_stays_under_the_limit() {
        let secs = |s: f64| (s * SAMPLE_RATE as f64) as usize;
        let segments = [
            (secs(1.0), secs(5.0)),
            (secs(8.0), secs(20.0)),
            (secs(24.0), secs(32.0)),
            (secs(40.0), secs(69.0)),
        ];
        let w = join_segments(&segments, secs(30.0));
        let spans: Vec<(f64, f64)> = w
            .iter()
            .map(|w| (w.start_secs(), w.start_secs() + w.secs()))
            .collect();
        assert_eq!(spans, vec![(1.0, 20.0), (24.0, 32.0), (40.0, 69.0)]);
        assert!(join_segments(&[], secs(30.0)).is_empty());
    }

    #[test]
    fn silence_gives_no_windows() {
        let options = WindowOptions::default();
        assert!(
            speech_windows(&vec![0.0; 5 * SAMPLE_RATE], &options)
                .unwrap()
                .is_empty()
        );
        assert!(speech_windows(&[], &options).unwrap().is_empty());
    }
}
