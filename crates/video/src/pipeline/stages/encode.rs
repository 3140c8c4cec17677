//! `encode/N`: encode segment N, then delete its frame files.
//!
//! Runs on an API enhance through `frame` items and encode from the enhanced frame
//! files; runs on the local provider enhance in the encoder's stream
//! ([`in_stream`](super::in_stream)), with no frame file at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job};
use serde_json::{Value, json};

use super::SegmentWork;
use super::in_stream::{StreamOutcome, enhance_and_encode, outcome_path, thumbnail_path};
use crate::media::{EncodeSettings, SegmentEncoder, thumbnail_jpeg};
use crate::pipeline::artifacts::RunDir;
use crate::pipeline::context::{Ctx, media_failure, payload, storage_failure, transient};
use crate::pipeline::disk::{check_manifest, remove_with_manifest, write_manifest};
use crate::pipeline::settings::RunParams;
use crate::storage::Storage;

/// Frames sent to the encoder per hop to the blocking pool (frame files on local disk).
const FRAMES_PER_HOP: usize = 64;

/// Encodes with [`SegmentEncoder`] (deterministic), keeping the input's exact frame rate.
pub(crate) struct Encode(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Encode {
    async fn handle(&self, job: &Job) -> ItemResult {
        let work: SegmentWork = payload(&job.payload)?;
        let (params, dir) = self.0.run_fresh(job.run_id).await?;
        let out = dir.encoded(work.segment);
        // A previous attempt may have finished the file and its manifest and deleted the
        // frames, then died before its completion committed. Only a file whose manifest
        // matches (this run's, complete, unchanged) is kept; anything else is redone.
        let storage = &self.0.storage;
        let trusted = match trust_encoded(storage, &out, &params.uid).await? {
            Ok(()) => true,
            Err(why) => {
                if storage.exists(&out).await.map_err(storage_failure)? {
                    tracing::warn!(run = job.run_id, segment = work.segment, %why, "not trusting the encoded segment; encoding it again");
                }
                remove_with_manifest(storage, &out)
                    .await
                    .map_err(storage_failure)?;
                false
            }
        };
        let stream = if trusted {
            tracing::info!(
                run = job.run_id,
                segment = work.segment,
                "segment already encoded"
            );
            kept_outcome(storage, &work, &out).await?
        } else {
            let staged = storage.stage(&out).await.map_err(storage_failure)?;
            let stream =
                encode_segment(storage, &work, &params, &dir, staged.path(), job.run_id).await?;
            storage.publish(&staged).await.map_err(storage_failure)?;
            if let Some(stream) = &stream {
                let text = serde_json::to_vec(stream).expect("outcome serialises");
                storage
                    .put_bytes(&outcome_path(&out), text)
                    .await
                    .map_err(storage_failure)?;
            }
            write_manifest(storage, staged.path(), &out, &params.uid)
                .await
                .map_err(storage_failure)?;
            stream
        };
        storage
            .delete_tree(&dir.frames(work.segment))
            .await
            .map_err(storage_failure)?;
        let mut result = json!({ "path": out, "frames": work.frame_count });
        if let Some(stream) = stream {
            result["in_stream"] = json!(stream);
        }
        Ok(result)
    }
}

/// What is known of an already encoded segment: nothing more for segments encoded from
/// frame files; for segments enhanced in the stream, the outcome its attempt recorded
/// next to it, or, if that is lost, the frame count alone (its frames then do not
/// compete for the thumbnail).
async fn kept_outcome(
    storage: &Storage,
    work: &SegmentWork,
    out: &Path,
) -> Result<Option<StreamOutcome>, HandlerError> {
    if !work.in_stream {
        return Ok(None);
    }
    let recorded = storage
        .get_bytes(&outcome_path(out))
        .await
        .map_err(storage_failure)?;
    Ok(Some(
        recorded
            .and_then(|text| serde_json::from_slice(&text).ok())
            .unwrap_or(StreamOutcome {
                frames: work.frame_count,
                best_frame: work.first_frame,
                best_score: 0.0,
                enhance_cpu_ms: 0.0,
            }),
    ))
}

/// Encodes the segment into the local file `out` (staged by the caller); the stream
/// outcome when it was enhanced in the stream.
async fn encode_segment(
    storage: &Arc<Storage>,
    work: &SegmentWork,
    params: &RunParams,
    dir: &RunDir,
    out: &Path,
    run_id: i64,
) -> Result<Option<StreamOutcome>, HandlerError> {
    let settings = EncodeSettings {
        threads: work.encoder_threads,
        ..params.settings.encode_settings()
    };
    let mut encoder = SegmentEncoder::create(out, work.width, work.height, work.fps, &settings)
        .await
        .map_err(media_failure)?;
    if work.in_stream {
        let segment = super::extract::fetch_input_segment(storage, work, params, run_id).await?;
        let (outcome, best) =
            enhance_and_encode(work, segment.path(), params.settings.enhance, encoder).await?;
        // Written before the segment is published: a kept segment has its thumbnail.
        let jpeg = tokio::task::spawn_blocking(move || thumbnail_jpeg(&best))
            .await
            .map_err(transient)?
            .map_err(|e| HandlerError::transient(format!("thumbnail of {}: {e}", out.display())))?;
        let location = thumbnail_path(&dir.encoded(work.segment), outcome.best_frame);
        storage
            .put_bytes(&location, jpeg)
            .await
            .map_err(storage_failure)?;
        return Ok(Some(outcome));
    }
    let path = |i: u64| dir.enhanced(work.segment, work.first_frame + i);
    if crate::storage::is_remote(&dir.frames(work.segment)) {
        // A local copy of each frame, fetched while the one before is being sent.
        let fetch = |i: u64| {
            let storage = storage.clone();
            let location = path(i);
            tokio::spawn(async move { storage.fetch(&location).await })
        };
        let mut next = Some(fetch(0));
        for i in 0..work.frame_count {
            let file = next
                .take()
                .expect("a fetch is in flight")
                .await
                .map_err(transient)?
                .map_err(storage_failure)?;
            if i + 1 < work.frame_count {
                next = Some(fetch(i + 1));
            }
            encoder
                .push_files(vec![file.path().to_owned()])
                .await
                .map_err(media_failure)?;
        }
    } else if work.frames_together {
        // Every frame item of the segment has completed, so nothing reads its originals
        // again (a rerun of this encode reads only enhanced frames): their disk is
        // freed now rather than after the encode.
        storage
            .delete(&dir.originals(work.segment))
            .await
            .map_err(storage_failure)?;
        // Straight from the segment's file of enhanced frames, FRAMES_PER_HOP per hop.
        let file = dir.enhanced_frames(work.segment);
        let mut sent = 0;
        while sent < work.frame_count {
            let count = (work.frame_count - sent).min(FRAMES_PER_HOP as u64);
            encoder
                .push_slots(file.clone(), sent, count)
                .await
                .map_err(media_failure)?;
            sent += count;
        }
    } else {
        // Straight from the files, FRAMES_PER_HOP frames per hop to the blocking pool.
        let paths: Vec<PathBuf> = (0..work.frame_count).map(path).collect();
        for chunk in paths.chunks(FRAMES_PER_HOP) {
            encoder
                .push_files(chunk.to_vec())
                .await
                .map_err(media_failure)?;
        }
    }
    encoder.finish().await.map_err(media_failure)?;
    Ok(None)
}

/// Whether the encoded segment at `out` can be kept: `Ok(Err(why))` when it is missing
/// or its manifest does not match; a store that cannot be reached is an error.
async fn trust_encoded(
    storage: &Storage,
    out: &Path,
    uid: &str,
) -> Result<Result<(), String>, HandlerError> {
    let file = match storage.fetch(out).await {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(Err(e.to_string())),
        Err(e) => return Err(storage_failure(e)),
    };
    Ok(check_manifest(storage, file.path(), out, uid).await)
}

/// The in-stream outcome recorded in an `encode` item's result, if any.
pub(crate) fn stream_outcome(result: Option<&Value>) -> Option<StreamOutcome> {
    serde_json::from_value(result?.get("in_stream")?.clone()).ok()
}
