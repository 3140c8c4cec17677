//! Server-rendered pages (maud): the runs list and the run page.

mod format;
mod layout;
mod run;
mod runs;

use axum::Router;
use axum::routing::get;

use crate::state::AppState;

/// `/` and `/runs/{id}`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(runs::runs_page))
        .route("/runs/{id}", get(run::run_page))
}
