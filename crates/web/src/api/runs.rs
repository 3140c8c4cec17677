//! `GET /api/runs`, `/api/runs/{id}`, `/api/runs/{id}/stages`, `/api/runs/{id}/failures`.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use crate::error::ApiResult;
use crate::state::AppState;
use crate::view::{FailureGroup, RunView, StageView, failure_groups, run_view, stage_counts};

/// Runs listed when the request does not say.
const DEFAULT_RUNS: i64 = 50;
/// Most runs one request may list (each costs a count query).
const MAX_RUNS: i64 = 500;

/// Query of the run list.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<i64>,
}

/// A run in the list, with its progress.
#[derive(Debug, Serialize)]
pub(crate) struct RunRow {
    #[serde(flatten)]
    run: idempipe_engine::Run,
    /// For a running run: running, interrupted (nobody serves it) or queued.
    activity: Option<idempipe_engine::RunActivity>,
    completed: i64,
    total: i64,
}

/// The newest runs, with their progress.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<RunRow>>> {
    Ok(Json(
        run_rows(&state, q.limit.unwrap_or(DEFAULT_RUNS)).await?,
    ))
}

/// The newest `limit` runs with their progress (also used by the runs page).
pub(crate) async fn run_rows(state: &AppState, limit: i64) -> ApiResult<Vec<RunRow>> {
    let store = state.store();
    let mut rows = Vec::new();
    let runs = store.run_list(limit.clamp(1, MAX_RUNS)).await?;
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let now = idempipe_engine::Clock::now(&idempipe_engine::SystemClock);
    let activity: std::collections::HashMap<i64, idempipe_engine::RunActivity> =
        store.run_activity(&ids, now).await?.into_iter().collect();
    for run in runs {
        let stages = stage_counts(&store.item_counts(run.id).await?);
        rows.push(RunRow {
            activity: activity.get(&run.id).copied(),
            completed: stages.iter().map(|s| s.count("completed")).sum(),
            total: stages.iter().map(|s| s.total).sum(),
            run,
        });
    }
    Ok(rows)
}

impl RunRow {
    /// The run.
    pub(crate) fn run(&self) -> &idempipe_engine::Run {
        &self.run
    }

    /// The status shown: the activity of a running run, else its status.
    pub(crate) fn shown_status(&self) -> &'static str {
        self.activity.map_or(
            self.run.status.as_str(),
            idempipe_engine::RunActivity::as_str,
        )
    }

    /// (completed, total) items.
    pub(crate) fn progress(&self) -> (i64, i64) {
        (self.completed, self.total)
    }
}

/// One run with per-stage counts, rate, ETA and which files exist.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<RunView>> {
    Ok(Json(run_view(&state, id).await?))
}

/// Per-stage counts, rate and ETA of a run.
pub(crate) async fn stages(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<StageView>>> {
    Ok(Json(run_view(&state, id).await?.stages))
}

/// Failures of a run grouped by stage, kind and HTTP status.
pub(crate) async fn failures(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<FailureGroup>>> {
    state.store().run_get(id).await?;
    Ok(Json(failure_groups(state.store().as_ref(), id).await?))
}
