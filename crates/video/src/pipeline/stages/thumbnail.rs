//! `thumbnail`: the best enhanced frame by [`SCORE_CRITERION`], as a JPEG.

use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::store::ItemFilter;
use idempipe_engine::{Handler, SharedStore, StoreError};
use idempipe_engine::{HandlerError, ItemResult, ItemStatus, Job};
use serde_json::json;

use super::in_stream::thumbnail_path;
use super::{SCORE_CRITERION, stream_outcome};
use crate::media::{FrameReader, MediaInfo, Segment, write_thumbnail};
use crate::pipeline::context::{Ctx, storage_failure, transient};
use crate::pipeline::stage;

/// Rows read per page when scanning frame results.
const PAGE: i64 = 2000;

/// Picks the frame with the highest score (kept originals excluded) and writes its
/// thumbnail: the one its segment kept when it was enhanced in the encoder's stream (the
/// enhanced frame, before encoding), else one of the frame decoded from its encoded
/// segment.
pub(crate) struct Thumbnail(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Thumbnail {
    async fn handle(&self, job: &Job) -> ItemResult {
        let (params, dir) = self.0.run_fresh(job.run_id).await?;
        let (global, score) = best_frame(&self.0.store, job.run_id)
            .await
            .map_err(transient)?;
        let (segments, (width, height)) = split_outcome(&self.0.store, job.run_id).await?;
        let seg = segments
            .iter()
            .find(|s| (s.first_frame..s.first_frame + s.frame_count).contains(&global))
            .ok_or_else(|| HandlerError::permanent(format!("frame {global} is in no segment")))?;
        let encoded = dir.encoded(seg.index);
        let storage = &self.0.storage;
        // Segments enhanced in the stream kept their best frame's thumbnail.
        let kept = storage
            .get_bytes(&thumbnail_path(&encoded, global))
            .await
            .map_err(storage_failure)?;
        if let Some(jpeg) = kept {
            storage
                .put_bytes(&params.thumbnail, jpeg)
                .await
                .map_err(storage_failure)?;
            return Ok(
                json!({ "path": params.thumbnail, "frame": global, "score": score, "criterion": SCORE_CRITERION }),
            );
        }
        let local =
            super::assemble::fetch_segments(storage, std::slice::from_ref(&encoded), &params.uid)
                .await?;
        let first = global - seg.first_frame;
        let mut reader = FrameReader::open_from_with_size(local[0].path(), width, height, first)
            .await
            .map_err(transient)?;
        let picked = reader.next_frame().await.map_err(transient)?;
        drop(reader);
        let frame = picked.ok_or_else(|| {
            transient(format!(
                "{}: ended before frame {global}",
                encoded.display()
            ))
        })?;
        let staged = storage
            .stage(&params.thumbnail)
            .await
            .map_err(storage_failure)?;
        write_thumbnail(staged.path(), &frame)
            .await
            .map_err(transient)?;
        storage.publish(&staged).await.map_err(storage_failure)?;
        Ok(
            json!({ "path": params.thumbnail, "frame": global, "score": score, "criterion": SCORE_CRITERION }),
        )
    }
}

/// The segments recorded by the `split` item.
pub(crate) async fn segments(
    store: &SharedStore,
    run_id: i64,
) -> Result<Vec<Segment>, HandlerError> {
    split_outcome(store, run_id)
        .await
        .map(|(segments, _)| segments)
}

/// The segments recorded by the `split` item and the decoded frame size of the input
/// it split (its payload).
async fn split_outcome(
    store: &SharedStore,
    run_id: i64,
) -> Result<(Vec<Segment>, (u32, u32)), HandlerError> {
    let split = store
        .item_get(run_id, stage::SPLIT, "split")
        .await
        .map_err(transient)?;
    let info: MediaInfo = serde_json::from_value(split.payload)
        .map_err(|e| HandlerError::permanent(format!("split payload is unusable: {e}")))?;
    let result = split.result.unwrap_or_default();
    let segments = serde_json::from_value(result["segments"].clone())
        .map_err(|e| HandlerError::permanent(format!("split result has no segment list: {e}")))?;
    Ok((segments, info.display_size()))
}

/// Highest score among completed, really enhanced frames; ties go to the lowest index.
/// Frames enhanced in the encoder's stream count by their segment's best frame. Frame 0
/// when none has a score (every frame kept its original).
async fn best_frame(store: &SharedStore, run_id: i64) -> Result<(u64, f64), StoreError> {
    let mut best: Option<(u64, f64)> = None;
    let mut consider = |global: u64, score: f64| {
        let better = match best {
            None => true,
            Some((g, s)) => score > s || (score == s && global < g),
        };
        if better {
            best = Some((global, score));
        }
    };
    for stage in [stage::FRAME, stage::ENCODE] {
        let mut after_id = 0;
        loop {
            let filter = ItemFilter {
                run_id,
                stage: Some(stage.into()),
                statuses: vec![ItemStatus::Completed],
                limit: PAGE,
                after_id,
            };
            let page = store.item_list(&filter).await?;
            for item in &page {
                let result = item.result.as_ref();
                if let Some(stream) = stream_outcome(result) {
                    consider(stream.best_frame, stream.best_score);
                    continue;
                }
                let score = result.and_then(|r| r["score"].as_f64());
                if let (Some(score), Some(global)) = (score, item.payload["global"].as_u64()) {
                    consider(global, score);
                }
            }
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after_id = last.id,
                _ => break,
            }
        }
    }
    Ok(best.unwrap_or((0, 0.0)))
}
