//! `encode/N`: encode segment N from its enhanced frames, then delete its frame files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job};
use serde_json::json;

use super::SegmentWork;
use crate::media::{SegmentEncoder, read_frame_file};
use crate::pipeline::context::{Ctx, media_failure, payload, storage_failure, transient};
use crate::pipeline::disk::{check_manifest, remove_with_manifest, write_manifest};
use crate::storage::Storage;

/// Encodes with [`SegmentEncoder`] (deterministic), keeping the input's exact frame rate.
pub(crate) struct Encode(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Encode {
    async fn handle(&self, job: &Job) -> ItemResult {
        let work: SegmentWork = payload(&job.payload)?;
        let (params, dir) = self.0.run_fresh(job.run_id).await?;
        let out = dir.encoded(work.segment);
        let storage = &self.0.storage;
        // A previous attempt may have finished the file and its manifest and deleted the
        // frames, then died before its completion committed. Only a file whose manifest
        // matches (this run's, complete, unchanged) is kept; anything else is redone.
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
        if trusted {
            tracing::info!(
                run = job.run_id,
                segment = work.segment,
                "segment already encoded"
            );
        } else {
            let staged = storage.stage(&out).await.map_err(storage_failure)?;
            let settings = params.settings.encode_settings();
            let mut encoder =
                SegmentEncoder::create(staged.path(), work.width, work.height, work.fps, &settings)
                    .await
                    .map_err(media_failure)?;
            // Read the next frame file while the current one is being encoded.
            let path = |i: u64| dir.enhanced(work.segment, work.first_frame + i);
            let read = |i: u64| tokio::spawn(read_owned(storage.clone(), path(i)));
            let mut next = Some(read(0));
            for i in 0..work.frame_count {
                let frame = next
                    .take()
                    .expect("a read is in flight")
                    .await
                    .map_err(transient)?
                    .map_err(transient)?;
                if i + 1 < work.frame_count {
                    next = Some(read(i + 1));
                }
                encoder.push(&frame).await.map_err(media_failure)?;
            }
            encoder.finish().await.map_err(media_failure)?;
            storage.publish(&staged).await.map_err(storage_failure)?;
            write_manifest(storage, staged.path(), &out, &params.uid)
                .await
                .map_err(storage_failure)?;
        }
        storage
            .delete_tree(&dir.frames(work.segment))
            .await
            .map_err(storage_failure)?;
        Ok(json!({ "path": out, "frames": work.frame_count }))
    }
}

/// Reads an enhanced frame (a local copy first when it is in object storage).
async fn read_owned(storage: Arc<Storage>, path: PathBuf) -> Result<image::RgbImage, String> {
    let file = storage.fetch(&path).await.map_err(|e| e.to_string())?;
    read_frame_file(file.path())
        .await
        .map_err(|e| e.to_string())
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
