//! Transcribers: where the pipeline sends a window of audio to be turned into text.
//!
//! [`LocalTranscriber`] runs Whisper in process; [`HttpTranscriber`] calls a service with
//! the OpenAI-compatible `POST /v1/audio/transcriptions`. Failures are classified as
//! the enhancement providers' are ([`ProviderError`]): retryable or permanent.

mod http;
mod local;

use async_trait::async_trait;

pub use http::HttpTranscriber;
pub use idempipe_enhance::ProviderError;
pub use local::LocalTranscriber;

use crate::transcribe::Transcript;

/// Something that transcribes one window of 16 kHz mono audio per call.
#[async_trait]
pub trait Transcriber: Send + Sync {
    /// Transcribes `samples`; segment times are seconds from their start.
    /// `idempotency_key` names this unit of work for services that deduplicate.
    async fn transcribe(
        &self,
        samples: Vec<f32>,
        idempotency_key: &str,
    ) -> Result<Transcript, ProviderError>;

    /// A short name for logs and reports, e.g. `local(whisper-tiny.en)`.
    fn name(&self) -> &str;
}
