//! `POST /api/runs/{id}/retry|cancel|pause|resume`: each answers what it changed.

use axum::Json;
use axum::extract::{Path, Query, State};
use idempipe_engine::store::RetryParams;
use idempipe_engine::{Clock, ItemStatus, SystemClock};
use serde::Deserialize;
use serde_json::{Value, json};

use super::items::parse_statuses;
use crate::error::ApiResult;
use crate::state::AppState;

/// Scope of an action.
#[derive(Debug, Deserialize)]
pub(crate) struct Scope {
    stage: Option<String>,
    /// Retry only: comma-separated statuses (default `failed,dead`).
    statuses: Option<String>,
}

impl Scope {
    fn stage(&self) -> Option<String> {
        self.stage.clone().filter(|s| !s.is_empty())
    }
}

/// Makes the failed and dead (or the given) items of a run or stage due now.
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(scope): Query<Scope>,
) -> ApiResult<Json<Value>> {
    state.store().run_get(id).await?;
    let mut statuses = parse_statuses(scope.statuses.as_deref())?;
    if statuses.is_empty() {
        statuses = vec![ItemStatus::Failed, ItemStatus::Dead];
    }
    let params = RetryParams {
        run_id: id,
        stage: scope.stage(),
        statuses: statuses.clone(),
    };
    let retried = state.store().item_retry(&params, SystemClock.now()).await?;
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    tracing::info!(run = id, stage = ?params.stage, retried, "retry from the dashboard");
    Ok(Json(
        json!({ "run": id, "stage": params.stage, "statuses": names, "retried": retried }),
    ))
}

/// Cancels a run.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    state.store().run_get(id).await?;
    let n = state.store().run_cancel(id, SystemClock.now()).await?;
    tracing::info!(run = id, cancelled_items = n, "cancel from the dashboard");
    Ok(Json(json!({ "run": id, "cancelled_items": n })))
}

/// Pauses a run or one stage.
pub(crate) async fn pause(
    state: State<AppState>,
    id: Path<i64>,
    scope: Query<Scope>,
) -> ApiResult<Json<Value>> {
    set_paused(state, id, scope, true).await
}

/// Resumes a run or one stage.
pub(crate) async fn resume(
    state: State<AppState>,
    id: Path<i64>,
    scope: Query<Scope>,
) -> ApiResult<Json<Value>> {
    set_paused(state, id, scope, false).await
}

async fn set_paused(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(scope): Query<Scope>,
    paused: bool,
) -> ApiResult<Json<Value>> {
    state.store().run_get(id).await?;
    let stage = scope.stage();
    state
        .store()
        .run_pause(id, stage.as_deref(), paused)
        .await?;
    tracing::info!(run = id, stage = ?stage, paused, "pause/resume from the dashboard");
    Ok(Json(json!({ "run": id, "stage": stage, "paused": paused })))
}
