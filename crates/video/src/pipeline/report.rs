//! The run's JSON report, and the list of items that failed for good.

use std::collections::BTreeMap;

use idempipe_engine::store::ItemFilter;
use idempipe_engine::{Item, ItemStatus, SharedStore, StoreError};
use serde::Serialize;
use serde_json::{Value, json};

use super::settings::RunParams;
use super::stage;
use super::stages::{SCORE_CRITERION, stream_outcome};
use crate::media::MediaInfo;

/// Rows read per page.
const PAGE: i64 = 2000;

/// An item that needs a person: dead (or parked as unknown), with its last error.
#[derive(Debug, Clone, Serialize)]
pub struct FailedItem {
    /// Stage name.
    pub stage: String,
    /// Item key, e.g. `frame/000123`.
    pub key: String,
    /// Status (`dead` or `unknown`).
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last error's message (or its JSON when it has none).
    pub error: String,
}

/// The run's items that are dead or unknown, in id order.
pub async fn failed_items(store: &SharedStore, run_id: i64) -> Result<Vec<FailedItem>, StoreError> {
    let items = list(
        store,
        run_id,
        None,
        vec![ItemStatus::Dead, ItemStatus::Unknown],
    )
    .await?;
    Ok(items
        .into_iter()
        .map(|i| FailedItem {
            error: message(i.last_error.as_ref()),
            stage: i.stage,
            key: i.key,
            status: i.status.as_str().into(),
            attempts: i.attempts,
        })
        .collect())
}

/// Every item of a run matching stage and statuses, paging through ids.
pub(crate) async fn list(
    store: &SharedStore,
    run_id: i64,
    stage: Option<&str>,
    statuses: Vec<ItemStatus>,
) -> Result<Vec<Item>, StoreError> {
    let mut out = Vec::new();
    loop {
        let filter = ItemFilter {
            run_id,
            stage: stage.map(str::to_owned),
            statuses: statuses.clone(),
            limit: PAGE,
            after_id: out.last().map(|i: &Item| i.id).unwrap_or(0),
        };
        let page = store.item_list(&filter).await?;
        let full = page.len() as i64 == PAGE;
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

fn message(error: Option<&Value>) -> String {
    match error {
        Some(e) => e["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| e.to_string()),
        None => "(no error recorded)".into(),
    }
}

/// Time spent per stage, from the attempt history.
#[derive(Debug, Default, Serialize)]
struct StageTiming {
    items: u64,
    attempts: u64,
    /// Sum of attempt durations (work done, across parallel workers).
    busy_ms: i64,
    /// First attempt start to last attempt end.
    wall_ms: i64,
    #[serde(skip)]
    first_start: Option<i64>,
    #[serde(skip)]
    last_end: Option<i64>,
}

/// What the captions stage made, or why there are no captions.
fn captions_summary(items: &[Item], params: &RunParams) -> Value {
    let mut summary = items
        .iter()
        .find(|i| i.stage == stage::CAPTIONS)
        .and_then(|i| i.result.clone())
        .unwrap_or_else(|| json!({ "cues": 0, "reason": "the run has no captions stage" }));
    let windows: Vec<&Item> = items
        .iter()
        .filter(|i| i.stage == stage::TRANSCRIBE)
        .collect();
    let audio_secs: f64 = windows
        .iter()
        .filter_map(|i| i.result.as_ref()?["secs"].as_f64())
        .sum();
    let busy_secs: f64 = windows
        .iter()
        .filter_map(|i| i.result.as_ref()?["elapsed_secs"].as_f64())
        .sum();
    summary["provider"] = json!(params.settings.captions.provider);
    summary["transcribed_audio_secs"] = json!(audio_secs);
    if busy_secs > 0.0 {
        summary["real_time_factor"] = json!(audio_secs / busy_secs);
    }
    summary
}

/// Builds the report written next to the output. `assemble_ms` is the assembly's own
/// time so far (its attempt has not ended when the report is written).
pub(crate) async fn build(
    store: &SharedStore,
    run_id: i64,
    params: &RunParams,
    info: &MediaInfo,
    assemble_ms: i64,
) -> Result<Value, StoreError> {
    let items = list(store, run_id, None, Vec::new()).await?;
    let mut timings: BTreeMap<String, StageTiming> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut kept = Vec::new();
    let (mut frames, mut enhanced, mut api_calls, mut provider_calls) = (0u64, 0u64, 0u64, 0u64);
    let mut enhance_cpu_ms = 0.0;
    for item in &items {
        let attempts = store.attempt_list(item.id).await?;
        let t = timings.entry(item.stage.clone()).or_default();
        t.items += 1;
        for a in &attempts {
            t.attempts += 1;
            t.busy_ms += a.ended_at - a.started_at;
            t.first_start = Some(t.first_start.map_or(a.started_at, |s| s.min(a.started_at)));
            t.last_end = Some(t.last_end.map_or(a.ended_at, |e| e.max(a.ended_at)));
            if a.outcome != "completed" {
                failures.push(json!({
                    "stage": item.stage, "key": item.key, "attempt": a.attempt,
                    "outcome": a.outcome, "error": a.error,
                }));
            }
        }
        if item.stage == stage::ENCODE
            && let Some(stream) = stream_outcome(item.result.as_ref())
        {
            frames += stream.frames;
            enhanced += stream.frames;
            enhance_cpu_ms += stream.enhance_cpu_ms;
        }
        if item.stage == stage::FRAME {
            frames += 1;
            provider_calls += attempts.len() as u64;
            api_calls += attempts
                .iter()
                .filter(|a| a.external_call_at.is_some())
                .count() as u64;
            let result = item.result.as_ref();
            if result.is_some_and(|r| r["kept_original"] == true) {
                kept.push(json!({ "key": item.key, "error": result.map(|r| r["error"].clone()) }));
            } else if item.status == ItemStatus::Completed {
                enhanced += 1;
            }
        }
    }
    for t in timings.values_mut() {
        t.wall_ms = t.last_end.unwrap_or(0) - t.first_start.unwrap_or(0);
    }
    let assemble = timings.entry(stage::ASSEMBLE.into()).or_default();
    assemble.busy_ms += assemble_ms;
    assemble.wall_ms += assemble_ms;
    let thumbnail = items
        .iter()
        .find(|i| i.stage == stage::THUMBNAIL)
        .and_then(|i| i.result.clone());
    let captions = captions_summary(&items, params);
    Ok(json!({
        "run": run_id,
        "input": params.input,
        "output": params.output,
        "thumbnail": thumbnail,
        "thumbnail_criterion": SCORE_CRITERION,
        "provider": params.settings.provider,
        "settings": params.settings,
        "media": {
            "frames": info.frame_count, "fps": info.fps.to_string(), "duration_secs": info.duration_secs,
            "width": info.width, "height": info.height, "rotation": info.rotation,
            "audio": info.has_audio, "audio_codec": info.audio_codec,
        },
        "frames": { "total": frames, "enhanced": enhanced, "kept_original": kept.len() },
        // CPU spent inside the enhancement algorithm, for frames enhanced in process in
        // the encoder's stream (0 when an API enhanced them).
        "enhance_cpu_ms": enhance_cpu_ms,
        "captions": captions,
        "kept_original": kept,
        "provider_calls": provider_calls,
        "api_calls": api_calls,
        "attempts": timings.values().map(|t| t.attempts).sum::<u64>(),
        "failures": failures,
        "stages": timings,
    }))
}
