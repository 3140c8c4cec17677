//! `extract/N`: decode input segment N into one frame file per frame, in the frames
//! directory of the output segment each frame belongs to.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job};
use serde_json::json;

use super::SegmentWork;
use crate::media::FrameReader;
use crate::pipeline::context::{Ctx, payload, storage_failure, transient};
use crate::pipeline::disk::check_manifest;
use crate::pipeline::settings::RunParams;
use crate::storage::{Fetched, Storage};

/// Frames decoded into files per hop to the blocking pool: few hops, and a cancelled
/// attempt stops within a fraction of a second.
const FRAMES_PER_HOP: u64 = 64;

/// Decodes a segment with [`FrameReader`] straight into frame files: one file per output
/// segment holding its frames one after another (local artifacts), or one per frame
/// (object storage, and runs made before). A rerun overwrites the same files with the
/// same pixels, and no frame is read before the attempt that wrote them all completes,
/// so they are written in place (no temporary name).
pub(crate) struct Extract(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Extract {
    async fn handle(&self, job: &Job) -> ItemResult {
        let work: SegmentWork = payload(&job.payload)?;
        let (params, dir) = self.0.run(job.run_id).await?;
        let storage = &self.0.storage;
        let segment = fetch_input_segment(storage, &work, &params, job.run_id).await?;
        let mut reader = FrameReader::open_with_size(segment.path(), work.width, work.height)
            .await
            .map_err(transient)?;
        let mut n = 0;
        while n < work.frame_count {
            // The next frames of one output segment, at most FRAMES_PER_HOP of them: one
            // hop to the blocking pool moves them from the decoder into their files.
            let output = work.output_of(n);
            let end = (n..work.frame_count.min(n + FRAMES_PER_HOP))
                .find(|&i| work.output_of(i) != output)
                .unwrap_or(work.frame_count.min(n + FRAMES_PER_HOP));
            if work.frames_together {
                let want = end - n;
                let written = reader
                    .frames_into_slots(dir.originals(output), work.slot_of(n), want)
                    .await
                    .map_err(transient)?;
                n += written;
                if written < want {
                    break;
                }
                continue;
            }
            // Written into the output segment's frames directory itself when local,
            // else into a scratch one, then published.
            let staged = storage
                .stage_dir(&dir.frames(output))
                .await
                .map_err(storage_failure)?;
            let locations: Vec<PathBuf> = (n..end)
                .map(|i| dir.original(output, work.first_frame + i))
                .collect();
            let files: Vec<PathBuf> = locations
                .iter()
                .map(|l| {
                    staged
                        .path()
                        .join(l.file_name().expect("a frame file name"))
                })
                .collect();
            let written = reader
                .frames_into_files(files.clone())
                .await
                .map_err(transient)?;
            for (file, location) in files.iter().zip(&locations).take(written as usize) {
                storage
                    .publish_file(file, location)
                    .await
                    .map_err(storage_failure)?;
                if file != location {
                    let _ = tokio::fs::remove_file(file).await;
                }
            }
            n += written;
            if written < files.len() as u64 {
                break;
            }
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
