//! Enhancing in the encoder's stream: for runs on the in-process (`local`) provider,
//! `encode/N` decodes segment N, enhances each frame and feeds it to the encoder, with
//! frames only in memory.
//!
//! Local enhancement is a pure function of the decoded frame, so a frame never needs to
//! be kept: a segment that dies half-way is decoded and enhanced again, with the same
//! bytes. One task on the blocking pool moves the whole segment: it reads each frame from
//! the ffmpeg decoder into one buffer, enhances it into another and writes that to the
//! ffmpeg encoder ([`FrameReader::transform_into`]), with no hop, channel or allocation
//! per frame. The decoder and the encoder are processes of their own and run alongside;
//! this thread's share (a few milliseconds a frame at 720p) is far from the encoder's.

use std::path::Path;

use idempipe_engine::HandlerError;
use idempipe_enhance::EnhanceParams;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::SegmentWork;
use super::score::Score;
use super::thread_cpu::ThreadCpu;
use crate::media::{FrameReader, FrameTransform, SegmentEncoder};
use crate::pipeline::context::{media_failure, transient};

/// What streaming one segment found: its frame count, its best frame for the thumbnail
/// and the CPU time the enhancement itself took.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StreamOutcome {
    /// Frames enhanced and encoded.
    pub(crate) frames: u64,
    /// Global index of the best-scoring frame.
    pub(crate) best_frame: u64,
    /// Its thumbnail score (see [`Score`]).
    pub(crate) best_score: f64,
    /// CPU milliseconds spent inside the enhancement algorithm.
    pub(crate) enhance_cpu_ms: f64,
}

/// Decodes `work`'s segment, enhances every frame with `params` and pushes it into
/// `encoder`, which is finished on success (the file renamed into place). Returns the
/// outcome and the segment's best enhanced frame, kept on the way (its buffer swapped
/// out of the stream, not copied), for the thumbnail.
pub(crate) async fn enhance_and_encode(
    work: &SegmentWork,
    input: &Path,
    params: EnhanceParams,
    mut encoder: SegmentEncoder,
) -> Result<(StreamOutcome, RgbImage), HandlerError> {
    let mut reader = FrameReader::open_with_size(input, work.width, work.height)
        .await
        .map_err(transient)?;
    let enhancing = Enhancing {
        params,
        first_frame: work.first_frame,
        frames: 0,
        best: None,
        best_is_new: false,
        best_frame: RgbImage::new(0, 0),
        enhance_ns: 0,
    };
    let (decoded, enhancing) = reader
        .transform_into(&mut encoder, work.frame_count, enhancing)
        .await
        .map_err(media_failure)?;
    if decoded != work.frame_count {
        return Err(HandlerError::permanent(format!(
            "{}: decoded {decoded} frames, expected {}",
            work.path.display(),
            work.frame_count
        )));
    }
    encoder.finish().await.map_err(media_failure)?;
    let (best_frame, best_score) = enhancing.best.unwrap_or((work.first_frame, 0.0));
    let outcome = StreamOutcome {
        frames: decoded,
        best_frame,
        best_score,
        enhance_cpu_ms: enhancing.enhance_ns as f64 / 1e6,
    };
    Ok((outcome, enhancing.best_frame))
}

/// Each frame's enhancement and score, on the streaming thread.
struct Enhancing {
    params: EnhanceParams,
    first_frame: u64,
    /// Frames enhanced so far.
    frames: u64,
    /// (global index, score) of the best frame so far.
    best: Option<(u64, f64)>,
    /// Whether the frame just enhanced is the best so far.
    best_is_new: bool,
    /// The best frame so far, once it has been sent to the encoder.
    best_frame: RgbImage,
    /// CPU nanoseconds inside the enhancement, read from the thread's CPU clock around
    /// each call (exact: the clock brings itself up to date when read).
    enhance_ns: u64,
}

impl FrameTransform for Enhancing {
    fn apply(&mut self, frame: &RgbImage, out: &mut RgbImage) {
        let cpu = ThreadCpu::open();
        let started = cpu.ns();
        idempipe_enhance::enhance_into(frame, &self.params, out);
        self.enhance_ns += cpu.ns().saturating_sub(started);
        let score = Score::of(out).score();
        let global = self.first_frame + self.frames;
        self.best_is_new = self.best.is_none_or(|(_, s)| score > s);
        if self.best_is_new {
            self.best = Some((global, score));
        }
        self.frames += 1;
    }

    fn sent(&mut self, out: &mut RgbImage) {
        if self.best_is_new {
            std::mem::swap(out, &mut self.best_frame);
        }
    }
}

/// Where the thumbnail of frame `global`, a segment's best, is kept next to its encoded
/// file (`seg_00003.mp4.frame-750.jpg`): the thumbnail stage copies the best segment's,
/// with no decoding.
pub(crate) fn thumbnail_path(encoded: &Path, global: u64) -> std::path::PathBuf {
    let name = encoded
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    encoded.with_file_name(format!("{name}.frame-{global}.jpg"))
}

/// Where a segment's [`StreamOutcome`] is kept next to its encoded file, so that an
/// attempt finding the file already made (its predecessor died before completing)
/// still reports the segment's best frame.
pub(crate) fn outcome_path(encoded: &Path) -> std::path::PathBuf {
    let name = encoded
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    encoded.with_file_name(format!("{name}.stream.json"))
}
