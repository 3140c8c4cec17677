//! Enhancing in the encoder's stream: for runs on the in-process (`local`) provider,
//! `encode/N` decodes segment N, enhances each frame and feeds it to the encoder, with
//! frames only in memory.
//!
//! Local enhancement is a pure function of the decoded frame, so a frame never needs to
//! be kept: a segment that dies half-way is decoded and enhanced again, with the same
//! bytes. Three stages run at once (the ffmpeg decoder feeding this process, the
//! enhancement on a blocking thread, the ffmpeg encoder fed by this process), joined by
//! two-frame channels; frame buffers go back to their producer, so a segment holds
//! eight frames whatever its length.

use std::path::Path;

use idempipe_engine::HandlerError;
use idempipe_enhance::EnhanceParams;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::SegmentWork;
use super::score::Score;
use super::thread_cpu::ThreadCpu;
use crate::media::{FrameReader, MediaError, SegmentEncoder};
use crate::pipeline::context::{media_failure, transient};

/// Frames queued between two stages of the stream.
const QUEUE: usize = 2;
/// Frame buffers each producer owns: the queue, one in the consumer's hands, one being
/// filled. A producer waits for a buffer to come back rather than allocating: a fresh
/// multi-megabyte buffer costs page faults and zeroing on every frame.
const POOL: usize = QUEUE + 2;

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
/// `encoder`, which is finished on success (the file renamed into place).
pub(crate) async fn enhance_and_encode(
    work: &SegmentWork,
    input: &Path,
    params: EnhanceParams,
    encoder: SegmentEncoder,
) -> Result<StreamOutcome, HandlerError> {
    let reader = FrameReader::open_with_size(input, work.width, work.height)
        .await
        .map_err(transient)?;
    let (decoded_tx, decoded_rx) = mpsc::channel(QUEUE);
    let (enhanced_tx, enhanced_rx) = mpsc::channel(QUEUE);
    let (spent_decoded, reuse_decoded) = mpsc::unbounded_channel();
    let (spent_enhanced, reuse_enhanced) = mpsc::unbounded_channel();
    let first = work.first_frame;
    let enhance = tokio::task::spawn_blocking(move || {
        enhance_frames(
            decoded_rx,
            enhanced_tx,
            spent_decoded,
            reuse_enhanced,
            params,
            first,
        )
    });
    let (decoded, encoded) = tokio::join!(
        decode(reader, work.frame_count, decoded_tx, reuse_decoded),
        encode(encoder, enhanced_rx, spent_enhanced),
    );
    let mut outcome = enhance.await.map_err(transient)?;
    let decoded = decoded.map_err(transient)?;
    let encoder = encoded.map_err(media_failure)?;
    if decoded != work.frame_count || outcome.frames != decoded {
        return Err(HandlerError::permanent(format!(
            "{}: decoded {decoded} frames (enhanced {}), expected {}",
            work.path.display(),
            outcome.frames,
            work.frame_count
        )));
    }
    encoder.finish().await.map_err(media_failure)?;
    outcome.frames = decoded;
    Ok(outcome)
}

/// Sends up to `count` decoded frames; returns how many it sent.
async fn decode(
    mut reader: FrameReader,
    count: u64,
    out: mpsc::Sender<RgbImage>,
    mut reuse: mpsc::UnboundedReceiver<RgbImage>,
) -> Result<u64, MediaError> {
    let mut sent = 0;
    while sent < count {
        let mut frame = if sent < POOL as u64 {
            RgbImage::default()
        } else {
            match reuse.recv().await {
                Some(frame) => frame,
                None => break, // the enhancement ended; its outcome says why
            }
        };
        if !reader.next_frame_into(&mut frame).await? {
            break;
        }
        if out.send(frame).await.is_err() {
            break; // the encoder failed; its error is the one reported
        }
        sent += 1;
    }
    Ok(sent)
}

/// The enhancement thread: enhances, scores, and times the enhancement alone.
///
/// The enhancement's CPU is this thread's CPU over the whole segment less the scoring.
/// Reading the thread's clock around each enhancement undercounts it:
/// `/proc/thread-self/schedstat` moves only at scheduler ticks and switches, so a 2.5 ms
/// enhancement between two reads often looks like 1 ms (a perf profile of a 720p run:
/// `enhance_into` 2.5 ms a frame, per-frame reads 1.3 ms), and the rest was reported as
/// the pipeline's own CPU. Over a segment the error is at most one tick. The scoring
/// (a small fraction of a millisecond a frame, optimised) is read the same way around
/// each call, which undercounts it, so the figure errs towards the enhancement by at
/// most the scoring's cost; so does what this thread spends on its channels.
fn enhance_frames(
    mut decoded: mpsc::Receiver<RgbImage>,
    out: mpsc::Sender<RgbImage>,
    spent: mpsc::UnboundedSender<RgbImage>,
    mut reuse: mpsc::UnboundedReceiver<RgbImage>,
    params: EnhanceParams,
    first_frame: u64,
) -> StreamOutcome {
    let cpu = ThreadCpu::open();
    let thread_started = cpu.ns();
    let mut outcome = StreamOutcome::default();
    let mut best: Option<(u64, f64)> = None;
    let mut scoring_ns = 0;
    while let Some(frame) = decoded.blocking_recv() {
        let mut enhanced = if outcome.frames < POOL as u64 {
            RgbImage::default()
        } else {
            match reuse.blocking_recv() {
                Some(frame) => frame,
                None => break, // the encoder failed; its error is the one reported
            }
        };
        idempipe_enhance::enhance_into(&frame, &params, &mut enhanced);
        let _ = spent.send(frame);
        let global = first_frame + outcome.frames;
        let scored = cpu.ns();
        let score = Score::of(&enhanced).score();
        scoring_ns += cpu.ns().saturating_sub(scored);
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((global, score));
        }
        outcome.frames += 1;
        if out.blocking_send(enhanced).is_err() {
            break;
        }
    }
    (outcome.best_frame, outcome.best_score) = best.unwrap_or((first_frame, 0.0));
    let thread_ns = cpu.ns().saturating_sub(thread_started);
    // Never negative: the scoring's reads are sub-intervals of the thread's.
    outcome.enhance_cpu_ms = thread_ns.saturating_sub(scoring_ns) as f64 / 1e6;
    outcome
}

/// Pushes enhanced frames into the encoder until the enhancement ends.
async fn encode(
    mut encoder: SegmentEncoder,
    mut frames: mpsc::Receiver<RgbImage>,
    spent: mpsc::UnboundedSender<RgbImage>,
) -> Result<SegmentEncoder, MediaError> {
    while let Some(frame) = frames.recv().await {
        let frame = encoder.push_owned(frame).await?;
        let _ = spent.send(frame);
    }
    Ok(encoder)
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
