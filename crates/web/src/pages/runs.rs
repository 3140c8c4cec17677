//! `GET /`: the newest runs with status and progress.

use axum::extract::State;
use axum::response::Html;
use maud::html;

use super::format::time;
use super::layout::page;
use crate::api::run_rows;
use crate::error::ApiResult;
use crate::state::AppState;

/// Runs shown on the list page.
const RUNS_SHOWN: i64 = 100;

/// The runs page (the script refreshes its rows from `/api/runs`).
pub(crate) async fn runs_page(State(state): State<AppState>) -> ApiResult<Html<String>> {
    let rows = run_rows(&state, RUNS_SHOWN).await?;
    let body = html! {
        main #runs {
            h1 { "Runs" }
            @if rows.is_empty() {
                p.muted { "No runs yet: start one with `idempipe process INPUT -o OUTPUT`." }
            }
            table.runs {
                thead { tr { th { "run" } th { "pipeline" } th { "status" } th { "progress" } th { "input" } th { "started" } th { "finished" } } }
                tbody #run-rows {
                    @for row in &rows {
                        @let r = row.run();
                        @let (done, total) = row.progress();
                        tr {
                            td { a href={ "/runs/" (r.id) } { (r.id) } }
                            td { (r.pipeline) }
                            td { span class={ "badge s-" (row.shown_status()) } { (row.shown_status()) } @if r.paused { " (paused)" } }
                            td { progress max=(total.max(1)) value=(done) {} " " (done) " / " (total) }
                            td.path { (r.input) }
                            td { (time(r.created_at)) }
                            td { @if let Some(f) = r.finished_at { (time(f)) } }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(page("Runs", body).into_string()))
}
