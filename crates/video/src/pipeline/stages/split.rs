//! `split`: cut the input into keyframe-aligned segments and spawn the per-segment work.

use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job, NewItem};
use serde_json::json;

use super::{FrameWork, SegmentWork};
use crate::media::{self, MediaError, MediaInfo, Segment};
use crate::pipeline::artifacts::{ENCODES_GROUP, RunDir, frame_key, frames_group, seg_key};
use crate::pipeline::context::{Ctx, payload};
use crate::pipeline::stage;

/// Splits by stream copy, then spawns extract, frame and encode items per segment, the
/// thumbnail and the assembly, all in the completion of this item.
pub(crate) struct Split(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Split {
    async fn handle(&self, job: &Job) -> ItemResult {
        let info: MediaInfo = payload(&job.payload)?;
        let (params, dir) = self.0.run(job.run_id).await?;
        let segments = media::split(
            &params.input,
            &info,
            &dir.segments(),
            params.settings.segment_secs,
        )
        .await
        .map_err(|e| match e {
            MediaError::SplitMismatch { .. } => HandlerError::permanent(e),
            other => HandlerError::transient(other),
        })?;
        tracing::info!(run = job.run_id, segments = segments.len(), "split input");
        for item in spawns(&info, &segments, &dir, params.settings.window) {
            job.spawn(item);
        }
        Ok(json!({ "segments": segments, "frames": info.frame_count }))
    }
}

/// The items of the whole fan-out, in an order the store accepts: an item's inputs are
/// listed before it, and a group's members before the item waiting for the group (a
/// group without members counts as complete).
fn spawns(info: &MediaInfo, segments: &[Segment], dir: &RunDir, window: u32) -> Vec<NewItem> {
    let (width, height) = info.display_size();
    let mut items = Vec::new();
    for seg in segments {
        let n = seg.index;
        let key = seg_key(n);
        let work = SegmentWork {
            segment: n,
            path: seg.path.clone(),
            first_frame: seg.first_frame,
            frame_count: seg.frame_count,
            width,
            height,
            fps: info.fps,
        };
        let work = serde_json::to_value(&work).expect("segment work serialises");
        let mut extract = NewItem::new(stage::EXTRACT, &key, work.clone());
        if n >= window {
            // Disk stays bounded: segment N's frames are decoded only once segment N-K
            // is encoded and its frames deleted.
            extract = extract.after_item(stage::ENCODE, seg_key(n - window));
        }
        items.push(extract);
        for i in 0..seg.frame_count {
            let global = seg.first_frame + i;
            let frame = FrameWork {
                segment: n,
                index_in_segment: i,
                global,
                original: dir.original(n, global),
                enhanced: dir.enhanced(n, global),
            };
            let frame = serde_json::to_value(&frame).expect("frame work serialises");
            items.push(
                NewItem::new(stage::FRAME, frame_key(global), frame)
                    .after_item(stage::EXTRACT, &key)
                    .in_group(frames_group(n)),
            );
        }
        items.push(
            NewItem::new(stage::ENCODE, &key, work)
                .after_group(frames_group(n))
                .in_group(ENCODES_GROUP),
        );
    }
    items.push(NewItem::new(stage::THUMBNAIL, "thumbnail", json!({})).after_group(ENCODES_GROUP));
    items.push(
        NewItem::new(stage::ASSEMBLE, "assemble", json!({}))
            .after_item(stage::THUMBNAIL, "thumbnail"),
    );
    items
}
