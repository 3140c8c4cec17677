//! Whisper in process, on the CPU.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::{ProviderError, Transcriber};
use crate::mel::mel_filters;
use crate::model::{ModelError, WhisperModel};
use crate::transcribe::{TranscribeOptions, Transcript, transcribe};

/// Runs a loaded Whisper model on a blocking thread, one call at a time: a call already
/// uses every core (candle's matrix products are multi-threaded), so concurrent calls
/// would only add memory and cache misses. Clones share the model and the turn.
#[derive(Clone)]
pub struct LocalTranscriber {
    model: WhisperModel,
    filters: Arc<Vec<f32>>,
    options: TranscribeOptions,
    name: String,
    turn: Arc<tokio::sync::Semaphore>,
}

impl LocalTranscriber {
    /// Loads the model in `dir`.
    pub fn load(dir: &Path, options: TranscribeOptions) -> Result<Self, ModelError> {
        let model = WhisperModel::load(dir)?;
        let filters = Arc::new(mel_filters(model.config.num_mel_bins));
        let label = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "whisper".into());
        Ok(Self {
            model,
            filters,
            options,
            name: format!("local({label})"),
            turn: Arc::new(tokio::sync::Semaphore::new(1)),
        })
    }
}

#[async_trait]
impl Transcriber for LocalTranscriber {
    async fn transcribe(
        &self,
        samples: Vec<f32>,
        _idempotency_key: &str,
    ) -> Result<Transcript, ProviderError> {
        let mut model = self.model.clone();
        let filters = self.filters.clone();
        let options = self.options.clone();
        let _turn = self
            .turn
            .acquire()
            .await
            .expect("the semaphore is never closed");
        tokio::task::spawn_blocking(move || transcribe(&mut model, &filters, &samples, &options))
            .await
            .map_err(|e| ProviderError::permanent(format!("transcription task failed: {e}")))?
            .map_err(|e| ProviderError::permanent(e.to_string()))
    }

    fn name(&self) -> &str {
        &self.name
    }
}
