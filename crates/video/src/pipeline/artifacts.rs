//! Where a run's files go: `ARTIFACTS/run-<uid>/` (see [`super::disk`]), one directory
//! per run so that runs never share a frame, even across databases.

use std::path::{Path, PathBuf};

/// The artifact directory of one run.
#[derive(Debug, Clone)]
pub(crate) struct RunDir(PathBuf);

impl RunDir {
    /// `root/run-<uid>` (`root/run-<id>` for runs made before runs had a uid).
    pub(crate) fn new(root: &Path, run_id: i64, uid: &str) -> Self {
        Self(super::disk::run_dir(root, run_id, uid))
    }

    /// The run's directory.
    pub(crate) fn root(&self) -> PathBuf {
        self.0.clone()
    }

    /// The stream-copied input segments.
    pub(crate) fn segments(&self) -> PathBuf {
        self.0.join("segments")
    }

    /// The frame files of segment `seg` (deleted once the segment is encoded).
    pub(crate) fn frames(&self, seg: u32) -> PathBuf {
        self.0.join("frames").join(seg_key(seg))
    }

    /// The decoded original of frame `global` of segment `seg`.
    pub(crate) fn original(&self, seg: u32, global: u64) -> PathBuf {
        self.frames(seg).join(format!("{global:06}.orig.rgb"))
    }

    /// The decoded originals of segment `seg` in one file, one after another (runs with
    /// local artifacts since originals share a file; see
    /// [`FrameWork::slot`](super::stages)).
    pub(crate) fn originals(&self, seg: u32) -> PathBuf {
        self.frames(seg).join("originals.rgb")
    }

    /// The enhanced frames of segment `seg` in one file, as [`originals`](Self::originals).
    pub(crate) fn enhanced_frames(&self, seg: u32) -> PathBuf {
        self.frames(seg).join("enhanced.rgb")
    }

    /// The enhanced frame `global` of segment `seg`.
    pub(crate) fn enhanced(&self, seg: u32, global: u64) -> PathBuf {
        self.frames(seg).join(format!("{global:06}.enh.rgb"))
    }

    /// The audio track as 16 kHz mono PCM, for transcription.
    pub(crate) fn speech_audio(&self) -> PathBuf {
        self.0.join("audio").join("speech.s16le")
    }

    /// The encoded (enhanced) segment `seg`.
    pub(crate) fn encoded(&self, seg: u32) -> PathBuf {
        self.0
            .join("encoded")
            .join(format!("seg_{}.mp4", seg_key(seg)))
    }
}

/// Key of segment items (`extract`, `encode`): zero-padded so keys sort by position.
pub(crate) fn seg_key(seg: u32) -> String {
    format!("{seg:05}")
}

/// Key of a frame item: `frame/000123` with the frame's index in the whole video.
pub(crate) fn frame_key(global: u64) -> String {
    format!("frame/{global:06}")
}

/// Group of the frames of segment `seg` (its encode waits for it).
pub(crate) fn frames_group(seg: u32) -> String {
    format!("frames/{}", seg_key(seg))
}

/// Group of every encode (the thumbnail waits for it).
pub(crate) const ENCODES_GROUP: &str = "encodes";

/// Key of a `transcribe` item: `window/0003`, the audio window's position.
pub(crate) fn window_key(index: usize) -> String {
    format!("window/{index:04}")
}

/// Group of every `transcribe` item (the captions item waits for it).
pub(crate) const TRANSCRIPTS_GROUP: &str = "transcripts";
