//! What every stage handler shares: the store, run parameters (cached per run) and
//! providers (cached per URL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use idempipe_captions::{HttpTranscriber, LocalTranscriber, TranscribeOptions, Transcriber};
use idempipe_engine::{HandlerError, SharedStore};
use idempipe_enhance::provider::{HttpProvider, HttpProviderConfig, LocalProvider, Provider};

use super::artifacts::RunDir;
use super::caption_settings::CaptionSettings;
use super::register::PipelineOptions;
use super::settings::{LOCAL_PROVIDER, RunParams};

/// Shared state of the stage handlers of one worker.
pub(crate) struct Ctx {
    pub(crate) store: SharedStore,
    pub(crate) options: PipelineOptions,
    runs: Mutex<HashMap<i64, Arc<RunParams>>>,
    providers: Mutex<HashMap<String, Arc<dyn Provider>>>,
    /// Enhancement limiters known to exist.
    limiters: Mutex<std::collections::HashSet<String>>,
    /// Held while a model loads, so concurrent windows load it once.
    transcribers: tokio::sync::Mutex<HashMap<String, Arc<dyn Transcriber>>>,
}

impl Ctx {
    pub(crate) fn new(store: SharedStore, options: PipelineOptions) -> Self {
        Self {
            store,
            options,
            runs: Mutex::default(),
            providers: Mutex::default(),
            limiters: Mutex::default(),
            transcribers: tokio::sync::Mutex::default(),
        }
    }

    /// The parameters of `run_id`; read once, then cached (they never change).
    pub(crate) async fn params(&self, run_id: i64) -> Result<Arc<RunParams>, HandlerError> {
        if let Some(p) = self.runs.lock().expect("run cache").get(&run_id) {
            return Ok(p.clone());
        }
        let run = self
            .store
            .run_get(run_id)
            .await
            .map_err(HandlerError::transient)?;
        let params: RunParams = serde_json::from_value(run.params).map_err(|e| {
            HandlerError::permanent(format!("run {run_id}: params are not a video run's: {e}"))
        })?;
        let params = Arc::new(params);
        self.runs
            .lock()
            .expect("run cache")
            .insert(run_id, params.clone());
        Ok(params)
    }

    /// The parameters and artifact directory of `run_id`.
    pub(crate) async fn run(&self, run_id: i64) -> Result<(Arc<RunParams>, RunDir), HandlerError> {
        let params = self.params(run_id).await?;
        let dir = RunDir::new(&params.artifacts, run_id);
        Ok((params, dir))
    }

    /// The limiter of `run_id`'s enhancement endpoint, defined at the run's rate if it does
    /// not exist yet (a run started by an older version, or a pruned limiter).
    pub(crate) async fn enhance_limiter(&self, run_id: i64) -> Result<String, HandlerError> {
        let params = self.params(run_id).await?;
        let name = super::register::enhance_limiter(&params.settings.provider);
        if self.limiters.lock().expect("limiter set").contains(&name) {
            return Ok(name);
        }
        match self.store.limiter_get(&name).await {
            Ok(_) => {}
            Err(idempipe_engine::StoreError::NotFound { .. }) => {
                super::register::ensure_limiter(
                    &self.store,
                    &params.settings.provider,
                    params.settings.api_rate,
                )
                .await
                .map_err(HandlerError::transient)?;
            }
            Err(e) => return Err(HandlerError::transient(e)),
        }
        self.limiters
            .lock()
            .expect("limiter set")
            .insert(name.clone());
        Ok(name)
    }

    /// The provider named by a run's settings (`local` or a base URL), built once.
    pub(crate) fn provider(&self, name: &str) -> Result<Arc<dyn Provider>, HandlerError> {
        let mut cache = self.providers.lock().expect("provider cache");
        if let Some(p) = cache.get(name) {
            return Ok(p.clone());
        }
        let provider: Arc<dyn Provider> = if name == LOCAL_PROVIDER {
            Arc::new(LocalProvider::new())
        } else {
            let config = HttpProviderConfig {
                timeout: self.options.api_timeout,
                ..HttpProviderConfig::default()
            };
            Arc::new(HttpProvider::new(name, config).map_err(HandlerError::permanent)?)
        };
        cache.insert(name.to_owned(), provider.clone());
        Ok(provider)
    }
}

impl Ctx {
    /// The transcriber a run's caption settings name, built (a local model loaded) once
    /// per worker. A model that cannot be loaded is a permanent failure naming the file.
    pub(crate) async fn transcriber(
        &self,
        settings: &CaptionSettings,
    ) -> Result<Arc<dyn Transcriber>, HandlerError> {
        let key = serde_json::to_string(settings).expect("settings serialise");
        let mut cache = self.transcribers.lock().await;
        if let Some(t) = cache.get(&key) {
            return Ok(t.clone());
        }
        let transcriber: Arc<dyn Transcriber> = if settings.is_local() {
            let dir =
                (self.options.whisper_model.clone()).unwrap_or_else(|| settings.model_dir.clone());
            let options = TranscribeOptions {
                language: settings.language.clone(),
                ..TranscribeOptions::default()
            };
            let started = std::time::Instant::now();
            let model = tokio::task::spawn_blocking(move || LocalTranscriber::load(&dir, options))
                .await
                .map_err(HandlerError::permanent)?
                .map_err(|e| HandlerError::permanent(format!("captions model: {e}")))?;
            tracing::info!(model = %model.name(), ms = started.elapsed().as_millis() as u64, "loaded the Whisper model");
            Arc::new(model)
        } else {
            Arc::new(
                HttpTranscriber::new(
                    &settings.provider,
                    &settings.api_model,
                    Some(&settings.language),
                    self.options.transcribe_timeout,
                )
                .map_err(HandlerError::permanent)?,
            )
        };
        cache.insert(key, transcriber.clone());
        Ok(transcriber)
    }
}

/// A media-layer failure inside a stage: transient (disk, a killed ffmpeg), with the
/// message naming the file.
pub(crate) fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::transient(e)
}

/// A payload field the stage cannot do without.
pub(crate) fn payload<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, HandlerError> {
    serde_json::from_value(value.clone())
        .map_err(|e| HandlerError::permanent(format!("bad payload: {e}")))
}
