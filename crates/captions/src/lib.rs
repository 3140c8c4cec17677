//! Offline captions for idempipe: speech to text with Whisper running on candle, from
//! CTranslate2 (faster-whisper) weights; timestamped decoding; windows around the speech
//! that voice activity detection finds; WebVTT and SRT output.
//!
//! # Layout
//! - [`model`]: the CTranslate2 reader ([`model::ct2`]) and [`WhisperModel`], which maps
//!   its tensors onto candle's Whisper.
//! - [`mel`]: the Slaney mel filterbank and log-mel spectrograms.
//! - `decode`: one decoder pass with the reference's timestamp rules.
//! - [`transcribe`](mod@transcribe): the seek loop with temperature fallback and the
//!   no-speech check.
//! - [`vad`]: voice activity detection (Silero VAD v6 on candle).
//! - [`windows`]: cutting audio into windows of at most 30 s around the speech found.
//! - [`audio`]: PCM and WAV.
//! - [`cues`]: cues from window transcripts, as WebVTT and SRT.
//! - [`provider`]: the [`Transcriber`] trait, local and HTTP.

mod align;
pub mod audio;
pub mod cues;
mod decode;
pub mod mel;
pub mod model;
pub mod provider;
pub mod transcribe;
pub mod vad;
pub mod windows;

pub use align::Word;
pub use cues::{Cue, cues_from, to_srt, to_vtt};
pub use model::{ModelError, WhisperModel, default_model_dir};
pub use provider::{HttpTranscriber, LocalTranscriber, ProviderError, Transcriber};
pub use transcribe::{AUTO_LANGUAGE, Segment, TranscribeOptions, Transcript, transcribe};
pub use windows::{Window, WindowOptions, speech_windows, speech_windows_in_pcm};
