//! Cutting audio into transcription windows at silences.
//!
//! Each window becomes one unit of work (retried alone if it fails), so a window is at
//! most 30 s (one Whisper pass) and ends in a pause between words whenever the audio
//! has one. Stretches without sound are left out; audio without any sound gives no
//! windows at all.

use serde::{Deserialize, Serialize};

/// Samples per second of the audio windows are cut from.
pub const SAMPLE_RATE: usize = 16_000;

/// Loudness is measured over 20 ms frames.
const FRAME: usize = SAMPLE_RATE / 50;

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
    /// A pause at least this long is a place to cut.
    pub min_pause_secs: f64,
    /// Silence kept before and after the sound of a window.
    pub margin_secs: f64,
    /// Frames quieter than this (dBFS) are silent whatever the recording's level.
    pub silence_floor_db: f64,
}

impl Default for WindowOptions {
    fn default() -> Self {
        Self {
            max_secs: 30.0,
            min_pause_secs: 0.3,
            margin_secs: 0.2,
            silence_floor_db: -50.0,
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

/// The windows of a raw 16 kHz mono signed 16-bit PCM file, read in pieces (an hour of
/// audio needs a few hundred kilobytes here, not the whole file in memory).
pub fn speech_windows_in_pcm(
    path: &std::path::Path,
    options: &WindowOptions,
) -> std::io::Result<Vec<Window>> {
    use std::io::Read;
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut levels = Vec::new();
    let mut bytes = vec![0u8; FRAME * 2];
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
        levels.push(level(&samples));
    }
    Ok(windows_from_levels(&levels, total, options))
}

/// Which frames are sound: louder than the silence floor and above the recording's own
/// noise floor (its 10th percentile) by 10 dB, so steady background noise under louder
/// speech does not count as sound. The noise margin never exceeds 20 dB below the
/// loudest frame, so a recording that is sound throughout stays sound (steady noise
/// alone then becomes a window, and Whisper's no-speech check drops it).
fn sound_frames(levels: &[f64], options: &WindowOptions) -> Vec<bool> {
    let mut sorted = levels.to_vec();
    sorted.sort_by(f64::total_cmp);
    let noise = sorted.get(sorted.len() / 10).copied().unwrap_or(-120.0);
    let peak = sorted.last().copied().unwrap_or(-120.0);
    let threshold = options
        .silence_floor_db
        .max((noise + 10.0).min(peak - 20.0));
    levels.iter().map(|&l| l > threshold).collect()
}

/// Seconds per loudness frame.
pub(crate) const FRAME_SECS: f64 = FRAME as f64 / SAMPLE_RATE as f64;

/// For each 20 ms frame of `samples`, whether it is sound (see [`WindowOptions`]).
pub(crate) fn sound_of(samples: &[f32]) -> Vec<bool> {
    sound_frames(&frame_levels(samples), &WindowOptions::default())
}

/// The windows of `samples` (16 kHz mono).
pub fn speech_windows(samples: &[f32], options: &WindowOptions) -> Vec<Window> {
    windows_from_levels(&frame_levels(samples), samples.len(), options)
}

/// The windows of `total` samples whose 20 ms frames have `levels`.
fn windows_from_levels(levels: &[f64], total: usize, options: &WindowOptions) -> Vec<Window> {
    let sound = sound_frames(levels, options);
    let to_frames = |secs: f64| (secs * SAMPLE_RATE as f64 / FRAME as f64).round() as usize;
    let (max_len, min_pause, margin) = (
        to_frames(options.max_secs).max(1),
        to_frames(options.min_pause_secs).max(1),
        to_frames(options.margin_secs),
    );
    let n = sound.len();
    let mut windows = Vec::new();
    let mut at = 0;
    // Skip silence; each window starts a margin before the next sound.
    while let Some(first) = (at..n).find(|&i| sound[i]) {
        let start = first.saturating_sub(margin).max(at);
        let last_sound = (first..n)
            .rev()
            .find(|&i| sound[i])
            .expect("first is sound");
        let end = if last_sound + 1 + margin - start <= max_len {
            (last_sound + 1 + margin).min(n)
        } else {
            cut_point(&sound, levels, start, max_len, min_pause)
        };
        windows.push(Window {
            start: start * FRAME,
            end: (end * FRAME).min(total),
        });
        at = end;
    }
    windows
}

/// Where to end a window starting at `start` that cannot hold all the remaining sound:
/// the middle of the latest pause of at least `min_pause` frames in its second half,
/// else the quietest frame of its last third (a breath between words, most likely).
fn cut_point(
    sound: &[bool],
    levels: &[f64],
    start: usize,
    max_len: usize,
    min_pause: usize,
) -> usize {
    let limit = (start + max_len).min(sound.len());
    let earliest = start + max_len / 2;
    let mut best = None;
    let mut i = earliest;
    while i < limit {
        if sound[i] {
            i += 1;
            continue;
        }
        let run_start = i;
        while i < sound.len() && !sound[i] {
            i += 1;
        }
        if i - run_start >= min_pause {
            // Cut in the pause's middle, but never beyond the window's limit.
            best = Some(((run_start + i) / 2).min(limit));
        }
    }
    best.unwrap_or_else(|| {
        let from = start + max_len * 2 / 3;
        (from..limit)
            .min_by(|&a, &b| levels[a].total_cmp(&levels[b]).then(b.cmp(&a)))
            .map_or(limit, |q| q + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 440 Hz tone where `pattern` is true, silence elsewhere, one entry per 100 ms.
    fn audio(pattern: &[bool]) -> Vec<f32> {
        let per = SAMPLE_RATE / 10;
        let mut out = Vec::new();
        for (k, &on) in pattern.iter().enumerate() {
            for i in 0..per {
                let t = (k * per + i) as f32 / SAMPLE_RATE as f32;
                out.push(if on {
                    0.3 * (t * 440.0 * std::f32::consts::TAU).sin()
                } else {
                    0.0
                });
            }
        }
        out
    }

    fn secs(w: &Window) -> (f64, f64) {
        (w.start_secs(), w.start_secs() + w.secs())
    }

    #[test]
    fn a_pcm_file_gives_the_same_windows_as_its_samples() {
        let mut p = vec![false; 7];
        p.extend([true; 333]);
        p.extend([false; 4]);
        p.extend([true; 45]);
        let samples = audio(&p);
        let bytes: Vec<u8> = samples
            .iter()
            .flat_map(|&s| ((s * 32768.0) as i16).to_le_bytes())
            .collect();
        let path =
            std::env::temp_dir().join(format!("idempipe-windows-{}.pcm", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let from_file = speech_windows_in_pcm(&path, &WindowOptions::default()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let quantized = crate::audio::pcm_to_samples(&bytes);
        assert_eq!(
            from_file,
            speech_windows(&quantized, &WindowOptions::default())
        );
        assert!(from_file.len() >= 2);
    }

    #[test]
    fn silence_gives_no_windows() {
        assert!(speech_windows(&audio(&[false; 50]), &WindowOptions::default()).is_empty());
        assert!(speech_windows(&[], &WindowOptions::default()).is_empty());
    }

    #[test]
    fn short_audio_is_one_window_with_margins() {
        let mut p = vec![false; 10];
        p.extend([true; 20]);
        p.extend([false; 10]);
        let w = speech_windows(&audio(&p), &WindowOptions::default());
        assert_eq!(w.len(), 1);
        let (s, e) = secs(&w[0]);
        assert!((s - 0.8).abs() < 1e-9 && (e - 3.2).abs() < 1e-9, "{s} {e}");
    }

    #[test]
    fn long_audio_is_cut_in_pauses_and_windows_stay_under_the_limit() {
        // 5 s sentences with 0.5 s pauses, 70 s in all.
        let mut p = Vec::new();
        while p.len() < 700 {
            p.extend([true; 50]);
            p.extend([false; 5]);
        }
        let samples = audio(&p);
        let w = speech_windows(&samples, &WindowOptions::default());
        assert!(w.len() >= 3, "{w:?}");
        for win in &w {
            assert!(win.secs() <= 30.0 + 1e-9, "{win:?}");
        }
        for pair in w.windows(2) {
            // Each cut is inside a pause: the samples around it are silent, and so is
            // everything left out between two windows.
            let cut = pair[0].end;
            assert!(
                samples[cut - 800..cut + 800].iter().all(|&s| s == 0.0),
                "cut at {cut} is in sound"
            );
            assert!(samples[cut..pair[1].start].iter().all(|&s| s == 0.0));
        }
    }

    #[test]
    fn continuous_sound_is_cut_at_the_limit_anyway() {
        let w = speech_windows(&audio(&[true; 700]), &WindowOptions::default());
        assert!(w.len() >= 3, "{w:?}");
        assert!(
            w.iter()
                .all(|x| x.secs() <= 30.0 + 1e-9 && x.secs() >= 20.0 - 1e-9 || x.end == 700 * 1600)
        );
        assert_eq!(w[0].start, 0);
        for pair in w.windows(2) {
            assert_eq!(
                pair[0].end, pair[1].start,
                "nothing of continuous sound is left out"
            );
        }
        assert_eq!(w.last().unwrap().end, 700 * 1600);
    }
}
