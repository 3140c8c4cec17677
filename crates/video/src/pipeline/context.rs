//! What every stage handler shares: the store, run parameters (cached per run) and
//! providers (cached per URL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idempipe_captions::{HttpTranscriber, LocalTranscriber, TranscribeOptions, Transcriber};
use idempipe_engine::{HandlerError, SharedStore};
use idempipe_enhance::provider::{HttpProvider, HttpProviderConfig, LocalProvider};

use super::artifacts::RunDir;
use super::caption_settings::CaptionSettings;
use super::register::PipelineOptions;
use super::settings::{LOCAL_PROVIDER, RunParams};
use crate::media::MediaError;
use crate::storage::{Scratch, Storage, StorageError};

/// Shared state of the stage handlers of one worker.
pub(crate) struct Ctx {
    pub(crate) store: SharedStore,
    pub(crate) options: PipelineOptions,
    /// Where artifacts, inputs and outputs live (local or object storage).
    pub(crate) storage: Arc<Storage>,
    runs: Mutex<HashMap<i64, (Instant, Arc<RunParams>)>>,
    providers: Mutex<HashMap<String, Enhancer>>,
    /// Enhancement limiters known to exist.
    limiters: Mutex<std::collections::HashSet<String>>,
    /// Held while a model loads, so concurrent windows load it once.
    transcribers: tokio::sync::Mutex<HashMap<String, Arc<dyn Transcriber>>>,
}

impl Ctx {
    pub(crate) fn new(store: SharedStore, options: PipelineOptions) -> Self {
        let storage = options
            .storage
            .clone()
            .unwrap_or_else(|| Arc::new(Storage::new(temporary_scratch())));
        Self {
            store,
            options,
            storage,
            runs: Mutex::default(),
            providers: Mutex::default(),
            limiters: Mutex::default(),
            transcribers: tokio::sync::Mutex::default(),
        }
    }

    /// The parameters of `run_id`, cached for [`PARAMS_TTL`]: the changeable settings
    /// (API, rate) reach a running worker within that time.
    pub(crate) async fn params(&self, run_id: i64) -> Result<Arc<RunParams>, HandlerError> {
        if let Some((read, p)) = self.runs.lock().expect("run cache").get(&run_id)
            && read.elapsed() < PARAMS_TTL
        {
            return Ok(p.clone());
        }
        self.params_fresh(run_id).await
    }

    /// The parameters of `run_id` as stored now, for stages whose output follows the
    /// changeable settings (encode, assemble): never a stale preset.
    pub(crate) async fn params_fresh(&self, run_id: i64) -> Result<Arc<RunParams>, HandlerError> {
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
            .insert(run_id, (Instant::now(), params.clone()));
        Ok(params)
    }

    /// The parameters and artifact directory of `run_id`.
    pub(crate) async fn run(&self, run_id: i64) -> Result<(Arc<RunParams>, RunDir), HandlerError> {
        let params = self.params(run_id).await?;
        let dir = RunDir::new(&params.artifacts, run_id, &params.uid);
        Ok((params, dir))
    }

    /// As [`run`](Self::run), with the parameters as stored now.
    pub(crate) async fn run_fresh(
        &self,
        run_id: i64,
    ) -> Result<(Arc<RunParams>, RunDir), HandlerError> {
        let params = self.params_fresh(run_id).await?;
        let dir = RunDir::new(&params.artifacts, run_id, &params.uid);
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
    pub(crate) fn provider(&self, name: &str) -> Result<Enhancer, HandlerError> {
        let mut cache = self.providers.lock().expect("provider cache");
        if let Some(p) = cache.get(name) {
            return Ok(p.clone());
        }
        let provider = if name == LOCAL_PROVIDER {
            Enhancer::Local(Arc::new(LocalProvider::new()))
        } else {
            let config = HttpProviderConfig {
                timeout: self.options.api_timeout,
                token: idempipe_enhance::provider::api_token_from_env(),
                ..HttpProviderConfig::default()
            };
            Enhancer::Http(Arc::new(
                HttpProvider::new(name, config).map_err(HandlerError::permanent)?,
            ))
        };
        cache.insert(name.to_owned(), provider.clone());
        Ok(provider)
    }
}

/// A run's enhancement provider. The HTTP one is kept as itself: the frame stage runs
/// its encoding and decoding in its own hops to the blocking pool, with the frame's
/// reading and writing.
#[derive(Clone)]
pub(crate) enum Enhancer {
    /// In process.
    Local(Arc<LocalProvider>),
    /// An API.
    Http(Arc<HttpProvider>),
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
                beam_size: settings.beam_size,
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

/// A scratch directory under the system temporary directory (that directory itself if
/// none can be made).
fn temporary_scratch() -> Scratch {
    Scratch::temporary().unwrap_or_else(|_| Scratch::unchecked(std::env::temp_dir()))
}

/// A storage failure inside a stage: transient (an unreachable store, a full scratch
/// disk), naming the location and the store.
pub(crate) fn storage_failure(e: StorageError) -> HandlerError {
    HandlerError::transient(e)
}

/// How long a worker trusts the run parameters it read.
const PARAMS_TTL: Duration = Duration::from_secs(5);

/// What ffmpeg prints when an option it was given is invalid: retrying cannot help.
const OPTION_ERRORS: [&str; 6] = [
    "Error setting option",
    "Error setting preset",
    "invalid preset",
    "Unrecognized option",
    "Error applying option",
    "Unknown encoder",
];

/// A media-layer failure of a step driven by the run's settings: permanent when a
/// setting is invalid (refused before ffmpeg starts, or an ffmpeg option error), so a
/// bad setting does not burn the stage's attempts; transient otherwise.
pub(crate) fn media_failure(e: MediaError) -> HandlerError {
    let invalid_setting = match &e {
        MediaError::InvalidArgument { .. } => true,
        MediaError::ToolFailed { stderr, .. } => OPTION_ERRORS.iter().any(|m| stderr.contains(m)),
        _ => false,
    };
    if invalid_setting {
        HandlerError::permanent(format!(
            "{e}; an invalid setting: fix it with `idempipe retry RUN --preset P --crf Q` \
             (enhanced frames are kept)"
        ))
    } else {
        transient(e)
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

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn invalid_settings_are_permanent_other_media_failures_transient() {
        let invalid = MediaError::InvalidArgument {
            path: "/a.mp4".into(),
            what: "preset \"Medium\"".into(),
        };
        assert!(matches!(media_failure(invalid), HandlerError::Permanent(_)));
        let failed = |stderr: &str| MediaError::ToolFailed {
            tool: "ffmpeg",
            path: "/a.mp4".into(),
            status: std::process::ExitStatus::from_raw(256),
            stderr: stderr.into(),
        };
        let option = failed("x264 [error]: invalid preset 'bogus'; Error setting preset/tune");
        assert!(matches!(media_failure(option), HandlerError::Permanent(_)));
        let killed = failed("Conversion failed!");
        assert!(matches!(media_failure(killed), HandlerError::Transient(_)));
        let io = MediaError::Io {
            path: "/a.mp4".into(),
            action: "write",
            source: std::io::Error::other("disk full"),
        };
        assert!(matches!(media_failure(io), HandlerError::Transient(_)));
    }
}
