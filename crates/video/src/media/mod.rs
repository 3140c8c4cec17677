//! The media layer: everything the pipeline asks of ffmpeg and ffprobe.
//!
//! The system `ffmpeg`/`ffprobe` binaries are driven through `tokio::process`;
//! frames travel as raw RGB24 through pipes, one frame at a time, so no step holds a
//! whole video in memory. Every file this module produces is written under a hidden
//! temporary name and renamed into place, so a half-written file never looks complete;
//! except decoded frames and the slots of a segment's file of frames, written in place
//! for callers that read none of them before the step that writes them all completes.
//!
//! # Layout
//! - [`probe`]: ffprobe metadata ([`MediaInfo`]) and input validation.
//! - [`split`]: keyframe-aligned segments by stream copy ([`Segment`]).
//! - [`frames`]: decode a video into [`image::RgbImage`]s ([`FrameReader`]).
//! - [`frame_file`]: frame artifact files (raw RGB with a size header), one per frame or
//!   a segment's frames one after another (slots).
//! - `pipe`: whole frames through a child's pipe on the blocking pool.
//! - [`encode`]: encode frames into an H.264 segment ([`SegmentEncoder`]).
//! - [`assemble`]: join segments and mux the original audio and captions.
//! - [`audio`]: the audio track as 16 kHz mono PCM, for speech recognition.
//! - [`thumbnail`]: JPEG thumbnails.

pub mod assemble;
mod atomic;
pub mod audio;
pub mod encode;
mod error;
pub mod frame_file;
pub mod frames;
mod pipe;
pub mod probe;
pub mod split;
pub mod thumbnail;
mod tool;

pub use assemble::{Container, Expected, Subtitles, assemble, assemble_verified};
pub use encode::{EncodeSettings, SegmentEncoder, X264_PRESETS};
pub use error::MediaError;
pub use frame_file::{
    read_frame_file, write_frame_file, write_frame_file_owned, write_frame_file_shared,
};
pub use frames::{FrameReader, FrameTransform};
pub use probe::{MediaInfo, Rational, probe};
pub use split::{Segment, split};
pub use thumbnail::{THUMBNAIL_MAX_WIDTH, thumbnail_image, thumbnail_jpeg, write_thumbnail};
pub use tool::kill_children;
