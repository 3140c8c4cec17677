//! `GET /runs/{id}`: stages with progress bars, rate and ETA; failures by kind; the
//! thumbnail and the output player; the item grid; the actions. The script keeps it
//! live from `/api/runs/{id}/events` and renders the same markup as below.

use axum::extract::{Path, State};
use axum::response::Html;
use idempipe_engine::{Item, RunStatus};
use maud::{Markup, html};

use super::format::{duration, time};
use super::layout::page;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::view::{
    FRAME_STAGE, FailureGroup, RunView, StageView, cell_status, failure_groups, grid_stage,
    run_view, stage_items,
};

/// Statuses in the order of a progress bar's segments.
const BAR_ORDER: [&str; 8] = [
    "completed",
    "running",
    "failed",
    "dead",
    "unknown",
    "cancelled",
    "pending",
    "waiting",
];

/// The run page.
pub(crate) async fn run_page(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Html<String>> {
    let view = run_view(&state, id).await?;
    let failures = failure_groups(state.store().as_ref(), id).await?;
    let grid = grid_stage(&view.run, &view.stages);
    let cells = match &grid {
        Some(stage) => stage_items(state.store().as_ref(), id, stage).await?,
        None => Vec::new(),
    };
    let remote = crate::compare::in_object_storage(&view.run);
    let compare = match grid.as_deref() {
        Some(FRAME_STAGE) if remote.is_none() && cells.iter().any(|c| c.stage == FRAME_STAGE) => {
            Some((
                crate::compare::default_frame(state.store().as_ref(), id).await?,
                cells.len(),
            ))
        }
        _ => None,
    };
    let running = view.run.status == RunStatus::Running;
    let body = html! {
        main #run data-run=(id) data-grid=[grid.as_deref()] {
            (header(&view))
            section {
                h2 { "Stages" }
                table.stages {
                    thead { tr { th { "stage" } th { "progress" } th { "items" } th { "rate" } th { "ETA" } th {} } }
                    tbody #stage-rows { @for s in &view.stages { (stage_row(id, s, running)) } }
                }
            }
            @if let Some((frame, frames)) = compare { (compare_section(id, frame, frames)) }
            @if let Some(location) = &remote {
                section #compare-unavailable {
                    h2 { "Before and after enhancement" }
                    p.muted { "Not available: " (crate::compare::object_storage_note(location)) "." }
                }
            }
            section #media { (media(&view)) }
            section {
                h2 { "Failures by kind" }
                table.failures {
                    thead { tr { th { "stage" } th { "kind" } th { "HTTP" } th { "items" } th { "example" } th { "message" } } }
                    tbody #failure-rows { @for g in &failures { (failure_row(g)) } }
                }
                p #no-failures .muted hidden[!failures.is_empty()] { "No failed, dead or unknown items." }
            }
            section {
                h2 { "Items of stage " span #grid-stage { (grid.as_deref().unwrap_or("-")) } }
                p.legend { @for s in BAR_ORDER { span class={ "cell s-" (s) } {} " " (s) " " } }
                div #grid { @for item in &cells { (cell(item)) } }
                p.muted { "Click an item for its attempts, errors and frames." }
            }
            aside #detail hidden {}
            (confirm_dialog())
        }
    };
    Ok(Html(page(&format!("Run {id}"), body).into_string()))
}

fn header(view: &RunView) -> Markup {
    let r = &view.run;
    let id = r.id;
    html! {
        header.run-head {
            h1 {
                "Run " (id) " "
                span #run-status class={ "badge s-" (r.status.as_str()) } { (r.status.as_str()) }
                " " span #run-paused .badge.s-paused hidden[!r.paused] { "paused" }
            }
            p.muted {
                (r.pipeline) " · " span.path { (r.input) } " · started " (time(r.created_at))
                span #run-finished { @if let Some(f) = r.finished_at { " · finished " (time(f)) } }
            }
            p { "Items completed: " span #progress { (view.completed) " / " (view.total) } }
            // Pause, resume and cancel apply to a running run only (`app.js` keeps this up).
            @let ended = r.status != RunStatus::Running;
            div.actions {
                button data-action="retry" data-confirm={ "Retry the failed and dead items of run " (id) "? Each is made due now; a running worker picks them up." } { "Retry failed" }
                button data-action="pause" data-when="running" hidden[ended] data-confirm={ "Pause run " (id) "? Workers stop claiming its items; running ones finish." } { "Pause" }
                button data-action="resume" data-when="running" hidden[ended] data-confirm={ "Resume run " (id) "?" } { "Resume" }
                button.danger data-action="cancel" data-when="running" hidden[ended] data-confirm={ "Cancel run " (id) "? Every item not yet final is cancelled. This cannot be undone." } { "Cancel run" }
            }
        }
    }
}

/// One stage's row; `app.js` renders the same markup from `/events`. Pause and resume
/// are offered only while the run runs and the stage has work left.
fn stage_row(run: i64, s: &StageView, running: bool) -> Markup {
    let total = s.total.max(1) as f64;
    let failures = s.count("failed") + s.count("dead") + s.count("unknown");
    let open = running
        && ["pending", "running", "failed", "waiting"]
            .iter()
            .any(|st| s.count(st) > 0);
    html! {
        tr data-stage=(s.stage) {
            td { (s.stage) }
            td {
                div.bar title={ (s.count("completed")) " of " (s.total) " completed" } {
                    @for st in BAR_ORDER {
                        @let n = s.count(st);
                        @if n > 0 { span class={ "s-" (st) } style={ "width:" (format!("{:.2}", n as f64 * 100.0 / total)) "%" } {} }
                    }
                }
            }
            td.counts {
                (s.count("completed")) " / " (s.total)
                @for st in &BAR_ORDER[1..] {
                    @let n = s.count(st);
                    @if n > 0 { " · " (st) " " (n) }
                }
            }
            td { (format!("{:.1}", s.rate_per_second)) "/s" }
            td { @match s.eta_seconds { Some(e) => (duration(e)), None => "-" } }
            td.stage-actions {
                @if failures > 0 {
                    button data-action="retry" data-stage=(s.stage) data-confirm={ "Retry the failed and dead items of stage " (s.stage) " of run " (run) "?" } { "retry" }
                }
                @if open {
                    button data-action="pause" data-stage=(s.stage) data-confirm={ "Pause stage " (s.stage) "?" } { "pause" }
                    button data-action="resume" data-stage=(s.stage) data-confirm={ "Resume stage " (s.stage) "?" } { "resume" }
                }
            }
        }
    }
}

/// One failure group's row; `app.js` renders the same markup.
fn failure_row(g: &FailureGroup) -> Markup {
    html! {
        tr {
            td { (g.stage) }
            td { (g.kind) }
            td { @if let Some(s) = g.http_status { (s) } }
            td { (g.count) }
            td { a.item-link href="#" data-stage=(g.stage) data-key=(g.example_key) { (g.example_key) } }
            td.message { (g.example_message) }
        }
    }
}

fn cell(item: &Item) -> Markup {
    let status = cell_status(item);
    html! { div class={ "cell s-" (status) } data-key=(item.key) title={ (item.key) ": " (status) } {} }
}

fn media(view: &RunView) -> Markup {
    let id = view.run.id;
    html! {
        div #thumb {
            @if view.thumbnail { figure { img src={ "/api/runs/" (id) "/thumbnail" } alt="thumbnail"; figcaption { "thumbnail" } } }
        }
        div #player {
            @if view.output && view.run.status == RunStatus::Completed {
                figure { video controls preload="metadata" src={ "/api/runs/" (id) "/output" } {} figcaption { "output" } }
            }
        }
    }
}

/// Frame `frame` before and after enhancement, side by side, with a frame picker
/// (`app.js` swaps the images).
fn compare_section(run: i64, frame: u64, frames: usize) -> Markup {
    let src = |side: &str| format!("/api/runs/{run}/compare/{frame}/{side}.png");
    html! {
        section #compare data-run=(run) {
            h2 { "Before and after enhancement" }
            p {
                label { "Frame " input #compare-frame type="number" min="0" max=(frames.saturating_sub(1)) value=(frame); }
                " of " (frames) " " span.muted { "(the thumbnail's frame by default)" }
            }
            div.pair {
                figure { img #compare-before src=(src("before")) alt="before"; figcaption #compare-before-note { "before" } }
                figure { img #compare-after src=(src("after")) alt="after"; figcaption #compare-after-note { "after" } }
            }
        }
    }
}

fn confirm_dialog() -> Markup {
    html! {
        dialog #confirm {
            form method="dialog" {
                p #confirm-text {}
                menu {
                    button value="cancel" { "Cancel" }
                    button #confirm-ok value="ok" { "Confirm" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(counts: &[(&str, i64)]) -> StageView {
        StageView {
            stage: "frame".into(),
            counts: counts.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            total: counts.iter().map(|(_, n)| n).sum(),
            ..StageView::default()
        }
    }

    #[test]
    fn only_stages_with_work_left_offer_pause() {
        let open = stage_row(1, &stage(&[("completed", 3), ("pending", 2)]), true).into_string();
        assert!(open.contains(r#"data-action="pause""#), "{open}");
        let done = stage_row(1, &stage(&[("completed", 5)]), true).into_string();
        assert!(!done.contains(r#"data-action="pause""#), "{done}");
        assert!(!done.contains(r#"data-action="resume""#), "{done}");
        let ended = stage_row(1, &stage(&[("completed", 3), ("dead", 2)]), false).into_string();
        assert!(!ended.contains(r#"data-action="pause""#), "{ended}");
        assert!(ended.contains(r#"data-action="retry""#), "{ended}");
    }
}
