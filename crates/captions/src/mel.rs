//! Log-mel spectrograms as Whisper expects them: 16 kHz audio, 25 ms Hann windows every
//! 10 ms, the Slaney-style mel filterbank librosa builds by default (`htk=False`,
//! `norm="slaney"`), computed here because faster-whisper models ship no filters.

use candle_transformers::models::whisper::{self as w, Config};

/// Frequency bins of one FFT frame (`N_FFT / 2 + 1`).
pub const FFT_BINS: usize = w::N_FFT / 2 + 1;

/// Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        MIN_LOG_HZ / F_SP + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp()
    } else {
        mel * F_SP
    }
}

/// The `n_mels` x [`FFT_BINS`] filterbank from 0 Hz to Nyquist, row-major: triangles
/// between mel-spaced edges, each scaled to unit area (`2 / (f_right - f_left)`).
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let sr = w::SAMPLE_RATE as f64;
    let fft_freqs: Vec<f64> = (0..FFT_BINS)
        .map(|i| i as f64 * sr / w::N_FFT as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut filters = vec![0f32; n_mels * FFT_BINS];
    for m in 0..n_mels {
        let (left, center, right) = (edges[m], edges[m + 1], edges[m + 2]);
        let norm = 2.0 / (right - left);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let rising = (f - left) / (center - left);
            let falling = (right - f) / (right - center);
            filters[m * FFT_BINS + k] = (rising.min(falling).max(0.0) * norm) as f32;
        }
    }
    filters
}

/// The normalised log-mel spectrogram of `samples` (16 kHz mono in [-1, 1]), laid out
/// `n_mels` x frames, with 30 s of silence appended so that every 30 s window starting
/// inside the audio is complete. Returns the values and the frame count.
pub fn log_mel(config: &Config, filters: &[f32], samples: &[f32]) -> (Vec<f32>, usize) {
    let mut padded = Vec::with_capacity(samples.len() + w::N_SAMPLES);
    padded.extend_from_slice(samples);
    padded.resize(samples.len() + w::N_SAMPLES, 0.0);
    let mel = w::audio::pcm_to_mel(config, &padded, filters);
    let frames = mel.len() / config.num_mel_bins;
    (mel, frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips_and_bends_at_1khz() {
        for hz in [0.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6, "{hz}");
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!(
            (hz_to_mel(6400.0) - 42.0).abs() < 1e-9,
            "6.4 kHz is 27 log steps above 1 kHz"
        );
    }

    #[test]
    fn filters_are_unit_area_triangles_covering_the_band() {
        let filters = mel_filters(80);
        assert_eq!(filters.len(), 80 * FFT_BINS);
        let bin_hz = 16000.0 / 400.0;
        for m in 0..80 {
            let row = &filters[m * FFT_BINS..(m + 1) * FFT_BINS];
            assert!(row.iter().all(|&v| v >= 0.0));
            let peak = row.iter().cloned().fold(0f32, f32::max);
            assert!(peak > 0.0, "filter {m} is empty");
            // Above 1 kHz the triangles span many 40 Hz bins, so their sampled area is
            // close to the unit area they are scaled to.
            if m >= 40 {
                let area: f32 = row.iter().sum::<f32>() * bin_hz;
                assert!((area - 1.0).abs() < 0.1, "filter {m} area {area}");
            }
        }
        // The first filter starts at 0 Hz, the last ends at Nyquist: nothing above it.
        assert_eq!(filters[0], 0.0);
        assert!(filters[79 * FFT_BINS + FFT_BINS - 1].abs() < 1e-9);
    }
}
