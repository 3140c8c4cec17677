//! Voice activity detection with Silero VAD v6 (MIT), run on candle: which stretches of
//! audio hold speech, so music and noise never reach Whisper.
//!
//! The model (`assets/silero_vad_v6.onnx`, 1.2 MB, from the faster-whisper wheel) is
//! built into the crate and read once, on first use.

mod network;
mod onnx;
mod segments;

use std::sync::OnceLock;

pub use network::{CHUNK, SileroVad, VadState};
pub use segments::{VadOptions, speech_segments};

/// The bytes of `silero_vad_v6.onnx`.
const MODEL: &[u8] = include_bytes!("../../assets/silero_vad_v6.onnx");

/// The built-in Silero VAD model, loaded on first use.
pub fn model() -> &'static SileroVad {
    static VAD: OnceLock<SileroVad> = OnceLock::new();
    VAD.get_or_init(|| {
        SileroVad::from_onnx(MODEL)
            .unwrap_or_else(|e| panic!("the built-in silero_vad_v6.onnx is unreadable: {e}"))
    })
}

/// The speech probability of every 32 ms chunk of `samples` (16 kHz mono), the last
/// chunk padded with zeros (as faster-whisper pads: a whole zero chunk is added when
/// the length is a multiple of 512).
pub fn speech_probabilities(samples: &[f32]) -> candle_core::Result<Vec<f32>> {
    let mut padded = samples.to_vec();
    padded.resize((samples.len() / CHUNK + 1) * CHUNK, 0.0);
    model().probabilities(&mut VadState::default(), &padded)
}

/// The speech segments of `samples`, as (start, end) samples.
pub fn speech_in(
    samples: &[f32],
    options: &VadOptions,
) -> candle_core::Result<Vec<(usize, usize)>> {
    Ok(speech_segments(
        &speech_probabilities(samples)?,
        samples.len(),
        options,
    ))
}
