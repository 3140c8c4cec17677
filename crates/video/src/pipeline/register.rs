//! Stage policies, the shared enhancement limiter, and registering the stages on a worker.

use std::sync::Arc;
use std::time::Duration;

use idempipe_engine::Clock;
use idempipe_engine::{
    Backoff, LimiterConfig, OnUnknown, SharedStore, StagePolicy, StoreError, SystemClock, Worker,
};

use super::context::Ctx;
use super::stage;
use super::stages::{
    Assemble, Captions, Encode, Extract, Frame, Ingest, Split, Thumbnail, Transcribe,
};

/// The limiter every worker's `frame` stage takes a permit from, shared through the store.
pub const ENHANCE_LIMITER: &str = "enhance-api";

/// Tunables of the stages (the defaults suit real use; tests shorten the leases).
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Lease of a frame call. Heartbeats extend it while the call runs, so it only
    /// bounds how long a killed worker's frames wait before another worker takes them.
    pub frame_lease: Duration,
    /// Lease of the other stages (also extended by heartbeats).
    pub lease: Duration,
    /// Attempts per frame before it goes dead (or keeps its original).
    pub frame_max_attempts: i64,
    /// Backoff between frame attempts.
    pub frame_backoff: Backoff,
    /// Whole-request timeout of HTTP enhancement calls.
    pub api_timeout: Duration,
    /// Whole-request timeout of HTTP transcription calls (a window is up to 30 s of audio).
    pub transcribe_timeout: Duration,
    /// This worker's Whisper model directory, used instead of the one a run was
    /// submitted with (workers on other machines keep the model elsewhere).
    pub whisper_model: Option<std::path::PathBuf>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            frame_lease: Duration::from_secs(20),
            lease: Duration::from_secs(30),
            frame_max_attempts: 8,
            frame_backoff: Backoff {
                base: Duration::from_millis(250),
                cap: Duration::from_secs(30),
                jitter: 0.5,
            },
            api_timeout: Duration::from_secs(30),
            transcribe_timeout: Duration::from_secs(120),
            whisper_model: None,
        }
    }
}

/// The policy of every stage. Frames retry on unknown outcome with the same
/// idempotency key: a repeated call costs at most one call, and the API may replay it.
pub fn stage_policies(options: &PipelineOptions) -> Vec<StagePolicy> {
    let plain = |name: &str, attempts: i64| {
        StagePolicy::new(name)
            .max_attempts(attempts)
            .lease(options.lease)
    };
    vec![
        plain(stage::INGEST, 3),
        plain(stage::SPLIT, 3),
        plain(stage::EXTRACT, 5),
        StagePolicy::new(stage::FRAME)
            .max_attempts(options.frame_max_attempts)
            .backoff(options.frame_backoff)
            .lease(options.frame_lease)
            .on_unknown(OnUnknown::Retry)
            .limiter(ENHANCE_LIMITER, 1.0),
        plain(stage::ENCODE, 5),
        plain(stage::THUMBNAIL, 3),
        // A window's transcription is an external call when a service does it: a lost
        // lease retries it (the service is asked again, which costs at most one call).
        StagePolicy::new(stage::TRANSCRIBE)
            .max_attempts(4)
            .backoff(options.frame_backoff)
            .lease(options.lease)
            .on_unknown(OnUnknown::Retry),
        plain(stage::CAPTIONS, 3),
        plain(stage::ASSEMBLE, 3),
    ]
}

/// Registers every stage of the video pipeline on `worker`, with handlers sharing one
/// run-parameter cache and one provider per URL.
pub fn register(worker: Worker, store: SharedStore, options: &PipelineOptions) -> Worker {
    let ctx = Arc::new(Ctx::new(store, options.clone()));
    let mut policies = stage_policies(options).into_iter();
    let mut next = || policies.next().expect("one policy per stage");
    worker
        .handler(next(), Ingest(ctx.clone()))
        .handler(next(), Split(ctx.clone()))
        .handler(next(), Extract(ctx.clone()))
        .handler(next(), Frame(ctx.clone()))
        .handler(next(), Encode(ctx.clone()))
        .handler(next(), Thumbnail(ctx.clone()))
        .handler(next(), Transcribe(ctx.clone()))
        .handler(next(), Captions(ctx.clone()))
        .handler(next(), Assemble(ctx))
}

/// Defines the enhancement limiter at `rate` calls/s (keeping what it learned), or, with
/// `None`, creates it with the default rate only if it does not exist yet.
pub async fn ensure_limiter(store: &SharedStore, rate: Option<f64>) -> Result<(), StoreError> {
    let now = SystemClock.now();
    let rate = match rate {
        Some(rate) => rate,
        None => match store.limiter_get(ENHANCE_LIMITER).await {
            Ok(_) => return Ok(()),
            Err(StoreError::NotFound { .. }) => super::Settings::default().api_rate,
            Err(e) => return Err(e),
        },
    };
    store
        .limiter_define(&LimiterConfig::new(ENHANCE_LIMITER, rate), now)
        .await
}
