//! `assemble`: join the encoded segments (checked against their manifests), mux the
//! original audio, check the result against the input, write the output and the report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job, SharedStore, StoreError};
use serde_json::json;

use super::thumbnail::segments;

use crate::media::{self, Expected, MediaError, MediaInfo, Subtitles};
use crate::pipeline::context::{Ctx, storage_failure, transient};
use crate::pipeline::disk;
use crate::pipeline::output_guard::output_stamp;
use crate::pipeline::settings::RunParams;
use crate::pipeline::{report, stage};
use crate::storage::{Fetched, Storage};

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
        let storage = &self.0.storage;
        if !all_exist(storage, &paths).await? && report_of_run(storage, &params, job.run_id).await?
        {
            // An earlier attempt wrote everything and removed the artifacts, then died
            // before its completion committed.
            return Ok(json!({ "output": params.output, "report": params.report }));
        }
        let local = fetch_segments(storage, &paths, &params.uid).await?;
        let local: Vec<PathBuf> = local.iter().map(|f| f.path().to_owned()).collect();
        let subtitles = captions(store, storage, job.run_id, &params).await?;
        let input = storage
            .fetch(&params.input)
            .await
            .map_err(storage_failure)?;
        let output = storage
            .stage(&params.output)
            .await
            .map_err(storage_failure)?;
        media::assemble_verified(
            &local,
            input.path(),
            subtitles.as_ref().map(|(file, language)| Subtitles {
                path: file.path(),
                language,
            }),
            output.path(),
            &Expected::of(&info),
        )
        .await
        .map_err(|e| match e {
            MediaError::OutputMismatch { .. } | MediaError::UnsupportedContainer { .. } => {
                HandlerError::permanent(e)
            }
            other => transient(other),
        })?;
        storage.publish(&output).await.map_err(storage_failure)?;
        let elapsed_ms = started.elapsed().as_millis() as i64;
        let mut report = report::build(store, job.run_id, &params, &info, elapsed_ms)
            .await
            .map_err(transient)?;
        // What the output file is, so that a later `process` knows it as this run's.
        report["uid"] = json!(params.uid);
        report["output_file"] = json!(
            output_stamp(storage, &params.output)
                .await
                .map_err(storage_failure)?
        );
        let text = serde_json::to_vec_pretty(&report).expect("report serialises");
        storage
            .put_bytes(&params.report, text)
            .await
            .map_err(storage_failure)?;
        store
            .run_set_summary(job.run_id, &report)
            .await
            .map_err(transient)?;
        storage
            .delete_tree(&dir.root())
            .await
            .map_err(storage_failure)?;
        tracing::info!(run = job.run_id, output = %params.output.display(), "output written");
        Ok(json!({ "output": params.output, "report": params.report }))
    }
}

/// The SRT file to mux and its track language (ISO 639-2), if the `captions` item wrote
/// one. Runs made before captions existed have no such item and get none.
async fn captions(
    store: &SharedStore,
    storage: &Storage,
    run_id: i64,
    params: &RunParams,
) -> Result<Option<(Fetched, &'static str)>, HandlerError> {
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
    let file = match storage.fetch(&srt).await {
        Ok(file) => file,
        Err(e) if e.is_not_found() => {
            return Err(HandlerError::permanent(format!(
                "{}: the captions file is gone; retry the captions item to write it again",
                srt.display()
            )));
        }
        Err(e) => return Err(storage_failure(e)),
    };
    // The language the captions stage found (detected with `auto`), else the setting.
    let language = item.result.as_ref().and_then(|r| r["language"].as_str());
    let language = language.map_or_else(
        || params.settings.captions.track_language(),
        crate::pipeline::caption_settings::iso_639_2,
    );
    Ok(Some((file, language)))
}

/// Local copies of the encoded segments, each checked against its manifest (runs made
/// before runs had a uid have none). A mismatch is permanent: the segment's frames are
/// gone.
pub(crate) async fn fetch_segments(
    storage: &Storage,
    paths: &[PathBuf],
    uid: &str,
) -> Result<Vec<Fetched>, HandlerError> {
    let mut local = Vec::with_capacity(paths.len());
    for p in paths {
        let file = storage.fetch(p).await.map_err(|e| {
            if e.is_not_found() {
                HandlerError::permanent(format!("{e}: the encoded segment is gone"))
            } else {
                storage_failure(e)
            }
        })?;
        if !uid.is_empty() {
            disk::check_manifest(storage, file.path(), p, uid)
                .await
                .map_err(|why| {
                    HandlerError::permanent(format!(
                        "{why}: the encoded segment is damaged or not this run's and is not used"
                    ))
                })?;
        }
        local.push(file);
    }
    Ok(local)
}

async fn all_exist(storage: &Storage, paths: &[PathBuf]) -> Result<bool, HandlerError> {
    for p in paths {
        if !storage.exists(p).await.map_err(storage_failure)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether the report next to the output was written by this run.
async fn report_of_run(
    storage: &Storage,
    params: &RunParams,
    run_id: i64,
) -> Result<bool, HandlerError> {
    let Some(text) = storage
        .get_bytes(&params.report)
        .await
        .map_err(storage_failure)?
    else {
        return Ok(false);
    };
    let report: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    Ok(report["run"].as_i64() == Some(run_id)
        && storage
            .exists(&params.output)
            .await
            .map_err(storage_failure)?)
}
