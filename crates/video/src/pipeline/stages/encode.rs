//! `encode/N`: encode segment N, then delete its frame files.
//!
//! Runs on an API enhance through `frame` items and encode from the enhanced frame
//! files; runs on the local provider enhance in the encoder's stream
//! ([`in_stream`](super::in_stream)), with no frame file at all.

use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job};
use serde_json::{Value, json};

use super::in_stream::{StreamOutcome, enhance_and_encode, outcome_path};
use super::{SegmentWork, remove_dir, write_atomic};
use crate::media::{EncodeSettings, SegmentEncoder, read_frame_file};
use crate::pipeline::artifacts::RunDir;
use crate::pipeline::context::{Ctx, media_failure, payload, transient};
use crate::pipeline::disk::{check_manifest, remove_with_manifest, write_manifest};
use crate::pipeline::settings::RunParams;

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
        let trusted = match check_manifest(&out, &params.uid).await {
            Ok(()) => true,
            Err(why) => {
                if tokio::fs::try_exists(&out).await.unwrap_or(false) {
                    tracing::warn!(run = job.run_id, segment = work.segment, %why, "not trusting the encoded segment; encoding it again");
                }
                remove_with_manifest(&out).await.map_err(transient)?;
                false
            }
        };
        let stream = if trusted {
            tracing::info!(
                run = job.run_id,
                segment = work.segment,
                "segment already encoded"
            );
            kept_outcome(&work, &out).await
        } else {
            let stream = encode_segment(&work, &params, &dir, &out, job.run_id).await?;
            if let Some(stream) = &stream {
                let text = serde_json::to_vec(stream).expect("outcome serialises");
                write_atomic(&outcome_path(&out), &text)
                    .await
                    .map_err(transient)?;
            }
            write_manifest(&out, &params.uid)
                .await
                .map_err(|e| transient(format!("{}: manifest: {e}", out.display())))?;
            stream
        };
        remove_dir(&dir.frames(work.segment))
            .await
            .map_err(transient)?;
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
async fn kept_outcome(work: &SegmentWork, out: &std::path::Path) -> Option<StreamOutcome> {
    if !work.in_stream {
        return None;
    }
    let recorded = tokio::fs::read(outcome_path(out)).await.ok();
    Some(
        recorded
            .and_then(|text| serde_json::from_slice(&text).ok())
            .unwrap_or(StreamOutcome {
                frames: work.frame_count,
                best_frame: work.first_frame,
                best_score: 0.0,
                enhance_cpu_ms: 0.0,
            }),
    )
}

/// Encodes the segment into `out`; the stream outcome when it was enhanced in the stream.
async fn encode_segment(
    work: &SegmentWork,
    params: &RunParams,
    dir: &RunDir,
    out: &std::path::Path,
    run_id: i64,
) -> Result<Option<StreamOutcome>, HandlerError> {
    if let Some(parent) = out.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(transient)?;
    }
    if work.in_stream {
        super::extract::check_input_segment(work, params, run_id).await?;
    }
    let settings = EncodeSettings {
        threads: work.encoder_threads,
        ..params.settings.encode_settings()
    };
    let mut encoder = SegmentEncoder::create(out, work.width, work.height, work.fps, &settings)
        .await
        .map_err(media_failure)?;
    if work.in_stream {
        let outcome = enhance_and_encode(work, params.settings.enhance, encoder).await?;
        return Ok(Some(outcome));
    }
    // Read the next frame file while the current one is being encoded.
    let path = |i: u64| dir.enhanced(work.segment, work.first_frame + i);
    let mut next = Some(tokio::spawn(read_owned(path(0))));
    for i in 0..work.frame_count {
        let frame = next
            .take()
            .expect("a read is in flight")
            .await
            .map_err(transient)?
            .map_err(transient)?;
        if i + 1 < work.frame_count {
            next = Some(tokio::spawn(read_owned(path(i + 1))));
        }
        encoder.push(&frame).await.map_err(media_failure)?;
    }
    encoder.finish().await.map_err(media_failure)?;
    Ok(None)
}

async fn read_owned(path: std::path::PathBuf) -> Result<image::RgbImage, crate::media::MediaError> {
    read_frame_file(&path).await
}

/// The in-stream outcome recorded in an `encode` item's result, if any.
pub(crate) fn stream_outcome(result: Option<&Value>) -> Option<StreamOutcome> {
    serde_json::from_value(result?.get("in_stream")?.clone()).ok()
}
