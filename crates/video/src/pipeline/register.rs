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
    Assemble, Captions, CpuBound, Encode, Extract, Frame, Ingest, Split, Thumbnail, Transcribe,
    WaitOutFullDisk,
};

/// The prefix of the enhancement limiters: each API origin has its own,
/// `enhance-api:SCHEME://HOST:PORT` (see [`enhance_limiter`]), shared by every worker
/// through the store. The frame stage's policy names the bare prefix; its handler picks
/// the run's endpoint's limiter.
pub const ENHANCE_LIMITER: &str = "enhance-api";
/// The limiter of in-process (`local`) enhancement.
pub const LOCAL_LIMITER: &str = "enhance-local";

/// The limiter of enhancement provider `provider` (`local` or an API base URL): one per
/// API origin (scheme, host, port), so runs against different endpoints never share a
/// rate or a circuit breaker, and runs against the same one always do.
pub fn enhance_limiter(provider: &str) -> String {
    if provider == super::settings::LOCAL_PROVIDER {
        return LOCAL_LIMITER.to_string();
    }
    let origin = reqwest::Url::parse(provider.trim())
        .ok()
        .and_then(|url| {
            let host = url.host_str()?.to_ascii_lowercase();
            let port = url.port_or_known_default()?;
            Some(format!("{}://{host}:{port}", url.scheme()))
        })
        .unwrap_or_else(|| provider.trim().to_string());
    format!("{ENHANCE_LIMITER}:{origin}")
}

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
    /// Where the stages read and write files (its scratch directory holds this worker's
    /// local copies of objects) [default: a storage with a scratch directory under the
    /// system temporary directory].
    pub storage: Option<Arc<crate::storage::Storage>>,
    /// Decoding and encoding attempts (`extract`, `encode`) running at once in this
    /// worker, whatever its concurrency: the other handler slots stay free for frames,
    /// whose API calls wait on the network [default: the number of CPUs].
    pub cpu_slots: usize,
}

/// The number of CPUs this process may use (2 if unknown).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
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
            storage: None,
            cpu_slots: cpus(),
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
/// run-parameter cache and one provider per URL; decoding and encoding share
/// [`PipelineOptions::cpu_slots`].
pub fn register(worker: Worker, store: SharedStore, options: &PipelineOptions) -> Worker {
    let ctx = Arc::new(Ctx::new(store, options.clone()));
    let slots = Arc::new(tokio::sync::Semaphore::new(options.cpu_slots.max(1)));
    let mut policies = stage_policies(options).into_iter();
    let mut next = || policies.next().expect("one policy per stage");
    worker
        .handler(next(), Ingest(ctx.clone()))
        .handler(next(), WaitOutFullDisk(Split(ctx.clone())))
        .handler(
            next(),
            CpuBound {
                inner: WaitOutFullDisk(Extract(ctx.clone())),
                slots: slots.clone(),
            },
        )
        .handler(next(), Frame(ctx.clone()))
        .handler(
            next(),
            CpuBound {
                inner: WaitOutFullDisk(Encode(ctx.clone())),
                slots,
            },
        )
        .handler(next(), WaitOutFullDisk(Thumbnail(ctx.clone())))
        .handler(next(), Transcribe(ctx.clone()))
        .handler(next(), WaitOutFullDisk(Captions(ctx.clone())))
        .handler(next(), WaitOutFullDisk(Assemble(ctx)))
}

/// Defines the limiter of enhancement provider `provider` at `rate` calls/s (keeping what
/// it learned); returns its name.
pub async fn ensure_limiter(
    store: &SharedStore,
    provider: &str,
    rate: f64,
) -> Result<String, StoreError> {
    let name = enhance_limiter(provider);
    store
        .limiter_define(&LimiterConfig::new(name.clone(), rate), SystemClock.now())
        .await?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_limiter_per_api_origin() {
        let name = enhance_limiter;
        assert_eq!(name("local"), LOCAL_LIMITER);
        assert_eq!(
            name("http://API.example"),
            "enhance-api:http://api.example:80"
        );
        assert_eq!(
            name("http://api.example:80/v1/"),
            name("http://api.example"),
            "same origin, same limiter"
        );
        assert_eq!(
            name("https://api.example"),
            "enhance-api:https://api.example:443"
        );
        assert_ne!(name("http://127.0.0.1:8001"), name("http://127.0.0.1:8002"));
    }
}
