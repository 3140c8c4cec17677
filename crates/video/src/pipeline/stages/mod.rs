//! One handler per stage, and the payloads they pass along.

mod assemble;
mod captions;
mod cpu_slots;
mod encode;
mod extract;
mod frame;
mod full_disk;
mod in_stream;
mod ingest;
mod score;
mod split;
mod thread_cpu;
mod thumbnail;
mod transcribe;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::media::Rational;

pub(crate) use assemble::Assemble;
pub(crate) use captions::Captions;
pub(crate) use cpu_slots::CpuBound;
pub(crate) use encode::{Encode, stream_outcome};
pub(crate) use extract::Extract;
pub(crate) use frame::{Frame, SCORE_CRITERION};
pub(crate) use full_disk::WaitOutFullDisk;
pub(crate) use ingest::Ingest;
pub(crate) use split::Split;
pub(crate) use thumbnail::Thumbnail;
pub(crate) use transcribe::Transcribe;

/// Payload of `extract/N` and `encode/N`: one segment and how to decode/encode it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SegmentWork {
    /// Segment index.
    pub(crate) segment: u32,
    /// The stream-copied input segment.
    pub(crate) path: PathBuf,
    /// Global index of its first frame.
    pub(crate) first_frame: u64,
    /// Its exact frame count.
    pub(crate) frame_count: u64,
    /// Decoded frame width (rotation applied).
    pub(crate) width: u32,
    /// Decoded frame height (rotation applied).
    pub(crate) height: u32,
    /// Frame rate of the input, kept exactly.
    pub(crate) fps: Rational,
    /// Whether `encode/N` enhances the frames itself, in its stream (runs on the local
    /// provider: no `extract` or `frame` items, no frame files).
    #[serde(default)]
    pub(crate) in_stream: bool,
    /// libx264 threads of the segment's encoder (1 in runs made before it was recorded).
    #[serde(default = "one_thread")]
    pub(crate) encoder_threads: u32,
    /// For `extract/N` of a run on an API: the output segments its frames go to (none
    /// in runs made before output segments were cut at any frame: one output segment,
    /// numbered as the input segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) outputs: Option<OutputSegments>,
    /// Whether an output segment's originals share one file, and its enhanced frames
    /// another ([`RunDir::originals`](super::artifacts::RunDir::originals),
    /// [`RunDir::enhanced_frames`](super::artifacts::RunDir::enhanced_frames)), rather
    /// than a file per frame (runs with object storage, and runs made before).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) frames_together: bool,
}

/// How an input segment's frames are divided among output segments: consecutive pieces
/// of `frames` frames (the last may be shorter), the first numbered `first`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct OutputSegments {
    /// Index of the output segment holding the input segment's first frame.
    pub(crate) first: u32,
    /// Frames per output segment.
    pub(crate) frames: u64,
}

impl SegmentWork {
    /// The output segment (whose frames directory it goes in) of the `offset`-th frame
    /// of this input segment.
    pub(crate) fn output_of(&self, offset: u64) -> u32 {
        match self.outputs {
            Some(o) => o.first + (offset / o.frames.max(1)) as u32,
            None => self.segment,
        }
    }

    /// The place of the `offset`-th frame of this input segment within its output
    /// segment.
    pub(crate) fn slot_of(&self, offset: u64) -> u64 {
        match self.outputs {
            Some(o) => offset % o.frames.max(1),
            None => offset,
        }
    }
}

/// libx264 threads per segment encoder in new runs. A constant, not the machine's core
/// count: x264's output depends on its thread count, and a resumed run (on any machine)
/// must give the same bytes. Two threads keep two cores busy even when the input's
/// keyframes allow a single segment (or leave the last one alone at the end).
pub(crate) const ENCODER_THREADS: u32 = 2;

fn one_thread() -> u32 {
    1
}

/// Payload of a `transcribe` item: one window of the extracted audio.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WindowWork {
    /// The run's audio as 16 kHz mono PCM.
    pub(crate) audio: PathBuf,
    /// The samples to transcribe.
    pub(crate) window: idempipe_captions::Window,
}

/// Payload of a `frame` item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FrameWork {
    /// Segment index.
    pub(crate) segment: u32,
    /// Position within the segment.
    pub(crate) index_in_segment: u64,
    /// Position within the whole video.
    pub(crate) global: u64,
    /// The decoded original frame file, or the segment's file of originals.
    pub(crate) original: PathBuf,
    /// Where the enhanced frame goes: a frame file, or the segment's file of enhanced
    /// frames.
    pub(crate) enhanced: PathBuf,
    /// The frame's place in `original` and `enhanced` when those are its segment's
    /// files of frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) slot: Option<u64>,
}
