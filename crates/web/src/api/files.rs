//! Files of a run: frames as PNG, the thumbnail, the output video (with Range support).
//! Every path comes from the store and is resolved inside the artifact roots.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::artifacts::{frame_png, originals_of, param_path, resolve_inside, roots_for};
use crate::compare::Side;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::view::FRAME_STAGE;

/// `/api/runs/{id}/frames/{key}/original.png|enhanced.png`; `{key}` may be given with
/// its `/` or as `%2F`.
pub(crate) async fn frame(
    State(state): State<AppState>,
    Path((id, rest)): Path<(i64, String)>,
) -> ApiResult<Response> {
    let (key, file) = rest
        .rsplit_once('/')
        .ok_or_else(|| ApiError::not_found("use .../frames/{key}/original.png or enhanced.png"))?;
    let field = match file {
        "original.png" => "original",
        "enhanced.png" => "enhanced",
        _ => {
            return Err(ApiError::not_found(
                "frames are original.png or enhanced.png",
            ));
        }
    };
    if key.split('/').any(|part| part == ".." || part == ".") || key.contains('\\') {
        return Err(ApiError::bad_request("an item key cannot contain `..`"));
    }
    let run = state.store().run_get(id).await?;
    let item = state.store().item_get(id, FRAME_STAGE, key).await?;
    let path = item
        .payload
        .get(field)
        .and_then(|v| v.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| ApiError::not_found(format!("item {key} names no {field} frame")))?;
    let real = resolve_inside(&roots_for(&state, &run), &path).await?;
    let slot = item.payload.get("slot").and_then(|v| v.as_u64());
    let size_from = originals_of(&state, &run, &item).await;
    let png = frame_png(real, slot, size_from).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response())
}

/// `/api/runs/{id}/compare/{frame}/before.png|after.png`: frame number `frame` of a video
/// run before or after enhancement, from wherever it still exists (see `compare`).
pub(crate) async fn compare(
    State(state): State<AppState>,
    Path((id, n, side)): Path<(i64, u64, String)>,
) -> ApiResult<Response> {
    let side = match side.as_str() {
        "before.png" => Side::Before,
        "after.png" => Side::After,
        _ => {
            return Err(ApiError::not_found(
                "use .../compare/{frame}/before.png or after.png",
            ));
        }
    };
    let run = state.store().run_get(id).await?;
    let png = crate::compare::frame(&state, &run, n, side).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response())
}

/// The run's thumbnail (JPEG).
pub(crate) async fn thumbnail(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    request: Request,
) -> ApiResult<Response> {
    serve_param(&state, id, "thumbnail", request).await
}

/// The run's output video, with Range support for seeking.
pub(crate) async fn output(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    request: Request,
) -> ApiResult<Response> {
    serve_param(&state, id, "output", request).await
}

/// Serves the file named by the run parameter `name`.
async fn serve_param(
    state: &AppState,
    id: i64,
    name: &str,
    request: Request,
) -> ApiResult<Response> {
    let run = state.store().run_get(id).await?;
    let path = param_path(&run, name)
        .ok_or_else(|| ApiError::not_found(format!("run {id} has no {name}")))?;
    let real = resolve_inside(&roots_for(state, &run), &path).await?;
    let response = ServeFile::new(real)
        .oneshot(request)
        .await
        .map_err(ApiError::internal)?;
    Ok(response.map(Body::new))
}
