//! The JSON API under `/api` (documented in docs/api.md), which the pages use too.

mod actions;
mod events;
mod files;
mod items;
mod runs;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use crate::security::action_guard;
use crate::state::AppState;

/// Reads, files and the live stream; then the actions behind the cross-site guard.
pub(crate) fn routes() -> Router<AppState> {
    let actions = Router::new()
        .route("/api/runs/{id}/retry", post(actions::retry))
        .route("/api/runs/{id}/cancel", post(actions::cancel))
        .route("/api/runs/{id}/pause", post(actions::pause))
        .route("/api/runs/{id}/resume", post(actions::resume))
        .route_layer(middleware::from_fn(action_guard));
    Router::new()
        .route("/api/runs", get(runs::list))
        .route("/api/runs/{id}", get(runs::get))
        .route("/api/runs/{id}/stages", get(runs::stages))
        .route("/api/runs/{id}/failures", get(runs::failures))
        .route("/api/runs/{id}/items", get(items::list))
        .route("/api/runs/{id}/items/{stage}/{*rest}", get(items::attempts))
        .route("/api/runs/{id}/frames/{*rest}", get(files::frame))
        .route("/api/runs/{id}/compare/{frame}/{side}", get(files::compare))
        .route("/api/runs/{id}/thumbnail", get(files::thumbnail))
        .route("/api/runs/{id}/output", get(files::output))
        .route("/api/runs/{id}/events", get(events::events))
        .merge(actions)
}

pub(crate) use runs::run_rows;
