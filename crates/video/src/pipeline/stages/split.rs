//! `split`: cut the input into keyframe-aligned segments and spawn the per-segment work.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use idempipe_engine::{Handler, HandlerError, ItemResult, Job, NewItem};
use serde_json::json;

use super::captions::reason;
use super::{FrameWork, OutputSegments, SegmentWork, WindowWork};
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
        // Runs on an API encode output segments of about --segment-seconds, cut at any
        // frame, so encoding starts while later frames are still being enhanced.
        let chunk = if in_stream {
            0
        } else {
            output_chunk_frames(params.settings.segment_secs, info.fps)
        };
        let plan = plan_outputs(&segments, chunk, info.fps);
        for item in spawns(
            &info,
            &segments,
            &plan,
            &dir,
            params.settings.window,
            in_stream,
            captions,
        ) {
            job.spawn(item);
        }
        // `segments` lists the output segments (what encode makes and assemble joins).
        let outputs: Vec<&Segment> = plan.iter().flatten().collect();
        Ok(json!({ "segments": outputs, "frames": info.frame_count, "audio_windows": windows }))
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

/// Frames per output segment of a run on an API: `segment_secs` of video (at least one
/// frame).
fn output_chunk_frames(segment_secs: f64, fps: media::Rational) -> u64 {
    let fps = fps.num as f64 / fps.den.max(1) as f64;
    (segment_secs * fps).round().max(1.0) as u64
}

/// The output segments of each input segment: the input segment itself when `chunk` is
/// 0, else as few consecutive pieces of at most `chunk` frames as cover it, of equal
/// length but for a shorter last one (250 frames at 60 make 5 of 50, not 4 of 60 and one
/// of 10), numbered across the whole video. Each piece names its input segment's file.
fn plan_outputs(segments: &[Segment], chunk: u64, fps: media::Rational) -> Vec<Vec<Segment>> {
    let secs = |frames: u64| frames as f64 * fps.den as f64 / fps.num.max(1) as f64;
    let mut index = 0;
    segments
        .iter()
        .map(|seg| {
            let size = if chunk == 0 {
                seg.frame_count.max(1)
            } else {
                let pieces = seg.frame_count.div_ceil(chunk).max(1);
                seg.frame_count.div_ceil(pieces).max(1)
            };
            let mut outputs = Vec::new();
            let mut offset = 0;
            while offset < seg.frame_count || (offset == 0 && seg.frame_count == 0) {
                let count = size.min(seg.frame_count - offset);
                let first = seg.first_frame + offset;
                outputs.push(Segment {
                    index,
                    path: seg.path.clone(),
                    first_frame: first,
                    frame_count: count,
                    start_secs: secs(first),
                    duration_secs: secs(count),
                });
                index += 1;
                offset += size;
            }
            outputs
        })
        .collect()
}

/// The items of the whole fan-out, in an order the store accepts: an item's inputs are
/// listed before it, and a group's members before the item waiting for the group (a
/// group without members counts as complete).
fn spawns(
    info: &MediaInfo,
    segments: &[Segment],
    plan: &[Vec<Segment>],
    dir: &RunDir,
    window: u32,
    in_stream: bool,
    captions: CaptionPlan,
) -> Vec<NewItem> {
    let (width, height) = info.display_size();
    // Local frames share a file per output segment (originals, and enhanced frames): a
    // file per frame costs the file system more than the frame's bytes. In object
    // storage each frame stays an object of its own, fetched alone by its frame item.
    let together = !crate::storage::is_remote(&dir.frames(0));
    let mut items = Vec::new();
    let work_of = |seg: &Segment, index: u32, outputs: Option<OutputSegments>| SegmentWork {
        segment: index,
        path: seg.path.clone(),
        first_frame: seg.first_frame,
        frame_count: seg.frame_count,
        width,
        height,
        fps: info.fps,
        in_stream,
        encoder_threads: super::ENCODER_THREADS,
        outputs,
        frames_together: together,
    };
    for (seg, outputs) in segments.iter().zip(plan) {
        let n = seg.index;
        let key = seg_key(n);
        if in_stream {
            // Frames live only inside the encoder's stream: nothing to extract, no frame
            // items, no frame files to bound.
            let work =
                serde_json::to_value(work_of(seg, n, None)).expect("segment work serialises");
            items.push(NewItem::new(stage::ENCODE, &key, work).in_group(ENCODES_GROUP));
            continue;
        }
        let first = outputs.first().expect("at least one output segment");
        let split_outputs = OutputSegments {
            first: first.index,
            frames: first.frame_count.max(1),
        };
        let extract_work = work_of(seg, n, Some(split_outputs));
        let mut extract = NewItem::new(
            stage::EXTRACT,
            &key,
            serde_json::to_value(&extract_work).expect("segment work serialises"),
        );
        if n >= window {
            // Disk stays bounded: segment N's frames are decoded only once segment N-K
            // is encoded (its last output segment) and its frames deleted.
            let last = plan[(n - window) as usize]
                .last()
                .expect("at least one output segment");
            extract = extract.after_item(stage::ENCODE, seg_key(last.index));
        }
        items.push(extract);
        for out in outputs {
            for global in out.first_frame..out.first_frame + out.frame_count {
                let frame = FrameWork {
                    segment: out.index,
                    index_in_segment: global - out.first_frame,
                    global,
                    original: if together {
                        dir.originals(out.index)
                    } else {
                        dir.original(out.index, global)
                    },
                    enhanced: if together {
                        dir.enhanced_frames(out.index)
                    } else {
                        dir.enhanced(out.index, global)
                    },
                    slot: together.then_some(global - out.first_frame),
                };
                let frame = serde_json::to_value(&frame).expect("frame work serialises");
                items.push(
                    NewItem::new(stage::FRAME, frame_key(global), frame)
                        .after_item(stage::EXTRACT, &key)
                        .in_group(frames_group(out.index)),
                );
            }
            let work = serde_json::to_value(work_of(out, out.index, None))
                .expect("segment work serialises");
            items.push(
                NewItem::new(stage::ENCODE, seg_key(out.index), work)
                    .after_group(frames_group(out.index))
                    .in_group(ENCODES_GROUP),
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn input(index: u32, first_frame: u64, frame_count: u64) -> Segment {
        Segment {
            index,
            path: format!("seg_{index}.mp4").into(),
            first_frame,
            frame_count,
            start_secs: 0.0,
            duration_secs: 0.0,
        }
    }

    #[test]
    fn output_segments_cover_every_frame_once_in_even_pieces() {
        let fps = media::Rational { num: 30, den: 1 };
        assert_eq!(output_chunk_frames(2.0, fps), 60);
        let plan = plan_outputs(&[input(0, 0, 250), input(1, 250, 50)], 60, fps);
        let sizes: Vec<Vec<u64>> = plan
            .iter()
            .map(|o| o.iter().map(|s| s.frame_count).collect())
            .collect();
        assert_eq!(sizes, [vec![50, 50, 50, 50, 50], vec![50]]);
        let all: Vec<&Segment> = plan.iter().flatten().collect();
        let mut next = 0;
        for (i, out) in all.iter().enumerate() {
            assert_eq!(out.index as usize, i, "numbered across the video");
            assert_eq!(out.first_frame, next, "contiguous");
            next += out.frame_count;
        }
        assert_eq!(next, 300);
        assert_eq!(all[5].path, std::path::PathBuf::from("seg_1.mp4"));
        assert!((all[1].start_secs - 50.0 / 30.0).abs() < 1e-9);
        // Local runs: one output segment per input segment, same numbering.
        let plan = plan_outputs(&[input(0, 0, 250), input(1, 250, 50)], 0, fps);
        assert_eq!(plan.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(plan[1][0].index, 1);
    }

    #[test]
    fn extract_sends_each_frame_to_its_output_segment() {
        let work = |outputs| SegmentWork {
            segment: 1,
            path: "seg_1.mp4".into(),
            first_frame: 250,
            frame_count: 130,
            width: 2,
            height: 2,
            fps: media::Rational { num: 30, den: 1 },
            in_stream: false,
            encoder_threads: 2,
            outputs,
            frames_together: true,
        };
        let chunked = work(Some(OutputSegments {
            first: 5,
            frames: 44,
        }));
        assert_eq!(chunked.output_of(0), 5);
        assert_eq!(chunked.output_of(43), 5);
        assert_eq!(chunked.output_of(44), 6);
        assert_eq!(chunked.output_of(129), 7);
        // Each frame's place in its output segment's file of originals.
        assert_eq!(chunked.slot_of(0), 0);
        assert_eq!(chunked.slot_of(43), 43);
        assert_eq!(chunked.slot_of(44), 0);
        assert_eq!(chunked.slot_of(129), 41);
        // Runs made before output segments: the input segment's own directory.
        assert_eq!(work(None).output_of(129), 1);
        assert_eq!(work(None).slot_of(129), 129);
    }
}
