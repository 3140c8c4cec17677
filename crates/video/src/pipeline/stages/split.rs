//! `split`: cut the input into keyframe-aligned segments and spawn the per-segment work.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job, NewItem};
use serde_json::json;

use super::captions::reason;
use super::{FrameWork, SegmentWork, WindowWork};
use crate::media::{self, MediaError, MediaInfo, Segment};
use crate::pipeline::artifacts::{
    ENCODES_GROUP, RunDir, TRANSCRIPTS_GROUP, frame_key, frames_group, seg_key, window_key,
};
use crate::pipeline::context::{Ctx, payload, storage_failure};
use crate::pipeline::disk::write_manifest;
use crate::pipeline::settings::RunParams;
use crate::pipeline::stage;
use crate::storage::Storage;

/// Splits by stream copy, then spawns extract, frame and encode items per segment, the
/// thumbnail and the assembly, all in the completion of this item.
pub(crate) struct Split(pub(crate) Arc<Ctx>);

#[async_trait]
impl Handler for Split {
    async fn handle(&self, job: &Job) -> ItemResult {
        let info: MediaInfo = payload(&job.payload)?;
        let (params, dir) = self.0.run(job.run_id).await?;
        let storage = &self.0.storage;
        let input = storage
            .fetch(&params.input)
            .await
            .map_err(storage_failure)?;
        let staged = storage
            .stage_dir(&dir.segments())
            .await
            .map_err(storage_failure)?;
        let mut segments = media::split(
            input.path(),
            &info,
            staged.path(),
            params.settings.segment_secs,
        )
        .await
        .map_err(|e| match e {
            MediaError::SplitMismatch { .. } => HandlerError::permanent(e),
            other => HandlerError::transient(other),
        })?;
        for seg in &mut segments {
            let location = staged.location_of(&seg.path);
            storage
                .publish_file(&seg.path, &location)
                .await
                .map_err(storage_failure)?;
            write_manifest(storage, &seg.path, &location, &params.uid)
                .await
                .map_err(storage_failure)?;
            seg.path = location;
        }
        tracing::info!(run = job.run_id, segments = segments.len(), "split input");
        let captions = plan_captions(storage, input.path(), &params, &info, &dir).await?;
        let windows = match &captions {
            CaptionPlan::Windows(w) => w.len(),
            CaptionPlan::Skip(_) => 0,
        };
        let in_stream = params.settings.is_local();
        for item in spawns(
            &info,
            &segments,
            &dir,
            params.settings.window,
            in_stream,
            captions,
        ) {
            job.spawn(item);
        }
        Ok(json!({ "segments": segments, "frames": info.frame_count, "audio_windows": windows }))
    }
}

/// What the captions stages will do: transcribe these windows, or skip, saying why.
enum CaptionPlan {
    Windows(Vec<WindowWork>),
    Skip(String),
}

/// Extracts the audio and cuts it into windows at silences, when captions are on and
/// there is audio. Audio ffmpeg cannot decode means no captions (the video is still
/// made); a disk error is transient.
async fn plan_captions(
    storage: &Storage,
    input: &Path,
    params: &RunParams,
    info: &MediaInfo,
    dir: &RunDir,
) -> Result<CaptionPlan, HandlerError> {
    if !params.settings.captions.enabled() {
        return Ok(CaptionPlan::Skip(reason::OFF.into()));
    }
    if !info.has_audio {
        return Ok(CaptionPlan::Skip(reason::NO_AUDIO.into()));
    }
    let audio = dir.speech_audio();
    let staged = storage.stage(&audio).await.map_err(storage_failure)?;
    match media::audio::extract_speech_audio(input, staged.path()).await {
        Ok(_) => {
            storage.publish(&staged).await.map_err(storage_failure)?;
            write_manifest(storage, staged.path(), &audio, &params.uid)
                .await
                .map_err(storage_failure)?;
        }
        Err(e @ MediaError::ToolFailed { .. }) => {
            tracing::warn!(error = %e, "the audio cannot be decoded; no captions");
            return Ok(CaptionPlan::Skip(format!(
                "the audio cannot be decoded: {e}"
            )));
        }
        Err(e) => return Err(HandlerError::transient(e)),
    }
    let path = staged.path().to_owned();
    let windows = tokio::task::spawn_blocking(move || {
        idempipe_captions::speech_windows_in_pcm(&path, &Default::default())
    })
    .await
    .map_err(HandlerError::transient)?
    .map_err(|e| HandlerError::transient(format!("{}: {e}", audio.display())))?;
    Ok(CaptionPlan::Windows(
        windows
            .into_iter()
            .map(|window| WindowWork {
                audio: audio.clone(),
                window,
            })
            .collect(),
    ))
}

/// The items of the whole fan-out, in an order the store accepts: an item's inputs are
/// listed before it, and a group's members before the item waiting for the group (a
/// group without members counts as complete).
fn spawns(
    info: &MediaInfo,
    segments: &[Segment],
    dir: &RunDir,
    window: u32,
    in_stream: bool,
    captions: CaptionPlan,
) -> Vec<NewItem> {
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
            in_stream,
            encoder_threads: super::ENCODER_THREADS,
        };
        let work = serde_json::to_value(&work).expect("segment work serialises");
        if in_stream {
            // Frames live only inside the encoder's stream: nothing to extract, no frame
            // items, no frame files to bound.
            items.push(NewItem::new(stage::ENCODE, &key, work).in_group(ENCODES_GROUP));
            continue;
        }
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
    let captions_payload = match captions {
        CaptionPlan::Windows(windows) => {
            for (i, work) in windows.into_iter().enumerate() {
                let work = serde_json::to_value(&work).expect("window work serialises");
                items.push(
                    NewItem::new(stage::TRANSCRIBE, window_key(i), work)
                        .in_group(TRANSCRIPTS_GROUP),
                );
            }
            json!({})
        }
        CaptionPlan::Skip(reason) => json!({ "skip": reason }),
    };
    items.push(
        NewItem::new(stage::CAPTIONS, "captions", captions_payload).after_group(TRANSCRIPTS_GROUP),
    );
    items.push(
        NewItem::new(stage::ASSEMBLE, "assemble", json!({}))
            .after_item(stage::THUMBNAIL, "thumbnail")
            .after_item(stage::CAPTIONS, "captions"),
    );
    items
}
