//! The video enhancement pipeline on the idempipe engine.
//!
//! # Layout
//! - [`media`]: the ffmpeg/ffprobe layer (probe, split, decode, encode, assemble,
//!   thumbnails), streaming frames through pipes so memory stays bounded.

pub mod media;
