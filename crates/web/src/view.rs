//! What the pages, the API and the live updates show, gathered from the store's read
//! API: a run with per-stage counts, rate and ETA, and its failures grouped by kind.

use std::collections::BTreeMap;

use idempipe_engine::store::ItemFilter;
use idempipe_engine::{Clock, Item, ItemStatus, Run, RunStatus, StageCount, Store, SystemClock};
use serde::Serialize;
use serde_json::Value;

use crate::artifacts::{exists_inside, param_path, roots_for};
use crate::error::ApiResult;
use crate::state::AppState;

/// Window over which rate and ETA are measured: long enough to smooth bursts of a
/// batching stage, short enough to follow a change of pace within a minute.
pub const RATE_WINDOW_MS: i64 = 60_000;

/// Stage order of the video pipeline; stages of other pipelines follow by name.
const STAGE_ORDER: [&str; 9] = [
    "ingest",
    "split",
    "extract",
    "frame",
    "encode",
    "thumbnail",
    "transcribe",
    "captions",
    "assemble",
];

/// The stage shown as the grid of a video run.
pub const FRAME_STAGE: &str = "frame";

/// Statuses shown as failures.
pub const FAILURE_STATUSES: [ItemStatus; 3] =
    [ItemStatus::Failed, ItemStatus::Dead, ItemStatus::Unknown];

/// A run with its progress and per-stage view.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    /// The run row.
    pub run: Run,
    /// Items completed, over all stages.
    pub completed: i64,
    /// Items in all stages.
    pub total: i64,
    /// Per stage, in pipeline order.
    pub stages: Vec<StageView>,
    /// Whether the thumbnail file exists (and may be served).
    pub thumbnail: bool,
    /// Whether the output video exists (and may be served).
    pub output: bool,
}

/// One stage's counts, rate and ETA.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageView {
    /// Stage name.
    pub stage: String,
    /// Items by status name (`waiting` = pending with inputs missing).
    pub counts: BTreeMap<String, i64>,
    /// Items in the stage.
    pub total: i64,
    /// Items completed per second over the last minute.
    pub rate_per_second: f64,
    /// Seconds to finish at that rate, when it is known and work remains.
    pub eta_seconds: Option<f64>,
}

impl StageView {
    /// Items in `status` (0 when none).
    pub fn count(&self, status: &str) -> i64 {
        self.counts.get(status).copied().unwrap_or(0)
    }
}

/// Failures of one stage and kind.
#[derive(Debug, Clone, Serialize)]
pub struct FailureGroup {
    /// Stage.
    pub stage: String,
    /// The error's `kind` (transient, permanent, retry_after, ...).
    pub kind: String,
    /// HTTP status of the outside call, when the error has one.
    pub http_status: Option<u64>,
    /// Items in the group.
    pub count: usize,
    /// Statuses of its items, with counts.
    pub statuses: BTreeMap<String, usize>,
    /// Key of one item of the group.
    pub example_key: String,
    /// That item's error message.
    pub example_message: String,
}

/// Per-stage counts of a run, in pipeline order.
pub fn stage_counts(counts: &[StageCount]) -> Vec<StageView> {
    let mut stages: BTreeMap<String, StageView> = BTreeMap::new();
    for c in counts {
        let s = stages.entry(c.stage.clone()).or_insert_with(|| StageView {
            stage: c.stage.clone(),
            ..StageView::default()
        });
        *s.counts.entry(c.status.clone()).or_default() += c.count;
        s.total += c.count;
    }
    let mut out: Vec<StageView> = stages.into_values().collect();
    out.sort_by_key(|s| {
        let pos = STAGE_ORDER.iter().position(|n| *n == s.stage);
        (pos.unwrap_or(STAGE_ORDER.len()), s.stage.clone())
    });
    out
}

/// The whole view of one run.
pub async fn run_view(state: &AppState, run_id: i64) -> ApiResult<RunView> {
    let store = state.store();
    let run = store.run_get(run_id).await?;
    let counts = store.item_counts(run_id).await?;
    let mut stages = stage_counts(&counts);
    let now = SystemClock.now();
    for s in &mut stages {
        let t = store
            .stage_throughput(run_id, &s.stage, RATE_WINDOW_MS, now)
            .await?;
        s.rate_per_second = t.per_second;
        s.eta_seconds = t
            .eta_seconds
            .filter(|_| t.remaining > 0 && run.status == RunStatus::Running);
    }
    let roots = roots_for(state, &run);
    let thumbnail = exists_inside(&roots, param_path(&run, "thumbnail")).await;
    let output = run.status == RunStatus::Completed
        && exists_inside(&roots, param_path(&run, "output")).await;
    Ok(RunView {
        completed: stages.iter().map(|s| s.count("completed")).sum(),
        total: stages.iter().map(|s| s.total).sum(),
        stages,
        thumbnail,
        output,
        run,
    })
}

/// The failed, dead and unknown items of a run grouped by stage, kind and HTTP status,
/// largest group first.
pub async fn failure_groups(store: &dyn Store, run_id: i64) -> ApiResult<Vec<FailureGroup>> {
    let items = store
        .item_list(&ItemFilter {
            run_id,
            statuses: FAILURE_STATUSES.to_vec(),
            ..ItemFilter::default()
        })
        .await?;
    let mut groups: BTreeMap<(String, String, Option<u64>), FailureGroup> = BTreeMap::new();
    for item in items {
        let error = item.last_error.as_ref();
        let kind = error
            .and_then(|e| e.get("kind"))
            .and_then(Value::as_str)
            .unwrap_or(if item.status == ItemStatus::Unknown {
                "outcome unknown"
            } else {
                "error"
            })
            .to_string();
        let http_status = error.and_then(|e| e.get("status")).and_then(Value::as_u64);
        let group = groups
            .entry((item.stage.clone(), kind.clone(), http_status))
            .or_insert_with(|| FailureGroup {
                stage: item.stage.clone(),
                kind,
                http_status,
                count: 0,
                statuses: BTreeMap::new(),
                example_key: item.key.clone(),
                example_message: error.map(error_message).unwrap_or_default(),
            });
        group.count += 1;
        *group
            .statuses
            .entry(item.status.as_str().into())
            .or_default() += 1;
    }
    let mut out: Vec<FailureGroup> = groups.into_values().collect();
    out.sort_by_key(|g| std::cmp::Reverse(g.count));
    Ok(out)
}

/// The readable part of a stored error.
pub fn error_message(error: &Value) -> String {
    match error.get("message").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None => error.to_string(),
    }
}

/// The stage a run's grid shows: frames for video runs, else the stage with most items.
pub fn grid_stage(run: &Run, stages: &[StageView]) -> Option<String> {
    if run.pipeline == "video" || stages.iter().any(|s| s.stage == FRAME_STAGE) {
        return Some(FRAME_STAGE.into());
    }
    stages
        .iter()
        .max_by_key(|s| s.total)
        .map(|s| s.stage.clone())
}

/// The colour class of an item: its status, or `waiting` while inputs are missing.
pub fn cell_status(item: &Item) -> &'static str {
    if item.status == ItemStatus::Pending && item.waiting_on > 0 {
        "waiting"
    } else {
        item.status.as_str()
    }
}

/// Rows read per page when listing every item of a stage.
const PAGE: i64 = 5000;

/// Every item of one stage of a run, by id.
pub async fn stage_items(store: &dyn Store, run_id: i64, stage: &str) -> ApiResult<Vec<Item>> {
    let mut out = Vec::new();
    let mut after_id = 0;
    loop {
        let page = store
            .item_list(&ItemFilter {
                run_id,
                stage: Some(stage.into()),
                statuses: Vec::new(),
                limit: PAGE,
                after_id,
            })
            .await?;
        let full = page.len() as i64 == PAGE;
        after_id = page.last().map_or(after_id, |i| i.id);
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}
