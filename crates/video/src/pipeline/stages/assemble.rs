//! `assemble`: join the encoded segments (checked against their manifests), mux the
//! original audio, check the result against the input, write the output and the report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job, SharedStore, StoreError};
use serde_json::json;

use super::thumbnail::segments;
use super::{remove_dir, write_atomic};
use crate::media::{self, Expected, MediaError, MediaInfo, Subtitles};
use crate::pipeline::context::{Ctx, transient};
use crate::pipeline::disk;
use crate::pipeline::settings::RunParams;
use crate::pipeline::{report, stage};

/// Writes the output atomically, then the report (also stored as the run's summary),
/// then removes the run's artifacts.
pub(crate) struct Assemble(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Assemble {
    async fn handle(&self, job: &Job) -> ItemResult {
        let started = Instant::now();
        let (params, dir) = self.0.run_fresh(job.run_id).await?;
        let store = &self.0.store;
        let ingest = store
            .item_get(job.run_id, stage::INGEST, "ingest")
            .await
            .map_err(transient)?;
        let info: MediaInfo = serde_json::from_value(ingest.result.unwrap_or_default())
            .map_err(|e| HandlerError::permanent(format!("ingest result is unusable: {e}")))?;
        let segments = segments(store, job.run_id).await?;
        let paths: Vec<PathBuf> = segments.iter().map(|s| dir.encoded(s.index)).collect();
        if !all_exist(&paths).await && report_of_run(&params, job.run_id).await {
            // An earlier attempt wrote everything and removed the artifacts, then died
            // before its completion committed.
            return Ok(json!({ "output": params.output, "report": params.report }));
        }
        if let Some(parent) = params.output.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(transient)?;
        }
        check_segments(&paths, &params.uid).await?;
        let subtitles = captions(store, job.run_id, &params).await?;
        media::assemble_verified(
            &paths,
            &params.input,
            subtitles
                .as_ref()
                .map(|(path, language)| Subtitles { path, language }),
            &params.output,
            &Expected::of(&info),
        )
        .await
        .map_err(|e| match e {
            MediaError::OutputMismatch { .. } | MediaError::UnsupportedContainer { .. } => {
                HandlerError::permanent(e)
            }
            other => transient(other),
        })?;
        let elapsed_ms = started.elapsed().as_millis() as i64;
        let mut report = report::build(store, job.run_id, &params, &info, elapsed_ms)
            .await
            .map_err(transient)?;
        // What the output file is, so that a later `process` knows it as this run's.
        report["uid"] = json!(params.uid);
        report["output_file"] = json!(disk::file_stamp(&params.output));
        let text = serde_json::to_vec_pretty(&report).expect("report serialises");
        write_atomic(&params.report, &text)
            .await
            .map_err(|e| transient(format!("{}: {e}", params.report.display())))?;
        store
            .run_set_summary(job.run_id, &report)
            .await
            .map_err(transient)?;
        remove_dir(&dir.root()).await.map_err(transient)?;
        tracing::info!(run = job.run_id, output = %params.output.display(), "output written");
        Ok(json!({ "output": params.output, "report": params.report }))
    }
}

/// The SRT file to mux and its track language (ISO 639-2), if the `captions` item wrote
/// one. Runs made before captions existed have no such item and get none.
async fn captions(
    store: &SharedStore,
    run_id: i64,
    params: &RunParams,
) -> Result<Option<(PathBuf, &'static str)>, HandlerError> {
    let item = match store.item_get(run_id, stage::CAPTIONS, "captions").await {
        Ok(item) => item,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(transient(e)),
    };
    let cues = item.result.as_ref().and_then(|r| r["cues"].as_u64());
    if cues.unwrap_or(0) == 0 {
        return Ok(None);
    }
    let srt = params.captions_srt();
    if !tokio::fs::try_exists(&srt).await.unwrap_or(false) {
        return Err(HandlerError::permanent(format!(
            "{}: the captions file is gone; retry the captions item to write it again",
            srt.display()
        )));
    }
    // The language the captions stage found (detected with `auto`), else the setting.
    let language = item.result.as_ref().and_then(|r| r["language"].as_str());
    let language = language.map_or_else(
        || params.settings.captions.track_language(),
        crate::pipeline::caption_settings::iso_639_2,
    );
    Ok(Some((srt, language)))
}

/// Checks every encoded segment against its manifest (runs made before runs had a uid
/// have none). A mismatch is permanent: the segment's frames are gone.
pub(crate) async fn check_segments(paths: &[PathBuf], uid: &str) -> Result<(), HandlerError> {
    if uid.is_empty() {
        return Ok(());
    }
    for p in paths {
        disk::check_manifest(p, uid).await.map_err(|why| {
            HandlerError::permanent(format!(
                "{why}: the encoded segment is damaged or not this run's and is not used"
            ))
        })?;
    }
    Ok(())
}

async fn all_exist(paths: &[PathBuf]) -> bool {
    for p in paths {
        if !tokio::fs::try_exists(p).await.unwrap_or(false) {
            return false;
        }
    }
    true
}

/// Whether the report next to the output was written by this run.
async fn report_of_run(params: &RunParams, run_id: i64) -> bool {
    let Ok(text) = tokio::fs::read(&params.report).await else {
        return false;
    };
    let report: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    report["run"].as_i64() == Some(run_id)
        && tokio::fs::try_exists(&params.output).await.unwrap_or(false)
}
