//! `GET /api/runs/{id}/events`: server-sent events while the page is open.
//!
//! Every tick: a `run` event when the run's view (status, stage counts, rate, ETA,
//! failure groups, files) changed, and a `cells` event with the grid cells whose status
//! changed (all of them, with `reset`, on the first tick or when the grid's stage
//! changes). Items are listed only when the counts moved, plus a full check every
//! [`FULL_CHECK_TICKS`], so an idle run costs a few small queries per tick.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use idempipe_engine::StageCount;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::error::ApiResult;
use crate::state::AppState;
use crate::view::{FailureGroup, cell_status, failure_groups, grid_stage, run_view, stage_items};

/// Ticks between full checks of the grid: catches status swaps that leave every count
/// unchanged (one item fails while another is retried within one tick).
pub(crate) const FULL_CHECK_TICKS: u32 = 10;

/// The event stream of one run.
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    state.store().run_get(id).await?;
    let tracker = Tracker {
        closing: state.closing(),
        state,
        run_id: id,
        first: true,
        last_view: String::new(),
        counts: Vec::new(),
        failures: Vec::new(),
        grid: None,
        cells: HashMap::new(),
        since_full: 0,
    };
    let events = stream::unfold(tracker, |mut t| async move {
        let events = t.step().await?;
        Some((events, t))
    })
    .flat_map(stream::iter)
    .map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// What the client has been sent so far.
struct Tracker {
    state: AppState,
    closing: watch::Receiver<bool>,
    run_id: i64,
    first: bool,
    last_view: String,
    counts: Vec<StageCount>,
    failures: Vec<FailureGroup>,
    grid: Option<String>,
    cells: HashMap<String, &'static str>,
    since_full: u32,
}

impl Tracker {
    /// Waits a tick (not before the first) and returns the events to send; None ends
    /// the stream (server shutting down).
    async fn step(&mut self) -> Option<Vec<Event>> {
        if *self.closing.borrow() {
            return None;
        }
        if !self.first {
            tokio::select! {
                () = tokio::time::sleep(self.state.tick()) => {}
                _ = self.closing.wait_for(|c| *c) => return None,
            }
        }
        self.first = false;
        match self.collect().await {
            Ok(events) => Some(events),
            Err(e) => {
                let data = json!({ "error": e.code, "message": e.message }).to_string();
                Some(vec![Event::default().event("error").data(data)])
            }
        }
    }

    async fn collect(&mut self) -> ApiResult<Vec<Event>> {
        let store = self.state.store().clone();
        let counts = store.item_counts(self.run_id).await?;
        self.since_full += 1;
        let moved =
            counts != self.counts || self.since_full >= FULL_CHECK_TICKS || self.grid.is_none();
        let view = run_view(&self.state, self.run_id).await?;
        if moved {
            self.failures = failure_groups(store.as_ref(), self.run_id).await?;
        }
        let grid = grid_stage(&view.run, &view.stages);
        let mut events = Vec::new();
        let data = json!({ "view": view, "failures": self.failures, "grid": grid }).to_string();
        if data != self.last_view {
            events.push(Event::default().event("run").data(&data));
            self.last_view = data;
        }
        if moved {
            self.since_full = 0;
            self.counts = counts;
            if let Some(cells) = self.cells_event(grid).await? {
                events.push(cells);
            }
        }
        Ok(events)
    }

    /// Changed cells of the grid stage, or all of them when the stage changed.
    async fn cells_event(&mut self, grid: Option<String>) -> ApiResult<Option<Event>> {
        let reset = grid != self.grid;
        if reset {
            self.cells.clear();
            self.grid = grid.clone();
        }
        let Some(stage) = grid else {
            return Ok(None);
        };
        let items = stage_items(self.state.store().as_ref(), self.run_id, &stage).await?;
        let mut changed: Vec<Value> = Vec::new();
        for item in &items {
            let status = cell_status(item);
            if self.cells.get(&item.key) != Some(&status) {
                self.cells.insert(item.key.clone(), status);
                changed.push(json!([item.key, status]));
            }
        }
        if changed.is_empty() && !reset {
            return Ok(None);
        }
        let data = json!({ "stage": stage, "reset": reset, "cells": changed }).to_string();
        Ok(Some(Event::default().event("cells").data(data)))
    }
}
