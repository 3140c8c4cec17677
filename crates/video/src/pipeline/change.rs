//! Changing the settings of an existing run that do not change its enhanced frames: the
//! encoder's (preset, crf) and the enhancement API's address and rate. Frames already
//! enhanced (and paid for) are kept; only the stages whose output depends on what
//! changed run again.
//!
//! The rule, which follows from where files live: a segment's enhanced frames are
//! deleted once it is encoded (so disk stays bounded), and the whole artifact directory
//! once the run completes. So preset and crf can change while no segment has been
//! encoded yet (typically: a run whose encode failed because of the setting, or one
//! interrupted before encoding); after that, a new preset or crf would mean enhancing
//! those frames again, which is refused (or, for a completed run, done by a new run, as
//! the caller decides). The API and its rate can change any time: frames not yet
//! enhanced go to the new address with the same idempotency keys (a key is the run, the
//! stage and the frame, never the URL). A run cannot move between the local provider
//! (which enhances inside the encoder's stream) and an API (frame items).

use idempipe_engine::store::RetryParams;
use idempipe_engine::{Clock, ItemStatus, Run, RunStatus, SharedStore, SystemClock};

use super::artifacts::RunDir;
use super::error::PipelineError;
use super::progress::frame_progress;
use super::settings::{RunParams, SettingChange, Settings};
use super::stage;
use crate::storage::{Scratch, Storage};

/// The stages whose output depends on the encoder settings: the segments, the thumbnail
/// (decoded from an encoded segment) and the assembled output.
pub const ENCODER_STAGES: [&str; 3] = [stage::ENCODE, stage::THUMBNAIL, stage::ASSEMBLE];

/// What [`change_settings`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// The run already has these settings.
    Unchanged,
    /// The run's settings were changed; the notice says what and what runs again
    /// ("run 3: preset slow -> medium; 250 enhanced frames kept, re-encoding").
    Changed(String),
    /// The run completed and its enhanced frames are gone: the new encoder settings need
    /// a new run (which enhances every frame again). The text says so.
    NeedsNewRun(String),
}

/// Applies the changeable settings of `new` (API, API rate, preset, crf) to `run`:
/// stores them and makes due again what depends on them. Settings that decide the
/// enhanced frames are not touched (they are the run's identity).
pub async fn change_settings(
    store: &SharedStore,
    run: &Run,
    new: &Settings,
) -> Result<ChangeOutcome, PipelineError> {
    let stored: RunParams =
        serde_json::from_value(run.params.clone()).map_err(|e| PipelineError::BadRun {
            run_id: run.id,
            detail: e.to_string(),
        })?;
    let changes = new.changes_from(&stored.settings);
    if changes.is_empty() {
        return Ok(ChangeOutcome::Unchanged);
    }
    new.validate_changeable()?;
    let listed = list(&changes);
    let encoder = changes
        .iter()
        .any(|c| c.flag == "preset" || c.flag == "crf");
    match run.status {
        RunStatus::Cancelled => {
            return Err(PipelineError::Config(format!(
                "run {} is cancelled; its settings cannot change ({listed})",
                run.id
            )));
        }
        RunStatus::Completed if !encoder => return Ok(ChangeOutcome::Unchanged),
        RunStatus::Completed => {
            return Ok(ChangeOutcome::NeedsNewRun(format!(
                "run {} completed with {} and its enhanced frames were deleted, so {listed} \
                 needs them enhanced again",
                run.id,
                was(&changes)
            )));
        }
        RunStatus::Running | RunStatus::Failed => {}
    }
    if stored.settings.is_local() != new.is_local() {
        return Err(PipelineError::Config(format!(
            "run {}: {listed} refused: the local provider enhances frames inside the \
             encoder's stream and an API through frame items, so a run cannot move between \
             them; cancel it (`idempipe cancel {}`) and start a new run",
            run.id, run.id
        )));
    }
    if encoder {
        let encoded = completed(store, run.id, stage::ENCODE).await?;
        if encoded > 0 {
            return Err(PipelineError::Config(format!(
                "run {}: {listed} refused: {encoded} segment(s) are already encoded with {} and \
                 their enhanced frames deleted, so the change would enhance them again; keep \
                 {} to resume run {}, or cancel it (`idempipe cancel {}`) and start a new run",
                run.id,
                was(&changes),
                was(&changes)
                    .split(", ")
                    .map(|s| format!("--{s}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                run.id,
                run.id
            )));
        }
    }
    let mut params = stored.clone();
    params.settings = stored.settings.with_changeable_of(new);
    params.identity = params.current_identity();
    let value = serde_json::to_value(&params).expect("run params serialise");
    store.run_set_params(run.id, &value).await?;
    let now = SystemClock.now();
    let mut work = Vec::new();
    if encoder {
        // No segment is encoded, so an encoded file here is from an attempt that died
        // before its completion committed, made with the old settings.
        let dir = RunDir::new(&params.artifacts, run.id, &params.uid).encoded(0);
        if let Some(encoded_dir) = dir.parent() {
            remove_dir(encoded_dir).await?;
        }
        let stages = ENCODER_STAGES.map(String::from);
        let n = store.item_redo(run.id, &stages, now).await?;
        work.push(if n == 0 {
            "no segment is encoded yet: re-encoding is not needed, every segment gets the new settings".into()
        } else {
            format!("re-encoding ({n} item(s) due again)")
        });
    }
    if changes.iter().any(|c| c.flag == "api") {
        let retry = RetryParams {
            run_id: run.id,
            stage: Some(stage::FRAME.into()),
            statuses: vec![ItemStatus::Failed, ItemStatus::Dead, ItemStatus::Unknown],
        };
        let n = store.item_retry(&retry, now).await?;
        work.push(format!(
            "frames not yet enhanced go to {} with the same idempotency keys ({n} failed frame(s) due again)",
            params.settings.provider
        ));
    }
    let frames = frame_progress(store, run.id).await?;
    let mut notice = format!(
        "run {}: {listed}; {} enhanced frame(s) kept",
        run.id, frames.done
    );
    for w in work {
        notice.push_str(", ");
        notice.push_str(&w);
    }
    tracing::info!(run = run.id, %notice, "settings changed");
    Ok(ChangeOutcome::Changed(notice))
}

/// `preset slow -> medium, crf 18 -> 20`.
fn list(changes: &[SettingChange]) -> String {
    let parts: Vec<String> = changes.iter().map(ToString::to_string).collect();
    parts.join(", ")
}

/// The old encoder values: `preset slow, crf 18`.
fn was(changes: &[SettingChange]) -> String {
    let parts: Vec<String> = changes
        .iter()
        .filter(|c| c.flag == "preset" || c.flag == "crf")
        .map(|c| format!("{} {}", c.flag, c.old))
        .collect();
    parts.join(", ")
}

/// Completed items of `stage`.
async fn completed(store: &SharedStore, run_id: i64, stage: &str) -> Result<i64, PipelineError> {
    let counts = store.item_counts(run_id).await?;
    Ok(counts
        .iter()
        .filter(|c| c.stage == stage && c.status == ItemStatus::Completed.as_str())
        .map(|c| c.count)
        .sum())
}

/// Removes the encoded segments' directory through the storage layer: a local directory,
/// or every object under the `s3://` prefix (endpoint and credentials from the AWS
/// environment, as every command reads them). Deleting needs no scratch space, so the
/// system temporary directory stands in for one.
async fn remove_dir(dir: &std::path::Path) -> Result<(), PipelineError> {
    let storage = Storage::new(Scratch::unchecked(std::env::temp_dir()));
    storage
        .delete_tree(dir)
        .await
        .map_err(|e| PipelineError::Output {
            path: dir.to_owned(),
            detail: format!("cannot remove encoded segments made with the old settings: {e}"),
        })
}
