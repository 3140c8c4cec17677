//! What the bench runs: no-op items, or frames as the video pipeline's frame stage runs them
//! (in a fan-in group per segment, a limiter permit per call, the external-call mark).

use async_trait::async_trait;
use idempipe_engine::store::RunCreate;
use idempipe_engine::{
    Handler, ItemResult, Job, LimiterConfig, NewItem, OnUnknown, SharedStore, StagePolicy,
    SystemClock, Worker, WorkerConfig,
};
use serde_json::json;

/// Frames per segment group (the pipeline's segments hold about this many).
const FRAMES_PER_GROUP: usize = 50;

/// The limiter of the frames variant: high enough never to hold calls back, so the bench
/// measures what a permit costs, not the rate.
const FRAMES_LIMITER: &str = "bench-enhance";

/// The bench's two workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// Items that complete at once.
    Noop,
    /// The frame stage's shape: group + limiter + external-call mark.
    Frames,
}

impl Variant {
    /// Its name in configs and JSON lines.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::Noop => "noop",
            Variant::Frames => "frames",
        }
    }

    /// Parses [`Variant::name`].
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "noop" => Some(Variant::Noop),
            "frames" => Some(Variant::Frames),
            _ => None,
        }
    }

    /// The stage whose items are counted.
    pub(crate) fn stage(self) -> &'static str {
        match self {
            Variant::Noop => "noop",
            Variant::Frames => "frame",
        }
    }
}

struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn handle(&self, _job: &Job) -> ItemResult {
        Ok(serde_json::Value::Null)
    }
}

/// A frame call with the work taken out: the mark, then an immediate answer.
struct Frame;

#[async_trait]
impl Handler for Frame {
    async fn handle(&self, job: &Job) -> ItemResult {
        job.begin_external_call()
            .await
            .map_err(|e| idempipe_engine::HandlerError::transient(e.to_string()))?;
        Ok(serde_json::Value::Null)
    }
}

/// Creates the run of `items` items (and, for frames, the limiter and one encode waiter
/// per group, which nobody serves).
pub(crate) async fn create_run(store: &SharedStore, variant: Variant, items: usize, tag: &str) {
    let now = idempipe_engine::Clock::now(&SystemClock);
    let mut new_items: Vec<NewItem> = (0..items)
        .map(|i| {
            let item = NewItem::new(variant.stage(), format!("{i:07}"), json!(null));
            match variant {
                Variant::Noop => item,
                Variant::Frames => item.in_group(format!("frames/{}", i / FRAMES_PER_GROUP)),
            }
        })
        .collect();
    if variant == Variant::Frames {
        store
            .limiter_define(&LimiterConfig::new(FRAMES_LIMITER, 1e7), now)
            .await
            .unwrap();
        for g in 0..items.div_ceil(FRAMES_PER_GROUP) {
            new_items.push(
                NewItem::new("encode", format!("{g:05}"), json!(null))
                    .after_group(format!("frames/{g}")),
            );
        }
    }
    store
        .run_create(
            &RunCreate {
                pipeline: "bench".into(),
                fingerprint: tag.into(),
                input: "-".into(),
                params: json!({}),
                items: new_items,
            },
            now,
        )
        .await
        .unwrap();
}

/// Units claimed ahead of the slots (`IDEMPIPE_BENCH_PREFETCH`, default 0).
pub(crate) fn prefetch() -> usize {
    std::env::var("IDEMPIPE_BENCH_PREFETCH")
        .map(|v| {
            v.parse()
                .expect("IDEMPIPE_BENCH_PREFETCH: a number of units")
        })
        .unwrap_or(0)
}

/// A worker serving the variant's stage.
pub(crate) fn worker(
    store: SharedStore,
    variant: Variant,
    concurrency: usize,
    claim_batch: i64,
) -> Worker {
    let config = WorkerConfig {
        name: format!("bench-{}", std::process::id()),
        concurrency,
        claim_batch,
        poll_interval: std::time::Duration::from_millis(5),
        shutdown_grace: std::time::Duration::from_secs(5),
        prefetch: prefetch(),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(store, config);
    match variant {
        Variant::Noop => worker.handler(StagePolicy::new("noop"), Noop),
        Variant::Frames => worker.handler(
            StagePolicy::new("frame")
                .on_unknown(OnUnknown::Retry)
                .limiter(FRAMES_LIMITER, 1.0),
            Frame,
        ),
    }
}
