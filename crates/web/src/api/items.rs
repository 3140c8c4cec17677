//! `GET /api/runs/{id}/items` and `/api/runs/{id}/items/{stage}/{key...}/attempts`.

use axum::Json;
use axum::extract::{Path, Query, State};
use idempipe_engine::store::ItemFilter;
use idempipe_engine::{Attempt, Item, ItemStatus};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Items per page when the request does not say.
const DEFAULT_LIMIT: i64 = 500;
/// Most items per page.
const MAX_LIMIT: i64 = 5000;

/// Query of the item list.
#[derive(Debug, Deserialize)]
pub(crate) struct ItemsQuery {
    stage: Option<String>,
    /// Comma-separated statuses.
    status: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

/// A page of items.
#[derive(Debug, Serialize)]
pub(crate) struct ItemsPage {
    items: Vec<Item>,
    /// Pass as `after` for the next page; absent on the last page.
    next_after: Option<i64>,
}

/// Items of a run, filtered by stage and statuses, by id.
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<ItemsQuery>,
) -> ApiResult<Json<ItemsPage>> {
    state.store().run_get(id).await?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let filter = ItemFilter {
        run_id: id,
        stage: q.stage.filter(|s| !s.is_empty()),
        statuses: parse_statuses(q.status.as_deref())?,
        limit,
        after_id: q.after.unwrap_or(0),
    };
    let items = state.store().item_list(&filter).await?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| i.id))
        .flatten();
    Ok(Json(ItemsPage { items, next_after }))
}

/// `failed,dead` -> statuses; empty -> all.
pub(crate) fn parse_statuses(text: Option<&str>) -> ApiResult<Vec<ItemStatus>> {
    text.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            ItemStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown status {s:?}: use pending, running, completed, failed, dead, unknown or cancelled"
                ))
            })
        })
        .collect()
}

/// One item and its attempt history.
#[derive(Debug, Serialize)]
pub(crate) struct ItemAttempts {
    item: Item,
    attempts: Vec<Attempt>,
}

/// `.../items/{stage}/{key...}/attempts`: the key may contain `/` (`frame/000123`).
pub(crate) async fn attempts(
    State(state): State<AppState>,
    Path((id, stage, rest)): Path<(i64, String, String)>,
) -> ApiResult<Json<ItemAttempts>> {
    let key = rest
        .strip_suffix("/attempts")
        .ok_or_else(|| ApiError::not_found("use /api/runs/{id}/items/{stage}/{key}/attempts"))?;
    let item = state.store().item_get(id, &stage, key).await?;
    let attempts = state.store().attempt_list(item.id).await?;
    Ok(Json(ItemAttempts { item, attempts }))
}
