//! The error type of the media layer.

use std::path::PathBuf;
use std::process::ExitStatus;

/// What went wrong in the media layer; every message names the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The input file does not exist.
    #[error("{path}: file not found")]
    NotFound {
        /// The missing file.
        path: PathBuf,
    },
    /// The input file exists but holds no bytes.
    #[error("{path}: file is empty (0 bytes)")]
    Empty {
        /// The empty file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {action} failed: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// What was being done, e.g. "rename into place".
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// ffmpeg or ffprobe could not be started.
    #[error(
        "cannot run {tool} (needed for {path}): {source}; install ffmpeg (e.g. apt-get install ffmpeg)"
    )]
    ToolMissing {
        /// `ffmpeg` or `ffprobe`.
        tool: &'static str,
        /// The file the tool was meant to work on.
        path: PathBuf,
        /// The spawn error.
        source: std::io::Error,
    },
    /// The file is not a media file ffprobe can read (wrong format or corrupt).
    #[error("{path}: not a readable video file: {detail}")]
    NotMedia {
        /// The unreadable file.
        path: PathBuf,
        /// ffprobe's explanation.
        detail: String,
    },
    /// The file is a media file but has no video stream.
    #[error("{path}: has no video stream")]
    NoVideoStream {
        /// The file without video.
        path: PathBuf,
    },
    /// The container declares more frames than can actually be read.
    #[error(
        "{path}: truncated or corrupt: declares {declared} video frames but only {readable} can be read"
    )]
    Truncated {
        /// The damaged file.
        path: PathBuf,
        /// Frames the container declares.
        declared: u64,
        /// Frames actually readable.
        readable: u64,
    },
    /// ffprobe's answer lacked something the pipeline needs.
    #[error("{path}: unusable ffprobe output: {detail}")]
    BadProbe {
        /// The probed file.
        path: PathBuf,
        /// What was missing or malformed.
        detail: String,
    },
    /// ffmpeg or ffprobe exited with an error.
    #[error("{tool} failed on {path} ({status}): {stderr}")]
    ToolFailed {
        /// `ffmpeg` or `ffprobe`.
        tool: &'static str,
        /// The file being processed.
        path: PathBuf,
        /// The exit status.
        status: ExitStatus,
        /// The tool's error output (trimmed).
        stderr: String,
    },
    /// Splitting produced segments whose frames do not add up to the input's.
    #[error("{path}: segments hold {segmented} frames but the input has {expected}")]
    SplitMismatch {
        /// The input being split.
        path: PathBuf,
        /// The input's frame count.
        expected: u64,
        /// The sum over the segments.
        segmented: u64,
    },
    /// A frame had a different size than the stream it belongs to.
    #[error("{path}: frame is {got_width}x{got_height}, expected {width}x{height}")]
    FrameSize {
        /// The file being read or written.
        path: PathBuf,
        /// Expected width.
        width: u32,
        /// Expected height.
        height: u32,
        /// Actual width.
        got_width: u32,
        /// Actual height.
        got_height: u32,
    },
    /// A per-frame artifact file is malformed.
    #[error("{path}: bad frame file: {detail}")]
    BadFrameFile {
        /// The frame file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A frame slot was released (its enhanced frame is written): its bytes are zeros.
    #[error("{path}: frame {slot} was released once enhanced; its original is gone")]
    ReleasedFrame {
        /// The frames file.
        path: PathBuf,
        /// The frame's slot.
        slot: u64,
    },
    /// Encoding an image (JPEG) failed.
    #[error("{path}: image encoding failed: {source}")]
    Image {
        /// The image file being written.
        path: PathBuf,
        /// The underlying error.
        source: image::ImageError,
    },
    /// The assembled output does not match the input (frame count, size, duration or
    /// audio); it was not moved into place.
    #[error(
        "{path}: the assembled output has {what} {actual}, but the input has {expected}; the output was not written"
    )]
    OutputMismatch {
        /// The output that would have been written.
        path: PathBuf,
        /// What differs, e.g. "frame count".
        what: &'static str,
        /// The input's value.
        expected: String,
        /// The output's value.
        actual: String,
    },
    /// The output's file extension names no container this pipeline writes.
    #[error("{path}: unsupported output extension; use one of {supported}")]
    UnsupportedContainer {
        /// The output path.
        path: PathBuf,
        /// The extensions that are supported.
        supported: &'static str,
    },
    /// An argument is out of range; the message names it and the allowed values.
    #[error("{path}: invalid {what}")]
    InvalidArgument {
        /// The file the call was about.
        path: PathBuf,
        /// The argument and why it is invalid.
        what: String,
    },
}

impl MediaError {
    /// A failed read of `path`: `NotFound` when it does not exist, `Io` otherwise.
    pub fn reading(path: &std::path::Path, action: &'static str, source: std::io::Error) -> Self {
        match source.kind() {
            std::io::ErrorKind::NotFound => Self::NotFound {
                path: path.to_owned(),
            },
            _ => Self::Io {
                path: path.to_owned(),
                action,
                source,
            },
        }
    }
}
