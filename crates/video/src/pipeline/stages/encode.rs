//! `encode/N`: encode segment N from its enhanced frames, then delete its frame files.

use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, ItemResult, Job};
use serde_json::json;

use super::{SegmentWork, remove_dir};
use crate::media::{SegmentEncoder, read_frame_file};
use crate::pipeline::context::{Ctx, media_failure, payload, transient};
use crate::pipeline::disk::{check_manifest, remove_with_manifest, write_manifest};

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
        if trusted {
            tracing::info!(
                run = job.run_id,
                segment = work.segment,
                "segment already encoded"
            );
        } else {
            if let Some(parent) = out.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(transient)?;
            }
            let settings = params.settings.encode_settings();
            let mut encoder =
                SegmentEncoder::create(&out, work.width, work.height, work.fps, &settings)
                    .await
                    .map_err(media_failure)?;
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
            write_manifest(&out, &params.uid)
                .await
                .map_err(|e| transient(format!("{}: manifest: {e}", out.display())))?;
        }
        remove_dir(&dir.frames(work.segment))
            .await
            .map_err(transient)?;
        Ok(json!({ "path": out, "frames": work.frame_count }))
    }
}

async fn read_owned(path: std::path::PathBuf) -> Result<image::RgbImage, crate::media::MediaError> {
    read_frame_file(&path).await
}
