//! The video enhancement pipeline on the idempipe engine.
//!
//! # Layout
//! - [`media`]: the ffmpeg/ffprobe layer (probe, split, decode, encode, assemble,
//!   thumbnails), streaming frames through pipes so memory stays bounded.
//! - [`pipeline`]: the stages on the engine, run creation and resume, progress, report.
//! - [`storage`]: where files live: a local directory or S3-compatible object storage.

pub mod media;
pub mod pipeline;
pub mod storage;
