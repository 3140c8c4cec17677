//! `extract/N`: decode input segment N into one frame file per frame, in the frames
//! directory of the output segment each frame belongs to.

use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job};
use image::RgbImage;
use serde_json::json;

use super::SegmentWork;
use crate::media::{FrameReader, write_frame_file_owned};
use crate::pipeline::context::{Ctx, payload, storage_failure, transient};
use crate::pipeline::disk::check_manifest;
use crate::pipeline::settings::RunParams;
use crate::storage::{Fetched, Staged, Storage};

/// Decodes a segment with [`FrameReader`] and writes each frame atomically. A rerun
/// overwrites the same files with the same pixels.
pub(crate) struct Extract(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Extract {
    async fn handle(&self, job: &Job) -> ItemResult {
        let work: SegmentWork = payload(&job.payload)?;
        let (params, dir) = self.0.run(job.run_id).await?;
        let storage = &self.0.storage;
        let segment = fetch_input_segment(storage, &work, &params, job.run_id).await?;
        // Frames are written into their output segment's frames directory (that
        // directory itself when local, else a scratch one), then published.
        let mut staged: Option<(u32, Staged)> = None;
        let mut reader = FrameReader::open_with_size(segment.path(), work.width, work.height)
            .await
            .map_err(transient)?;
        let mut n = 0;
        // One buffer for the whole segment: a fresh one per frame costs page faults.
        let mut frame = RgbImage::default();
        while reader
            .next_frame_into(&mut frame)
            .await
            .map_err(transient)?
        {
            if n >= work.frame_count {
                break;
            }
            let global = work.first_frame + n;
            let output = work.output_of(n);
            if staged.as_ref().is_none_or(|(o, _)| *o != output) {
                let dir = storage
                    .stage_dir(&dir.frames(output))
                    .await
                    .map_err(storage_failure)?;
                staged = Some((output, dir));
            }
            let (_, into) = staged.as_ref().expect("staged above");
            let location = dir.original(output, global);
            let file = into
                .path()
                .join(location.file_name().expect("a frame file name"));
            frame = write_frame_file_owned(&file, frame)
                .await
                .map_err(transient)?;
            storage
                .publish_file(&file, &location)
                .await
                .map_err(storage_failure)?;
            if file != location {
                let _ = tokio::fs::remove_file(&file).await;
            }
            n += 1;
        }
        if n != work.frame_count {
            return Err(HandlerError::permanent(format!(
                "{}: decoded {n} frames, expected {}",
                work.path.display(),
                work.frame_count
            )));
        }
        Ok(json!({ "frames": n }))
    }
}

/// The input segment, fetched from the store (a local copy when it is in object storage):
/// it must be the one split wrote for this run, complete and unchanged (runs made before
/// runs had a uid have no manifests).
pub(crate) async fn fetch_input_segment(
    storage: &Storage,
    work: &SegmentWork,
    params: &RunParams,
    run_id: i64,
) -> Result<Fetched, HandlerError> {
    let segment = storage.fetch(&work.path).await.map_err(|e| {
        if e.is_not_found() {
            HandlerError::permanent(format!(
                "{e}; the input segment is gone: `idempipe cancel {run_id}`, then run process again to start afresh"
            ))
        } else {
            storage_failure(e)
        }
    })?;
    if !params.uid.is_empty() {
        check_manifest(storage, segment.path(), &work.path, &params.uid)
            .await
            .map_err(|why| {
                HandlerError::permanent(format!(
                    "{why}; the input segment is damaged or not this run's: `idempipe cancel {run_id}`, then run process again to start afresh"
                ))
            })?;
    }
    Ok(segment)
}
