//! Finding or creating the run that produces an output.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use idempipe_engine::store::RunCreate;
use idempipe_engine::{Clock, NewItem, Run, RunStatus, SharedStore, SystemClock};
use idempipe_enhance::provider::http_common;
use serde_json::json;

use super::caption_settings::CaptionSettings;
use super::change::{ChangeOutcome, change_settings};
use super::error::PipelineError;
use super::output_guard::{check_output_target, wrote_output};
use super::progress::frame_progress;
use super::register::ensure_limiter;
use super::settings::{RunParams, Settings};
use super::{PIPELINE, stage};
use crate::media::MediaError;
use crate::storage;

/// How long the API health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the user asks for.
#[derive(Debug, Clone)]
pub struct ProcessRequest {
    /// The input video.
    pub input: PathBuf,
    /// The output video.
    pub output: PathBuf,
    /// Root of the artifact directory (shared by all workers).
    pub artifacts: PathBuf,
    /// Settings.
    pub settings: Settings,
}

/// The run that will produce the output.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// Its id.
    pub run_id: i64,
    /// Whether it existed already.
    pub resumed: bool,
    /// Its status now.
    pub status: RunStatus,
    /// What happened, for the user ("resuming run 3: 120 of 250 frames already enhanced").
    pub message: String,
    /// Its parameters.
    pub params: RunParams,
}

/// Resumes the newest run for the same output if input and settings are the same,
/// otherwise creates a new run (saying why). Runs are found by their fingerprint, the
/// absolute output path; artifacts are per run uid, so runs never mix frames.
pub async fn start_or_resume(
    store: &SharedStore,
    request: &ProcessRequest,
) -> Result<RunStart, PipelineError> {
    request.settings.validate()?;
    check_output_target(&request.input, &request.output).await?;
    let params = run_params(request).await?;
    let output = params.output.clone();
    ensure_limiter(store, &params.settings.provider, params.settings.api_rate).await?;
    let fingerprint = output.to_string_lossy().into_owned();
    let previous = store.run_find(PIPELINE, &fingerprint).await?;
    let reason = match &previous {
        Some(run) if same_identity(run, &params) => match resumable(run, &params).await {
            Ok(()) => match change_settings(store, run, &request.settings).await? {
                ChangeOutcome::Unchanged => return resume(store, run, None).await,
                ChangeOutcome::Changed(notice) => {
                    let run = store.run_get(run.id).await?;
                    return resume(store, &run, Some(notice)).await;
                }
                ChangeOutcome::NeedsNewRun(why) => why,
            },
            Err(why) => why,
        },
        Some(run) => format!(
            "{} was produced by run {} from a different input/settings",
            output.display(),
            run.id
        ),
        None => String::new(),
    };
    let create = RunCreate {
        pipeline: PIPELINE.into(),
        fingerprint,
        input: params.input.to_string_lossy().into_owned(),
        params: serde_json::to_value(&params).expect("run params serialise"),
        items: vec![NewItem::new(stage::INGEST, "ingest", json!({}))],
    };
    let run_id = store.run_create(&create, SystemClock.now()).await?;
    let message = if reason.is_empty() {
        format!("starting run {run_id}")
    } else {
        format!("{reason}; starting run {run_id}")
    };
    Ok(RunStart {
        run_id,
        resumed: false,
        status: RunStatus::Running,
        message,
        params,
    })
}

/// The parameters a new run for `request` would get (input identity read from disk).
pub(crate) async fn run_params(request: &ProcessRequest) -> Result<RunParams, PipelineError> {
    let output = location(&request.output)?;
    let artifacts = location(&request.artifacts)?;
    if storage::is_remote(&request.input) {
        // An object's identity is its URL and size (uploads of local inputs are named
        // by their contents' hash).
        let size = super::upload::remote_size(&request.input).await?;
        return Ok(RunParams::new(
            request.input.clone(),
            size,
            0,
            output,
            artifacts,
            request.settings.clone(),
        ));
    }
    let input = tokio::fs::canonicalize(&request.input)
        .await
        .map_err(|e| input_error(&request.input, e))?;
    let meta = tokio::fs::metadata(&input)
        .await
        .map_err(|e| input_error(&input, e))?;
    let mtime_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    Ok(RunParams::new(
        input,
        meta.len(),
        mtime_ms,
        output,
        artifacts,
        request.settings.clone(),
    ))
}

/// Whether `run` is the run for `params`: same input and frame-deciding settings.
pub(crate) fn same_identity(run: &Run, params: &RunParams) -> bool {
    let Some(stored) = run.params["identity"].as_str() else {
        return false;
    };
    match serde_json::from_value::<Settings>(run.params["settings"].clone()) {
        Ok(settings) => params.same_run_as(stored, &settings),
        Err(_) => stored == params.identity,
    }
}

/// Whether a run with the same identity can be resumed, else why not.
async fn resumable(run: &Run, params: &RunParams) -> Result<(), String> {
    match run.status {
        RunStatus::Running | RunStatus::Failed => Ok(()),
        RunStatus::Cancelled => Err(format!("run {} was cancelled", run.id)),
        RunStatus::Completed if wrote_output(run, &params.output) => Ok(()),
        RunStatus::Completed => Err(format!(
            "run {} completed but {} is gone or not the file it wrote",
            run.id,
            params.output.display()
        )),
    }
}

async fn resume(
    store: &SharedStore,
    run: &Run,
    notice: Option<String>,
) -> Result<RunStart, PipelineError> {
    let p = frame_progress(store, run.id).await?;
    let params: RunParams =
        serde_json::from_value(run.params.clone()).map_err(|e| PipelineError::BadRun {
            run_id: run.id,
            detail: e.to_string(),
        })?;
    let message = match run.status {
        RunStatus::Completed => format!(
            "run {} already produced {}",
            run.id,
            params.output.display()
        ),
        RunStatus::Failed => format!(
            "run {} failed earlier ({} of {} frames enhanced, {} dead)",
            run.id, p.done, p.total, p.dead
        ),
        _ if p.total == 0 => format!("resuming run {}: the input is not split yet", run.id),
        _ => format!(
            "resuming run {}: {} of {} frames already enhanced",
            run.id, p.done, p.total
        ),
    };
    // The stored parameters rule: they are what the run's items were made from.
    let message = match notice {
        Some(notice) => format!("{notice}\n{message}"),
        None => message,
    };
    Ok(RunStart {
        run_id: run.id,
        resumed: true,
        status: run.status,
        message,
        params,
    })
}

fn input_error(path: &Path, e: std::io::Error) -> PipelineError {
    PipelineError::Media(MediaError::reading(path, "read metadata", e))
}

/// An `s3://` location as it is (checked for a bucket), a local path made absolute.
pub(crate) fn location(path: &Path) -> Result<PathBuf, PipelineError> {
    if storage::is_remote(path) {
        storage::check_location(path).map_err(|e| PipelineError::Output {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        return Ok(path.to_owned());
    }
    absolute(path)
}

pub(crate) fn absolute(path: &Path) -> Result<PathBuf, PipelineError> {
    std::path::absolute(path).map_err(|e| PipelineError::Output {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// Checks that `output` can be written: its directory exists and accepts a file.
/// An `s3://` output passes (see [`super::check_remote_output`]).
pub async fn check_output_dir(output: &Path) -> Result<(), PipelineError> {
    if storage::is_remote(output) {
        return Ok(());
    }
    let output = absolute(output)?;
    let fail = |detail: String| PipelineError::Output {
        path: output.clone(),
        detail,
    };
    if tokio::fs::metadata(&output).await.is_ok_and(|m| m.is_dir()) {
        return Err(fail(
            "it is a directory; give a file name such as out.mp4".into(),
        ));
    }
    let dir = output.parent().unwrap_or(Path::new("/"));
    match tokio::fs::metadata(dir).await {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(fail(format!("{} is not a directory", dir.display()))),
        Err(e) => return Err(fail(format!("directory {}: {e}", dir.display()))),
    }
    let probe = dir.join(format!(".idempipe-write-check-{}", std::process::id()));
    match tokio::fs::write(&probe, b"").await {
        Ok(()) => {
            let _ = tokio::fs::remove_file(&probe).await;
            Ok(())
        }
        Err(e) => Err(fail(format!(
            "directory {} is not writable: {e}",
            dir.display()
        ))),
    }
}

/// Checks that the enhancement API at `base_url` answers `GET /healthz` with 200.
pub async fn check_api(base_url: &str) -> Result<(), PipelineError> {
    let url = format!("{}/healthz", base_url.trim_end_matches('/'));
    get(base_url, &url, true).await
}

/// Loads the local Whisper model once, so that a missing, truncated or foreign model
/// file stops the run before any work rather than failing every audio window.
pub async fn check_captions_model(captions: &CaptionSettings) -> Result<(), PipelineError> {
    if !captions.is_local() {
        return Ok(());
    }
    let dir = captions.model_dir.clone();
    tokio::task::spawn_blocking(move || idempipe_captions::WhisperModel::load(&dir))
        .await
        .map_err(|e| PipelineError::Config(format!("captions model: {e}")))?
        .map(|_| ())
        .map_err(|e| PipelineError::Config(format!("captions model: {e}")))
}

/// Checks that a transcription service answers HTTP at `base_url`. Such services have
/// no common health route, so any answer counts; no answer is
/// [`PipelineError::ApiUnreachable`].
pub async fn check_transcription_service(base_url: &str) -> Result<(), PipelineError> {
    get(base_url, base_url, false).await
}

/// `GET url`; with `need_success`, only a 2xx answer passes.
async fn get(base_url: &str, url: &str, need_success: bool) -> Result<(), PipelineError> {
    let fail = |detail: String| PipelineError::ApiUnreachable {
        url: base_url.to_owned(),
        detail,
    };
    // The clients' own builder: same TLS roots (system and --ca-file) as the calls.
    let client =
        http_common::client(HEALTH_TIMEOUT, HEALTH_TIMEOUT).map_err(|e| fail(e.to_string()))?;
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() || !need_success => Ok(()),
        Ok(r) => Err(fail(format!("GET {url} answered {}", r.status()))),
        Err(e) => {
            let chain = http_common::error_chain(&e);
            let hint = idempipe_enhance::provider::tls::certificate_hint(&chain);
            Err(fail(format!("GET {url} failed: {chain}{hint}")))
        }
    }
}
