//! `idempipe process INPUT -o OUTPUT.mp4`: enhance a video in this process; rerunning the
//! same command after Ctrl-C, a kill or a crash resumes the same run.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use idempipe_engine::{RunStatus, SharedStore};
use idempipe_video::media;
use idempipe_video::pipeline::{
    self, CAPTIONS_LOCAL, CAPTIONS_OFF, CaptionSettings, DriveOptions, DriveOutcome, FrameProgress,
    OnFrameFailure, ProcessRequest, ProgressStyle, Settings, stage,
};
use idempipe_video::storage::{Scratch, Storage, is_remote};

use crate::db::{DbArgs, default_db_path};

/// Exit code of a precondition failure (bad input, unwritable output, API unreachable).
pub(crate) const EXIT_USAGE: i32 = 2;
use crate::lifecycle::EXIT_INTERRUPTED;

/// Arguments of `idempipe process`.
#[derive(Debug, Args)]
pub(crate) struct ProcessArgs {
    /// The input video.
    pub(crate) input: PathBuf,
    /// The output video (.mp4, .m4v, .mov or .mkv: the extension picks the container);
    /// OUTPUT.thumb.jpg and OUTPUT.report.json go next to it.
    #[arg(short, long, value_name = "OUTPUT")]
    pub(crate) output: PathBuf,
    /// Replace files at OUTPUT (and its .thumb.jpg, .report.json) that this run did not
    /// write; without it they are refused.
    #[arg(short = 'y', long)]
    pub(crate) overwrite: bool,
    /// Where state lives.
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// Handler calls at once, at least 1; decoding and encoding take at most one per CPU,
    /// the rest serve frames' API calls [default: 2 x the number of CPUs].
    #[arg(long, value_name = "N", value_parser = crate::lifecycle::at_least_one)]
    pub(crate) workers: Option<usize>,
    /// Also work on every other unfinished run in the database (by default `process`
    /// serves only its own run; `idempipe worker` serves them all).
    #[arg(long)]
    pub(crate) serve_all_runs: bool,
    /// This process's own directory for local copies of files kept in object storage
    /// [default: a directory under the system temporary directory]
    #[arg(long, value_name = "DIR")]
    pub(crate) scratch: Option<PathBuf>,
    /// Settings of the run.
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
    /// Lease and API timeout of this process's handlers.
    #[command(flatten)]
    pub(crate) tuning: super::tuning::TuningArgs,
}

/// The settings shared by `process` and `submit`.
#[derive(Debug, Args)]
pub(crate) struct SettingsArgs {
    /// Base URL of an enhancement API (http://host:port); frames are enhanced in process
    /// when omitted.
    #[arg(long, value_name = "URL")]
    pub(crate) api: Option<String>,
    /// Where intermediate files go, shared by all workers: a directory, or
    /// s3://BUCKET/PREFIX for workers on several machines (endpoint, region and
    /// credentials from the AWS_* environment variables) [default: artifacts/ next to
    /// the default database]
    #[arg(long, value_name = "DIR|URL")]
    pub(crate) artifacts: Option<PathBuf>,
    /// H.264 quality: 0 (lossless) to 51, lower is better.
    #[arg(long, value_name = "Q", default_value_t = 18,
          value_parser = clap::value_parser!(u8).range(0..=51))]
    pub(crate) crf: u8,
    /// libx264 preset: ultrafast, superfast, veryfast, faster, fast, medium, slow, slower,
    /// veryslow, placebo. Preset and crf can change on an existing run while none of its
    /// segments is encoded (frames already enhanced are kept).
    #[arg(long, value_name = "P", default_value = "medium")]
    pub(crate) preset: String,
    /// Sharpening strength: 0 off, 1 standard, up to 4.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub(crate) sharpness: f32,
    /// Contrast strength: 0 off, 1 standard, up to 4.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub(crate) contrast: f32,
    /// Brightness (mid-tone lift) strength: 0 off, 1 standard, up to 4.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub(crate) brightness: f32,
    /// A frame that cannot be enhanced: `fail` (the run fails and lists it; `idempipe
    /// retry` redoes only those) or `keep-original` (use the original frame, noted in the report).
    #[arg(long, value_name = "POLICY", default_value = "fail")]
    pub(crate) on_frame_failure: OnFrameFailure,
    /// Target segment length in seconds (cuts fall on keyframes).
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub(crate) segment_seconds: f64,
    /// Segments whose frames may be on disk at once (bounds disk use).
    #[arg(long, value_name = "K", default_value_t = 4)]
    pub(crate) segments_in_flight: u32,
    /// Enhancement calls per second across all workers [default: 1000 local, 50 with --api]
    #[arg(long, value_name = "R")]
    pub(crate) api_rate: Option<f64>,
    /// Captions from the speech: `auto` (Whisper in process if its model is installed,
    /// else none), `local` (Whisper in process; fails if the model is missing), `off`,
    /// or the base URL of an OpenAI-compatible transcription service (http://host:port,
    /// POST /v1/audio/transcriptions). Written as OUTPUT.vtt, OUTPUT.srt and a subtitle
    /// track.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub(crate) captions: String,
    /// The Whisper model directory (faster-whisper format; scripts/fetch-model installs
    /// tiny.en) [default: ~/.cache/idempipe/models/whisper-tiny.en]
    #[arg(long, value_name = "DIR", env = "IDEMPIPE_WHISPER_MODEL")]
    pub(crate) whisper_model: Option<PathBuf>,
    /// Spoken language as an ISO 639-1 code, or `auto` to detect it with a multilingual
    /// model (English-only models ignore it); the subtitle track is tagged with it.
    #[arg(long, value_name = "CODE", default_value = "en")]
    pub(crate) captions_language: String,
    /// The `model` field sent to a transcription service (with --captions URL).
    #[arg(long, value_name = "NAME", default_value = "whisper-1")]
    pub(crate) captions_api_model: String,
    /// Beam search width of local Whisper (1 decodes greedily, faster; 5 is
    /// faster-whisper's default).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub(crate) captions_beam: usize,
}

impl SettingsArgs {
    /// The pipeline settings these flags describe.
    pub(crate) fn to_settings(&self) -> Settings {
        let defaults = Settings::default();
        Settings {
            provider: self.api.clone().unwrap_or(defaults.provider),
            enhance: idempipe_enhance::EnhanceParams {
                sharpness: self.sharpness,
                contrast: self.contrast,
                brightness: self.brightness,
            },
            crf: self.crf,
            preset: self.preset.clone(),
            on_frame_failure: self.on_frame_failure,
            segment_secs: self.segment_seconds,
            window: self.segments_in_flight,
            api_rate: self.api_rate.unwrap_or(if self.api.is_some() {
                50.0
            } else {
                defaults.api_rate
            }),
            captions: self.caption_settings(),
        }
    }

    /// The captions settings; `auto` becomes `local` when the model is installed.
    fn caption_settings(&self) -> CaptionSettings {
        let model_dir = self
            .whisper_model
            .clone()
            .unwrap_or_else(|| CaptionSettings::default().model_dir);
        let provider = match self.captions.as_str() {
            "auto" => match pipeline::caption_settings::model_installed(&model_dir) {
                Ok(()) => CAPTIONS_LOCAL.to_string(),
                Err(e) => {
                    tracing::warn!("{e}; making no captions");
                    CAPTIONS_OFF.to_string()
                }
            },
            other => other.to_string(),
        };
        CaptionSettings {
            provider,
            model_dir,
            language: self.captions_language.clone(),
            api_model: self.captions_api_model.clone(),
            beam_size: self.captions_beam,
        }
    }

    /// The artifact directory: the flag, else `artifacts/` in the state directory.
    pub(crate) fn artifacts_dir(&self) -> PathBuf {
        self.artifacts
            .clone()
            .unwrap_or_else(|| state_dir().join("artifacts"))
    }
}

/// Runs `idempipe process`; returns the exit code.
pub(crate) async fn run(args: ProcessArgs) -> anyhow::Result<i32> {
    let settings = args.settings.to_settings();
    let request = ProcessRequest {
        input: args.input.clone(),
        output: args.output.clone(),
        artifacts: args.settings.artifacts_dir(),
        settings,
    };
    let (storage, _cleanup) = match open_storage(args.scratch.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    let request = match prepare(&storage, &request).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    let store = open_store(&args.db).await?;
    if !args.overwrite
        && let Err(e) = pipeline::check_output_owner(&store, &storage, &request).await
    {
        eprintln!("error: {e}");
        return Ok(EXIT_USAGE);
    }
    let start = match pipeline::start_or_resume(&store, &request).await {
        Ok(start) => start,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    eprintln!("{}", start.message);
    let run_id = start.run_id;
    let started = std::time::Instant::now();
    let done_before = pipeline::frame_progress(&store, run_id).await?.done;
    let finished = match start.status {
        RunStatus::Running => {
            let options = DriveOptions {
                concurrency: args.workers.unwrap_or(DriveOptions::default().concurrency),
                serve_all_runs: args.serve_all_runs,
                progress: ProgressStyle::Quiet,
                pipeline: args.tuning.apply(pipeline::PipelineOptions {
                    storage: Some(std::sync::Arc::new(storage)),
                    ..Default::default()
                }),
                ..DriveOptions::default()
            };
            let (stop_display, stopped) = tokio::sync::watch::channel(false);
            let display = tokio::spawn(crate::display::show(store.clone(), run_id, stopped));
            let stop = crate::lifecycle::stop_signals();
            let outcome = pipeline::drive(store.clone(), run_id, &options, stop).await;
            let _ = stop_display.send(true);
            let _ = display.await;
            match outcome? {
                DriveOutcome::Finished(run) => run.status,
                DriveOutcome::Interrupted => {
                    eprintln!(
                        "interrupted: completed work is kept; run the same command again to resume run {run_id}"
                    );
                    return Ok(EXIT_INTERRUPTED);
                }
            }
        }
        status => status,
    };
    let frames = pipeline::frame_progress(&store, run_id).await?;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "{}",
        summary(
            run_id,
            finished,
            &frames,
            frames.done - done_before,
            elapsed
        )
    );
    report_end(&store, run_id, finished, &start.params).await
}

/// The closing lines: how the run ended, its frames and the speed, each number labelled.
fn summary(
    run_id: i64,
    status: RunStatus,
    frames: &FrameProgress,
    enhanced_now: i64,
    elapsed_secs: f64,
) -> String {
    let speed = if elapsed_secs > 0.0 {
        enhanced_now as f64 / elapsed_secs
    } else {
        0.0
    };
    format!(
        "run {run_id} {} after {}\n  frames:    {} of {} enhanced, {} failed (awaiting retry), {} dead\n  this time: {enhanced_now} enhanced at {speed:.1} frames/s",
        status.as_str(),
        crate::output::duration(elapsed_secs),
        frames.done,
        frames.total,
        frames.failed,
        frames.dead,
    )
}

/// The storage of this process: `--scratch DIR` (created), else a temporary directory,
/// removed (when empty) as the returned guard drops.
pub(crate) fn open_storage(scratch: Option<PathBuf>) -> anyhow::Result<(Storage, ScratchCleanup)> {
    let (scratch, cleanup) = match scratch {
        Some(dir) => (
            Scratch::new(dir.clone())
                .with_context(|| format!("cannot use the scratch directory {}", dir.display()))?,
            ScratchCleanup(None),
        ),
        None => {
            let s = Scratch::temporary().context("cannot create a scratch directory")?;
            let dir = s.path().to_owned();
            (s, ScratchCleanup(Some(dir)))
        }
    };
    Ok((Storage::new(scratch), cleanup))
}

/// Removes the default scratch directory when the command ends, if it is empty (every
/// scratch file is removed once used).
pub(crate) struct ScratchCleanup(Option<PathBuf>);

impl Drop for ScratchCleanup {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Checks the request ([`preflight`]) and, with `s3://` artifacts, uploads a local input
/// once; returns the request the run is made from.
pub(crate) async fn prepare(
    storage: &Storage,
    request: &ProcessRequest,
) -> Result<ProcessRequest, pipeline::PipelineError> {
    preflight(storage, request).await?;
    pipeline::upload_input(storage, request).await
}

/// Checks what can be checked before any work: settings, output (not the input, a known
/// container), input, output directory (or bucket), API.
pub(crate) async fn preflight(
    storage: &Storage,
    request: &ProcessRequest,
) -> Result<(), pipeline::PipelineError> {
    request.settings.validate()?;
    pipeline::check_output_target(&request.input, &request.output).await?;
    if is_remote(&request.input) {
        // Probed by the ingest stage (a download); here only its presence.
        if storage.size(&request.input).await?.is_none() {
            let path = request.input.clone();
            return Err(media::MediaError::NotFound { path }.into());
        }
    } else {
        media::probe(&request.input).await?;
    }
    if is_remote(&request.output) {
        pipeline::check_remote_output(storage, &request.output).await?;
    } else {
        pipeline::check_output_dir(&request.output).await?;
    }
    if !request.settings.is_local() {
        pipeline::check_api(&request.settings.provider).await?;
    }
    let captions = &request.settings.captions;
    if captions.is_local() {
        pipeline::check_captions_model(captions).await?;
    } else if captions.enabled() {
        pipeline::check_transcription_service(&captions.provider).await?;
    }
    Ok(())
}

async fn report_end(
    store: &SharedStore,
    run_id: i64,
    status: RunStatus,
    params: &pipeline::RunParams,
) -> anyhow::Result<i32> {
    if status == RunStatus::Completed {
        eprintln!(
            "  output:    {}\n  thumbnail: {}\n  report:    {}",
            params.output.display(),
            params.thumbnail.display(),
            params.report.display()
        );
        eprintln!("  {}", captions_line(store, run_id, params).await);
        // The output path alone on stdout, for scripts, after the summary.
        println!("{}", params.output.display());
        return Ok(0);
    }
    let failed = pipeline::failed_items(store, run_id).await?;
    eprintln!("  failed items: {}", failed.len());
    for f in &failed {
        eprintln!(
            "  {} {} ({}, {} attempt(s)): {}",
            f.stage, f.key, f.status, f.attempts, f.error
        );
    }
    if status == RunStatus::Failed {
        eprintln!("run `idempipe retry {run_id}` to re-run only those");
    }
    let dir = pipeline::disk::run_dir(&params.artifacts, run_id, &params.uid);
    if dir.exists() {
        eprintln!(
            "its intermediate files stay in {} ({}) until `idempipe prune` (--keep-failed DURATION deletes just the frames)",
            dir.display(),
            crate::output::bytes(pipeline::disk::dir_size(&dir))
        );
    }
    Ok(1)
}

/// One line on the run's captions: the files written, or why there are none.
async fn captions_line(store: &SharedStore, run_id: i64, params: &pipeline::RunParams) -> String {
    let result = store
        .item_get(run_id, stage::CAPTIONS, "captions")
        .await
        .ok()
        .and_then(|i| i.result)
        .unwrap_or_default();
    match result["cues"].as_u64() {
        Some(n) if n > 0 => format!(
            "captions: {} cue(s) in {} and {} (also muxed as a subtitle track)",
            n,
            params.captions_vtt().display(),
            params.captions_srt().display()
        ),
        _ => format!(
            "no captions: {}",
            result["reason"]
                .as_str()
                .unwrap_or("the run has no captions stage")
        ),
    }
}

/// Opens the store, first creating the default SQLite file's directory if that is used.
pub(crate) async fn open_store(db: &DbArgs) -> anyhow::Result<SharedStore> {
    if db.db.is_none()
        && let Some(dir) = default_db_path().parent()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    db.open_or_create().await
}

/// The directory of the default database, where default artifacts go too.
pub(crate) fn state_dir() -> PathBuf {
    default_db_path()
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}
