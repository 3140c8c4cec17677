//! `extract/N`: decode segment N into one frame file per frame.

use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job};
use serde_json::json;

use super::SegmentWork;
use crate::media::{FrameReader, write_frame_file};
use crate::pipeline::context::{Ctx, payload, transient};
use crate::pipeline::disk::check_manifest;
use crate::pipeline::settings::RunParams;

/// Decodes a segment with [`FrameReader`] and writes each frame atomically. A rerun
/// overwrites the same files with the same pixels.
pub(crate) struct Extract(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Extract {
    async fn handle(&self, job: &Job) -> ItemResult {
        let work: SegmentWork = payload(&job.payload)?;
        let (params, dir) = self.0.run(job.run_id).await?;
        check_input_segment(&work, &params, job.run_id).await?;
        tokio::fs::create_dir_all(dir.frames(work.segment))
            .await
            .map_err(transient)?;
        let mut reader = FrameReader::open_with_size(&work.path, work.width, work.height)
            .await
            .map_err(transient)?;
        let mut n = 0;
        while let Some(frame) = reader.next_frame().await.map_err(transient)? {
            if n >= work.frame_count {
                break;
            }
            let global = work.first_frame + n;
            write_frame_file(&dir.original(work.segment, global), &frame)
                .await
                .map_err(transient)?;
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

/// The input segment must be the one split wrote for this run, complete and unchanged
/// (runs made before runs had a uid have no manifests).
pub(crate) async fn check_input_segment(
    work: &SegmentWork,
    params: &RunParams,
    run_id: i64,
) -> Result<(), HandlerError> {
    if params.uid.is_empty() {
        return Ok(());
    }
    check_manifest(&work.path, &params.uid).await.map_err(|why| {
        HandlerError::permanent(format!(
            "{why}; the input segment is damaged or not this run's: `idempipe cancel {run_id}`, then run process again to start afresh"
        ))
    })
}
