//! The video enhancement pipeline on the idempipe engine.
//!
//! A run of pipeline [`PIPELINE`] turns one input video into an enhanced output video,
//! a JPEG thumbnail and a JSON report. Each stage is an engine [`Handler`](idempipe_engine::Handler):
//!
//! ```text
//! ingest -> split -> per segment N:  extract/N -> frame/* (one item per frame) -> encode/N
//!                                    (extract/N waits for encode/N-K: K segments in flight)
//!                    when every encode is done: thumbnail -+
//!        (split also) -> transcribe/W (one item per audio window) -> captions -+-> assemble
//! ```
//!
//! Everything a handler needs is in the run's `params` ([`RunParams`]); artifacts live
//! under `ARTIFACTS/run-<uid>/` (a random id per run), so two runs never share a frame.
//!
//! # Layout
//! - [`settings`]: user settings ([`Settings`]) and the run's parameters ([`RunParams`]).
//! - [`start`]: [`start_or_resume`], which finds or creates the run for an output.
//! - [`output_guard`]: the output is never the input, nor a file another run or the user made.
//! - [`change`]: [`change_settings`], new encoder/API settings for an existing run.
//! - [`register`](mod@register): stage policies and [`register()`], which puts the stages on a worker.
//! - [`drive`]: [`drive()`], a worker plus maintenance in process until a run ends.
//! - [`progress`]: waiting for a run while printing progress.
//! - [`report`]: the run's JSON report and the list of failed items.
//! - [`disk`]: run uids, run directory markers, file manifests, sizes.
//! - [`upload`]: a local input uploaded once to an `s3://` artifact store; remote
//!   inputs and outputs checked before a run starts.
//! - `stages/`: one file per stage handler; `artifacts.rs`: where files go.

mod artifacts;
pub mod caption_settings;
pub mod change;
mod context;
pub mod disk;
pub mod drive;
mod error;
pub mod output_guard;
pub mod progress;
pub mod register;
pub mod report;
pub mod settings;
mod stages;
pub mod start;
pub mod upload;

pub use caption_settings::{CAPTIONS_LOCAL, CAPTIONS_OFF, CaptionSettings};
pub use change::{ChangeOutcome, change_settings};
pub use drive::{DriveOptions, DriveOutcome, default_concurrency, drive};
pub use error::PipelineError;
pub use output_guard::{check_output_owner, check_output_target};
pub use progress::{
    FrameProgress, ProgressStyle, RunProgress, StageProgress, frame_progress, run_progress,
    wait_for_run,
};
pub use register::{
    ENHANCE_LIMITER, LOCAL_LIMITER, PipelineOptions, cpus, enhance_limiter, ensure_limiter,
    register, stage_policies,
};
pub use report::{FailedItem, failed_items};
pub use settings::{OnFrameFailure, RunParams, SettingChange, Settings};
pub use start::{
    ProcessRequest, RunStart, check_api, check_captions_model, check_output_dir,
    check_transcription_service, start_or_resume,
};
pub use upload::{check_remote_output, upload_input};

/// The pipeline name runs of this module carry.
pub const PIPELINE: &str = "video";

/// Stage names, in pipeline order.
pub mod stage {
    /// Probes the input.
    pub const INGEST: &str = "ingest";
    /// Splits it into keyframe-aligned segments.
    pub const SPLIT: &str = "split";
    /// Decodes one segment into frame files.
    pub const EXTRACT: &str = "extract";
    /// Enhances one frame.
    pub const FRAME: &str = "frame";
    /// Encodes one segment from its enhanced frames.
    pub const ENCODE: &str = "encode";
    /// Picks and writes the thumbnail.
    pub const THUMBNAIL: &str = "thumbnail";
    /// Transcribes one window of the audio.
    pub const TRANSCRIBE: &str = "transcribe";
    /// Joins the windows' transcripts into WebVTT and SRT captions.
    pub const CAPTIONS: &str = "captions";
    /// Joins the segments, muxes the audio and captions, writes the report.
    pub const ASSEMBLE: &str = "assemble";
    /// Every stage, in pipeline order.
    pub const ALL: [&str; 9] = [
        INGEST, SPLIT, EXTRACT, FRAME, ENCODE, THUMBNAIL, TRANSCRIBE, CAPTIONS, ASSEMBLE,
    ];
}
